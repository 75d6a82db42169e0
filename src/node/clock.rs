//! The node's one clock.
//!
//! Guarantees: every part of a node (membership, breakers, retry budgets,
//! the breaker log) reads time here, from tokio's clock, so paused time in
//! tests moves all of them together. Does not: schedule anything.

use std::time::Instant;

/// Now, on tokio's clock (paused-time tests move it).
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
