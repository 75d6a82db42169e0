//! Resilience building blocks (in progress): failure is kept local.
//!
//! So far: the [`CircuitBreaker`] state machine, per destination, as plain
//! code tested with simulated time. Bulkheads, retry budgets and the
//! idempotent-consumer window come next, and so does wiring the breaker
//! into anycast.

mod breaker;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, CircuitOpen, Outcome, Transition};
