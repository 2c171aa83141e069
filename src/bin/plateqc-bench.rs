//! Throughput benchmark of the scan pipeline on a folder of plates.
//!
//! Machines here are noisy, so every figure is reported next to a baseline measured in the same
//! process: the decode-only pass (read + decode + preprocess) is the baseline, and the full
//! pipeline with and without overlays is expressed against it, as is the pipeline decoding in
//! this process instead of in decode workers (the isolation's cost). Run: `make bench` or
//! `cargo run --release --bin plateqc-bench -- DIR [--rounds N] [--repeat K] [--modalities any]
//! [--compare-model M.onnx]`. With `--compare-model`, every round also runs the full pipeline with
//! that contract model (a clinic's own, or an older release) right after the bundled one, so the
//! two are compared under the same load.

use plateqc::config::Config;
use plateqc::decode::{self, preprocess};
use plateqc::pipeline::{self, Engine};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: plateqc-bench DIR [--rounds N] [--repeat K] [--peer PLATES] \
     [--modalities any] [--compare-model M.onnx]";

struct Args {
    dir: PathBuf,
    rounds: usize,
    any_modality: bool,
    compare_model: Option<PathBuf>,
    repeat: usize,
    peer: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut dir = None;
    let mut rounds = 3;
    let mut any_modality = false;
    let mut compare_model = None;
    let mut repeat = 1;
    let mut peer = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--rounds takes a number")?
            }
            "--repeat" => {
                repeat = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--repeat takes a number")?
            }
            "--peer" => {
                peer = Some(PathBuf::from(
                    it.next().ok_or("--peer takes a folder of plates")?,
                ))
            }
            "--modalities" => any_modality = it.next().as_deref() == Some("any"),
            "--compare-model" => {
                compare_model = Some(PathBuf::from(
                    it.next().ok_or("--compare-model takes an ONNX file")?,
                ))
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}\n{USAGE}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    Ok(Args {
        dir: dir.ok_or(USAGE)?,
        rounds: rounds.max(1),
        any_modality,
        compare_model,
        repeat: repeat.max(1),
        peer,
    })
}

fn main() {
    plateqc::cli::prepare_process();
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("plateqc-bench: {e}");
        std::process::exit(1);
    }
}

