//! `zfabric emit`: domain events onto the fabric from a terminal, to
//! every consumer group consuming their topic (`zfabric node`'s
//! `[[consumer]]`, `NodeBuilder::consume`).
//!
//! Three deliveries, as the library has them: at most once (one attempt
//! per group), at least once (redelivered until the group acknowledges,
//! up to the attempts), durable (`--outbox DIR`: each event in a log on
//! this machine's disk before the next is emitted, relayed until every
//! group took it, across a partition and across runs of this command on
//! the same directory). The command ends by saying what it knows was
//! taken, by which group, and what it cannot know.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use zfabric::node::Node;
use zfabric::stream::{FsyncPolicy, LogConfig};
use zfabric::topology::events::{emit, EventDelivery, EVENT_SERVICE_PREFIX};
use zfabric::topology::outbox::{Outbox, OutboxConfig};

use super::security::CurveArgs;
use super::services::{check_endpoint, own_endpoint};
use super::{json_arg, stop_signal};
use crate::app::metrics::Common;
use crate::app::{BoxError, Incomplete, UsageError};

/// `zfabric emit` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EmitArgs {
    /// An endpoint of a node of the fabric, to learn its members from.
    #[arg(long)]
    connect: String,
    /// This command's own endpoint (default: an ephemeral port on the
    /// transport of --connect; 0.0.0.0 for a host that is not this one).
    #[arg(long)]
    bind: Option<String>,
    /// The events' topic: every group consuming a prefix of it gets them.
    #[arg(long)]
    topic: String,
    /// Each event's body, as JSON (default `{"seq": N, "sent_us": T}`:
    /// its number and the wall-clock time it was made, which `zfabric
    /// node` consumers use for latency).
    #[arg(long)]
    data: Option<String>,
    /// Events to emit.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Events per second (default: each as soon as the previous one's
    /// emit returned).
    #[arg(long)]
    rate: Option<f64>,
    /// One attempt per group instead of redelivering until acknowledged.
    #[arg(long, conflicts_with = "outbox")]
    at_most_once: bool,
    /// Durable: keep the events in an outbox in this directory (created;
    /// reopened by the next run on it) before going on, and relay them
    /// until every group consuming the topic took each. What is still
    /// pending at the end stays there for the next run.
    #[arg(long, value_name = "DIR")]
    outbox: Option<PathBuf>,
    /// With --outbox: when events are fsynced: `always` (before each is
    /// accepted), `group:MS`, `os` (survives this process dying, not the
    /// machine).
    #[arg(long, default_value = "always", value_parser = super::stream::parse_fsync, requires = "outbox")]
    fsync: FsyncPolicy,
    /// How long to wait, in milliseconds, for a consumer group of the
    /// topic to be known before the first event (then an error naming
    /// the groups there are).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    wait_ms: u64,
    /// With --outbox: at the end, wait up to this many seconds for the
    /// relay to deliver what is pending (SIGINT/SIGTERM stops waiting).
    #[arg(long, default_value_t = 60, value_name = "S")]
    drain: u64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    curve: CurveArgs,
    #[command(flatten)]
    common: Common,
}

