//! The end-of-run report: one row per load, the nodes, the pattern's own
//! outcome; as a table or as one JSON object.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::app::histogram::Percentiles;

use super::spec::{FaultKind, LoadKind};
use super::world::NodeStats;

/// Latency percentiles, µs.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) samples: u64,
    pub(crate) p50_us: u64,
    pub(crate) p90_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
}

impl Latency {
    /// The percentiles of a histogram recorded in µs (all zero when it is
    /// empty).
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        Percentiles::of(h)
            .map(|p| Latency {
                samples: p.samples,
                p50_us: p.p50,
                p90_us: p.p90,
                p99_us: p.p99,
                p999_us: p.p999,
                max_us: p.max,
            })
            .unwrap_or_default()
    }
}

/// One load's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    pub(crate) kind: LoadKind,
    pub(crate) target: String,
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) rejected: u64,
    pub(crate) circuit_open: u64,
    pub(crate) timed_out: u64,
    pub(crate) failed: u64,
    pub(crate) latency: Latency,
    pub(crate) throughput_per_s: f64,
    pub(crate) elapsed_s: f64,
    /// What this pattern promises, measured.
    pub(crate) outcome: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultReport {
    pub(crate) at_s: f64,
    pub(crate) kind: FaultKind,
    pub(crate) node: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BreakerReport {
    pub(crate) at_s: f64,
    pub(crate) member: String,
    pub(crate) service: String,
    pub(crate) from: String,
    pub(crate) to: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) name: String,
    pub(crate) summary: String,
    pub(crate) transport: String,
    pub(crate) split: bool,
    pub(crate) loads: Vec<LoadReport>,
    pub(crate) nodes: Vec<NodeStats>,
    pub(crate) faults: Vec<FaultReport>,
    pub(crate) breaker: Vec<BreakerReport>,
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}µs")
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(n - 1).collect();
    out.push('…');
    out
}

impl Report {
    pub(crate) fn print_table(&self) {
        println!(
            "{} — {} ({}, {})",
            self.name,
            self.summary,
            self.transport,
            if self.split {
                "one process per node"
            } else {
                "one process"
            }
        );
        println!();
        println!(
            "{:<10} {:<22} {:>8} {:>9} {:>6} {:>8} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "load", "target", "sent", "delivered", "lost", "rejected", "circuit", "timeout", "failed", "p50", "p90", "p99", "p99.9", "max", "msg/s"
        );
        for l in &self.loads {
            println!(
                "{:<10} {:<22} {:>8} {:>9} {:>6} {:>8} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10.0}",
                l.kind.name(),
                short(&l.target, 22),
                l.sent,
                l.delivered,
                l.lost,
                l.rejected,
                l.circuit_open,
                l.timed_out,
                l.failed,
                us(l.latency.p50_us),
                us(l.latency.p90_us),
                us(l.latency.p99_us),
                us(l.latency.p999_us),
                us(l.latency.max_us),
                l.throughput_per_s
            );
        }
        for l in &self.loads {
            if l.outcome.is_empty() {
                continue;
            }
            println!();
            println!("{} {}:", l.kind.name(), l.target);
            for (k, v) in &l.outcome {
                println!("  {k}: {v}");
            }
        }
        if !self.faults.is_empty() {
            println!();
            println!("faults:");
            for f in &self.faults {
                println!("  t={:.2}s {:?} {}", f.at_s, f.kind, f.node);
            }
        }
        if !self.breaker.is_empty() {
            println!();
            println!("circuit breaker transitions (caller):");
            for b in &self.breaker {
                println!(
                    "  t={:.2}s {} / {}: {} -> {}",
                    b.at_s, b.member, b.service, b.from, b.to
                );
            }
        }
        println!();
        println!("nodes:");
        for n in &self.nodes {
            let handled: Vec<String> = n.handled.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let received: Vec<String> =
                n.received.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let figures: Vec<String> = n.figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "  {:<12}{} handled [{}] received [{}]{}{}",
                n.name,
                if n.killed { " (killed)" } else { "" },
                handled.join(" "),
                received.join(" "),
                if n.lost > 0 {
                    format!(" gaps {}", n.lost)
                } else {
                    String::new()
                },
                if figures.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", figures.join(" "))
                }
            );
        }
    }
}
