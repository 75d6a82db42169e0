//! `zfabric bench`: patterns × transports × sizes, zfabric against the
//! baselines doing the same work in the same run.
//!
//! Baselines: raw sockets of the `zeromq` crate for ipc/tcp, tokio
//! channels for inproc. Request patterns report round-trip percentiles
//! (HDR histogram) and throughput with 16 in flight; streams report
//! throughput and loss. `--remote` runs the serving side of request/reply
//! and push/pull in a second process. Built with the `libzmq` feature, it
//! also measures libzmq itself (the `zmq` crate) for request/reply,
//! push/pull and pub/sub over ipc/tcp.

mod baseline;
#[cfg(feature = "libzmq")]
mod libzmq;
mod measure;
mod plot;
mod remote;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use measure::{Budget, Stats};

use crate::app::{BoxError, UsageError};

const PATTERNS: [&str; 5] = ["pubsub", "pushpull", "reqrep", "anycast", "aggregator"];

/// Options of `zfabric bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// Patterns (comma separated).
    #[arg(long, value_delimiter = ',', value_parser = PATTERNS,
          default_values_t = PATTERNS.map(String::from))]
    patterns: Vec<String>,
    /// Transports (comma separated).
    #[arg(long, value_delimiter = ',', value_parser = ["inproc", "ipc", "tcp"],
          default_values_t = ["inproc", "ipc", "tcp"].map(String::from))]
    transports: Vec<String>,
    /// Message sizes in bytes (comma separated; default 64,1024; --quick: 64).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Seconds per latency or in-flight run (default 2; --quick: 0.25).
    #[arg(long)]
    seconds: Option<f64>,
    /// Messages per stream run (default 200000; --quick: 20000).
    #[arg(long)]
    messages: Option<u64>,
    /// A short run (within 60 s) for CI.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also draw the latency percentiles and throughput per size as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Run the serving side (request/reply, push/pull over ipc/tcp) in a
    /// second process.
    #[arg(long)]
    remote: bool,
    /// Peer mode (used by --remote).
    #[arg(long, hide = true)]
    peer: Option<String>,
    /// Peer mode: the endpoint to bind.
    #[arg(long, hide = true)]
    bind: Option<String>,
}

/// One cell: a pattern on a transport at a size.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    pub(crate) pattern: String,
    pub(crate) transport: String,
    pub(crate) size: usize,
    pub(crate) remote: bool,
    pub(crate) zfabric: Stats,
    pub(crate) baselines: Vec<Stats>,
    pub(crate) ratios: Vec<Ratio>,
}

/// zfabric divided by a baseline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratio {
    pub(crate) baseline: String,
    /// Throughput ratio (higher is better for zfabric).
    pub(crate) throughput: Option<f64>,
    /// p50 latency ratio (lower is better for zfabric).
    pub(crate) p50_latency: Option<f64>,
    /// p99 latency ratio.
    pub(crate) p99_latency: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    machine: Machine,
    quick: bool,
    remote: bool,
    seconds_per_run: f64,
    messages_per_stream: u64,
    cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize)]
struct Machine {
    cpus: usize,
    os: String,
    arch: String,
}

fn ratios(z: &Stats, baselines: &[Stats]) -> Vec<Ratio> {
    baselines
        .iter()
        .map(|b| Ratio {
            baseline: b.name.clone(),
            throughput: z.msgs_per_s.zip(b.msgs_per_s).map(|(z, b)| z / b.max(1e-9)),
            p50_latency: z
                .latency
                .as_ref()
                .zip(b.latency.as_ref())
                .map(|(z, b)| z.p50_us / b.p50_us.max(1e-9)),
            p99_latency: z
                .latency
                .as_ref()
                .zip(b.latency.as_ref())
                .map(|(z, b)| z.p99_us / b.p99_us.max(1e-9)),
        })
        .collect()
}

