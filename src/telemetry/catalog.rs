//! The metric catalogue: every family zfabric records, with its help text
//! and unit, so that a scrape describes itself (`# HELP`, and `promtool
//! check metrics` passes); the counters whose labels are known up front,
//! registered at zero so that `rate()` sees their first increase; and the
//! histogram buckets for durations.
//!
//! Call [`describe`] once after installing a recorder (the `zfabric`
//! commands do, for `--metrics`). Guarantees: [`CATALOGUE`] lists every
//! metric name constant of the crate (checked by a test against the
//! source). Does not: install a recorder, or pre-register series whose
//! labels depend on the fabric (service, peer, bulkhead names): those
//! appear when their component first records.

use metrics::Unit;

use super::request::{REQUESTS, REQUESTS_IN_FLIGHT, REQUEST_DURATION};
use super::{
    DisconnectReason, DropReason, EdgeRefusal, GossipIgnored, SeedFailure, Traffic, EDGE_REFUSED,
    EDGE_REQUESTS, EDGE_REQUEST_DURATION, GOSSIP_IGNORED, MESSAGES_DROPPED, MESSAGES_LOST,
    MESSAGES_RECEIVED, MESSAGES_SENT, MESSAGE_BYTES_RECEIVED, MESSAGE_BYTES_SENT, NODE_MEMBERS,
    PATTERNS, PEERS_DISCONNECTED, RECONNECTS, SEED_FAILURES, TRANSPORTS,
};
use crate::resilience::{
    BREAKER_STATE, BREAKER_TRANSITIONS, BULKHEAD_IN_FLIGHT, BULKHEAD_QUEUED, BULKHEAD_REJECTED,
    DEDUP_HITS, RETRIES, RETRY_BUDGET_EXHAUSTED,
};
use crate::stream::consumer::{STREAM_DUPLICATES_SKIPPED, STREAM_TAIL_GAPS};
use crate::stream::host::STREAM_TAIL_RECORDS;
use crate::stream::log::{STREAM_APPENDED_RECORDS, STREAM_FSYNCS, STREAM_TRUNCATED_BYTES};
use crate::topology::events::EVENTS_REDELIVERED;
use crate::topology::gateway::GATEWAY_REJECTED;
use crate::topology::shared_data::{CACHE_EVICTED, CACHE_LOOKUPS, DATA_REFUSED};

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (buckets, sum, count).
    Histogram,
}

