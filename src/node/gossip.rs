//! Gossip: who is on the fabric, as this node learns it: hellos and what
//! they carry, heartbeats, expiry, seeds, and what the beacon discovers.
//!
//! Guarantees: hearsay alone never makes a peer a member: a peer named in
//! someone's hello is greeted (also one this node expired: a healed
//! partition is seen through hearsay at once, not after `forget_after`),
//! and becomes a member only once it answers itself. Every membership
//! change is published to [`Gossip::subscribe`] after the link to a peer
//! that left or is gone was dropped. Expiry runs
//! twice per heartbeat interval, so a silent peer is out within
//! `gone_after` plus half an interval. Seed host names are re-resolved
//! every ten heartbeats. What gossip can make a node do is bounded
//! ([`GossipLimits`]): at most `greets_per_hello` unknown peers greeted
//! per hello, `greets_in_flight` greets at once (one per endpoint), and
//! `max_members` peers in the registry; what is ignored is counted
//! (`zfabric_gossip_peers_ignored_total{reason}`), so a hello naming
//! 10,000 invented peers costs a few dozen connection attempts, not
//! 10,000. The state ([`Gossip`]) takes the time as an
//! argument and is tested without sockets; the tasks ([`Gossiper`]) only
//! move hellos between it and the links. Does not: route calls, or
//! deliver anything but hellos.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};

use super::beacon::Discovered;
use super::clock::now;
use super::links::{reachable, Link, Links};
use super::local::Local;
use super::membership::{
    Membership, MembershipConfig, MembershipEvent, PeerId, PeerInfo, PeerState,
};
use super::options::GossipLimits;
use super::protocol::{Hello, WirePeer};
use super::routing::Routing;
use crate::endpoint::Endpoint;
use crate::telemetry::{self, GossipIgnored, SeedFailure};

/// How many heartbeats between two resolutions of the seed names.
const RESOLVE_EVERY: u32 = 10;

/// This node's view of the fabric: who it is, who it knows.
pub(super) struct Gossip {
    info: PeerInfo,
    incarnation: u64,
    config: MembershipConfig,
    limits: GossipLimits,
    membership: Mutex<Membership>,
    events: broadcast::Sender<MembershipEvent>,
    /// Endpoints being greeted now (at most `limits.greets_in_flight`).
    greeting: Mutex<HashSet<Endpoint>>,
    /// Whether this node joins as a client only (see [`Gossip::with_client`]).
    client: bool,
}

/// One greet under way: its endpoint leaves the in-flight set when this
/// is dropped, however the greet ends.
pub(super) struct Greeting {
    view: Arc<Gossip>,
    endpoint: Endpoint,
}

impl Drop for Greeting {
    fn drop(&mut self) {
        self.view.greeting.lock().remove(&self.endpoint);
    }
}

impl Gossip {
    pub(super) fn new(
        info: PeerInfo,
        incarnation: u64,
        config: MembershipConfig,
        limits: GossipLimits,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Gossip {
            membership: Mutex::new(
                Membership::new(info.id, config).with_max_peers(limits.max_members),
            ),
            info,
            incarnation,
            config,
            limits,
            events,
            greeting: Mutex::new(HashSet::new()),
            client: false,
        }
    }

    /// Makes this node a client: its hellos say so, so the nodes it greets
    /// answer them (it learns the members) without making it a member.
    pub(super) fn with_client(mut self, client: bool) -> Self {
        self.client = client;
        self
    }

    /// Takes a greet slot for `ep`: `None` if `ep` is being greeted
    /// already, or if `greets_in_flight` greets are under way (counted).
    pub(super) fn start_greeting(self: &Arc<Self>, ep: &Endpoint) -> Option<Greeting> {
        let mut g = self.greeting.lock();
        if g.contains(ep) {
            return None;
        }
        if g.len() >= self.limits.greets_in_flight {
            drop(g);
            telemetry::gossip_ignored(GossipIgnored::GreetLimit, 1);
            return None;
        }
        g.insert(ep.clone());
        Some(Greeting {
            view: self.clone(),
            endpoint: ep.clone(),
        })
    }

