//! `zfabric bench`: patterns × transports × sizes, zfabric against the
//! baselines doing the same work in the same run.
//!
//! Baselines: raw sockets of the `zeromq` crate for ipc/tcp, tokio
//! channels for inproc. Request patterns report round-trip percentiles
//! (HDR histogram) and throughput with 16 in flight; streams report
//! throughput and loss. `--remote` runs the serving side of request/reply
//! and push/pull in a second process. Built with the `libzmq` feature, it
//! also measures libzmq itself (the `zmq` crate) for request/reply,
//! push/pull and pub/sub over ipc/tcp (pub/sub configured lossless).
//! Built with the `peers` feature, it also measures NATS core ([`nats`]:
//! request/reply, anycast as a queue group, pub/sub, through a
//! `nats-server` it starts on loopback and stops at the end) and Zenoh
//! ([`zenoh`]: get/queryable, put/subscribe with congestion control
//! `Block` and `Drop`, two peer sessions on loopback TCP) on tcp cells;
//! where `nats-server` is not on PATH the NATS sides are skipped, and the
//! report says so (`skipped`).
//!
//! Each cell runs in `--rounds` rounds (default 3, `--quick` 2); a round
//! runs zfabric and each baseline once, in an order rotated from round to
//! round ([`rounds::order`]). The report gives, per cell, each side's
//! median figures, each ratio as the median of the per-round ratios with
//! its min–max, an `unstable` mark when a spread is wide
//! ([`rounds::UNSTABLE_SPREAD`]), and every round's raw figures (`runs`
//! in `--json`). Streams report sent, delivered and lost for every side.
//!
//! Guarantees: a ratio only ever divides figures of the same round. Does
//! not: assert speed (tests check the structure, never the figures).

mod baseline;
#[cfg(feature = "libzmq")]
mod libzmq;
mod measure;
#[cfg(feature = "peers")]
mod nats;
mod plot;
mod remote;
mod rounds;
mod table;
#[cfg(feature = "peers")]
mod zenoh;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use measure::{Budget, Stats};
use rounds::Ratio;

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
    /// Rounds per cell; each round runs zfabric and every baseline once,
    /// in an order rotated from round to round (default 3; --quick: 2).
    #[arg(long)]
    rounds: Option<usize>,
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
    /// Measure CURVE's cost: request/reply and push/pull on ipc/tcp,
    /// zfabric with CURVE against the same zfabric with NULL, in
    /// interleaved rounds; the ratios are CURVE / NULL.
    #[arg(long, conflicts_with = "remote")]
    curve: bool,
    /// Peer mode (used by --remote).
    #[arg(long, hide = true)]
    peer: Option<String>,
    /// Peer mode: the endpoint to bind.
    #[arg(long, hide = true)]
    bind: Option<String>,
}

/// One cell: a pattern on a transport at a size, over its rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    pub(crate) pattern: String,
    pub(crate) transport: String,
    pub(crate) size: usize,
    pub(crate) remote: bool,
    /// Rounds measured.
    pub(crate) rounds: usize,
    /// Some ratio's spread over the rounds is above
    /// [`rounds::UNSTABLE_SPREAD`].
    pub(crate) unstable: bool,
    /// zfabric's figures: the median of each over the rounds.
    pub(crate) zfabric: Stats,
    /// Each baseline's figures: the median of each over the rounds.
    pub(crate) baselines: Vec<Stats>,
    /// zfabric / each baseline (same order as `baselines`).
    pub(crate) ratios: Vec<Ratio>,
    /// The raw figures of each round.
    pub(crate) runs: Vec<Run>,
}

/// One round of a cell: every side once, in `order`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run {
    /// From 1.
    pub(crate) round: usize,
    /// The names of the sides in the order they ran.
    pub(crate) order: Vec<String>,
    pub(crate) zfabric: Stats,
    pub(crate) baselines: Vec<Stats>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) quick: bool,
    pub(crate) remote: bool,
    /// CURVE against NULL (`--curve`).
    pub(crate) curve: bool,
    pub(crate) rounds: usize,
    /// The spread ([`rounds::Spread::relative`]) above which a ratio is
    /// unstable.
    pub(crate) unstable_spread: f64,
    pub(crate) seconds_per_run: f64,
    pub(crate) messages_per_stream: u64,
    /// Baselines left out of the whole run, each with why (e.g. NATS
    /// where `nats-server` is not on PATH).
    pub(crate) skipped: Vec<String>,
    pub(crate) cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) os: String,
    pub(crate) arch: String,
}

