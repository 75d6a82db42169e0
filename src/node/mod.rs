//! Nodes: a process's presence on the fabric.
//!
//! A [`Node`] joins the fabric from one seed, keeps a [`Membership`] view
//! fed by heartbeats and gossip, serves named services and calls them by
//! name (anycast) or by peer (unicast), sends to groups (multicast),
//! publishes to subscribers anywhere on the fabric, and leaves gracefully.
//! Discovery: static seeds, seed host names re-resolved (DNS), gossip, and
//! a UDP beacon on the LAN.

mod beacon;
mod membership;
#[allow(clippy::module_inception)]
mod node;
mod service;

pub use beacon::{BeaconConfig, MAX_BEACON};
pub use membership::{Membership, MembershipConfig, MembershipEvent, PeerId, PeerInfo, PeerState};
pub use node::{
    Balance, CallError, CallOptions, MulticastReport, Node, NodeBuilder, NodeConfig, NodeHandle,
    NodeSubscription, Published, MAX_HOPS,
};
pub use service::{CallInfo, ServeOptions};
