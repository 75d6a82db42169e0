//! Request metrics, on the calling and the serving side of a node call:
//! how many, how long, how many at once, by service and outcome.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `zfabric_requests_total` | counter | `service`, `side` (`client`, `server`), `outcome` |
//! | `zfabric_request_duration_seconds` | histogram | `service`, `side` |
//! | `zfabric_requests_in_flight` | gauge | `service`, `side` |
//!
//! `outcome` is `ok`, a [`RemoteCode`](crate::wire::RemoteCode) label
//! (`rejected`, `deadline_expired`, `no_such_service`, …), or one of
//! `error` (a handler's own error code), `timeout`, `peer_gone`,
//! `circuit_open`, `no_member`, `failed` (any other failure of the call),
//! `cancelled` (the caller stopped waiting). The label sets are bounded by
//! the services a fabric has.
//!
//! Guarantees: a [`RequestTimer`] counts its request in flight from
//! [`start`](RequestTimer::start) until it is finished or dropped, and
//! records exactly one outcome and one duration. Does not: record
//! anything when no recorder is installed (a few nanoseconds each).

use std::sync::Arc;
use std::time::Instant;

/// Counter: requests finished, by `service`, `side` and `outcome`.
pub const REQUESTS: &str = "zfabric_requests_total";
/// Histogram: request duration in seconds, by `service` and `side`.
pub const REQUEST_DURATION: &str = "zfabric_request_duration_seconds";
/// Gauge: requests started and not finished, by `service` and `side`.
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

/// One request being measured.
pub(crate) struct RequestTimer {
    service: Arc<str>,
    side: Side,
    started: Instant,
    done: bool,
}

impl RequestTimer {
    /// Starts measuring a request to `service`: in flight from now.
    pub(crate) fn start(service: Arc<str>, side: Side) -> Self {
        metrics::gauge!(REQUESTS_IN_FLIGHT, "service" => service.clone(), "side" => side.as_str())
            .increment(1.0);
        RequestTimer {
            service,
            side,
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
        // Labels share the interned name (a count bump, no allocation).
        let (service, side) = (self.service.clone(), self.side.as_str());
        metrics::gauge!(REQUESTS_IN_FLIGHT, "service" => service.clone(), "side" => side)
            .decrement(1.0);
        metrics::histogram!(REQUEST_DURATION, "service" => service.clone(), "side" => side)
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!(REQUESTS, "service" => service, "side" => side, "outcome" => outcome)
            .increment(1);
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
            let t = RequestTimer::start(Arc::from("quote"), Side::Server);
            let gauge = |snap: &metrics_util::debugging::Snapshotter| {
                snap.snapshot()
                    .into_vec()
                    .into_iter()
                    .find(|(k, _, _, _)| k.key().name() == REQUESTS_IN_FLIGHT)
                    .map(|(_, _, _, v)| v)
            };
            assert_eq!(gauge(&snap), Some(DebugValue::Gauge(1.0.into())));
            t.finish("ok");
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
            drop(RequestTimer::start(Arc::from("quote"), Side::Client));
            let cancelled = snap
                .snapshot()
                .into_vec()
                .into_iter()
                .filter(|(k, _, _, _)| {
                    k.key().name() == REQUESTS && k.key().labels().any(|l| l.value() == "cancelled")
                })
                .count();
            assert_eq!(cancelled, 1);
        });
        assert_eq!(remote_outcome("rejected"), "rejected");
        assert_eq!(remote_outcome("my_handler_code"), "error");
    }
}
