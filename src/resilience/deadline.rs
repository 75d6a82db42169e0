//! Deadline propagation: a handler's onward calls inherit what is left of
//! its caller's deadline.
//!
//! While a request handler runs (under [`Server`](crate::Server) or a
//! node), the request's absolute deadline is kept in a task-local. Every
//! request made from inside it ([`Client::request`](crate::Client::request),
//! [`Node::request`](crate::node::Node::request) and friends) uses the
//! smaller of its own timeout and the time left, so a chain A → B → C
//! shrinks the budget at each hop without the handler passing anything
//! along. Work whose deadline has passed is not started: the callee
//! answers `deadline_expired` and the caller sees a timeout.
//!
//! # Not guaranteed
//! The deadline is wall-clock time (microseconds since the Unix epoch), so
//! hosts must keep their clocks in step (NTP); a skew shortens or lengthens
//! the budget by the skew. Work spawned with `tokio::spawn` from a handler
//! leaves the task and its deadline behind; wrap it in [`with_deadline`] to
//! carry it.

use std::future::Future;
use std::time::Duration;

use crate::wire::Deadline;

/// What a handler's task knows about the call it serves.
#[derive(Debug, Clone, Copy, Default)]
struct Context {
    deadline: Option<Deadline>,
    /// How many service hops led here (1 for a service called directly).
    hops: u8,
}

tokio::task_local! {
    static CURRENT: Context;
}

/// The deadline of the request being handled by this task, if any.
pub fn current_deadline() -> Option<Deadline> {
    CURRENT.try_with(|c| c.deadline).ok().flatten()
}

/// How many node service calls led to the one this task is handling (1
/// for a call made from outside any handler; 0 outside a handler). A chain
/// A → B → C runs C's handler at hop 3; it shows in the `serve` tracing
/// span's `hop` field.
pub fn current_hops() -> u8 {
    CURRENT.try_with(|c| c.hops).unwrap_or(0)
}

/// Runs `fut` as the handler of a call `hops` deep.
pub(crate) async fn with_context<F: Future>(
    deadline: Option<Deadline>,
    hops: u8,
    fut: F,
) -> F::Output {
    CURRENT.scope(Context { deadline, hops }, fut).await
}

/// Time left before the current request's deadline: `None` outside a
/// handler (or with no deadline), `Some(ZERO)` once it has passed.
pub fn remaining() -> Option<Duration> {
    current_deadline().map(|d| d.remaining().unwrap_or(Duration::ZERO))
}

/// Runs `fut` with `deadline` as the inherited deadline of every request
/// it makes.
pub async fn with_deadline<F: Future>(deadline: Option<Deadline>, fut: F) -> F::Output {
    let hops = current_hops();
    CURRENT.scope(Context { deadline, hops }, fut).await
}

/// `timeout`, shortened to what the inherited deadline leaves.
pub(crate) fn budget(timeout: Duration) -> Duration {
    match remaining() {
        Some(left) => timeout.min(left),
        None => timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_a_handler_the_timeout_is_unchanged() {
        assert_eq!(budget(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(current_deadline(), None);
    }

    #[tokio::test]
    async fn inside_a_handler_the_budget_shrinks_to_the_time_left() {
        let d = Deadline::after(Duration::from_millis(500));
        let b = with_deadline(Some(d), async { budget(Duration::from_secs(10)) }).await;
        assert!(b <= Duration::from_millis(500) && b > Duration::from_millis(100));
        let passed = Deadline(1);
        let b = with_deadline(Some(passed), async { budget(Duration::from_secs(10)) }).await;
        assert_eq!(b, Duration::ZERO);
    }
}
