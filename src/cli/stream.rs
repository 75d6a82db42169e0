//! `zfabric stream serve|append|tail|info`: durable streams from a
//! terminal. `serve` keeps a stream's log and serves it on the fabric;
//! the others reach it through any node of the fabric.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zfabric::node::Node;
use zfabric::stream::client::{StreamClient, Target};
use zfabric::stream::{
    consumer, ConsumerConfig, FsyncPolicy, LogConfig, OffsetStore, StartFrom, Stream, StreamConfig,
    StreamHost,
};

use super::security::CurveArgs;
use super::services::{check_endpoint, find_service, own_endpoint};
use super::stop_signal;
use crate::app::metrics::Common;
use crate::app::{BoxError, UsageError};

/// `zfabric stream` commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum StreamCommand {
    /// Keep a stream's log in a directory and serve it on the fabric
    /// until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Append records (JSON, from --data or one per line on stdin) to a
    /// stream through the fabric; prints where they went.
    Append(AppendArgs),
    /// Print a stream's records from a position and follow its tail.
    Tail(TailArgs),
    /// Print a stream's partitions and their extents.
    Info(InfoArgs),
}

/// `zfabric stream serve` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// The stream's name.
    #[arg(long)]
    stream: String,
    /// Its directory (created; reopened after a restart).
    #[arg(long)]
    dir: PathBuf,
    /// Partitions (fixed when the stream is created).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// When appends are fsynced: `always` (before each is acknowledged),
    /// `group:MS` (at most MS ms later; acknowledged after), `os` (not:
    /// survives the process dying, not the machine).
    #[arg(long, default_value = "group:5", value_parser = parse_fsync)]
    fsync: FsyncPolicy,
    /// Roll segments at this many MiB.
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// Keep at most this many MiB per partition (oldest segments go).
    #[arg(long)]
    retention_mib: Option<u64>,
    /// Keep records at least this many seconds (older segments go).
    #[arg(long)]
    retention_secs: Option<u64>,
    /// Listen on this endpoint.
    #[arg(long)]
    bind: String,
    /// Join the fabric through this node.
    #[arg(long)]
    seed: Option<String>,
    #[command(flatten)]
    curve: CurveArgs,
    #[command(flatten)]
    common: Common,
}

/// Where a command reaches the fabric.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Reach {
    /// An endpoint of a node of the fabric (e.g. the one `stream serve`
    /// bound).
    #[arg(long)]
    connect: String,
    /// The stream's name.
    #[arg(long)]
    stream: String,
    /// Deadline of each call to the stream's host, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
    #[command(flatten)]
    curve: CurveArgs,
}

/// `zfabric stream append` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AppendArgs {
    #[command(flatten)]
    reach: Reach,
    /// The record, as JSON (otherwise one JSON record per line on stdin).
    #[arg(long)]
    data: Option<String>,
    /// With --data: append it this many times.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Records per append call (one durable batch).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// The partition to append to.
    #[arg(long, conflicts_with = "key")]
    partition: Option<u32>,
    /// Choose the partition by this key.
    #[arg(long)]
    key: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `zfabric stream tail` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    reach: Reach,
    /// Where to start without a committed position: earliest, latest, an
    /// offset, or time:MS (ms since the Unix epoch).
    #[arg(long, default_value = "earliest")]
    from: StartFrom,
    /// Consume as a member of this consumer group (partitions shared with
    /// its other members; positions committed at the stream's host).
    #[arg(long, conflicts_with = "offsets")]
    group: Option<String>,
    /// Commit positions to this file (redb), as consumer --name, and
    /// resume there next time.
    #[arg(long, requires = "name")]
    offsets: Option<PathBuf>,
    /// The consumer's name in --offsets.
    #[arg(long)]
    name: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Print each record as a JSON object (partition, offset, timestamp,
    /// id, body) instead of the body alone.
    #[arg(long)]
    json: bool,
}

/// `zfabric stream info` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    reach: Reach,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "os" => Ok(FsyncPolicy::Os),
        _ => s
            .strip_prefix("group:")
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(|ms| FsyncPolicy::GroupCommit {
                interval: Duration::from_millis(ms),
            })
            .ok_or_else(|| format!("{s:?}: expected always, os or group:MS (MS > 0)")),
    }
}

/// Runs a `zfabric stream` command.
pub(crate) async fn run(cmd: StreamCommand) -> Result<(), BoxError> {
    match cmd {
        StreamCommand::Serve(a) => serve(a).await,
        StreamCommand::Append(a) => append(a).await,
        StreamCommand::Tail(a) => tail(a).await,
        StreamCommand::Info(a) => info(a).await,
    }
}