    /// Greets under way now.
    #[cfg(test)]
    pub(super) fn greets_in_flight(&self) -> usize {
        self.greeting.lock().len()
    }

    /// This node as it introduces itself.
    pub(super) fn me(&self) -> &PeerInfo {
        &self.info
    }

    /// This process's incarnation.
    pub(super) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// This node's hello, with the groups and topics it has now.
    pub(super) fn hello(&self, groups: Vec<String>, topics: Vec<String>) -> Hello {
        let known = self
            .membership
            .lock()
            .members()
            .into_iter()
            .map(WirePeer::from_info)
            .collect();
        let mut from = WirePeer::from_info(&self.info);
        from.groups = groups;
        from.topics = topics;
        Hello {
            from,
            incarnation: self.incarnation,
            known,
            client: self.client,
        }
    }

    /// Records a hello: the sender is alive; peers it knows that this node
    /// does not know, or expired, are returned, to be greeted: at most
    /// `greets_per_hello` of them (the rest are counted and left for later
    /// hellos). A peer that left gracefully is not greeted again: it comes
    /// back with a new id.
    pub(super) fn heard(&self, h: &Hello, now: Instant) -> Vec<PeerInfo> {
        if h.client {
            // A caller, not a member: answered, never recorded.
            tracing::trace!(from = h.from.id, name = %h.from.name, "hello from a client");
            return Vec::new();
        }
        let Some(info) = h.from.to_info() else {
            return Vec::new();
        };
        let mut m = self.membership.lock();
        if let Some(ev) = m.observe(info, h.incarnation, now) {
            let _ = self.events.send(ev);
        }
        // Greeted: peers this node does not know, and peers it expired
        // (silent past `gone_after`, not left) that the sender sees alive:
        // a partition healed. Without the second kind, a node that hears
        // of such a peer only through others (a client, a member that is
        // not its seed) would ignore it until `forget_after`.
        let mut unknown = h.known.iter().filter(|p| {
            let id = PeerId(p.id);
            id != self.info.id && (m.state(id).is_none() || m.expired(id))
        });
        let greet: Vec<PeerInfo> = unknown
            .by_ref()
            .take(self.limits.greets_per_hello)
            .filter_map(WirePeer::to_info)
            .collect();
        let rest = unknown.count();
        drop(m);
        if rest > 0 {
            telemetry::gossip_ignored(GossipIgnored::GreetLimit, rest as u64);
            tracing::debug!(
                from = h.from.id,
                ignored = rest,
                "hello names more unknown peers than greets_per_hello"
            );
        }
        greet
    }

    /// Records that `id` left; `gone` runs (to drop its link) before the
    /// event is published.
    pub(super) fn leave(
        &self,
        id: PeerId,
        incarnation: u64,
        now: Instant,
        mut gone: impl FnMut(PeerId),
    ) {
        let ev = self.membership.lock().leave(id, incarnation, now);
        if let Some(ev) = ev {
            gone(id);
            let _ = self.events.send(ev);
        }
    }

    /// Applies the passage of time and publishes the changes; `gone` runs
    /// for every peer now gone, before its event is published.
    pub(super) fn expire(&self, now: Instant, mut gone: impl FnMut(PeerId)) {
        let events = self.membership.lock().tick(now);
        for ev in events {
            if let MembershipEvent::Gone(id) = ev {
                gone(id);
            }
            let _ = self.events.send(ev);
        }
    }

    /// The members by state now: `(alive, suspect)`.
    pub(super) fn counts(&self) -> (usize, usize) {
        let m = self.membership.lock();
        let members = m.members();
        let alive = members
            .iter()
            .filter(|p| m.state(p.id) == Some(PeerState::Alive))
            .count();
        (alive, members.len() - alive)
    }

