//! Counters and latency histograms of the pipeline, and a tiny loopback HTTP endpoint serving
//! `/healthz` and Prometheus `/metrics` for the daemon. Hand-written HTTP/1.1: two fixed GET
//! routes do not justify a web framework in a medical-site daemon's dependency tree.

use crate::outcome::{FailureKind, Verdict};
use crate::record::PlateRecord;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Upper bounds (ms) of the latency buckets: plates take tens to thousands of milliseconds.
const BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];
const STAGES: [&str; 4] = ["decode", "infer", "explain", "total"];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, ms: f64) {
        for (b, &le) in self.buckets.iter().zip(&BUCKETS_MS) {
            if ms <= le {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add((ms * 1000.0) as u64, Relaxed);
    }
}

/// Shared by the pipeline (writer) and the endpoint (reader).
#[derive(Default)]
pub struct Metrics {
    verdicts: [AtomicU64; 3],
    failures: Mutex<BTreeMap<String, u64>>,
    stages: [Histogram; 4],
    pub in_flight: AtomicU64,
    pub plates_in_memory: AtomicU64,
    pub scp: std::sync::Arc<crate::ingest::scp::ScpStats>,
}

impl Metrics {
    pub fn observe(&self, r: &PlateRecord) {
        let i = match r.verdict {
            Verdict::Usable => 0,
            Verdict::Unusable => 1,
            Verdict::Error => 2,
        };
        self.verdicts[i].fetch_add(1, Relaxed);
        if i == 2 {
            let kind = r
                .error_kind
                .map_or("unknown", FailureKind::as_str)
                .to_string();
            if let Ok(mut f) = self.failures.lock() {
                *f.entry(kind).or_default() += 1;
            }
        }
        for (h, v) in self
            .stages
            .iter()
            .zip([r.decode_ms, r.infer_ms, r.explain_ms, r.total_ms])
        {
            if let Some(ms) = v {
                h.observe(ms);
            }
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut o = String::new();
        o.push_str("# HELP plateqc_plates_total Plates recorded, by verdict.\n# TYPE plateqc_plates_total counter\n");
        for (name, c) in ["usable", "unusable", "error"].iter().zip(&self.verdicts) {
            let _ = writeln!(
                o,
                "plateqc_plates_total{{verdict=\"{name}\"}} {}",
                c.load(Relaxed)
            );
        }
        o.push_str("# HELP plateqc_failures_total Plates that could not be judged, by failure kind.\n# TYPE plateqc_failures_total counter\n");
        if let Ok(f) = self.failures.lock() {
            for (kind, n) in f.iter() {
                let _ = writeln!(o, "plateqc_failures_total{{kind=\"{kind}\"}} {n}");
            }
        }
        o.push_str("# HELP plateqc_in_flight Files taken from the inbox and not yet finished.\n# TYPE plateqc_in_flight gauge\n");
        let _ = writeln!(o, "plateqc_in_flight {}", self.in_flight.load(Relaxed));
        o.push_str("# HELP plateqc_plates_in_memory Plates whose pixels are held in memory.\n# TYPE plateqc_plates_in_memory gauge\n");
        let _ = writeln!(
            o,
            "plateqc_plates_in_memory {}",
            self.plates_in_memory.load(Relaxed)
        );
        let scp = &self.scp;
        o.push_str("# HELP plateqc_dicom_associations_total DICOM associations, by outcome.\n# TYPE plateqc_dicom_associations_total counter\n");
        for (outcome, c) in [
            ("accepted", &scp.associations),
            ("refused", &scp.refused_associations),
        ] {
            let _ = writeln!(
                o,
                "plateqc_dicom_associations_total{{outcome=\"{outcome}\"}} {}",
                c.load(Relaxed)
            );
        }
        o.push_str("# HELP plateqc_dicom_requests_total DICOM requests received, by result.\n# TYPE plateqc_dicom_requests_total counter\n");
        for (result, c) in [
            ("stored", &scp.stored),
            ("refused", &scp.failed),
            ("echo", &scp.echoes),
        ] {
            let _ = writeln!(
                o,
                "plateqc_dicom_requests_total{{result=\"{result}\"}} {}",
                c.load(Relaxed)
            );
        }
        o.push_str("# HELP plateqc_stage_seconds Time per plate in each pipeline stage.\n# TYPE plateqc_stage_seconds histogram\n");
        for (stage, h) in STAGES.iter().zip(&self.stages) {
            for (b, le) in h.buckets.iter().zip(BUCKETS_MS) {
                let _ = writeln!(
                    o,
                    "plateqc_stage_seconds_bucket{{stage=\"{stage}\",le=\"{}\"}} {}",
                    le / 1000.0,
                    b.load(Relaxed)
                );
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(
                o,
                "plateqc_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                o,
                "plateqc_stage_seconds_sum{{stage=\"{stage}\"}} {}",
                h.sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                o,
                "plateqc_stage_seconds_count{{stage=\"{stage}\"}} {count}"
            );
        }
        o
    }
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
        loop {
            let conn = tokio::select! {
                _ = cancel.cancelled() => break,
                c = listener.accept() => c,
            };
            let Ok((mut stream, _)) = conn else { continue };
            let m = metrics.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let read =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                let Ok(Ok(n)) = read else { return };
                let head = String::from_utf8_lossy(&buf[..n]);
                let target = head
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("");
                let (status, ctype, body) = match target {
                    "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", m.render()),
                    _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = m.render();
        assert!(
            text.contains("plateqc_plates_total{verdict=\"usable\"} 1"),
            "{text}"
        );
        assert!(text.contains("plateqc_failures_total{kind=\"not_dicom\"} 1"));
        assert!(text.contains("plateqc_stage_seconds_bucket{stage=\"decode\",le=\"0.005\"} 0"));
        assert!(text.contains("plateqc_stage_seconds_bucket{stage=\"decode\",le=\"0.01\"} 1"));
        assert!(text.contains("plateqc_stage_seconds_count{stage=\"total\"} 1"));
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
            ("/nope", "404"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.contains(want), "{path}: {out}");
        }
        cancel.cancel();
    }
}
