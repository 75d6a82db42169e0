//! Nodes: a process's presence on the fabric.
//!
//! A [`Node`] joins the fabric from one seed, keeps a [`Membership`] view
//! fed by heartbeats and gossip, serves named services and calls them by
//! name (anycast) or by peer (unicast), sends to groups (multicast),
//! publishes to subscribers anywhere on the fabric, and leaves gracefully.
//! Discovery: static seeds, seed host names re-resolved (DNS), gossip, and
//! a UDP beacon on the LAN.
//!
//! # Discovery
//! A node needs one seed endpoint to find the whole fabric. Every hello
//! carries the peers the sender knows (gossip); a node says hello to the
//! ones it does not know yet, and they become members once they answer.
//! Hearsay alone never makes a peer a member.
//!
//! # Delivery guarantees
//! | operation | guarantee | when the peer dies |
//! |---|---|---|
//! | unicast ([`Node::unicast`], [`Node::request_peer`]) | exactly one answer (the reply, or the acknowledgement that the peer's inbox took the message) or a typed error before the deadline | `PeerGone` as soon as the link to it breaks while the call is out; after it is declared gone, `UnknownPeer` at once |
//! | anycast ([`Node::request`], [`Node::request_with`]) | one member serving the service handles it: alive members first, round-robin or least-outstanding, skipping members whose circuit is open; an unknown service is `NoSuchService` at once, all circuits open is `CircuitOpen` at once | `PeerGone`; if marked idempotent, retried on another member (jittered backoff, `RetryPolicy::max_attempts`, the retry budget, the same deadline), so it is processed at least once and possibly more than once unless the service deduplicates ([`ServeOptions::dedup`]) |
//! | multicast ([`Node::multicast`]) | every current member of the group is sent the message concurrently; the report names who acknowledged and who did not, with why | listed in `failed` (timeout or `PeerGone`), never silently skipped |
//! | fabric publish ([`Node::publish`]) | at most once to every subscription whose prefix matches, as known from the last heartbeat; returns how many took it | not counted; the loss is counted as `link_down` |
//!
//! A node that serves a service itself is one of its members: anycast may
//! choose it, and the call then runs in the caller's task without a socket
//! (same bulkhead, dedup, deadline and hop rules).
//!
//! A service may run in a bulkhead ([`NodeBuilder::serve_with`]): when
//! it is full the call is refused at once and the caller gets
//! [`CallError::Rejected`] (an idempotent call tries another member). Calls
//! made from inside a handler inherit what is left of its deadline.
//!
//! A peer that stops answering is suspect after `suspect_after` and out of
//! every route after `gone_after` (checked twice per heartbeat); one that
//! leaves gracefully is out at once. Views are eventually consistent (see
//! [`Membership`]). A restarted process is a new member (new id).
//!
//! # Parts
//! A node is built from parts, each owning one kind of state; the
//! [`Node`] facade composes them. In dependency order (each module uses
//! only those above it):
//!
//! | module | owns | must not |
//! |---|---|---|
//! | `clock` | the one `now()` (tokio's clock) | schedule anything |
//! | `membership` | the registry state machine (alive, suspect, gone, incarnations) | do I/O or read a clock |
//! | `protocol` | the node messages: which header fields and which body each carries (bodies pass through as `Bytes`) | send, receive or decide |
//! | `error` | [`CallError`], which failures are member failures, typing remote codes | retry |
//! | `options` | [`NodeConfig`], [`CallOptions`], [`Balance`], [`MulticastReport`] | act on them |
//! | `service` | a served service (hop limit, dedup, bulkhead, deadline) and the handler type | know peers or links |
//! | `local` | inbox, subscriptions, groups (local delivery) | know peers or links |
//! | `routing` | interned service names, breakers, retry budgets, round-robin cursor, breaker log; `pick` (pure) | hold members or links, send |
//! | `links` | the one place a link is made; member links; typed node requests | know membership, choose, retry |
//! | `advertise` | what the hellos name: bound vs advertised endpoints (pure), the host's address | bind or connect |
//! | `beacon` | the UDP beacon; hands discoveries over a channel | know the node |
//! | `gossip` | the membership view, hellos, heartbeats, expiry, seeds, discoveries | route calls, deliver anything but hellos |
//! | `serve` | the servers (bind, serve) and inbound dispatch, one function per message kind | choose members, make links |
//! | `shared` | the parts held together | add state or logic |
//! | `call` | the call path: pick, breaker judgement, retries, local calls | encode bodies or know the wire |
//! | `node` | the [`Node`] facade and [`NodeHandle`] | hold state of its own |
//! | `builder` | [`NodeBuilder`] and `Node::builder`: binding, seeds, starting the tasks | wait for peers |
//!
//! Locks are `parking_lot` locks: they cannot be poisoned, so a panic in
//! one task never turns a registry into a silently empty one.

mod advertise;
mod beacon;
mod builder;
mod call;
mod clock;
mod error;
mod gossip;
mod links;
mod local;
mod membership;
#[allow(clippy::module_inception)]
mod node;
mod options;
mod protocol;
mod routing;
mod serve;
mod service;
mod shared;
#[doc(hidden)]
pub mod vectors;

pub use advertise::{advertised, Advertised, HostAddresses};
pub use beacon::{BeaconConfig, BeaconKey, BeaconKeyError, BEACON_MAX_AGE, MAX_BEACON};
pub use builder::NodeBuilder;
pub use error::CallError;
pub use local::{Direct, NodeInbox, NodeSubscription, Published};
pub use membership::{Membership, MembershipConfig, MembershipEvent, PeerId, PeerInfo, PeerState};
pub use node::{Node, NodeHandle};
pub use options::{Balance, CallOptions, GossipLimits, MulticastReport, NodeConfig};
pub use routing::BreakerEvent;
pub use service::{CallInfo, ServeOptions, MAX_HOPS};

/// Reads arbitrary bytes as a node request (header length in the first
/// two bytes, then header, then body) and as a hello reply: the fuzz
/// target's way in (see `crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_node_message(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let n = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
    let (head, body) = data[2..].split_at(n);
    if let Ok(h) = crate::wire::Header::decode(head, 16 * 1024) {
        let _ = protocol::NodeMsg::read(&h, body);
    }
    let _ = protocol::read_hello_reply(body);
}