async fn serve(args: ServeArgs) -> Result<(), BoxError> {
    check_endpoint(&args.bind)?;
    let curve = args.curve.config()?;
    args.common.start().await?;
    let config = StreamConfig {
        partitions: args.partitions,
        log: LogConfig {
            fsync: args.fsync,
            segment_bytes: args.segment_mib.max(1) << 20,
            retention_bytes: args.retention_mib.map(|m| m << 20),
            retention_age: args.retention_secs.map(Duration::from_secs),
            ..LogConfig::default()
        },
    };
    let (stream, recovered) = Stream::open(&args.dir, &args.stream, config).map_err(|e| {
        // A name, a partition count or a meta file that does not fit is
        // the user's to fix.
        match e {
            zfabric::stream::StreamError::Log(_) => BoxError::from(e),
            e => UsageError(e.to_string()).into(),
        }
    })?;
    for (p, r) in recovered.iter().enumerate() {
        if r.truncated_bytes > 0 {
            eprintln!(
                "partition {p}: cut {} bytes of a torn or corrupt tail from {}",
                r.truncated_bytes,
                r.truncated_file
                    .as_ref()
                    .map_or_else(String::new, |f| f.display().to_string())
            );
        }
    }
    let host = StreamHost::new(stream.clone(), Default::default())?;
    let mut builder = Node::builder(format!("stream-{}", args.stream)).bind(args.bind.clone());
    if let Some(s) = &args.seed {
        builder = builder.seed(s.clone());
    }
    if let Some(c) = curve {
        builder = builder.curve(c);
    }
    let node = host.serve_on(builder).start().await?;
    let eps: Vec<String> = node.endpoints().iter().map(|e| e.to_string()).collect();
    let extents: Vec<String> = (0..stream.partitions())
        .filter_map(|p| stream.partition(p).ok().map(|l| l.info()))
        .map(|i| format!("{}..{}", i.start, i.end))
        .collect();
    println!(
        "serving stream {:?} ({} partitions: {}) on {}",
        args.stream,
        stream.partitions(),
        extents.join(" "),
        eps.join(" ")
    );
    crate::app::health::set_ready();
    stop_signal().await;
    crate::app::health::set_stopping("SIGTERM");
    node.shutdown(Duration::from_secs(2)).await;
    stream.close()?;
    let total: u64 = (0..stream.partitions())
        .filter_map(|p| stream.partition(p).ok().map(|l| l.info().end))
        .sum();
    println!("stopped; the stream holds offsets up to {total} in all partitions, on disk");
    Ok(())
}

/// A node that reaches the fabric through `reach.connect`, with the
/// stream's host found (or a clear error).
async fn reach(reach: &Reach, client: bool) -> Result<Node, BoxError> {
    let to = check_endpoint(&reach.connect)?;
    zfabric::stream::store::check_name(&reach.stream).map_err(|e| UsageError(e.to_string()))?;
    let curve = reach.curve.caller_config()?;
    let secure = curve.is_some();
    let mut builder = Node::builder(format!("stream-{}-{}", reach.stream, std::process::id()));
    if client {
        builder = builder.client();
    }
    if let Some(c) = curve {
        builder = builder.curve(c);
    }
    let node = builder
        .bind(own_endpoint(&to)?)
        .seed(reach.connect.clone())
        .start()
        .await?;
    let service = zfabric::stream::protocol::service(&reach.stream);
    let timeout = Duration::from_millis(reach.timeout);
    if let Err(e) = find_service(&node, &reach.connect, &service, timeout, secure).await {
        node.shutdown(Duration::from_millis(200)).await;
        return Err(e);
    }
    Ok(node)
}