/// Who runs in a cell: zfabric, its first baseline (tokio channels for
/// inproc, raw `zeromq` sockets for ipc/tcp), libzmq where built in, and
/// NATS and Zenoh where built in (`peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Zfabric,
    /// zfabric with CURVE on every connection (`--curve`).
    Curve,
    Baseline,
    #[cfg(feature = "libzmq")]
    Libzmq,
    /// NATS core through the run's `nats-server`.
    #[cfg(feature = "peers")]
    Nats,
    /// Zenoh peers; pub/sub with congestion control `Block`.
    #[cfg(feature = "peers")]
    Zenoh,
    /// Zenoh pub/sub with congestion control `Drop`.
    #[cfg(feature = "peers")]
    ZenohDrop,
}

impl Side {
    /// A side that may fail without failing its cell: it is left out of
    /// the cell instead, and the run says so.
    fn optional(self) -> bool {
        !matches!(self, Side::Zfabric | Side::Curve | Side::Baseline)
    }

    /// The side's name in messages.
    fn label(self) -> &'static str {
        match self {
            Side::Zfabric => "zfabric",
            Side::Curve => "zfabric+curve",
            Side::Baseline => "zeromq",
            #[cfg(feature = "libzmq")]
            Side::Libzmq => "libzmq",
            #[cfg(feature = "peers")]
            Side::Nats => "nats",
            #[cfg(feature = "peers")]
            Side::Zenoh => "zenoh",
            #[cfg(feature = "peers")]
            Side::ZenohDrop => "zenoh-drop",
        }
    }
}

/// The patterns with a NATS side.
#[cfg(feature = "peers")]
const NATS_PATTERNS: [&str; 3] = ["reqrep", "anycast", "pubsub"];

/// Whether a cell has peer sides (NATS, Zenoh): tcp, in this process.
#[cfg(feature = "peers")]
fn peer_cell(tp: &str, remote: bool, curve: bool) -> bool {
    tp == "tcp" && !remote && !curve
}

