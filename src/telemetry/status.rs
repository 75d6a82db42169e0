//! The live state of a process's nodes and bulkheads as plain data: what a
//! status page shows (members and their state, services and who serves
//! them, breaker states, bulkhead saturation).
//!
//! The owners registered for scrape-time gauges ([`collect`](super::collect))
//! fill a [`StatusReport`] the same way, from the same state, when
//! [`status`] is called: a report describes what is alive now, and a
//! dropped node or bulkhead is simply absent from the next one.
//!
//! Guarantees: every live registered owner is reported, each call; the
//! report is built outside any lock of the registry; nothing here runs on
//! a message path. Does not: count or time requests (the request metrics
//! do), or render anything (the HTTP edge renders it, `zfabric::edge`).

use serde::Serialize;

/// What [`status`] returns: every live node and bulkhead of this process.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusReport {
    /// The nodes running in this process, by name.
    pub nodes: Vec<NodeStatus>,
    /// The bulkheads alive in this process, by name.
    pub bulkheads: Vec<BulkheadStatus>,
}

/// One node as it sees the fabric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its id (16 hex digits).
    pub id: String,
    /// The services it serves itself.
    pub serves: Vec<String>,
    /// The members it sees (alive or suspect), itself not included.
    pub members: Vec<MemberStatus>,
    /// The breakers it keeps, one per service and member name.
    pub breakers: Vec<BreakerStatus>,
}

/// A member as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStatus {
    /// Its name.
    pub name: String,
    /// Its id (16 hex digits).
    pub id: String,
    /// `alive` or `suspect`.
    pub state: &'static str,
    /// The services it serves.
    pub services: Vec<String>,
    /// Where it is reached.
    pub endpoints: Vec<String>,
}

/// A circuit breaker a node keeps for one service on one member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerStatus {
    /// The service.
    pub service: String,
    /// The member's name.
    pub peer: String,
    /// `closed`, `half_open` or `open` (the worst when names repeat).
    pub state: &'static str,
}

/// A bulkhead's saturation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkheadStatus {
    /// Its name.
    pub name: String,
    /// Executions running.
    pub in_flight: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Its `max_concurrent`.
    pub max_concurrent: usize,
    /// Its `max_queued`.
    pub max_queued: usize,
}

/// The live state of every node and bulkhead of this process.
pub fn status() -> StatusReport {
    let mut report = StatusReport::default();
    for owner in super::collect::live() {
        owner.report(&mut report);
    }
    report
        .nodes
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    report.bulkheads.sort_by(|a, b| a.name.cmp(&b.name));
    report
}