/// One metric family: name, kind, unit, help text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit.
    pub unit: Unit,
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn f(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> Family {
    Family {
        name,
        kind,
        unit,
        help,
    }
}

/// Every metric family zfabric records.
pub const CATALOGUE: &[Family] = &[
    f(
        REQUESTS,
        Kind::Counter,
        Unit::Count,
        "Node requests finished, by node, service, side (client, server) and outcome.",
    ),
    f(
        REQUEST_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "Node request duration in seconds, by node, service and side.",
    ),
    f(
        REQUESTS_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "Node requests started and not finished, by node, service and side.",
    ),
    f(
        MESSAGES_DROPPED,
        Kind::Counter,
        Unit::Count,
        "Messages zfabric discarded, by reason (docs/OPERATIONS.md).",
    ),
    f(
        MESSAGES_LOST,
        Kind::Counter,
        Unit::Count,
        "Gaps in a publisher's sequence numbers seen by subscribers.",
    ),
    f(
        PEERS_DISCONNECTED,
        Kind::Counter,
        Unit::Count,
        "Connections zfabric closed or lost, by reason (docs/OPERATIONS.md).",
    ),
    f(
        SEED_FAILURES,
        Kind::Counter,
        Unit::Count,
        "Failed attempts to reach a configured seed, by reason (unresolved, unreachable).",
    ),
    f(
        RECONNECTS,
        Kind::Counter,
        Unit::Count,
        "Successful reconnections of outgoing links, by transport.",
    ),
    f(
        MESSAGES_SENT,
        Kind::Counter,
        Unit::Count,
        "Messages sent, by pattern (pubsub, pipeline, reqrep) and transport (inproc, ipc, tcp).",
    ),
    f(
        MESSAGES_RECEIVED,
        Kind::Counter,
        Unit::Count,
        "Messages received and handed to the application, by pattern and transport.",
    ),
    f(
        MESSAGE_BYTES_SENT,
        Kind::Counter,
        Unit::Bytes,
        "Header and body bytes of the messages sent, by pattern and transport.",
    ),
    f(
        MESSAGE_BYTES_RECEIVED,
        Kind::Counter,
        Unit::Bytes,
        "Header and body bytes of the messages received, by pattern and transport.",
    ),
    f(
        NODE_MEMBERS,
        Kind::Gauge,
        Unit::Count,
        "Peers a node sees, by node and state (alive, suspect).",
    ),
    f(
        GOSSIP_IGNORED,
        Kind::Counter,
        Unit::Count,
        "Peers named by gossip that a node's limits kept it from greeting or admitting, by reason.",
    ),
    f(
        BULKHEAD_IN_FLIGHT,
        Kind::Gauge,
        Unit::Count,
        "Executions running in a bulkhead, by bulkhead.",
    ),
    f(
        BULKHEAD_QUEUED,
        Kind::Gauge,
        Unit::Count,
        "Requests waiting for a slot in a bulkhead, by bulkhead.",
    ),
    f(
        BULKHEAD_REJECTED,
        Kind::Counter,
        Unit::Count,
        "Requests a bulkhead refused, by bulkhead and reason (full, expired, closed).",
    ),
    f(
        DEDUP_HITS,
        Kind::Counter,
        Unit::Count,
        "Duplicate requests answered from the dedup window, by consumer.",
    ),
    f(
        BREAKER_STATE,
        Kind::Gauge,
        Unit::Count,
        "Circuit breaker state per node, service and peer name: 0 closed, 1 half-open, 2 open.",
    ),
    f(
        BREAKER_TRANSITIONS,
        Kind::Counter,
        Unit::Count,
        "Circuit breaker transitions, by node, service and target state.",
    ),
    f(
        RETRIES,
        Kind::Counter,
        Unit::Count,
        "Retries of idempotent requests, by node and service.",
    ),
    f(
        RETRY_BUDGET_EXHAUSTED,
        Kind::Counter,
        Unit::Count,
        "Retries refused because the service's retry budget was spent, by node and service.",
    ),
    f(
        EVENTS_REDELIVERED,
        Kind::Counter,
        Unit::Count,
        "Event redeliveries to consumer groups, by group.",
    ),
    f(
        GATEWAY_REJECTED,
        Kind::Counter,
        Unit::Count,
        "Requests the gateway refused, by reason (unauthorized, forbidden).",
    ),
    f(
        STREAM_TAIL_RECORDS,
        Kind::Counter,
        Unit::Count,
        "Stream records published on the live tail to at least one subscriber, by stream.",
    ),
    f(
        STREAM_TAIL_GAPS,
        Kind::Counter,
        Unit::Count,
        "Gaps in a stream's live tail that a consumer filled by fetching, by stream.",
    ),
    f(
        STREAM_DUPLICATES_SKIPPED,
        Kind::Counter,
        Unit::Count,
        "Stream records a consumer skipped as already processed (below its position), by stream.",
    ),
    f(
        DATA_REFUSED,
        Kind::Counter,
        Unit::Count,
        "Calls the shared-data service refused, by reason (conflict, not_found, invalid, storage).",
    ),
    f(
        CACHE_LOOKUPS,
        Kind::Counter,
        Unit::Count,
        "Read-through cache look-ups, by cache and result (hit, miss).",
    ),
    f(
        CACHE_EVICTED,
        Kind::Counter,
        Unit::Count,
        "Entries that left a read-through cache, by cache and reason (capacity, expired, invalidated, stale_fill).",
    ),
    f(
        STREAM_APPENDED_RECORDS,
        Kind::Counter,
        Unit::Count,
        "Records appended to stream logs and acknowledged (durable per the log's fsync policy).",
    ),
    f(
        STREAM_FSYNCS,
        Kind::Counter,
        Unit::Count,
        "fsyncs of stream log segments by their writer threads.",
    ),
    f(
        STREAM_TRUNCATED_BYTES,
        Kind::Counter,
        Unit::Bytes,
        "Bytes cut off torn or corrupt stream log tails when the logs were opened.",
    ),
    f(
        EDGE_REFUSED,
        Kind::Counter,
        Unit::Count,
        "HTTP requests the edge refused, by reason (docs/OPERATIONS.md).",
    ),
    f(
        EDGE_REQUESTS,
        Kind::Counter,
        Unit::Count,
        "HTTP requests the edge answered, by route template and status code.",
    ),
    f(
        EDGE_REQUEST_DURATION,
        Kind::Histogram,
        Unit::Seconds,
        "HTTP request duration at the edge in seconds, by route template.",
    ),
];

/// Histogram buckets for durations, in seconds: 10 µs to 10 s, about
/// three per decade (`PrometheusBuilder::set_buckets_for_metric` with a
/// `_seconds` suffix matcher).
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Describes every family to the installed recorder and registers the
/// counters whose labels are known (every drop, disconnect and gossip
/// reason, reconnects per transport, traffic per pattern and transport)
/// at zero.
pub fn describe() {
    for fam in CATALOGUE {
        match fam.kind {
            Kind::Counter => metrics::describe_counter!(fam.name, fam.unit, fam.help),
            Kind::Gauge => metrics::describe_gauge!(fam.name, fam.unit, fam.help),
            Kind::Histogram => metrics::describe_histogram!(fam.name, fam.unit, fam.help),
        }
    }
    for r in DropReason::ALL {
        metrics::counter!(MESSAGES_DROPPED, "reason" => r.as_str()).absolute(0);
    }
    for r in DisconnectReason::ALL {
        metrics::counter!(PEERS_DISCONNECTED, "reason" => r.as_str()).absolute(0);
    }
    for r in GossipIgnored::ALL {
        metrics::counter!(GOSSIP_IGNORED, "reason" => r.as_str()).absolute(0);
    }
    for r in SeedFailure::ALL {
        metrics::counter!(SEED_FAILURES, "reason" => r.as_str()).absolute(0);
    }
    for r in crate::topology::shared_data::DataRefusal::ALL {
        metrics::counter!(DATA_REFUSED, "reason" => r.as_str()).absolute(0);
    }
    for r in EdgeRefusal::ALL {
        metrics::counter!(EDGE_REFUSED, "reason" => r.as_str()).absolute(0);
    }
    metrics::counter!(MESSAGES_LOST).absolute(0);
    for name in [
        STREAM_APPENDED_RECORDS,
        STREAM_FSYNCS,
        STREAM_TRUNCATED_BYTES,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for transport in ["ipc", "tcp"] {
        metrics::counter!(RECONNECTS, "transport" => transport).absolute(0);
    }
    for pattern in PATTERNS {
        for transport in TRANSPORTS {
            Traffic::sent(pattern, transport);
            Traffic::received(pattern, transport);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `pub const …: &str = "zfabric_…"` in the crate is in the
    /// catalogue, so a new metric cannot go undescribed.
    #[test]
    fn the_catalogue_lists_every_metric_name_in_the_source() {
        let mut names = Vec::new();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for line in text.lines() {
                        let l = line.trim();
                        if l.starts_with("pub const") && l.contains(": &str = \"zfabric_") {
                            let name = l.split('"').nth(1).unwrap().to_string();
                            names.push(name);
                        }
                    }
                }
            }
        }
        assert!(names.len() >= 15, "found {names:?}");
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !CATALOGUE.iter().any(|f| f.name == n.as_str()))
            .collect();
        assert!(missing.is_empty(), "undescribed metrics: {missing:?}");
        for fam in CATALOGUE {
            let suffix_ok = match fam.kind {
                Kind::Counter => fam.name.ends_with("_total"),
                Kind::Histogram => fam.name.ends_with("_seconds"),
                Kind::Gauge => !fam.name.ends_with("_total"),
            };
            assert!(suffix_ok, "{} breaks the naming conventions", fam.name);
        }
    }
}
