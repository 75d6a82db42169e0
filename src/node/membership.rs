//! The membership registry: who is on the fabric and whether they are
//! alive.
//!
//! Plain state, no I/O and no clock of its own: every call takes the
//! current time, so the state machine is tested with simulated time and
//! driven by the node with real time.
//!
//! # States
//! A peer is **alive** while heartbeats (or any other sign of life) arrive.
//! After `suspect_after` without one it becomes **suspect**; it still
//! counts as a member but routing should prefer others. After `gone_after`
//! it is **gone**: removed from every lookup and, after `forget_after`,
//! from the registry. A peer that announces it is leaving is gone at once,
//! and only a restart (newer incarnation) brings it back.
//!
//! # Restarts
//! Every process start picks a new *incarnation* (a number that only
//! grows for a given peer id). A sign of life with an older incarnation
//! than the one known is stale and ignored; a newer one is a restart: the
//! peer rejoins, even from gone.
//!
//! # Not guaranteed
//! Views are local and eventually consistent: two nodes may disagree about
//! a peer for up to `gone_after` plus the gossip delay.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::endpoint::Endpoint;

/// A peer's identity on the fabric. It displays as 16 hex digits (the
/// form metrics labels and logs use); user-facing text names the member
/// ([`PeerInfo::name`]) and adds this only to tell members of one name
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a peer says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// A human-readable name (not unique).
    pub name: String,
    /// Where it can be reached.
    pub endpoints: Vec<Endpoint>,
    /// Services it serves (anycast targets).
    pub services: Vec<String>,
    /// Groups it belongs to (multicast targets).
    pub groups: Vec<String>,
    /// Topic prefixes it subscribes to (fabric pub/sub).
    pub topics: Vec<String>,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
    /// Its CURVE public key, when it runs with security on: links to it
    /// expect this server key (see [`NodeBuilder::curve`](super::NodeBuilder::curve)).
    pub curve_key: Option<crate::CurvePublicKey>,
}

/// A peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Heard from within `suspect_after`.
    Alive,
    /// Not heard from for `suspect_after`; still a member.
    Suspect,
    /// Not heard from for `gone_after`, or it left: not a member.
    Gone,
}

/// A change in membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A peer was seen for the first time.
    Joined(PeerId),
    /// A peer came back: a restart (newer incarnation) or a sign of life
    /// after it was suspect or gone.
    Rejoined(PeerId),
    /// A peer's information (services, groups, endpoints) changed.
    Updated(PeerId),
    /// A peer missed heartbeats for `suspect_after`.
    Suspected(PeerId),
    /// A peer missed heartbeats for `gone_after` or announced it left.
    Gone(PeerId),
}

/// Timings of failure detection.
///
/// The defaults are tuned for a LAN: a heartbeat every 500 ms, suspect
/// after 3 missed beats (1.5 s), gone after 5 (2.5 s), forgotten a minute
/// later. A node checks for expiry twice per heartbeat, so a silent peer is
/// out of every route within `gone_after` plus half a heartbeat (2.75 s by
/// default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often a node sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is suspect.
    pub suspect_after: Duration,
    /// Silence after which a peer is gone (and out of every route).
    pub gone_after: Duration,
    /// How long a gone peer is remembered (to ignore its stale messages).
    pub forget_after: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            heartbeat_interval: Duration::from_millis(500),
            suspect_after: Duration::from_millis(1500),
            gone_after: Duration::from_millis(2500),
            forget_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    info: PeerInfo,
    incarnation: u64,
    state: PeerState,
    last_seen: Instant,
    /// It announced its departure: only a newer incarnation brings it back.
    left: bool,
}

/// The registry of peers.
#[derive(Debug)]
pub struct Membership {
    me: PeerId,
    config: MembershipConfig,
    peers: HashMap<PeerId, Entry>,
    max_peers: usize,
}

impl Membership {
    /// An empty registry for the node `me` (which never lists itself).
    pub fn new(me: PeerId, config: MembershipConfig) -> Self {
        Membership {
            me,
            config,
            peers: HashMap::new(),
            max_peers: usize::MAX,
        }
    }

    /// Holds at most `n` peers (members and gone ones not yet forgotten):
    /// a sign of life from a new peer beyond it is ignored, and counted
    /// (`zfabric_gossip_peers_ignored_total{reason="members_full"}`).
    pub fn with_max_peers(mut self, n: usize) -> Self {
        self.max_peers = n.max(1);
        self
    }