async fn append(args: AppendArgs) -> Result<(), BoxError> {
    let records: Box<dyn Iterator<Item = Result<String, BoxError>>> = match &args.data {
        Some(d) => {
            let d = d.clone();
            Box::new((0..args.count).map(move |_| Ok(d.clone())))
        }
        None => Box::new(
            std::io::stdin()
                .lock()
                .lines()
                .map(|l| l.map_err(BoxError::from))
                .collect::<Vec<_>>()
                .into_iter()
                .filter(|l| !matches!(l, Ok(s) if s.trim().is_empty())),
        ),
    };
    // Encode everything first: a bad line is a usage error before
    // anything is sent.
    let mut bodies = Vec::new();
    for (i, r) in records.enumerate() {
        let line = r?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| UsageError(format!("record {} is not JSON: {e}", i + 1)))?;
        bodies.push(zfabric::wire::encode_body(&v)?);
    }
    let node = reach(&args.reach, true).await?;
    let client = StreamClient::new(
        &node,
        &args.reach.stream,
        Duration::from_millis(args.reach.timeout),
    );
    let target = match (&args.partition, &args.key) {
        (Some(p), _) => Target::Partition(*p),
        (_, Some(k)) => Target::Key(k.as_bytes().to_vec()),
        _ => Target::First,
    };
    let total = bodies.len();
    let (mut appended, mut ranges) = (0usize, Vec::new());
    let mut failure = None;
    for chunk in bodies.chunks(args.batch.max(1)) {
        match client.append(target.clone(), chunk.to_vec()).await {
            Ok(a) => {
                appended += a.count as usize;
                ranges.push(a);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    node.shutdown(Duration::from_millis(200)).await;
    let unknown = if failure
        .as_ref()
        .is_some_and(|e| matches!(e, zfabric::stream::client::ClientError::Call(_)))
    {
        args.batch.min(total - appended)
    } else {
        0
    };
    if args.json {
        let r: Vec<_> = ranges
            .iter()
            .map(|a| serde_json::json!({"partition": a.partition, "first": a.first, "count": a.count}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"records": total, "appended": appended, "unknown": unknown,
                "not_sent": total - appended - unknown, "batches": r,
                "error": failure.as_ref().map(|e| e.to_string())})
        );
    } else {
        for a in &ranges {
            println!(
                "appended {} records to partition {} at offsets {}..{}",
                a.count,
                a.partition,
                a.first,
                a.first + u64::from(a.count)
            );
        }
        println!("appended {appended} of {total} records durably");
    }
    match failure {
        None => Ok(()),
        Some(e) => Err(format!(
            "{e}; {appended} of {total} records appended, {unknown} may or may not have been (the failed batch), {} not sent",
            total - appended - unknown
        )
        .into()),
    }
}

async fn tail(args: TailArgs) -> Result<(), BoxError> {
    if let Some(g) = &args.group {
        if g.is_empty() || g.contains('/') {
            return Err(UsageError(format!(
                "bad --group {g:?}: it cannot be empty or contain '/'"
            ))
            .into());
        }
    }
    let store = match &args.offsets {
        Some(p) => Some(OffsetStore::open(p)?),
        None => None,
    };
    // A group member must be a member of the fabric (the group is its
    // membership); a solo consumer subscribes, so it is one too.
    let node = reach(&args.reach, false).await?;
    let printed = Arc::new(AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let (p, json, limit) = (printed.clone(), args.json, args.count);
    let handler = move |r: zfabric::stream::StreamRecord| {
        let n = p.fetch_add(1, Ordering::SeqCst);
        let body = match zfabric::wire::decode_body::<serde_json::Value>(&r.body) {
            Ok(v) => v,
            Err(_) => serde_json::Value::String(format!("hex:{}", hex(&r.body))),
        };
        let line = if json {
            serde_json::json!({"partition": r.partition, "offset": r.offset,
                "timestamp_ms": r.timestamp_ms, "id": r.id, "body": body})
            .to_string()
        } else {
            body.to_string()
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // The reader went away (e.g. `| head`): stop quietly.
            let _ = done_tx.send(true);
        }
        if limit.is_some_and(|l| n + 1 >= l) {
            let _ = done_tx.send(true);
        }
        std::future::ready(Ok(()))
    };
    let mut b = consumer(&args.reach.stream);
    if let Some(l) = args.count {
        b = b.limit(l);
    }
    let mut b = b.config(ConsumerConfig {
        from: args.from,
        handler_attempts: 1,
        call_timeout: Duration::from_millis(args.reach.timeout),
        ..ConsumerConfig::default()
    });
    b = match (&args.group, store) {
        (Some(g), _) => b.group(g),
        (None, Some(s)) => b.offsets(s, args.name.as_deref().unwrap_or("tail")),
        (None, None) => b,
    };
    let started = Instant::now();
    let handle = b.run(&node, handler)?;
    tokio::select! {
        _ = stop_signal() => {}
        _ = done_rx.wait_for(|d| *d) => {}
    }
    let stats = handle.stop().await;
    node.shutdown(Duration::from_millis(500)).await;
    let positions: Vec<String> = stats
        .positions
        .iter()
        .map(|(p, o)| format!("p{p}={o}"))
        .collect();
    eprintln!(
        "processed {} records in {:.1} s; positions {}; {} duplicates skipped, {} tail gaps filled by fetching{}",
        stats.processed,
        started.elapsed().as_secs_f64(),
        if positions.is_empty() { "none".into() } else { positions.join(" ") },
        stats.duplicates_skipped,
        stats.gaps,
        if stats.skipped_retention > 0 {
            format!(", {} records removed by retention before they were read", stats.skipped_retention)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn info(args: InfoArgs) -> Result<(), BoxError> {
    let node = reach(&args.reach, true).await?;
    let client = StreamClient::new(
        &node,
        &args.reach.stream,
        Duration::from_millis(args.reach.timeout),
    );
    let r = client.info().await;
    node.shutdown(Duration::from_millis(200)).await;
    let info = r?;
    if args.json {
        let parts: Vec<_> = info
            .partitions
            .iter()
            .enumerate()
            .map(|(p, e)| serde_json::json!({"partition": p, "start": e.start, "end": e.end}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"stream": args.reach.stream, "log_id": format!("{:016x}", info.log_id), "partitions": parts})
        );
    } else {
        println!("stream {} (log {:016x})", args.reach.stream, info.log_id);
        for (p, e) in info.partitions.iter().enumerate() {
            println!(
                "  partition {p}: offsets {}..{} ({} records kept)",
                e.start,
                e.end,
                e.end - e.start
            );
        }
    }
    Ok(())
}