    /// A member's name (alive or suspect members only).
    pub(super) fn member_name(&self, id: PeerId) -> Option<String> {
        let m = self.membership.lock();
        match m.state(id)? {
            PeerState::Alive | PeerState::Suspect => Some(m.get(id)?.name.clone()),
            PeerState::Gone => None,
        }
    }

    /// Whether `id` is in the registry at all (any state).
    pub(super) fn knows(&self, id: PeerId) -> bool {
        self.membership.lock().state(id).is_some()
    }

    /// A peer's state, if known.
    pub(super) fn state(&self, id: PeerId) -> Option<PeerState> {
        self.membership.lock().state(id)
    }

    /// Whether `id` is gone by expiry (not by a graceful leave).
    pub(super) fn expired(&self, id: PeerId) -> bool {
        self.membership.lock().expired(id)
    }

    /// The current members (alive or suspect).
    pub(super) fn members(&self) -> Vec<PeerInfo> {
        self.membership
            .lock()
            .members()
            .into_iter()
            .cloned()
            .collect()
    }

    /// A member's advertised CURVE public key.
    pub(super) fn curve_key(&self, id: PeerId) -> Option<crate::CurvePublicKey> {
        self.membership.lock().get(id)?.curve_key
    }

    /// A member's endpoints.
    pub(super) fn endpoints(&self, id: PeerId) -> Option<Vec<Endpoint>> {
        Some(self.membership.lock().get(id)?.endpoints.clone())
    }

    /// The members serving `service`, alive ones first.
    pub(super) fn serving(&self, service: &str) -> Vec<(PeerId, PeerState)> {
        self.membership.lock().serving(service)
    }

    /// The members of `group`.
    pub(super) fn in_group(&self, group: &str) -> Vec<PeerId> {
        self.membership
            .lock()
            .in_group(group)
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Membership changes from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }
}

/// The gossip tasks and answers: the view, the links hellos travel on,
/// and the local state a hello announces.
#[derive(Clone)]
pub(super) struct Gossiper {
    pub(super) view: Arc<Gossip>,
    pub(super) links: Arc<Links>,
    pub(super) local: Arc<Local>,
    pub(super) routing: Arc<Routing>,
}

impl Gossiper {
    /// This node's hello now.
    fn hello(&self) -> Hello {
        self.view
            .hello(self.local.group_names(), self.local.topics())
    }

    /// Answers a hello that came in a request; gossip learned from it is
    /// greeted on the next beat.
    pub(super) fn answer(&self, h: &Hello) -> Hello {
        let _ = self.view.heard(h, now());
        self.hello()
    }

    /// A peer says it leaves: out at once, its link dropped.
    pub(super) fn left(&self, id: PeerId, incarnation: u64) {
        self.view
            .leave(id, incarnation, now(), |id| self.drop_member(id));
    }

    /// Says hello over `link` and greets the peers the answer names that
    /// this node does not know; whether it was answered.
    async fn say_hello(&self, link: &Link) -> bool {
        let Some(h) = link.hello(self.hello()).await else {
            return false;
        };
        for p in self.view.heard(&h, now()) {
            if let Some(ep) = reachable(&p.endpoints) {
                self.greet(ep, p.curve_key).await;
            }
        }
        true
    }

