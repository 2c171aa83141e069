//! Counters and latency histograms of the pipeline (the `prometheus` crate, text exposition
//! format 0.0.4), and the daemon's loopback HTTP endpoint serving `/healthz` and `/metrics`
//! (hyper, HTTP/1.1 only, one request per connection).

use crate::ingest::scp::ScpStats;
use crate::outcome::{FailureKind, Verdict};
use crate::record::PlateRecord;
use crate::route::forward::ForwardStatus;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Upper bounds (seconds) of the latency buckets: plates take tens to thousands of
/// milliseconds.
const BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const STAGES: [&str; 4] = ["decode", "infer", "explain", "total"];

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read (hyper's smallest buffer); a longer one is refused.
const MAX_HEAD_BYTES: usize = 8192;
/// How long a connection may last in all, answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by the pipeline (writer) and the endpoint (reader).
/// The levels `plateqc_reject_level` takes (as the report names them).
pub const REJECT_LEVELS: [&str; 4] = ["within", "investigate_high", "investigate_low", "too_few"];

/// What the daemon publishes of its site's recent reject analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectGauges {
    pub rate_pct: f64,
    pub images: i64,
    /// One of [`REJECT_LEVELS`].
    pub level: &'static str,
    pub target_pct: f64,
    pub investigate_above_pct: f64,
    pub investigate_below_pct: f64,
    pub plates_due: i64,
}

