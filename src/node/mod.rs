//! Nodes: a process's presence on the fabric.
//!
//! This module grows into the `Node` (identity, membership, discovery,
//! name-addressed messaging). Its first part is the membership registry,
//! the failure-detection state machine every node runs.

mod membership;

pub use membership::{Membership, MembershipConfig, MembershipEvent, PeerId, PeerInfo, PeerState};