    /// Says hello, once, to a node known only by an endpoint (from gossip
    /// or a beacon); it becomes a member if it answers. Skipped while
    /// that endpoint is being greeted, or while `greets_in_flight` greets
    /// are under way. With security on the link expects `key` (the key
    /// gossip carried for it; none for a beacon find: the configured
    /// server keys).
    pub(super) async fn greet(&self, ep: &Endpoint, key: Option<crate::CurvePublicKey>) {
        let Some(slot) = self.view.start_greeting(ep) else {
            return;
        };
        if let Some(link) = self.links.connect_to(ep, key).await {
            let me = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Some(h) = link.hello(me.hello()).await {
                    me.view.heard(&h, now());
                }
            });
        }
    }

    fn expire(&self) {
        self.view.expire(now(), |id| self.drop_member(id));
    }

    /// A member is gone: its link and its breakers go too.
    fn drop_member(&self, id: PeerId) {
        self.links.remove(id);
        self.routing.forget(id);
    }

    /// Says hello every heartbeat interval to every member and seed, and
    /// checks for expiry twice as often (so detection lags `gone_after` by
    /// at most half an interval).
    pub(super) async fn heartbeats(self, seed_names: Vec<Endpoint>) {
        let mut seeds: HashMap<Endpoint, Arc<Link>> = HashMap::new();
        let health = Arc::new(SeedHealth::default());
        let mut beat = 0u32;
        let mut tick = tokio::time::interval(self.view.config.heartbeat_interval / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut half = false;
        loop {
            tick.tick().await;
            half = !half;
            if !half {
                self.expire();
                continue;
            }
            if beat.is_multiple_of(RESOLVE_EVERY) {
                let current = resolve_seeds(&seed_names, &health).await;
                seeds.retain(|ep, _| current.contains(ep));
                health.keep(seed_names.iter().chain(&current));
                for ep in current {
                    if seeds.contains_key(&ep) {
                        continue;
                    }
                    match self.links.connect(&ep).await {
                        Some(link) => {
                            seeds.insert(ep, link);
                        }
                        None => {
                            health.report(&ep.to_string(), Err(SeedFailure::Unreachable));
                        }
                    }
                }
            }
            beat = beat.wrapping_add(1);
            let peers: Vec<PeerId> = self.view.members().iter().map(|p| p.id).collect();
            let mut beats = Vec::new();
            for id in peers {
                if let Some(link) = self.links.to_member(id, || self.view.endpoints(id)).await {
                    let me = self.clone();
                    beats.push(tokio::spawn(async move {
                        me.say_hello(&link).await;
                    }));
                }
            }
            for (ep, s) in &seeds {
                let (me, s, health, ep) = (self.clone(), s.clone(), health.clone(), ep.to_string());
                beats.push(tokio::spawn(async move {
                    let answered = me.say_hello(&s).await;
                    health.report(&ep, answered.then_some(()).ok_or(SeedFailure::Unreachable));
                }));
            }
            self.expire();
            drop(beats); // they finish on their own, within one interval
        }
    }

    /// Greets every node the beacon discovers that this node does not
    /// know yet.
    pub(super) async fn discoveries(self, mut found: mpsc::Receiver<Discovered>) {
        while let Some(d) = found.recv().await {
            if !self.view.knows(d.id) {
                self.greet(&d.endpoint, None).await;
            }
        }
    }
}

/// How many times in a row each seed failed, so that a change is logged
/// once (the counter counts every failure).
#[derive(Default)]
struct SeedHealth(Mutex<HashMap<String, u32>>);

/// Failures in a row before a seed is logged as failing, by reason:
/// about five seconds' worth (names are resolved every ten heartbeats,
/// hellos sent every heartbeat), so that a seed that is just starting,
/// or a short-lived caller (`zfabric req`) that reports the failure
/// itself, does not warn.
const fn warn_after(reason: SeedFailure) -> u32 {
    match reason {
        SeedFailure::Unresolved => 2,
        SeedFailure::Unreachable => 10,
    }
}

impl SeedHealth {
    /// Counts a failure; logs a warning when `seed` has failed
    /// [`warn_after`] times in a row, info when it works again after that.
    fn report(&self, seed: &str, outcome: Result<(), SeedFailure>) {
        if let Err(reason) = outcome {
            crate::telemetry::seed_failed(reason);
        }
        let mut m = self.0.lock();
        let failed = m.entry(seed.to_owned()).or_insert(0);
        match outcome {
            Ok(()) => {
                if *failed >= warn_after(SeedFailure::Unresolved) {
                    tracing::info!(seed, "seed answers again");
                }
                *failed = 0;
            }
            Err(reason) => {
                *failed = failed.saturating_add(1);
                if *failed == warn_after(reason) {
                    match reason {
                        SeedFailure::Unresolved => tracing::warn!(
                            seed,
                            "seed name does not resolve (retried every ten heartbeats; counted as zfabric_seed_failures_total{{reason=\"unresolved\"}})"
                        ),
                        _ => tracing::warn!(
                            seed,
                            "seed does not answer (retried every heartbeat; counted as zfabric_seed_failures_total{{reason=\"unreachable\"}})"
                        ),
                    }
                }
            }
        }
    }