pub struct Metrics {
    registry: Registry,
    plates: IntCounterVec,
    failures: IntCounterVec,
    stage_seconds: HistogramVec,
    in_flight_gauge: IntGauge,
    in_memory_gauge: IntGauge,
    associations: IntCounterVec,
    requests: IntCounterVec,
    outbox_items: IntGaugeVec,
    awaiting_review: IntGauge,
    destination_up: IntGaugeVec,
    forwarded: IntCounterVec,
    reject_rate: Gauge,
    reject_images: IntGauge,
    reject_level: IntGaugeVec,
    reject_bounds: GaugeVec,
    plates_due: IntGauge,
    /// Serialises the copy of the gauges and receiver counters into the registry.
    render_lock: Mutex<()>,
    /// Files taken from the inbox and not yet finished (written by the daemon).
    pub in_flight: AtomicU64,
    /// Plates whose pixels are held in memory (written by the pipeline).
    pub plates_in_memory: AtomicU64,
    /// The DICOM receiver's counters (written by the receiver).
    pub scp: Arc<ScpStats>,
    /// Where each forwarding destination stands (written by the forwarder).
    pub forward: Arc<ForwardStatus>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new().expect("metric names and labels are valid and distinct")
    }
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counters = |name: &str, help: &str, label: &str| -> prometheus::Result<_> {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<_> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let plates = counters(
            "plateqc_plates_total",
            "Plates recorded, by verdict.",
            "verdict",
        )?;
        let failures = counters(
            "plateqc_failures_total",
            "Plates that could not be judged, by failure kind.",
            "kind",
        )?;
        let in_flight_gauge = gauge(
            "plateqc_in_flight",
            "Files taken from the inbox and not yet finished.",
        )?;
        let in_memory_gauge = gauge(
            "plateqc_plates_in_memory",
            "Plates whose pixels are held in memory.",
        )?;
        let associations = counters(
            "plateqc_dicom_associations_total",
            "DICOM associations, by outcome.",
            "outcome",
        )?;
        let requests = counters(
            "plateqc_dicom_requests_total",
            "DICOM requests received, by result.",
            "result",
        )?;
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "plateqc_stage_seconds",
                "Time per plate in each pipeline stage.",
            )
            .buckets(BUCKETS_S.to_vec()),
            &["stage"],
        )?;
        registry.register(Box::new(stage_seconds.clone()))?;
        let gauges = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<_> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let outbox_items = gauges(
            "plateqc_outbox_items",
            "This node's outbox entries waiting (pending) or given up on (failed), by \
             destination.",
            &["destination", "state"],
        )?;
        let awaiting_review = IntGauge::new(
            "plateqc_plates_awaiting_review",
            "This node's plates whose verdict waits for a person (needs_review, not decided \
             yet): no rejection note and nothing forwarded for them until then.",
        )?;
        registry.register(Box::new(awaiting_review.clone()))?;
        let destination_up = gauges(
            "plateqc_destination_up",
            "1 when the last contact with a forwarding destination worked, 0 when it failed.",
            &["destination"],
        )?;
        let forwarded = counters(
            "plateqc_forwarded_total",
            "Instances stored at a forwarding destination, by destination.",
            "destination",
        )?;
        let reject_rate = Gauge::new(
            "plateqc_reject_rate_percent",
            "This site's reject rate (effective verdicts) over the recent window of \
             plateqc_reject_images images.",
        )?;
        registry.register(Box::new(reject_rate.clone()))?;
        let reject_images = gauge(
            "plateqc_reject_images",
            "Images judged at this site in the recent window the reject rate is taken over.",
        )?;
        let reject_level = gauges(
            "plateqc_reject_level",
            "1 for the AAPM Report 151 level the recent reject rate is at (within, \
             investigate_high, investigate_low, too_few), 0 for the others.",
            &["level"],
        )?;
        let reject_bounds = GaugeVec::new(
            Opts::new(
                "plateqc_reject_level_percent",
                "The site's reject-rate target and investigation levels ([report]).",
            ),
            &["bound"],
        )?;
        registry.register(Box::new(reject_bounds.clone()))?;
        let plates_due = gauge(
            "plateqc_plates_due_for_replacement",
            "Phosphor plates whose recent scans show a wear artifact often enough to replace \
             them (the report's wear rule).",
        )?;
        // Every series a dashboard expects is there from the start, at zero.
        for v in Verdict::ALL {
            plates.with_label_values(&[v.as_str()]);
        }
        for o in ["accepted", "refused"] {
            associations.with_label_values(&[o]);
        }
        for r in ["stored", "refused", "echo"] {
            requests.with_label_values(&[r]);
        }
        for s in STAGES {
            stage_seconds.with_label_values(&[s]);
        }
        Ok(Metrics {
            registry,
            plates,
            failures,
            stage_seconds,
            in_flight_gauge,
            in_memory_gauge,
            associations,
            requests,
            outbox_items,
            awaiting_review,
            destination_up,
            forwarded,
            reject_rate,
            reject_images,
            reject_level,
            reject_bounds,
            plates_due,
            render_lock: Mutex::new(()),
            in_flight: AtomicU64::new(0),
            plates_in_memory: AtomicU64::new(0),
            scp: Arc::default(),
            forward: Arc::default(),
        })
    }

    /// The reject analysis of the recent window (written by the report's updater).
    pub fn set_reject_analysis(&self, g: &RejectGauges) {
        self.reject_rate.set(g.rate_pct);
        self.reject_images.set(g.images);
        for level in REJECT_LEVELS {
            self.reject_level
                .with_label_values(&[level])
                .set(i64::from(level == g.level));
        }
        for (bound, v) in [
            ("target", g.target_pct),
            ("investigate_above", g.investigate_above_pct),
            ("investigate_below", g.investigate_below_pct),
        ] {
            self.reject_bounds.with_label_values(&[bound]).set(v);
        }
        self.plates_due.set(g.plates_due);
    }

    pub fn observe(&self, r: &PlateRecord) {
        self.plates.with_label_values(&[r.verdict.as_str()]).inc();
        if r.verdict == Verdict::Error {
            let kind = r.error_kind.map_or("unknown", FailureKind::as_str);
            self.failures.with_label_values(&[kind]).inc();
        }
        for (stage, v) in STAGES
            .iter()
            .zip([r.decode_ms, r.infer_ms, r.explain_ms, r.total_ms])
        {
            if let Some(ms) = v {
                self.stage_seconds
                    .with_label_values(&[stage])
                    .observe(ms / 1000.0);
            }
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        {
            let _one_at_a_time = self.render_lock.lock();
            self.in_flight_gauge
                .set(self.in_flight.load(Relaxed) as i64);
            self.in_memory_gauge
                .set(self.plates_in_memory.load(Relaxed) as i64);
            let scp = &self.scp;
            let catch_up = |c: prometheus::IntCounter, now: &AtomicU64| {
                c.inc_by(now.load(Relaxed).saturating_sub(c.get()));
            };
            for (outcome, n) in [
                ("accepted", &scp.associations),
                ("refused", &scp.refused_associations),
            ] {
                catch_up(self.associations.with_label_values(&[outcome]), n);
            }
            for (result, n) in [
                ("stored", &scp.stored),
                ("refused", &scp.failed),
                ("echo", &scp.echoes),
            ] {
                catch_up(self.requests.with_label_values(&[result]), n);
            }
            self.awaiting_review.set(self.forward.awaiting_review());
            for (name, st) in self.forward.snapshot() {
                for (state, n) in [("pending", st.pending), ("failed", st.failed)] {
                    self.outbox_items.with_label_values(&[&name, state]).set(n);
                }
                if let Some(up) = st.up {
                    self.destination_up
                        .with_label_values(&[&name])
                        .set(i64::from(up));
                }
                let c = self.forwarded.with_label_values(&[&name]);
                c.inc_by(st.sent.saturating_sub(c.get()));
            }
        }
        let mut out = Vec::new();
        // Encoding text into memory fails only on metric families it did not make itself.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

type Response = hyper::Response<Full<Bytes>>;

fn respond(metrics: &Metrics, target: &str) -> Response {
    let (status, ctype, body) = match target {
        "/healthz" => (200, "text/plain", "ok\n".to_string()),
        "/metrics" => (200, prometheus::TEXT_FORMAT, metrics.render()),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("status and header are valid")
}

/// Serves `/healthz` and `/metrics` on `addr` until cancelled. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let mut backoff = crate::ingest::scp::AcceptBackoff::default();
        loop {
            let conn = tokio::select! {
                _ = cancel.cancelled() => break,
                c = listener.accept() => c,
            };
            let stream = match conn {
                Ok((stream, _)) => {
                    backoff.reset();
                    stream
                }
                Err(e) => {
                    // Out of file handles (EMFILE) the connection stays queued and accept fails
                    // again at once: without a pause this loop would spin on a core.
                    let pause = backoff.pause();
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "metrics accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let m = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let target = req.uri().path_and_query().map_or("", |p| p.as_str());
                    let reply = respond(&m, target);
                    async move { Ok::<_, std::convert::Infallible>(reply) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn exposition_counts_verdicts_failures_and_buckets() {
        let m = Metrics::default();
        m.observe(&PlateRecord {
            verdict: Verdict::Usable,
            decode_ms: Some(7.0),
            total_ms: Some(120.0),
            ..Default::default()
        });
        m.observe(&PlateRecord {
            verdict: Verdict::Error,
            error_kind: Some(FailureKind::NotDicom),
            ..Default::default()
        });
        m.scp.stored.fetch_add(2, Relaxed);
        m.in_flight.store(3, Relaxed);
        let text = m.render();
        assert!(
            text.contains("plateqc_plates_total{verdict=\"usable\"} 1"),
            "{text}"
        );
        assert!(text.contains("plateqc_plates_total{verdict=\"unusable\"} 0"));
        assert!(text.contains("plateqc_failures_total{kind=\"not_dicom\"} 1"));
        assert!(text.contains("plateqc_stage_seconds_bucket{stage=\"decode\",le=\"0.005\"} 0"));
        assert!(text.contains("plateqc_stage_seconds_bucket{stage=\"decode\",le=\"0.01\"} 1"));
        assert!(text.contains("plateqc_stage_seconds_bucket{stage=\"total\",le=\"+Inf\"} 1"));
        assert!(text.contains("plateqc_stage_seconds_count{stage=\"total\"} 1"));
        assert!(text.contains("plateqc_dicom_requests_total{result=\"stored\"} 2"));
        assert!(text.contains("plateqc_dicom_associations_total{outcome=\"refused\"} 0"));
        assert!(text.contains("plateqc_in_flight 3"));
        assert!(text.contains("# TYPE plateqc_stage_seconds histogram"));
        // Rendering again counts nothing twice.
        assert!(m
            .render()
            .contains("plateqc_dicom_requests_total{result=\"stored\"} 2"));
    }

    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoint_answers_health_and_metrics() {
        let m = Arc::new(Metrics::default());
        let cancel = CancellationToken::new();
        let addr = serve("127.0.0.1:0".parse().unwrap(), m, cancel.clone())
            .await
            .unwrap();
        for (path, want) in [
            ("/healthz", "200 OK"),
            ("/metrics", "plateqc_plates_total"),
            ("/metrics", "text/plain; version=0.0.4"),
            ("/nope", "404"),
        ] {
            let out = get(
                addr,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            )
            .await;
            assert!(out.contains(want), "{path}: {out}");
        }
        // A request head larger than the limit is refused, not read on and on.
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(2 * MAX_HEAD_BYTES)
        );
        let out = get(addr, huge.as_bytes()).await;
        assert!(!out.contains("plateqc_plates_total"), "{out}");
        cancel.cancel();
    }

    /// A client that connects and never sends its request is dropped after the header
    /// timeout, holding nothing.
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_the_header_timeout() {
        let cancel = CancellationToken::new();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::default()),
            cancel.clone(),
        )
        .await
        .unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            HEADER_TIMEOUT + Duration::from_secs(1),
            s.read_to_end(&mut buf),
        )
        .await;
        assert!(read.is_ok(), "still connected after the header timeout");
        cancel.cancel();
    }
}