/// The consumer groups (`group/prefix`) `node` knows of that take
/// `topic` (every group known, for `None`).
fn groups_for(node: &Node, topic: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = node
        .members()
        .iter()
        .flat_map(|m| m.services.iter())
        .filter_map(|s| s.strip_prefix(EVENT_SERVICE_PREFIX))
        .filter(|gp| match topic {
            None => true,
            Some(t) => gp.split_once('/').is_some_and(|(_, p)| t.starts_with(p)),
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the events became, as far as this command knows.
#[derive(Debug, Default)]
struct Tally {
    emitted: u64,
    /// Per group: events it acknowledged (at most / at least once).
    acked: BTreeMap<String, u64>,
    /// Per group: events it did not take, by the last error's text.
    lost: BTreeMap<String, BTreeMap<String, u64>>,
    redeliveries: u64,
    /// Events no group took because none consumed the topic then.
    no_group: u64,
    /// Events at least one group did not take.
    incomplete: u64,
    /// Durable: the outbox offsets of the first and last event.
    offsets: Option<(u64, u64)>,
}

/// `zfabric emit`; exit 3 when not every event is known taken by every
/// group (lost, or still pending in the outbox).
pub(crate) async fn emit_events(args: EmitArgs) -> Result<(), BoxError> {
    let to = check_endpoint(&args.connect)?;
    if let Some(d) = &args.data {
        json_arg(d)?;
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(UsageError("--rate must be positive".into()).into());
    }
    if args.topic.is_empty() {
        return Err(UsageError("--topic must not be empty".into()).into());
    }
    args.common.start().await?;
    let curve = args.curve.caller_config()?;
    let outbox = match &args.outbox {
        None => None,
        Some(dir) => {
            let config = OutboxConfig {
                log: LogConfig {
                    fsync: args.fsync,
                    ..LogConfig::default()
                },
                ..OutboxConfig::default()
            };
            let (outbox, rec) = Outbox::open(dir, config).map_err(|e| {
                UsageError(format!("cannot open the outbox in {}: {e}", dir.display()))
            })?;
            if rec.truncated_bytes > 0 {
                eprintln!(
                    "outbox: cut {} bytes of a torn tail (an event not accepted before a crash)",
                    rec.truncated_bytes
                );
            }
            if outbox.pending() > 0 {
                eprintln!(
                    "outbox: {} events from an earlier run still to relay",
                    outbox.pending()
                );
            }
            Some(outbox)
        }
    };
    // A client: it learns the members without joining the fabric.
    let mut builder = Node::builder(format!("emit-{}", std::process::id())).client();
    if let Some(c) = curve {
        builder = builder.curve(c);
    }
    if let Some(o) = &outbox {
        builder = o.relay_on(builder);
    }
    let bind = match &args.bind {
        Some(b) => b.clone(),
        None => own_endpoint(&to)?,
    };
    let node = builder
        .bind(bind)
        .seed(args.connect.clone())
        .start()
        .await?;
    let result = run(&args, &node, outbox.as_ref()).await;
    node.shutdown(Duration::from_millis(500)).await;
    if let Some(o) = &outbox {
        o.close()?;
    }
    result
}

async fn run(args: &EmitArgs, node: &Node, outbox: Option<&Arc<Outbox>>) -> Result<(), BoxError> {
    let wait = Duration::from_millis(args.wait_ms);
    let until = Instant::now() + wait;
    let mut groups = groups_for(node, Some(&args.topic));
    while groups.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        groups = groups_for(node, Some(&args.topic));
    }
    if groups.is_empty() {
        let known = node.members().len();
        return Err(UsageError(format!(
            "no consumer group takes {:?} within {wait:?} ({known} members known through {}; \
             groups there: {:?})",
            args.topic,
            args.connect,
            groups_for(node, None)
        ))
        .into());
    }
    eprintln!("groups taking {:?}: {}", args.topic, groups.join(", "));
    let delivery = match (outbox.is_some(), args.at_most_once) {
        (true, _) => EventDelivery::durable(),
        (false, true) => EventDelivery::at_most_once(),
        (false, false) => EventDelivery::at_least_once(),
    };
    let fixed = args.data.as_deref().map(json_arg).transpose()?;
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let start = tokio::time::Instant::now();
    let mut tally = Tally::default();
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut stopped = false;
    for seq in 0..args.count {
        if let Some(i) = interval {
            tokio::select! {
                _ = tokio::time::sleep_until(start + i.mul_f64(seq as f64)) => {}
                _ = &mut stop => { stopped = true; break; }
            }
        }
        let body: Value = match &fixed {
            Some(v) => v.clone(),
            None => json!({ "seq": seq, "sent_us": now_us() }),
        };
        let report = tokio::select! {
            r = emit(node, &args.topic, &body, delivery) => r?,
            _ = &mut stop => { stopped = true; break; }
        };
        tally.emitted += 1;
        tally.redeliveries += u64::from(report.redeliveries);
        if let Some(off) = report.outbox {
            let first = tally.offsets.map_or(off, |(f, _)| f);
            tally.offsets = Some((first, off));
        } else if report.acked.is_empty() && report.lost.is_empty() {
            tally.no_group += 1;
        }
        for g in report.acked {
            *tally.acked.entry(g).or_default() += 1;
        }
        if !report.lost.is_empty() {
            tally.incomplete += 1;
        }
        for (g, e) in report.lost {
            *tally
                .lost
                .entry(g)
                .or_default()
                .entry(e.to_string())
                .or_default() += 1;
        }
    }
    let pending = match outbox {
        Some(o) if !stopped => drain(o, Duration::from_secs(args.drain), &mut stop).await,
        Some(o) => o.pending(),
        None => 0,
    };
    summary(args, &tally, outbox.map(|_| pending), stopped)
}

/// Waits (bounded by `limit` and a signal) until the outbox has relayed
/// everything; returns what is still pending.
async fn drain(
    outbox: &Outbox,
    limit: Duration,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> u64 {
    let until = tokio::time::Instant::now() + limit;
    let mut said = Instant::now();
    while outbox.pending() > 0 && tokio::time::Instant::now() < until {
        if said.elapsed() >= Duration::from_secs(2) {
            eprintln!("outbox: {} events still to relay", outbox.pending());
            said = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.as_mut() => break,
        }
    }
    outbox.pending()
}

/// Prints what happened; an error (exit 3) unless every event is known
/// taken by every group.
fn summary(
    args: &EmitArgs,
    t: &Tally,
    pending: Option<u64>,
    stopped: bool,
) -> Result<(), BoxError> {
    let mode = match (pending.is_some(), args.at_most_once) {
        (true, _) => "durable",
        (false, true) => "at most once",
        (false, false) => "at least once",
    };
    if args.json {
        println!(
            "{}",
            json!({
                "topic": args.topic,
                "delivery": mode,
                "emitted": t.emitted,
                "stopped_early": stopped,
                "acked": t.acked,
                "lost": t.lost,
                "redeliveries": t.redeliveries,
                "no_group": t.no_group,
                "outbox_offsets": t.offsets.map(|(a, b)| [a, b]),
                "outbox_pending": pending,
            })
        );
    }
    let mut lines = vec![format!(
        "emitted {} of {} events on {:?} ({mode}){}",
        t.emitted,
        args.count,
        args.topic,
        if stopped { ", stopped by a signal" } else { "" }
    )];
    match pending {
        Some(p) => {
            if let Some((a, b)) = t.offsets {
                lines.push(format!("in the outbox at offsets {a}..={b}"));
            }
            lines.push(match p {
                0 => "relayed: every event in the outbox was acknowledged by every consumer group \
                      the relay could see taking its topic"
                    .to_string(),
                p => {
                    format!(
                    "{p} events not yet acknowledged by every group: kept in the outbox, relayed \
                     by the next run on {}",
                    args.outbox.as_ref().map_or(String::new(), |d| d.display().to_string())
                )
                }
            });
        }
        None => {
            for (g, n) in &t.acked {
                lines.push(format!("{g}: acknowledged {n}"));
            }
            for (g, why) in &t.lost {
                for (e, n) in why {
                    lines.push(format!("{g}: not taken {n} ({e})"));
                }
            }
            if t.redeliveries > 0 {
                lines.push(format!("{} redeliveries", t.redeliveries));
            }
            if t.no_group > 0 {
                lines.push(format!(
                    "{} events reached no consumer group (none consumed the topic then)",
                    t.no_group
                ));
            }
            if args.at_most_once {
                lines.push(
                    "at most once: an event a group did not acknowledge in time may still have \
                     been handled"
                        .to_string(),
                );
            }
        }
    }
    for l in &lines {
        eprintln!("{l}");
    }
    let missing = pending.unwrap_or(0) + t.incomplete + t.no_group + (args.count - t.emitted);
    if missing > 0 {
        return Err(Incomplete(format!(
            "{missing} of {} events not known taken by every group",
            args.count
        ))
        .into());
    }
    Ok(())
}