    /// The timings in use.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Records a sign of life: a heartbeat or hello carrying the peer's
    /// current information. Returns what changed.
    pub fn observe(
        &mut self,
        info: PeerInfo,
        incarnation: u64,
        now: Instant,
    ) -> Option<MembershipEvent> {
        let id = info.id;
        if id == self.me {
            return None;
        }
        if !self.peers.contains_key(&id) && self.peers.len() >= self.max_peers {
            crate::telemetry::gossip_ignored(crate::telemetry::GossipIgnored::MembersFull, 1);
            return None;
        }
        let Some(e) = self.peers.get_mut(&id) else {
            self.peers.insert(
                id,
                Entry {
                    info,
                    incarnation,
                    state: PeerState::Alive,
                    last_seen: now,
                    left: false,
                },
            );
            return Some(MembershipEvent::Joined(id));
        };
        let restarted = incarnation > e.incarnation;
        if incarnation < e.incarnation || (e.left && !restarted) {
            return None; // stale: from before a restart, or sent before it left
        }
        e.left = false;
        let was = e.state;
        e.last_seen = e.last_seen.max(now);
        e.incarnation = incarnation;
        e.state = PeerState::Alive;
        let changed = e.info != info;
        e.info = info;
        if restarted || was != PeerState::Alive {
            Some(MembershipEvent::Rejoined(id))
        } else if changed {
            Some(MembershipEvent::Updated(id))
        } else {
            None
        }
    }

    /// A peer announced that it is leaving (graceful shutdown).
    pub fn leave(&mut self, id: PeerId, incarnation: u64, now: Instant) -> Option<MembershipEvent> {
        let e = self.peers.get_mut(&id)?;
        if incarnation < e.incarnation || e.state == PeerState::Gone {
            return None;
        }
        e.state = PeerState::Gone;
        e.left = true;
        // Remember it from now on, so stale heartbeats are recognised.
        e.last_seen = now;
        Some(MembershipEvent::Gone(id))
    }

    /// Applies the passage of time: alive peers that fell silent become
    /// suspect, then gone; long-gone peers are forgotten. Call at least
    /// once per heartbeat interval.
    pub fn tick(&mut self, now: Instant) -> Vec<MembershipEvent> {
        let mut events = Vec::new();
        let c = self.config;
        self.peers.retain(|id, e| {
            let silent = now.saturating_duration_since(e.last_seen);
            match e.state {
                PeerState::Alive | PeerState::Suspect if silent >= c.gone_after => {
                    e.state = PeerState::Gone;
                    events.push(MembershipEvent::Gone(*id));
                }
                PeerState::Alive if silent >= c.suspect_after => {
                    e.state = PeerState::Suspect;
                    events.push(MembershipEvent::Suspected(*id));
                }
                PeerState::Gone if silent >= c.gone_after + c.forget_after => return false,
                _ => {}
            }
            true
        });
        events.sort_by_key(|e| match e {
            MembershipEvent::Suspected(id) | MembershipEvent::Gone(id) => *id,
            _ => PeerId(0),
        });
        events
    }

    /// A peer's state, if known.
    pub fn state(&self, id: PeerId) -> Option<PeerState> {
        self.peers.get(&id).map(|e| e.state)
    }

    /// Whether `id` is gone because it fell silent (expired), as opposed
    /// to having left gracefully (a leaving node drains what it has in
    /// progress, so calls out to it still get their answers).
    pub fn expired(&self, id: PeerId) -> bool {
        self.peers
            .get(&id)
            .is_some_and(|e| e.state == PeerState::Gone && !e.left)
    }

    /// A peer's information, if it is a member (alive or suspect).
    pub fn get(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers
            .get(&id)
            .filter(|e| e.state != PeerState::Gone)
            .map(|e| &e.info)
    }