    /// Forgets every seed but `current` (addresses a name no longer has).
    fn keep<'a>(&self, current: impl Iterator<Item = &'a Endpoint>) {
        let keep: HashSet<String> = current.map(|e| e.to_string()).collect();
        self.0.lock().retain(|k, _| keep.contains(k));
    }
}

/// Seed endpoints, with host names resolved to every address they have
/// (a Kubernetes headless Service name gives one per pod); a name that
/// does not resolve is reported to `health`.
async fn resolve_seeds(seeds: &[Endpoint], health: &SeedHealth) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for ep in seeds {
        match ep {
            Endpoint::Tcp { host, port } if host.parse::<std::net::IpAddr>().is_err() => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => {
                        let before = out.len();
                        out.extend(addrs.map(|a| Endpoint::Tcp {
                            host: a.ip().to_string(),
                            port: a.port(),
                        }));
                        let found = out.len() > before;
                        health.report(
                            &ep.to_string(),
                            found.then_some(()).ok_or(SeedFailure::Unresolved),
                        );
                    }
                    Err(e) => {
                        tracing::debug!(%ep, error = %e, "seed name did not resolve");
                        health.report(&ep.to_string(), Err(SeedFailure::Unresolved));
                    }
                }
            }
            other => out.push(other.clone()),
        }
    }
    out.sort_by_key(|e| e.to_string());
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    fn info(id: u64, services: &[&str]) -> PeerInfo {
        PeerInfo {
            id: PeerId(id),
            name: format!("n{id}"),
            endpoints: vec![format!("tcp://127.0.0.1:{}", 7000 + id).parse().unwrap()],
            services: services.iter().map(|s| s.to_string()).collect(),
            groups: Vec::new(),
            topics: Vec::new(),
            metadata: BTreeMap::new(),
            curve_key: None,
        }
    }

    fn hello_from(id: u64, incarnation: u64, known: &[PeerInfo]) -> Hello {
        Hello {
            from: WirePeer::from_info(&info(id, &["svc"])),
            incarnation,
            known: known.iter().map(WirePeer::from_info).collect(),
            client: false,
        }
    }

    fn view() -> Gossip {
        Gossip::new(
            info(0, &[]),
            1,
            MembershipConfig::default(),
            GossipLimits::default(),
        )
    }

    #[test]
    fn a_client_hello_is_answered_but_never_makes_a_member() {
        let g = view();
        let mut events = g.subscribe();
        let mut h = hello_from(7, 1, &[info(2, &[])]);
        h.client = true;
        assert!(
            g.heard(&h, Instant::now()).is_empty(),
            "a client's gossip is not greeted"
        );
        assert!(g.membership.lock().state(PeerId(7)).is_none());
        assert!(events.try_recv().is_err(), "no joined event for a client");
        // The same peer as a member does join.
        h.client = false;
        let _ = g.heard(&h, Instant::now());
        assert!(g.membership.lock().state(PeerId(7)).is_some());
    }

    #[test]
    fn a_hello_makes_its_sender_a_member_but_hearsay_only_names_peers_to_greet() {
        let g = view();
        let mut events = g.subscribe();
        let t0 = Instant::now();
        let greet = g.heard(&hello_from(1, 1, &[info(0, &[]), info(2, &[])]), t0);
        assert_eq!(
            events.try_recv().unwrap(),
            MembershipEvent::Joined(PeerId(1))
        );
        assert_eq!(
            greet.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![PeerId(2)]
        );
        assert!(g.knows(PeerId(1)));
        assert!(!g.knows(PeerId(2)), "hearsay alone never makes a member");
        assert_eq!(g.serving("svc"), vec![(PeerId(1), PeerState::Alive)]);
        // Once it is known, it is not named again.
        let again = g.heard(&hello_from(2, 1, &[]), t0);
        assert!(again.is_empty());
        assert!(g.heard(&hello_from(1, 1, &[info(2, &[])]), t0).is_empty());
    }

    fn ignored(snap: &metrics_util::debugging::Snapshotter, reason: &str) -> u64 {
        snap.snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, _, _, _)| {
                k.key().name() == telemetry::GOSSIP_IGNORED
                    && k.key().labels().any(|l| l.value() == reason)
            })
            .map(|(_, _, _, v)| match v {
                metrics_util::debugging::DebugValue::Counter(c) => c,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn a_hello_naming_ten_thousand_invented_peers_costs_a_bounded_greet() {
        let rec = metrics_util::debugging::DebuggingRecorder::new();
        let snap = rec.snapshotter();
        metrics::with_local_recorder(&rec, || {
            let g = view();
            let invented: Vec<PeerInfo> = (1_000..11_000).map(|i| info(i, &[])).collect();
            let greet = g.heard(&hello_from(1, 1, &invented), Instant::now());
            let limits = GossipLimits::default();
            assert_eq!(greet.len(), limits.greets_per_hello);
            assert_eq!(
                ignored(&snap, "greet_limit"),
                (10_000 - limits.greets_per_hello) as u64
            );
            // None of them became a member by hearsay.
            assert_eq!(g.members().len(), 1);
        });
    }

    #[test]
    fn greets_in_flight_are_bounded_and_one_per_endpoint() {
        let rec = metrics_util::debugging::DebuggingRecorder::new();
        let snap = rec.snapshotter();
        metrics::with_local_recorder(&rec, || {
            let limits = GossipLimits {
                greets_in_flight: 3,
                ..GossipLimits::default()
            };
            let g = Arc::new(Gossip::new(
                info(0, &[]),
                1,
                MembershipConfig::default(),
                limits,
            ));
            let ep =
                |i: u16| -> Endpoint { format!("tcp://127.0.0.1:{}", 9000 + i).parse().unwrap() };
            let a = g.start_greeting(&ep(1)).unwrap();
            assert!(g.start_greeting(&ep(1)).is_none(), "one greet per endpoint");
            let _b = g.start_greeting(&ep(2)).unwrap();
            let _c = g.start_greeting(&ep(3)).unwrap();
            assert!(
                g.start_greeting(&ep(4)).is_none(),
                "three in flight at most"
            );
            assert_eq!(ignored(&snap, "greet_limit"), 1);
            drop(a);
            assert_eq!(g.greets_in_flight(), 2);
            assert!(
                g.start_greeting(&ep(4)).is_some(),
                "a finished greet frees its slot"
            );
        });
    }

    #[test]
    fn the_registry_stops_growing_at_max_members() {
        let rec = metrics_util::debugging::DebuggingRecorder::new();
        let snap = rec.snapshotter();
        metrics::with_local_recorder(&rec, || {
            let limits = GossipLimits {
                max_members: 2,
                ..GossipLimits::default()
            };
            let g = Gossip::new(info(0, &[]), 1, MembershipConfig::default(), limits);
            let t0 = Instant::now();
            for id in 1..=5 {
                g.heard(&hello_from(id, 1, &[]), t0);
            }
            assert_eq!(g.members().len(), 2);
            assert_eq!(ignored(&snap, "members_full"), 3);
            // Members already known keep being heard.
            g.heard(&hello_from(1, 2, &[]), t0);
            assert!(g.knows(PeerId(1)));
        });
    }

    #[test]
    fn a_hello_with_a_bad_endpoint_is_ignored() {
        let g = view();
        let mut h = hello_from(1, 1, &[]);
        h.from.endpoints = vec!["nonsense".into()];
        assert!(g.heard(&h, Instant::now()).is_empty());
        assert!(!g.knows(PeerId(1)));
    }

    #[test]
    fn our_hello_carries_who_we_know_and_what_we_joined() {
        let g = view();
        g.heard(&hello_from(1, 1, &[]), Instant::now());
        let h = g.hello(vec!["g".into()], vec!["t.".into()]);
        assert_eq!((h.from.id, h.incarnation), (0, 1));
        assert_eq!(
            (h.from.groups, h.from.topics),
            (vec!["g".to_string()], vec!["t.".to_string()])
        );
        assert_eq!(h.known.iter().map(|p| p.id).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_silent_peer_expires_and_its_link_is_dropped_before_the_event() {
        let g = view();
        let mut events = g.subscribe();
        let t0 = Instant::now();
        g.heard(&hello_from(1, 1, &[]), t0);
        let _ = events.try_recv();
        let dropped = RefCell::new(Vec::new());
        g.expire(t0 + g.config.suspect_after, |id| {
            dropped.borrow_mut().push(id)
        });
        assert_eq!(
            events.try_recv().unwrap(),
            MembershipEvent::Suspected(PeerId(1))
        );
        assert!(dropped.borrow().is_empty(), "a suspect keeps its link");
        g.expire(t0 + g.config.gone_after, |id| {
            assert!(events.try_recv().is_err(), "link dropped before the event");
            dropped.borrow_mut().push(id)
        });
        assert_eq!(*dropped.borrow(), vec![PeerId(1)]);
        assert_eq!(events.try_recv().unwrap(), MembershipEvent::Gone(PeerId(1)));
        assert!(g.members().is_empty());
    }

    /// A partition healed: a peer this node expired is named alive in
    /// another member's hello. It is greeted again at once (not only once
    /// `forget_after` has passed), and becomes a member again only when
    /// it answers itself. A peer that left is not greeted again.
    #[test]
    fn a_peer_expired_here_and_named_alive_by_another_is_greeted_again() {
        let g = view();
        let t0 = Instant::now();
        g.heard(&hello_from(1, 1, &[]), t0);
        g.heard(&hello_from(2, 1, &[]), t0);
        g.heard(&hello_from(3, 1, &[]), t0);
        let later = t0 + g.config.gone_after;
        g.heard(&hello_from(1, 1, &[]), later);
        g.leave(PeerId(3), 1, later, |_| {});
        g.expire(later, |_| {});
        assert!(g.expired(PeerId(2)), "2 fell silent");
        assert!(!g.expired(PeerId(3)), "3 left");
        let healed = later + g.config.heartbeat_interval;
        let greet = g.heard(&hello_from(1, 1, &[info(2, &[]), info(3, &[])]), healed);
        assert_eq!(
            greet.iter().map(|p| p.id).collect::<Vec<_>>(),
            vec![PeerId(2)],
            "the expired peer is greeted, the one that left is not"
        );
        assert_eq!(g.state(PeerId(2)), Some(PeerState::Gone), "hearsay alone");
        let mut events = g.subscribe();
        g.heard(&hello_from(2, 1, &[]), healed);
        assert_eq!(
            events.try_recv().unwrap(),
            MembershipEvent::Rejoined(PeerId(2))
        );
        assert!(g
            .heard(&hello_from(1, 1, &[info(2, &[])]), healed)
            .is_empty());
    }

    #[test]
    fn a_peer_that_leaves_is_out_at_once_and_a_stale_leave_changes_nothing() {
        let g = view();
        let t0 = Instant::now();
        g.heard(&hello_from(1, 5, &[]), t0);
        let dropped = RefCell::new(Vec::new());
        g.leave(PeerId(1), 4, t0, |id| dropped.borrow_mut().push(id));
        assert!(dropped.borrow().is_empty(), "older incarnation: stale");
        g.leave(PeerId(1), 5, t0, |id| dropped.borrow_mut().push(id));
        assert_eq!(*dropped.borrow(), vec![PeerId(1)]);
        assert_eq!(g.state(PeerId(1)), Some(PeerState::Gone));
        assert!(g.endpoints(PeerId(1)).is_none());
    }
}
