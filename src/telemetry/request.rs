//! Request metrics, on the calling and the serving side of a node call:
//! how many, how long, how many at once, by service and outcome.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `zfabric_requests_total` | counter | `node`, `service`, `side` (`client`, `server`), `outcome` |
//! | `zfabric_request_duration_seconds` | histogram | `node`, `service`, `side` |
//! | `zfabric_requests_in_flight` | gauge | `node`, `service`, `side` |
//!
//! `outcome` is `ok`, a [`RemoteCode`](crate::wire::RemoteCode) label
//! (`rejected`, `deadline_expired`, `no_such_service`, …), or one of
//! `error` (a handler's own error code), `timeout`, `peer_gone`,
//! `circuit_open`, `no_member`, `failed` (any other failure of the call),
//! `cancelled` (the caller stopped waiting). The label sets are bounded by
//! the services a fabric has; `node` is the measuring node's name.
//!
//! Guarantees: a [`RequestTimer`] counts its request in flight from
//! [`start`](RequestTimer::start) until it is finished or dropped, and
//! records exactly one outcome and one duration. Does not: record
//! anything when no recorder is installed (a few nanoseconds each), or
//! into a recorder installed after the [`RequestMetrics`] were made
//! (install it before building nodes).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counter: requests finished, by `node`, `service`, `side` and `outcome`.
pub const REQUESTS: &str = "zfabric_requests_total";
/// Histogram: request duration in seconds, by `node`, `service` and `side`.
pub const REQUEST_DURATION: &str = "zfabric_request_duration_seconds";
/// Gauge: requests started and not finished, by `node`, `service` and
/// `side` (set at scrape time).
pub const REQUESTS_IN_FLIGHT: &str = "zfabric_requests_in_flight";

/// Which end of a call is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The calling node (anycast, a call to a named peer).
    Client,
    /// The node whose service handled it.
    Server,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// The request metrics of one service on one side of one node: the
/// `ok` counter and the duration histogram registered once, the number
/// in flight as an atomic that [`collect`](RequestMetrics::collect) sets
/// the gauge from at scrape time. A request costs an atomic increment
/// and decrement, one histogram record and one counter increment, with
/// no label set built (other outcomes than `ok` look their counter up).
pub(crate) struct RequestMetrics {
    node: Arc<str>,
    service: Arc<str>,
    side: Side,
    in_flight: AtomicI64,
    duration: metrics::Histogram,
    ok: metrics::Counter,
}

impl RequestMetrics {
    /// Registers `service`'s metrics on `side` of `node` (its `ok`
    /// requests at zero).
    pub(crate) fn new(node: Arc<str>, service: Arc<str>, side: Side) -> Arc<Self> {
        let s = side.as_str();
        let duration = metrics::histogram!(REQUEST_DURATION,
            "node" => node.clone(), "service" => service.clone(), "side" => s);
        let ok = metrics::counter!(REQUESTS,
            "node" => node.clone(), "service" => service.clone(), "side" => s, "outcome" => "ok");
        ok.absolute(0);
        Arc::new(RequestMetrics {
            node,
            service,
            side,
            in_flight: AtomicI64::new(0),
            duration,
            ok,
        })
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Sets the in-flight gauge (scrape time).
    pub(crate) fn collect(&self) {
        metrics::gauge!(REQUESTS_IN_FLIGHT, "node" => self.node.clone(),
            "service" => self.service.clone(), "side" => self.side.as_str())
        .set(self.in_flight() as f64);
    }
}

/// One request being measured.
pub(crate) struct RequestTimer {
    metrics: Arc<RequestMetrics>,
    started: Instant,
    done: bool,
}

impl RequestTimer {
    /// Starts measuring a request: in flight from now.
    pub(crate) fn start(metrics: Arc<RequestMetrics>) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestTimer {
            metrics,
            started: Instant::now(),
            done: false,
        }
    }

    /// Records the outcome (a label from the list in the module docs) and
    /// the duration.
    pub(crate) fn finish(mut self, outcome: &'static str) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: &'static str) {
        if self.done {
            return;
        }
        self.done = true;
        let m = &self.metrics;
        m.in_flight.fetch_sub(1, Ordering::Relaxed);
        m.duration.record(self.started.elapsed().as_secs_f64());
        if outcome == "ok" {
            m.ok.increment(1);
        } else {
            // Labels share the interned names (count bumps).
            metrics::counter!(REQUESTS, "node" => m.node.clone(), "service" => m.service.clone(),
                "side" => m.side.as_str(), "outcome" => outcome)
            .increment(1);
        }
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.record("cancelled");
    }
}

/// The `outcome` label of a remote error code: the code if zfabric
/// defines it, else `error` (a handler's own code, kept out of the label
/// so that handlers cannot grow the series without bound).
pub(crate) fn remote_outcome(code: &str) -> &'static str {
    crate::wire::RemoteCode::parse(code).map_or("error", |c| c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn a_request_is_in_flight_until_it_finishes_and_counts_once() {
        let rec = DebuggingRecorder::new();
        let snap = rec.snapshotter();
        metrics::with_local_recorder(&rec, || {
            let m = RequestMetrics::new(Arc::from("n1"), Arc::from("quote"), Side::Server);
            let find = |snap: &metrics_util::debugging::Snapshotter, name: &str| {
                snap.snapshot()
                    .into_vec()
                    .into_iter()
                    .filter(|(k, _, _, _)| k.key().name() == name)
                    .collect::<Vec<_>>()
            };
            // Registered at zero, before any request.
            let ok = find(&snap, REQUESTS);
            assert_eq!(ok.len(), 1);
            assert!(matches!(ok[0].3, DebugValue::Counter(0)));
            let t = RequestTimer::start(m.clone());
            m.collect();
            let g = find(&snap, REQUESTS_IN_FLIGHT);
            assert_eq!(g[0].3, DebugValue::Gauge(1.0.into()));
            assert!(g[0]
                .0
                .key()
                .labels()
                .any(|l| l.key() == "node" && l.value() == "n1"));
            t.finish("ok");
            assert_eq!(m.in_flight(), 0);
            // One snapshot: a snapshot drains histogram samples.
            let all = snap.snapshot().into_vec();
            let count: Vec<_> = all
                .iter()
                .filter(|(k, _, _, _)| k.key().name() == REQUESTS)
                .collect();
            assert_eq!(count.len(), 1);
            assert!(count[0].0.key().labels().any(|l| l.value() == "ok"));
            assert!(matches!(count[0].3, DebugValue::Counter(1)));
            assert!(all
                .iter()
                .any(|(k, _, _, v)| k.key().name() == REQUEST_DURATION
                    && matches!(v, DebugValue::Histogram(h) if h.len() == 1)));
            // Dropped without an outcome: cancelled, once.
            drop(RequestTimer::start(m.clone()));
            let cancelled = find(&snap, REQUESTS)
                .into_iter()
                .filter(|(k, _, _, _)| k.key().labels().any(|l| l.value() == "cancelled"))
                .count();
            assert_eq!(cancelled, 1);
            assert_eq!(m.in_flight(), 0);
        });
        assert_eq!(remote_outcome("rejected"), "rejected");
        assert_eq!(remote_outcome("my_handler_code"), "error");
    }
}