    /// Members (alive or suspect), by id.
    pub fn members(&self) -> Vec<&PeerInfo> {
        let mut v: Vec<&PeerInfo> = self
            .peers
            .values()
            .filter(|e| e.state != PeerState::Gone)
            .map(|e| &e.info)
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Members serving `service`: alive ones first, then suspect ones, each
    /// by id.
    pub fn serving(&self, service: &str) -> Vec<(PeerId, PeerState)> {
        self.select(|i| i.services.iter().any(|s| s == service))
    }

    /// Members of `group`: alive ones first, then suspect ones, each by id.
    pub fn in_group(&self, group: &str) -> Vec<(PeerId, PeerState)> {
        self.select(|i| i.groups.iter().any(|g| g == group))
    }

    fn select(&self, pred: impl Fn(&PeerInfo) -> bool) -> Vec<(PeerId, PeerState)> {
        let mut v: Vec<(PeerId, PeerState)> = self
            .peers
            .values()
            .filter(|e| e.state != PeerState::Gone && pred(&e.info))
            .map(|e| (e.info.id, e.state))
            .collect();
        v.sort_by_key(|(id, st)| (*st != PeerState::Alive, *id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, services: &[&str], groups: &[&str]) -> PeerInfo {
        PeerInfo {
            id: PeerId(id),
            name: format!("n{id}"),
            endpoints: vec![format!("tcp://127.0.0.1:{}", 7000 + id).parse().unwrap()],
            services: services.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            topics: Vec::new(),
            metadata: BTreeMap::new(),
            curve_key: None,
        }
    }

    fn registry() -> Membership {
        Membership::new(PeerId(0), MembershipConfig::default())
    }

    #[test]
    fn a_silent_peer_becomes_suspect_then_gone_then_is_forgotten() {
        let t0 = Instant::now();
        let mut m = registry();
        let c = *m.config();
        assert_eq!(
            m.observe(info(1, &["pricing"], &[]), 1, t0),
            Some(MembershipEvent::Joined(PeerId(1)))
        );
        assert!(m
            .tick(t0 + c.suspect_after - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            m.tick(t0 + c.suspect_after),
            vec![MembershipEvent::Suspected(PeerId(1))]
        );
        // Suspect peers still serve, after the alive ones.
        assert_eq!(m.serving("pricing"), vec![(PeerId(1), PeerState::Suspect)]);
        assert_eq!(
            m.tick(t0 + c.gone_after),
            vec![MembershipEvent::Gone(PeerId(1))]
        );
        assert!(
            m.serving("pricing").is_empty(),
            "a gone peer is out of every route"
        );
        assert!(m.get(PeerId(1)).is_none());
        assert_eq!(m.state(PeerId(1)), Some(PeerState::Gone));
        assert!(m.tick(t0 + c.gone_after + c.forget_after).is_empty());
        assert_eq!(m.state(PeerId(1)), None, "forgotten");
    }

    #[test]
    fn heartbeats_keep_a_peer_alive() {
        let t0 = Instant::now();
        let mut m = registry();
        let c = *m.config();
        m.observe(info(1, &[], &[]), 1, t0);
        for k in 1..20u32 {
            let now = t0 + c.heartbeat_interval * k;
            assert_eq!(m.observe(info(1, &[], &[]), 1, now), None);
            assert!(m.tick(now).is_empty());
        }
        assert_eq!(m.state(PeerId(1)), Some(PeerState::Alive));
    }

    #[test]
    fn a_restarted_peer_rejoins_and_stale_messages_are_ignored() {
        let t0 = Instant::now();
        let mut m = registry();
        let c = *m.config();
        m.observe(info(1, &["a"], &[]), 5, t0);
        m.tick(t0 + c.gone_after);
        assert_eq!(m.state(PeerId(1)), Some(PeerState::Gone));
        // A late heartbeat from the old process (same incarnation) counts as
        // a sign of life; an older incarnation does not.
        let t1 = t0 + c.gone_after + Duration::from_millis(10);
        assert_eq!(m.observe(info(1, &["a"], &[]), 4, t1), None);
        assert_eq!(m.state(PeerId(1)), Some(PeerState::Gone));
        assert_eq!(
            m.observe(info(1, &["a", "b"], &[]), 6, t1),
            Some(MembershipEvent::Rejoined(PeerId(1)))
        );
        assert_eq!(m.serving("b"), vec![(PeerId(1), PeerState::Alive)]);
        // Restart while alive is also a rejoin.
        assert_eq!(
            m.observe(info(1, &["a", "b"], &[]), 7, t1),
            Some(MembershipEvent::Rejoined(PeerId(1)))
        );
    }

    #[test]
    fn a_peer_that_leaves_is_gone_at_once() {
        let t0 = Instant::now();
        let mut m = registry();
        m.observe(info(1, &[], &["audit"]), 1, t0);
        assert_eq!(
            m.leave(PeerId(1), 1, t0),
            Some(MembershipEvent::Gone(PeerId(1)))
        );
        assert!(m.in_group("audit").is_empty());
        assert_eq!(m.leave(PeerId(1), 1, t0), None, "only once");
        // A heartbeat it sent before leaving does not bring it back; a
        // restart (newer incarnation) does.
        assert_eq!(m.observe(info(1, &[], &["audit"]), 1, t0), None);
        assert!(m.in_group("audit").is_empty());
        assert_eq!(
            m.observe(info(1, &[], &["audit"]), 2, t0),
            Some(MembershipEvent::Rejoined(PeerId(1)))
        );
        assert_eq!(m.leave(PeerId(9), 1, t0), None, "unknown peer");
    }

    #[test]
    fn changes_in_services_are_reported_and_lookups_prefer_alive_members() {
        let t0 = Instant::now();
        let mut m = registry();
        let c = *m.config();
        m.observe(info(2, &["pricing"], &[]), 1, t0);
        m.observe(info(3, &["pricing"], &[]), 1, t0 + c.suspect_after);
        m.tick(t0 + c.suspect_after);
        assert_eq!(
            m.serving("pricing"),
            vec![
                (PeerId(3), PeerState::Alive),
                (PeerId(2), PeerState::Suspect)
            ]
        );
        let now = t0 + c.suspect_after;
        assert_eq!(
            m.observe(info(3, &["pricing", "quotes"], &[]), 1, now),
            Some(MembershipEvent::Updated(PeerId(3)))
        );
        assert_eq!(
            m.observe(info(3, &["pricing", "quotes"], &[]), 1, now),
            None
        );
    }

    #[test]
    fn a_peer_id_displays_as_hex_not_as_a_debug_tuple() {
        assert_eq!(PeerId(0x4c3f).to_string(), "0000000000004c3f");
        assert_eq!(PeerId(u64::MAX).to_string(), "ffffffffffffffff");
    }

    #[test]
    fn a_node_never_lists_itself() {
        let mut m = registry();
        assert_eq!(m.observe(info(0, &["x"], &[]), 1, Instant::now()), None);
        assert!(m.members().is_empty());
    }
}