/// The sides of a cell, zfabric first. `nats`: the run has a NATS server.
fn sides(pattern: &str, tp: &str, remote: bool, curve: bool, nats: bool) -> Vec<Side> {
    if curve {
        // CURVE first: its figures are the "zf" column, NULL the baseline.
        return vec![Side::Curve, Side::Zfabric];
    }
    #[allow(unused_mut)]
    let mut v = vec![Side::Zfabric, Side::Baseline];
    #[cfg(feature = "libzmq")]
    if !remote && tp != "inproc" && pattern != "aggregator" {
        v.push(Side::Libzmq);
    }
    #[cfg(feature = "peers")]
    if peer_cell(tp, remote, curve) {
        if nats && NATS_PATTERNS.contains(&pattern) {
            v.push(Side::Nats);
        }
        if pattern == "reqrep" || pattern == "pubsub" {
            v.push(Side::Zenoh);
        }
        if pattern == "pubsub" {
            v.push(Side::ZenohDrop);
        }
    }
    let _ = (pattern, tp, remote, nats);
    v
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
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 3 });
    if !(1..=100).contains(&rounds) {
        return Err(UsageError("--rounds: between 1 and 100".into()).into());
    }
    let messages = args
        .messages
        .unwrap_or(if args.quick { 20_000 } else { 200_000 });
    let dir = std::env::temp_dir().join(format!("zfabric-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut plan = Vec::new();
    for p in &args.patterns {
        if args.curve && p != "reqrep" && p != "pushpull" {
            continue;
        }
        for t in &args.transports {
            if args.curve && t == "inproc" {
                continue; // never encrypted
            }
            for &s in &sizes {
                plan.push((p.clone(), t.clone(), s));
            }
        }
    }
    #[allow(unused_mut)]
    let mut skipped = Vec::new();
    // The run's nats-server, killed and reaped when this drops (at the
    // end, on an error or a panic).
    #[cfg(feature = "peers")]
    let nats_server = {
        let wanted = plan.iter().any(|(p, t, _)| {
            let remote = args.remote && (p == "reqrep" || p == "pushpull");
            peer_cell(t, remote, args.curve) && NATS_PATTERNS.contains(&p.as_str())
        });
        if !wanted {
            None
        } else {
            match nats::NatsServer::start() {
                Ok(s) => {
                    eprintln!("nats-server listening at {}", s.url());
                    Some(s)
                }
                Err(why) => {
                    let m = nats::skip_message(&why);
                    eprintln!("{m}");
                    skipped.push(m);
                    None
                }
            }
        }
    };
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
        let spec = CellSpec {
            pattern: &pattern,
            tp: &tp,
            dir: &dir,
            size,
            budget,
            remote,
            curve: args.curve,
            #[cfg(feature = "peers")]
            nats: nats_server.as_ref().map(|s| s.url()),
        };
        match measure_cell(spec, rounds).await {
            Ok(c) => cells.push(c),
            Err(e) => eprintln!("      {pattern} {tp} {size} B failed: {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    #[cfg(feature = "peers")]
    drop(nats_server);
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
        curve: args.curve,
        rounds,
        unstable_spread: rounds::UNSTABLE_SPREAD,
        seconds_per_run: seconds,
        messages_per_stream: messages,
        skipped,
        cells,
    };
    if let Some(path) = &args.plot {
        plot::draw(path, &report.cells)?;
        eprintln!("plot written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        table::print(&report);
    }
    Ok(())
}

/// What a cell measures.
#[derive(Debug, Clone, Copy)]
struct CellSpec<'a> {
    pattern: &'a str,
    tp: &'a str,
    dir: &'a std::path::Path,
    size: usize,
    budget: Budget,
    /// The serving side runs in a second process.
    remote: bool,
    /// CURVE against NULL (`--curve`).
    curve: bool,
    /// The run's NATS server (`nats://…`), when it has one.
    #[cfg(feature = "peers")]
    nats: Option<&'a str>,
}

/// Measures a cell in `rounds` rounds, each running every side once in
/// the order [`rounds::order`] gives, and folds them into medians and
/// ratios. An optional side ([`Side::optional`]: libzmq, NATS, Zenoh)
/// that fails is left out of the cell (and said so); any other failure
/// fails the cell.
async fn measure_cell(spec: CellSpec<'_>, rounds: usize) -> Result<Cell, BoxError> {
    #[cfg(feature = "peers")]
    let nats = spec.nats.is_some();
    #[cfg(not(feature = "peers"))]
    let nats = false;
    let sides = sides(spec.pattern, spec.tp, spec.remote, spec.curve, nats);
    let mut figures: Vec<Vec<Stats>> = vec![Vec::new(); sides.len()];
    #[allow(unused_mut)]
    let mut alive = vec![true; sides.len()];
    for round in 0..rounds {
        for i in rounds::order(sides.len(), round) {
            if !alive[i] {
                continue;
            }
            match side(sides[i], spec).await {
                Ok(s) => figures[i].push(s),
                Err(e) if sides[i].optional() => {
                    eprintln!("      {} baseline failed, left out: {e}", sides[i].label());
                    alive[i] = false;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let runs: Vec<Run> = (0..rounds)
        .map(|r| Run {
            round: r + 1,
            order: rounds::order(sides.len(), r)
                .into_iter()
                .filter(|&i| alive[i])
                .map(|i| figures[i][r].name.clone())
                .collect(),
            zfabric: figures[0][r].clone(),
            baselines: (1..sides.len())
                .filter(|&i| alive[i])
                .map(|i| figures[i][r].clone())
                .collect(),
        })
        .collect();
    let z = &figures[0];
    let kept: Vec<&Vec<Stats>> = (1..sides.len())
        .filter(|&i| alive[i])
        .map(|i| &figures[i])
        .collect();
    let ratios: Vec<Ratio> = kept.iter().map(|b| rounds::ratio(z, b)).collect();
    Ok(Cell {
        pattern: spec.pattern.into(),
        transport: spec.tp.into(),
        size: spec.size,
        remote: spec.remote,
        rounds,
        unstable: ratios.iter().any(|r| r.unstable),
        zfabric: rounds::summary(z),
        baselines: kept.iter().map(|b| rounds::summary(b)).collect(),
        ratios,
        runs,
    })
}

/// Measures one side of a cell once.
async fn side(side: Side, spec: CellSpec<'_>) -> Result<Stats, BoxError> {
    use baseline::*;
    use measure::*;
    let CellSpec {
        pattern,
        tp,
        dir,
        size,
        budget,
        remote,
        curve: _,
        #[cfg(feature = "peers")]
        nats,
    } = spec;
    if remote {
        return remote::side(side == Side::Zfabric, pattern, tp, dir, size, budget).await;
    }
    let inproc = tp == "inproc";
    match (side, pattern) {
        #[cfg(feature = "libzmq")]
        (Side::Libzmq, "reqrep" | "anycast") => libzmq::reqrep(tp, dir, size, budget).await,
        #[cfg(feature = "libzmq")]
        (Side::Libzmq, "pushpull") => libzmq::pushpull(tp, dir, size, budget.messages).await,
        #[cfg(feature = "libzmq")]
        (Side::Libzmq, "pubsub") => libzmq::pubsub(tp, dir, size, budget.messages).await,
        #[cfg(feature = "peers")]
        (Side::Nats, "reqrep") => nats::reqrep(nats_url(nats)?, size, budget).await,
        #[cfg(feature = "peers")]
        (Side::Nats, "anycast") => nats::anycast(nats_url(nats)?, size, budget).await,
        #[cfg(feature = "peers")]
        (Side::Nats, "pubsub") => nats::pubsub(nats_url(nats)?, size, budget.messages).await,
        #[cfg(feature = "peers")]
        (Side::Zenoh, "reqrep") => zenoh::reqrep(size, budget).await,
        #[cfg(feature = "peers")]
        (Side::Zenoh, "pubsub") => zenoh::pubsub_block(size, budget.messages).await,
        #[cfg(feature = "peers")]
        (Side::ZenohDrop, "pubsub") => zenoh::pubsub_drop(size, budget.messages).await,
        (Side::Zfabric, "reqrep") => {
            let (ep, _server) = zf_echo_server(&endpoint(tp, dir, &tag(&["rr"]))).await?;
            zf_reqrep(&ep, size, budget).await
        }
        (Side::Curve, "reqrep") => {
            let keys = CurvePair::new();
            let (ep, _server) =
                zf_echo_server_with(&endpoint(tp, dir, &tag(&["rrc"])), keys.server()).await?;
            zf_reqrep_with(&ep, size, budget, keys.client(), "zfabric+curve").await
        }
        (Side::Curve, "pushpull") => {
            let keys = CurvePair::new();
            zf_pushpull_with(tp, dir, size, budget.messages, &keys).await
        }
        (Side::Zfabric, "pushpull") => zf_pushpull(tp, dir, size, budget.messages).await,
        (Side::Zfabric, "pubsub") => zf_pubsub(tp, dir, size, budget.messages).await,
        (Side::Zfabric, "anycast") => zf_anycast(tp, dir, size, budget).await,
        (Side::Zfabric, "aggregator") => zf_aggregator(tp, dir, size, budget).await,
        (Side::Baseline, "reqrep" | "anycast") => round_trip_baseline(tp, dir, size, budget).await,
        (Side::Baseline, "pushpull") if inproc => tokio_stream(size, budget.messages).await,
        (Side::Baseline, "pushpull") => raw_pushpull(tp, dir, size, budget.messages).await,
        (Side::Baseline, "pubsub") if inproc => tokio_broadcast(size, budget.messages).await,
        (Side::Baseline, "pubsub") => raw_pubsub(tp, dir, size, budget.messages).await,
        (Side::Baseline, "aggregator") if inproc => tokio_reqrep(size, budget, 3).await,
        (Side::Baseline, "aggregator") => raw_scatter(tp, dir, size, budget).await,
        (side, other) => Err(format!("no {side:?} side for pattern {other}").into()),
    }
}

/// The run's NATS server URL (a NATS side only runs where there is one).
#[cfg(feature = "peers")]
fn nats_url(url: Option<&str>) -> Result<&str, BoxError> {
    url.ok_or_else(|| "no nats-server in this run".into())
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

#[cfg(all(test, feature = "peers"))]
mod tests {
    use super::*;

    #[test]
    fn peer_sides_run_on_tcp_cells_in_this_process_only() {
        let s = sides("pubsub", "tcp", false, false, true);
        for p in [Side::Nats, Side::Zenoh, Side::ZenohDrop] {
            assert!(s.contains(&p), "{s:?}");
        }
        assert_eq!(&s[..2], &[Side::Zfabric, Side::Baseline]);
        let s = sides("reqrep", "tcp", false, false, true);
        assert!(s.contains(&Side::Nats) && s.contains(&Side::Zenoh));
        assert!(!s.contains(&Side::ZenohDrop));
        let s = sides("anycast", "tcp", false, false, true);
        assert!(s.contains(&Side::Nats) && !s.contains(&Side::Zenoh));
        for (p, tp, remote, curve) in [
            ("pubsub", "ipc", false, false),
            ("reqrep", "inproc", false, false),
            ("reqrep", "tcp", true, false),
            ("reqrep", "tcp", false, true),
            ("pushpull", "tcp", false, false),
            ("aggregator", "tcp", false, false),
        ] {
            let s = sides(p, tp, remote, curve, true);
            assert!(
                !s.iter()
                    .any(|x| matches!(x, Side::Nats | Side::Zenoh | Side::ZenohDrop)),
                "{p} {tp} remote={remote} curve={curve}: {s:?}"
            );
        }
    }

    #[test]
    fn without_a_nats_server_the_nats_side_is_left_out_and_zenoh_stays() {
        let s = sides("pubsub", "tcp", false, false, false);
        assert!(!s.contains(&Side::Nats));
        assert!(s.contains(&Side::Zenoh) && s.contains(&Side::ZenohDrop));
    }

    #[test]
    fn only_the_baselines_may_be_left_out_of_a_cell() {
        assert!(!Side::Zfabric.optional() && !Side::Baseline.optional());
        assert!(Side::Nats.optional() && Side::Zenoh.optional() && Side::ZenohDrop.optional());
        assert_eq!(Side::ZenohDrop.label(), "zenoh-drop");
    }
}