/// Runs `zfabric bench`.
pub(crate) async fn run(args: BenchArgs) -> Result<(), BoxError> {
    if let Some(kind) = &args.peer {
        return remote::peer(kind, args.bind.as_deref(), args.messages.unwrap_or(0)).await;
    }
    let sizes = if !args.sizes.is_empty() {
        args.sizes.clone()
    } else if args.quick {
        vec![64]
    } else {
        vec![64, 1024]
    };
    if sizes.iter().any(|&s| s == 0 || s > 4 << 20) {
        return Err(UsageError("--sizes: each between 1 byte and 4 MiB".into()).into());
    }
    let seconds = args.seconds.unwrap_or(if args.quick { 0.25 } else { 2.0 });
    if !(seconds > 0.0 && seconds <= 600.0) {
        return Err(UsageError("--seconds: between 0 and 600".into()).into());
    }
    let messages = args
        .messages
        .unwrap_or(if args.quick { 20_000 } else { 200_000 });
    let dir = std::env::temp_dir().join(format!("zfabric-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut plan = Vec::new();
    for p in &args.patterns {
        for t in &args.transports {
            for &s in &sizes {
                plan.push((p.clone(), t.clone(), s));
            }
        }
    }
    let mut cells = Vec::new();
    let total = plan.len();
    for (i, (pattern, tp, size)) in plan.into_iter().enumerate() {
        // Large messages: fewer of them, same bytes in flight.
        let budget = Budget {
            time: Duration::from_secs_f64(seconds),
            messages: if size > 1024 {
                (messages * 1024 / size as u64).max(1000)
            } else {
                messages
            },
        };
        eprintln!("[{:>2}/{total}] {pattern} {tp} {size} B", i + 1);
        let remote =
            args.remote && tp != "inproc" && (pattern == "reqrep" || pattern == "pushpull");
        let cell = if remote {
            remote::cell(&pattern, &tp, &dir, size, budget).await
        } else {
            cell(&pattern, &tp, &dir, size, budget).await
        };
        match cell {
            Ok((z, b)) => {
                let r = ratios(&z, &b);
                cells.push(Cell {
                    pattern,
                    transport: tp,
                    size,
                    remote,
                    zfabric: z,
                    baselines: b,
                    ratios: r,
                });
            }
            Err(e) => eprintln!("      {pattern} {tp} {size} B failed: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let report = Report {
        machine: Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
        },
        quick: args.quick,
        remote: args.remote,
        seconds_per_run: seconds,
        messages_per_stream: messages,
        cells,
    };
    if let Some(path) = &args.plot {
        plot::draw(path, &report.cells)?;
        eprintln!("plot written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Measures one cell in this process.
async fn cell(
    pattern: &str,
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    budget: Budget,
) -> Result<(Stats, Vec<Stats>), BoxError> {
    use baseline::*;
    use measure::*;
    let inproc = tp == "inproc";
    #[allow(unused_mut)]
    let mut extra: Vec<Stats> = Vec::new();
    #[cfg(feature = "libzmq")]
    if !inproc {
        let lz = match pattern {
            "reqrep" | "anycast" => Some(libzmq::reqrep(tp, dir, size, budget).await),
            "pushpull" => Some(libzmq::pushpull(tp, dir, size, budget.messages).await),
            "pubsub" => Some(libzmq::pubsub(tp, dir, size, budget.messages).await),
            _ => None,
        };
        match lz {
            Some(Ok(s)) => extra.push(s),
            Some(Err(e)) => eprintln!("      libzmq baseline failed: {e}"),
            None => {}
        }
    }
    Ok::<_, BoxError>(match pattern {
        "reqrep" => {
            let (ep, _server) = zf_echo_server(&endpoint(tp, dir, &format!("rr-{size}"))).await?;
            let z = zf_reqrep(&ep, size, budget).await?;
            (z, vec![round_trip_baseline(tp, dir, size, budget).await?])
        }
        "pushpull" => {
            let z = zf_pushpull(tp, dir, size, budget.messages).await?;
            let b = if inproc {
                tokio_stream(size, budget.messages).await?
            } else {
                raw_pushpull(tp, dir, size, budget.messages).await?
            };
            (z, vec![b])
        }
        "pubsub" => {
            let z = zf_pubsub(tp, dir, size, budget.messages).await?;
            let b = if inproc {
                tokio_broadcast(size, budget.messages).await?
            } else {
                raw_pubsub(tp, dir, size, budget.messages).await?
            };
            (z, vec![b])
        }
        "anycast" => {
            let z = zf_anycast(tp, dir, size, budget).await?;
            (z, vec![round_trip_baseline(tp, dir, size, budget).await?])
        }
        "aggregator" => {
            let z = zf_aggregator(tp, dir, size, budget).await?;
            let b = if inproc {
                tokio_reqrep(size, budget, 3).await?
            } else {
                raw_scatter(tp, dir, size, budget).await?
            };
            (z, vec![b])
        }
        other => return Err(format!("unknown pattern {other}").into()),
    })
    .map(|(z, mut b)| {
        b.extend(extra);
        (z, b)
    })
}

/// The request/reply baseline: a tokio echo for inproc, a raw zeromq
/// ROUTER echo for ipc/tcp.
async fn round_trip_baseline(
    tp: &str,
    dir: &std::path::Path,
    size: usize,
    budget: Budget,
) -> Result<Stats, BoxError> {
    if tp == "inproc" {
        return baseline::tokio_reqrep(size, budget, 1).await;
    }
    let tag = format!("raw-rr-{size}-{}", measure::random_tag());
    let (ep, task) = baseline::raw_echo_server(&measure::endpoint(tp, dir, &tag)).await?;
    let b = baseline::raw_reqrep(&ep, size, budget).await;
    task.abort();
    b
}

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1e6 => format!("{:.2}M/s", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k/s", v / 1e3),
        Some(v) => format!("{v:.0}/s"),
        None => "—".into(),
    }
}

fn fmt_us(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1000.0 => format!("{:.2}ms", v / 1000.0),
        Some(v) => format!("{v:.1}µs"),
        None => "—".into(),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "—".into())
}

fn print_table(r: &Report) {
    println!(
        "zfabric bench: {} cpus, {} {}; {} s per run, {} messages per stream{}{}",
        r.machine.cpus,
        r.machine.os,
        r.machine.arch,
        r.seconds_per_run,
        r.messages_per_stream,
        if r.quick { ", quick" } else { "" },
        if r.remote {
            ", serving side in a second process where marked R"
        } else {
            ""
        }
    );
    println!(
        "{:<11} {:<7} {:>6}  {:<8} {:>10} {:>10} {:>7}  {:>9} {:>9} {:>7}  {:>9} {:>9} {:>7}  {:>7} {:>9}",
        "pattern", "tp", "size", "baseline", "zf thr", "base thr", "thr×", "zf p50", "base p50", "p50×", "zf p99", "base p99", "p99×", "zf lost", "base lost"
    );
    for c in &r.cells {
        for (b, ratio) in c.baselines.iter().zip(&c.ratios) {
            let lat = |s: &Stats, f: fn(&measure::Latency) -> f64| s.latency.as_ref().map(f);
            println!(
                "{:<11} {:<7} {:>6}  {:<8} {:>10} {:>10} {:>7}  {:>9} {:>9} {:>7}  {:>9} {:>9} {:>7}  {:>7} {:>9}",
                format!("{}{}", c.pattern, if c.remote { " R" } else { "" }),
                c.transport,
                c.size,
                b.name,
                fmt_rate(c.zfabric.msgs_per_s),
                fmt_rate(b.msgs_per_s),
                fmt_ratio(ratio.throughput),
                fmt_us(lat(&c.zfabric, |l| l.p50_us)),
                fmt_us(lat(b, |l| l.p50_us)),
                fmt_ratio(ratio.p50_latency),
                fmt_us(lat(&c.zfabric, |l| l.p99_us)),
                fmt_us(lat(b, |l| l.p99_us)),
                fmt_ratio(ratio.p99_latency),
                c.zfabric.lost.map(|l| l.to_string()).unwrap_or_else(|| "—".into()),
                b.lost.map(|l| l.to_string()).unwrap_or_else(|| "—".into()),
            );
        }
    }
    println!("thr× = zfabric throughput / baseline (higher is better); p50×, p99× = zfabric latency / baseline (lower is better).");
}
