//! Resilience: failure is kept local.
//!
//! | part | what it does | where it acts |
//! |---|---|---|
//! | [`Bulkhead`] | bounded concurrency and wait queue per class of work; refuses with [`Rejected`] when full | a node's services ([`ServeOptions`](crate::node::ServeOptions)), or any async work |
//! | [`deadline`] | a handler's onward calls inherit what is left of its deadline; expired work is not started | every request made inside a handler |
//! | [`RetryPolicy`], [`RetryBudget`] | jittered retries of idempotent calls, capped at a share of first attempts | node anycast ([`CallOptions`](crate::node::CallOptions)) |
//! | [`CircuitBreaker`] | per destination: open on failure or slow-call rate, fail fast, half-open trials | node calls, per (member, service) |
//! | [`IdempotentConsumer`] | duplicates processed once, cached reply returned | a node's services ([`ServeOptions::dedup`](crate::node::ServeOptions::dedup)) |
//!
//! The state machines (breaker, retry budget, dedup window) are plain code
//! with the time passed in, tested with simulated time.
//!
//! # Metrics
//! | metric | type | labels |
//! |---|---|---|
//! | `zfabric_bulkhead_in_flight` | gauge (scrape time) | `bulkhead` |
//! | `zfabric_bulkhead_queued` | gauge (scrape time) | `bulkhead` |
//! | `zfabric_bulkhead_rejected_total` | counter (at zero from the start) | `bulkhead`, `reason` (`full`, `expired`, `closed`) |
//! | `zfabric_breaker_state` | gauge (scrape time; 0 closed, 1 half-open, 2 open) | `node`, `service`, `peer` (the member's name) |
//! | `zfabric_breaker_transitions_total` | counter | `node`, `service`, `to` |
//! | `zfabric_retries_total` | counter | `node`, `service` |
//! | `zfabric_retry_budget_exhausted_total` | counter | `node`, `service` |
//! | `zfabric_dedup_hits_total` | counter | `consumer` |
//!
//! Gauges marked "scrape time" are read from the live bulkhead or node by
//! [`crate::telemetry::collect`]: a dropped bulkhead, or a member that is
//! gone (its breakers dropped with it), leaves the scrape.

//!
//! Every type is reached by one path, `zfabric::resilience::Name`; only
//! [`deadline`] is a public module (functions, not types).

mod breaker;
mod bulkhead;
pub mod deadline;
mod dedup;
mod retry;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, CircuitOpen, Outcome, Transition};
pub use bulkhead::{
    Bulkhead, BulkheadConfig, BulkheadKind, Permit, Rejected, BULKHEAD_IN_FLIGHT, BULKHEAD_QUEUED,
    BULKHEAD_REJECTED,
};
pub use dedup::{DedupConfig, DedupKey, DedupWindow, IdempotentConsumer, DEDUP_HITS};
pub use retry::{BudgetConfig, RetryBudget, RetryPolicy, RETRIES, RETRY_BUDGET_EXHAUSTED};

/// Gauge: a breaker's state (0 closed, 1 half-open, 2 open).
pub const BREAKER_STATE: &str = "zfabric_breaker_state";
/// Counter: breaker transitions, by `service` and target state `to`.
pub const BREAKER_TRANSITIONS: &str = "zfabric_breaker_transitions_total";