/// One full pipeline run over the set: its outcomes and plates per second.
async fn timed_run(
    engine: Arc<Engine>,
    files: &[PathBuf],
) -> Result<(Vec<pipeline::Outcome>, f64), pipeline::PipelineError> {
    let t = Instant::now();
    let outcomes = pipeline::run(
        engine,
        files.to_vec(),
        Arc::new(()),
        CancellationToken::new(),
    )
    .await?;
    let rate = outcomes.len() as f64 / t.elapsed().as_secs_f64();
    Ok((outcomes, rate))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let files = plateqc::ingest::collect_files(std::slice::from_ref(&args.dir));
    if files.is_empty() {
        return Err(format!("no files under {}", args.dir.display()).into());
    }
    // Each run takes the set `repeat` times over: a run of a small set lasts a fraction of a
    // second, which a busy machine's noise swamps.
    let distinct = files.len();
    let files: Vec<PathBuf> = (0..args.repeat)
        .flat_map(|_| files.iter().cloned())
        .collect();
    let tmp = std::env::temp_dir().join(format!("plateqc-bench-{}", std::process::id()));
    let mut config = Config::default();
    if args.any_modality {
        config.decode.modalities = Vec::new();
    }
    config.paths.db = tmp.join("bench.sqlite");
    config.paths.out = tmp.join("out");

    let cold_start = Instant::now();
    let engine = Arc::new(Engine::start(config.clone()).await?);
    let model_load_s = cold_start.elapsed().as_secs_f64();
    let input = engine.model().contract.input();
    let compare = match &args.compare_model {
        Some(path) => {
            let mut c = config.clone();
            c.paths.model = path.clone();
            c.paths.db = tmp.join("bench-compare.sqlite");
            c.paths.out = tmp.join("out-compare");
            Some(Arc::new(Engine::start(c).await?))
        }
        None => None,
    };

    // Megapixels and bit depth of the set, so figures can be compared across sets.
    let mut mpx = 0.0;
    let mut bits = std::collections::BTreeMap::new();
    for f in files.iter().take(distinct) {
        if let Ok(h) = decode::decode_header(&std::fs::read(f)?, &config.decode) {
            mpx += (h.rows as f64 * h.columns as f64) / 1e6;
            *bits.entry(h.bits_stored).or_insert(0) += 1;
        }
    }
    println!(
        "set: {} files (x{} per run), mean {:.2} Mpx, bits stored {:?}; model load {:.2} s; {} cores",
        distinct,
        args.repeat,
        mpx / distinct as f64,
        bits,
        model_load_s,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Every variant's engine is started once, before the rounds, so that no round pays a
    // start (model session, decode workers) the others do not; round 1 is the cold one for all.
    let variant = |isolate: bool, overlays: bool, name: &str| {
        let mut c = config.clone();
        c.decode.isolate = isolate;
        c.explain.write_overlays = overlays;
        c.paths.db = tmp.join(format!("bench-{name}.sqlite"));
        c.paths.out = tmp.join(format!("out-{name}"));
        c
    };
    let verdicts_engine = Arc::new(Engine::start(variant(true, false, "verdicts")).await?);
    let inproc_full = Arc::new(Engine::start(variant(false, true, "inproc-full")).await?);
    let inproc_verdicts = Arc::new(Engine::start(variant(false, false, "inproc-verdicts")).await?);

    let mut decode_rates = Vec::new();
    let mut worker_decode_rates = Vec::new();
    let pool = decode::worker::DecodePool::new(
        decode::worker::default_program(),
        decode::worker::WorkerLimits::of(&config.decode),
    );
    pool.warm(config.scan.decode_workers.max(1));
    let want = decode::Want {
        input,
        display: false,
    };
    let mut full_rates = Vec::new();
    let mut verdict_rates = Vec::new();
    let mut compare_rates = Vec::new();
    let mut inproc_full_rates = Vec::new();
    let mut inproc_verdict_rates = Vec::new();
    let mut first_full = None;
    for round in 0..args.rounds {
        // Baseline: decode + preprocess only, same worker count as the pipeline.
        let workers = config.scan.decode_workers.max(1);
        let policy = config.decode.clone();
        let rate = rate_across(&files, workers, |bytes| {
            if let Ok(p) = decode::decode(&bytes, &policy) {
                std::hint::black_box(preprocess::preprocess(&p, input));
            }
        });
        decode_rates.push(rate);

        // The same in the decode worker processes (file bytes in, tensor out): the exchange's
        // own cost, without the rest of the pipeline around it.
        let rate = rate_across(&files, workers, |bytes| {
            let _ = std::hint::black_box(pool.decode(&bytes, &policy, want));
        });
        worker_decode_rates.push(rate);

        // Full pipeline with overlays and montage.
        let (outcomes, rate) = timed_run(engine.clone(), &files).await?;
        full_rates.push(rate);
        if round == 0 {
            first_full = Some(rate);
            let stage = |f: fn(&plateqc::record::PlateRecord) -> Option<f64>| {
                let v: Vec<f64> = outcomes.iter().filter_map(|o| f(&o.record)).collect();
                if v.is_empty() {
                    0.0
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            println!(
                "per plate (mean ms, round 1): decode+preprocess {:.1}, infer {:.1}, explain+overlays {:.1}, total latency {:.1}",
                stage(|r| r.decode_ms),
                stage(|r| r.infer_ms),
                stage(|r| r.explain_ms),
                stage(|r| r.total_ms)
            );
        }

        if let Some(other) = &compare {
            compare_rates.push(timed_run(other.clone(), &files).await?.1);
        }

        // Verdicts only (no overlay PNGs): what the explain stage costs.
        verdict_rates.push(timed_run(verdicts_engine.clone(), &files).await?.1);

        // The same two runs decoding in this process (`decode.isolate = false`): what the
        // decode worker processes cost.
        inproc_full_rates.push(timed_run(inproc_full.clone(), &files).await?.1);
        inproc_verdict_rates.push(timed_run(inproc_verdicts.clone(), &files).await?.1);
    }
    let base = median(decode_rates.clone());
    let full = median(full_rates.clone());
    let verdicts = median(verdict_rates.clone());
    println!("rounds: {}", args.rounds);
    println!("baseline decode+preprocess : {base:7.1} plates/s");
    let in_workers = median(worker_decode_rates);
    println!(
        "  the same in decode workers: {in_workers:7.1} plates/s  = {:.2} x baseline",
        in_workers / base
    );
    println!(
        "full pipeline (overlays)   : {full:7.1} plates/s  = {:.2} x baseline",
        full / base
    );
    println!(
        "verdicts only (no PNGs)    : {verdicts:7.1} plates/s  = {:.2} x baseline",
        verdicts / base
    );
    let (in_full, in_verdicts) = (median(inproc_full_rates), median(inproc_verdict_rates));
    println!(
        "decode isolation           : full {:.2} x in-process ({in_full:.1} plates/s, cost {:.1} %), verdicts only {:.2} x ({in_verdicts:.1} plates/s, cost {:.1} %)",
        full / in_full,
        100.0 * (1.0 - full / in_full),
        verdicts / in_verdicts,
        100.0 * (1.0 - verdicts / in_verdicts)
    );
    if let (Some(path), false) = (&args.compare_model, compare_rates.is_empty()) {
        let other = median(compare_rates);
        println!(
            "compare model (overlays)   : {other:7.1} plates/s  = {:.2} x baseline = {:.2} x bundled model ({})",
            other / base,
            other / full,
            path.display()
        );
    }
    if let Some(cold) = first_full {
        println!(
            "cold first round (full)    : {cold:7.1} plates/s  = {:.2} x warm median",
            cold / full
        );
    }
    if let Some(dir) = &args.peer {
        whole_processes(dir, args.rounds, &tmp)?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Files per second when `workers` threads share `files` (every `workers`-th file each) and
/// run `work` on each file's bytes.
fn rate_across(files: &[PathBuf], workers: usize, work: impl Fn(Vec<u8>) + Sync) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let work = &work;
            s.spawn(move || {
                for f in files.iter().skip(w).step_by(workers) {
                    if let Ok(bytes) = std::fs::read(f) {
                        work(bytes);
                    }
                }
            });
        }
    });
    files.len() as f64 / t.elapsed().as_secs_f64()
}

/// Wall time and peak memory of one whole process (and every process it starts).
struct ProcessRun {
    seconds: f64,
    /// Peak of the summed resident memory of the process tree, sampled every 10 ms (0 when
    /// not sampled).
    peak_tree_rss_mb: f64,
    /// Peak of the summed proportional set size: pages shared between the processes (the
    /// decode workers run plateqc's own binary) counted once, as the machine pays for them.
    peak_tree_pss_mb: f64,
}

/// Runs `cmd` to its end, sampling its process tree's memory if asked. Sampling walks each
/// process's page tables (`smaps_rollup`) a hundred times a second, on the same cores and
/// under the process's memory-map lock, and slows the two pipelines by different amounts (on
/// 30 demo plates the Python peer by about a quarter, plateqc by under a tenth), so times are
/// taken from runs without it.
fn measure_process(
    cmd: &mut std::process::Command,
    sample_memory: bool,
) -> std::io::Result<ProcessRun> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let (mut rss, mut pss) = (0u64, 0u64);
    if sample_memory {
        loop {
            let (r, p) = tree_memory_kb(child.id());
            (rss, pss) = (rss.max(r), pss.max(p));
            if child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    } else {
        child.wait()?;
    }
    Ok(ProcessRun {
        seconds: t.elapsed().as_secs_f64(),
        peak_tree_rss_mb: rss as f64 / 1024.0,
        peak_tree_pss_mb: pss as f64 / 1024.0,
    })
}

/// Resident and proportional memory (kB) of `pid` and all its descendants, from /proc.
fn tree_memory_kb(pid: u32) -> (u64, u64) {
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let (mut rss, mut pss) = (field(&rollup, "Rss:"), field(&rollup, "Pss:"));
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    for c in children {
        let (r, p) = tree_memory_kb(c);
        rss += r;
        pss += p;
    }
    (rss, pss)
}

/// `plateqc scan` against the plain Python pipeline (`scripts/bench_peer.py`) on the same
/// plates, each as a whole process from start to exit, alternating, `rounds` times each.
fn whole_processes(
    dir: &std::path::Path,
    rounds: usize,
    tmp: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let python = PathBuf::from(".venv-test/bin/python");
    let peer = PathBuf::from("scripts/bench_peer.py");
    if !python.exists() || !peer.exists() {
        println!(
            "python peer: skipped ({} or {} missing; run from the repository after `make setup`)",
            python.display(),
            peer.display()
        );
        return Ok(());
    }
    let n = plateqc::ingest::collect_files(&[dir.to_path_buf()]).len();
    let scan = |out: &std::path::Path| {
        let mut c = std::process::Command::new(decode::worker::default_program());
        c.arg("scan")
            .arg(dir)
            .arg("--db")
            .arg(out.join("plateqc.sqlite"))
            .arg("--out")
            .arg(out.join("plateqc"))
            .arg("--no-fail-on-error");
        c
    };
    let py = |out: &std::path::Path| {
        let mut c = std::process::Command::new(&python);
        c.arg(&peer)
            .arg(dir)
            .arg("--db")
            .arg(out.join("peer.sqlite"))
            .arg("--out")
            .arg(out.join("peer"));
        c
    };
    // Each round times both unobserved, then runs both again with their memory sampled.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut ours_mem, mut theirs_mem) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let out = tmp.join(format!("whole-{round}"));
        let mem = tmp.join(format!("whole-{round}-memory"));
        ours.push(measure_process(&mut scan(&out), false)?);
        theirs.push(measure_process(&mut py(&out), false)?);
        ours_mem.push(measure_process(&mut scan(&mem), true)?);
        theirs_mem.push(measure_process(&mut py(&mem), true)?);
    }
    let secs = |v: &[ProcessRun]| median(v.iter().map(|r| r.seconds).collect());
    let rss = |v: &[ProcessRun]| v.iter().map(|r| r.peak_tree_rss_mb).fold(0.0, f64::max);
    let pss = |v: &[ProcessRun]| v.iter().map(|r| r.peak_tree_pss_mb).fold(0.0, f64::max);
    let (a, b) = (secs(&ours), secs(&theirs));
    println!(
        "whole process, {n} plates of {} (median of {rounds}; memory from runs of their own):",
        dir.display()
    );
    println!(
        "  plateqc scan             : {a:6.2} s = {:5.1} plates/s, peak RSS {:6.1} MB, PSS {:6.1} MB (with its decode workers)",
        n as f64 / a,
        rss(&ours_mem),
        pss(&ours_mem)
    );
    println!(
        "  python peer              : {b:6.2} s = {:5.1} plates/s, peak RSS {:6.1} MB, PSS {:6.1} MB",
        n as f64 / b,
        rss(&theirs_mem),
        pss(&theirs_mem)
    );
    println!(
        "  plateqc / python peer    : {:.2} x faster, {:.2} x the memory (RSS), {:.2} x (PSS)",
        b / a,
        rss(&ours_mem) / rss(&theirs_mem),
        pss(&ours_mem) / pss(&theirs_mem)
    );
    let (am, bm) = (secs(&ours_mem), secs(&theirs_mem));
    println!(
        "  while memory was sampled : plateqc {am:.2} s, peer {bm:.2} s ({:.2} x)",
        bm / am
    );
    Ok(())
}
