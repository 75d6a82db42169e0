//! Routing: which member takes a call, and what this node remembers of
//! how its calls went (breakers, retry budgets, the round-robin cursor,
//! the breaker log).
//!
//! Guarantees: [`pick`] is a pure function over a snapshot of the members
//! serving a service (alive before suspect, untried before tried, in turn
//! or least-outstanding, only one whose breaker admits the call), tested
//! without sockets or a runtime. Every call admitted through a breaker is
//! judged exactly once, even when abandoned half-way ([`Judge`]). Breaker
//! transitions are counted, logged and kept (the last 256). Does not: hold
//! membership or links (the caller passes the snapshot and the loads), or
//! send anything.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use super::clock::now;
use super::membership::{PeerId, PeerState};
use super::options::Balance;
use crate::resilience::{
    BreakerConfig, BreakerState, BudgetConfig, CircuitBreaker, Outcome, RetryBudget, Transition,
};
use crate::telemetry::{RequestMetrics, Side};

/// What [`pick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pick {
    Member(PeerId),
    /// Members exist but every breaker refused; the soonest retry.
    AllOpen(Duration),
    NoMember,
}

/// Chooses a member among `members` (a snapshot of those serving the
/// service, with their states): alive members before suspect ones, those
/// not in `exclude` first (all of them once every member has been tried),
/// rotated by `turn` (asked only when there is someone to choose), sorted
/// by `load` for [`Balance::LeastOutstanding`] (ties stay in turn), and
/// the first one `admit` lets through.
pub(super) fn pick(
    members: &[(PeerId, PeerState)],
    exclude: &[PeerId],
    balance: Balance,
    turn: impl FnOnce() -> usize,
    load: impl Fn(PeerId) -> usize,
    mut admit: impl FnMut(PeerId) -> Result<(), Duration>,
) -> Pick {
    let alive: Vec<PeerId> = members
        .iter()
        .filter(|(_, s)| *s == PeerState::Alive)
        .map(|(id, _)| *id)
        .collect();
    let mut pool = if alive.is_empty() {
        members.iter().map(|(id, _)| *id).collect()
    } else {
        alive
    };
    if pool.iter().any(|id| !exclude.contains(id)) {
        pool.retain(|id| !exclude.contains(id));
    }
    if pool.is_empty() {
        return Pick::NoMember;
    }
    let start = turn() % pool.len();
    pool.rotate_left(start);
    if balance == Balance::LeastOutstanding {
        // Stable sort: ties stay in turn.
        pool.sort_by_key(|id| load(*id));
    }
    let mut soonest: Option<Duration> = None;
    for id in pool {
        match admit(id) {
            Ok(()) => return Pick::Member(id),
            Err(retry_in) => soonest = Some(soonest.map_or(retry_in, |s| s.min(retry_in))),
        }
    }
    Pick::AllOpen(soonest.unwrap_or_default())
}

/// The `zfabric_breaker_state` value of a state: 0 closed, 1 half-open,
/// 2 open.
fn breaker_level(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

/// A breaker transition, as kept in [`Node::breaker_log`](super::Node::breaker_log).
#[derive(Debug, Clone)]
pub struct BreakerEvent {
    /// When (tokio's clock).
    pub at: Instant,
    /// The member.
    pub peer: PeerId,
    /// The service.
    pub service: String,
    /// The transition.
    pub transition: Transition,
}

/// Transitions kept in the log.
const BREAKER_LOG: usize = 256;

/// Service names kept interned; beyond that a new name is still served,
/// with an allocation per call (a bound against callers inventing names).
const INTERNED: usize = 4096;

/// What this node keeps about the destinations it calls.
pub(super) struct Routing {
    /// This node: its own services have no breaker.
    me: PeerId,
    /// This node's `node` label.
    node: Arc<str>,
    breaker: Option<BreakerConfig>,
    budget: BudgetConfig,
    /// The names of the services this node calls, interned: a call
    /// shares its service's name (header field, breaker key) without
    /// allocating it; with each, its calling-side request metrics.
    names: DashMap<Arc<str>, Arc<RequestMetrics>>,
    /// Breakers of the destinations this node calls: (member, service).
    breakers: DashMap<(PeerId, Arc<str>), CircuitBreaker>,
    /// Retry budgets of the services this node calls.
    budgets: DashMap<Arc<str>, RetryBudget>,
    /// The round-robin cursor.
    cursor: AtomicUsize,
    /// The last breaker transitions (bounded).
    log: Mutex<VecDeque<BreakerEvent>>,
}

impl Routing {
    pub(super) fn new(
        me: PeerId,
        node: Arc<str>,
        breaker: Option<BreakerConfig>,
        budget: BudgetConfig,
    ) -> Self {
        Routing {
            me,
            node,
            breaker,
            budget,
            names: DashMap::new(),
            breakers: DashMap::new(),
            budgets: DashMap::new(),
            cursor: AtomicUsize::new(0),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// The interned name of `service`: allocated the first time only.
    pub(super) fn name(&self, service: &str) -> Arc<str> {
        self.interned(service).0
    }

    /// The calling-side request metrics of `service` (registered the
    /// first time it is called).
    pub(super) fn client_metrics(&self, service: &str) -> Arc<RequestMetrics> {
        self.interned(service).1
    }

    fn interned(&self, service: &str) -> (Arc<str>, Arc<RequestMetrics>) {
        if let Some(n) = self.names.get(service) {
            return (n.key().clone(), n.value().clone());
        }
        let name: Arc<str> = Arc::from(service);
        let m = RequestMetrics::new(self.node.clone(), name.clone(), Side::Client);
        self.register_at_zero(&name);
        if self.names.len() < INTERNED {
            let e = self.names.entry(name).or_insert(m);
            return (e.key().clone(), e.value().clone());
        }
        (name, m)
    }

    /// The counters of calling `service` start at zero, so that the first
    /// retry or transition shows in `rate()`.
    fn register_at_zero(&self, service: &Arc<str>) {
        use crate::resilience::{BREAKER_TRANSITIONS, RETRIES, RETRY_BUDGET_EXHAUSTED};
        for name in [RETRIES, RETRY_BUDGET_EXHAUSTED] {
            metrics::counter!(name, "node" => self.node.clone(), "service" => service.clone())
                .absolute(0);
        }
        if self.breaker.is_some() {
            for to in ["closed", "half_open", "open"] {
                metrics::counter!(BREAKER_TRANSITIONS, "node" => self.node.clone(),
                    "service" => service.clone(), "to" => to)
                .absolute(0);
            }
        }
    }

    /// This node's `node` label.
    pub(super) fn node_label(&self) -> &Arc<str> {
        &self.node
    }

    /// Forgets what this node kept about a member that is gone: its
    /// breakers (and so their series at the next scrape).
    pub(super) fn forget(&self, peer: PeerId) {
        self.breakers.retain(|(p, _), _| *p != peer);
    }

    /// Sets the scrape-time gauges of what this node calls: requests in
    /// flight per service, and breaker state per service and peer name
    /// (`name` of a member; the worst state when names repeat; breakers
    /// of peers without a name, i.e. not members any more, are skipped).
    pub(super) fn collect(&self, name: impl Fn(PeerId) -> Option<String>) {
        for e in self.names.iter() {
            e.value().collect();
        }
        for ((service, peer), level) in self.breaker_levels(name) {
            metrics::gauge!(crate::resilience::BREAKER_STATE, "node" => self.node.clone(),
                "service" => service, "peer" => peer)
            .set(level as f64);
        }
    }

    /// The breaker state per service and peer name (0 closed, 1
    /// half-open, 2 open; the worst when names repeat; peers without a
    /// name skipped), as the gauge and the status report show it.
    pub(super) fn breaker_levels(
        &self,
        name: impl Fn(PeerId) -> Option<String>,
    ) -> std::collections::BTreeMap<(Arc<str>, String), u8> {
        let mut worst: std::collections::BTreeMap<(Arc<str>, String), u8> = Default::default();
        for e in self.breakers.iter() {
            let (peer, service) = e.key();
            let Some(peer_name) = name(*peer) else {
                continue;
            };
            let level = breaker_level(e.value().state());
            let w = worst.entry((service.clone(), peer_name)).or_insert(level);
            *w = (*w).max(level);
        }
        worst
    }

    /// [`pick`] with this node's cursor and breakers.
    pub(super) fn choose(
        &self,
        service: &str,
        members: &[(PeerId, PeerState)],
        exclude: &[PeerId],
        balance: Balance,
        load: impl Fn(PeerId) -> usize,
    ) -> Pick {
        pick(
            members,
            exclude,
            balance,
            || self.cursor.fetch_add(1, Ordering::Relaxed),
            load,
            |id| self.admit(id, service),
        )
    }

    /// Asks the breaker of (`peer`, `service`) to let a call through.
    pub(super) fn admit(&self, peer: PeerId, service: &str) -> Result<(), Duration> {
        let Some(cfg) = self.breaker else {
            return Ok(());
        };
        if peer == self.me {
            return Ok(());
        }
        let mut b = self
            .breakers
            .entry((peer, self.name(service)))
            .or_insert_with(|| CircuitBreaker::new(cfg));
        match b.try_acquire(now()) {
            Ok(t) => {
                drop(b);
                if let Some(t) = t {
                    self.moved(peer, service, t);
                }
                Ok(())
            }
            Err(open) => Err(open.retry_in),
        }
    }

    /// A judge of one admitted call: failure unless told otherwise.
    pub(super) fn judge(&self, peer: PeerId, service: &str) -> Judge<'_> {
        Judge {
            routing: self,
            peer,
            service: self.breaker.map(|_| self.name(service)),
            started: now(),
            outcome: Outcome::Failure,
        }
    }

    /// A first attempt of an idempotent call earns the service's budget.
    pub(super) fn deposit(&self, service: &str) {
        if let Some(mut b) = self.budgets.get_mut(service) {
            return b.deposit(now());
        }
        self.budgets
            .entry(self.name(service))
            .or_insert_with(|| RetryBudget::new(self.budget))
            .deposit(now());
    }

    /// Whether the service's budget allows one more retry (and takes it).
    pub(super) fn withdraw(&self, service: &str) -> bool {
        self.budgets
            .get_mut(service)
            .map(|mut b| b.try_withdraw(now()))
            .unwrap_or(false)
    }

    /// The breaker log, oldest first.
    pub(super) fn log(&self) -> Vec<BreakerEvent> {
        self.log.lock().iter().cloned().collect()
    }

    /// Publishes a breaker transition: metrics, the log, a log line.
    fn moved(&self, peer: PeerId, service: &str, t: Transition) {
        {
            let mut log = self.log.lock();
            if log.len() == BREAKER_LOG {
                log.pop_front();
            }
            log.push_back(BreakerEvent {
                at: now(),
                peer,
                service: service.to_owned(),
                transition: t,
            });
        }
        let to = match t.to {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        };
        // The state gauge is read at scrape time (`collect`).
        metrics::counter!(crate::resilience::BREAKER_TRANSITIONS, "node" => self.node.clone(),
            "service" => service.to_owned(), "to" => to)
        .increment(1);
        tracing::info!(%peer, service, from = ?t.from, to = ?t.to, "circuit breaker moved");
    }
}

/// Records a call's outcome with its breaker when dropped, so that a call
/// abandoned half-way (its caller gave up) still counts, as a failure, and
/// never leaves a half-open trial slot taken.
pub(super) struct Judge<'a> {
    routing: &'a Routing,
    peer: PeerId,
    /// The service, when there are breakers.
    service: Option<Arc<str>>,
    started: Instant,
    outcome: Outcome,
}

impl Judge<'_> {
    /// The call succeeded.
    pub(super) fn success(&mut self) {
        self.outcome = Outcome::Success;
    }
}

impl Drop for Judge<'_> {
    fn drop(&mut self) {
        let Some(service) = self.service.take() else {
            return;
        };
        let now = now();
        let took = now.saturating_duration_since(self.started);
        let key = (self.peer, service);
        let t = self
            .routing
            .breakers
            .get_mut(&key)
            .and_then(|mut b| b.record(self.outcome, took, now));
        if let Some(t) = t {
            self.routing.moved(self.peer, &key.1, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerId = PeerId(1);
    const B: PeerId = PeerId(2);
    const C: PeerId = PeerId(3);

    fn open(_: PeerId) -> Result<(), Duration> {
        Ok(())
    }

    #[test]
    fn nobody_serving_is_no_member_and_the_turn_is_not_taken() {
        let r = pick(
            &[],
            &[],
            Balance::RoundRobin,
            || panic!("no turn"),
            |_| 0,
            open,
        );
        assert_eq!(r, Pick::NoMember);
    }

    #[test]
    fn round_robin_takes_turns_over_alive_members_only() {
        let members = [
            (A, PeerState::Alive),
            (B, PeerState::Suspect),
            (C, PeerState::Alive),
        ];
        let picks: Vec<Pick> = (0..4)
            .map(|t| pick(&members, &[], Balance::RoundRobin, || t, |_| 0, open))
            .collect();
        assert_eq!(
            picks,
            vec![
                Pick::Member(A),
                Pick::Member(C),
                Pick::Member(A),
                Pick::Member(C)
            ]
        );
    }

    #[test]
    fn suspect_members_serve_when_none_is_alive() {
        let members = [(B, PeerState::Suspect)];
        let r = pick(&members, &[], Balance::RoundRobin, || 0, |_| 0, open);
        assert_eq!(r, Pick::Member(B));
    }

    #[test]
    fn tried_members_are_skipped_until_all_were_tried() {
        let members = [(A, PeerState::Alive), (B, PeerState::Alive)];
        let r = pick(&members, &[A], Balance::RoundRobin, || 0, |_| 0, open);
        assert_eq!(r, Pick::Member(B));
        let r = pick(&members, &[A, B], Balance::RoundRobin, || 1, |_| 0, open);
        assert_eq!(r, Pick::Member(B), "everyone tried: back to all, in turn");
    }

    #[test]
    fn least_outstanding_prefers_the_least_loaded_and_ties_stay_in_turn() {
        let members = [
            (A, PeerState::Alive),
            (B, PeerState::Alive),
            (C, PeerState::Alive),
        ];
        let load = |id: PeerId| if id == A { 5 } else { 1 };
        let r = pick(&members, &[], Balance::LeastOutstanding, || 0, load, open);
        assert_eq!(r, Pick::Member(B));
        let r = pick(&members, &[], Balance::LeastOutstanding, || 2, load, open);
        assert_eq!(r, Pick::Member(C));
    }

    #[test]
    fn open_breakers_are_skipped_and_all_open_reports_the_soonest_retry() {
        let members = [(A, PeerState::Alive), (B, PeerState::Alive)];
        let only_b = |id: PeerId| {
            if id == B {
                Ok(())
            } else {
                Err(Duration::from_secs(3))
            }
        };
        let r = pick(&members, &[], Balance::RoundRobin, || 0, |_| 0, only_b);
        assert_eq!(r, Pick::Member(B));
        let none = |id: PeerId| Err(Duration::from_secs(if id == A { 3 } else { 1 }));
        let r = pick(&members, &[], Balance::RoundRobin, || 0, |_| 0, none);
        assert_eq!(r, Pick::AllOpen(Duration::from_secs(1)));
    }

    #[test]
    fn a_service_name_is_allocated_once() {
        let routing = Routing::new(PeerId(0), Arc::from("me"), None, BudgetConfig::default());
        let first = routing.name("svc");
        assert!(Arc::ptr_eq(&first, &routing.name("svc")));
        assert!(!Arc::ptr_eq(&first, &routing.name("other")));
    }

    #[test]
    fn an_abandoned_call_counts_as_a_failure_and_its_transition_is_logged() {
        let cfg = BreakerConfig {
            window: 1,
            minimum_calls: 1,
            failure_rate: 0.5,
            ..BreakerConfig::default()
        };
        let routing = Routing::new(
            PeerId(0),
            Arc::from("me"),
            Some(cfg),
            BudgetConfig::default(),
        );
        assert!(
            routing.admit(PeerId(0), "svc").is_ok(),
            "own services have no breaker"
        );
        assert!(routing.admit(A, "svc").is_ok());
        drop(routing.judge(A, "svc")); // never told success
        let log = routing.log();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].peer, log[0].transition.to), (A, BreakerState::Open));
        assert!(routing.admit(A, "svc").is_err(), "open: fail fast");
        let mut ok = routing.judge(B, "svc");
        ok.success();
        drop(ok);
        assert!(!routing.withdraw("never-deposited"));
    }

    #[test]
    fn breaker_series_are_named_by_peer_worst_state_first_and_leave_with_the_peer() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let cfg = BreakerConfig {
            window: 1,
            minimum_calls: 1,
            failure_rate: 0.5,
            ..BreakerConfig::default()
        };
        let rec = DebuggingRecorder::new();
        let snap = rec.snapshotter();
        metrics::with_local_recorder(&rec, || {
            let routing = Routing::new(
                PeerId(0),
                Arc::from("me"),
                Some(cfg),
                BudgetConfig::default(),
            );
            // A opens; B (same name "pricing-1") and C stay closed.
            for id in [A, B, C] {
                assert!(routing.admit(id, "svc").is_ok());
                let mut j = routing.judge(id, "svc");
                if id != A {
                    j.success();
                }
            }
            let names = |id: PeerId| match id {
                A | B => Some("pricing-1".to_string()),
                C => Some("pricing-2".to_string()),
                _ => None,
            };
            let states = |snap: &metrics_util::debugging::Snapshotter| {
                let mut v: Vec<(String, String, f64)> = snap
                    .snapshot()
                    .into_vec()
                    .into_iter()
                    .filter(|(k, _, _, _)| k.key().name() == crate::resilience::BREAKER_STATE)
                    .map(|(k, _, _, val)| {
                        let label = |n: &str| {
                            k.key()
                                .labels()
                                .find(|l| l.key() == n)
                                .map(|l| l.value().to_string())
                                .unwrap_or_default()
                        };
                        let DebugValue::Gauge(g) = val else {
                            panic!("a gauge")
                        };
                        (label("node"), label("peer"), g.into_inner())
                    })
                    .collect();
                v.sort_by(|a, b| a.1.cmp(&b.1));
                v
            };
            routing.collect(names);
            assert_eq!(
                states(&snap),
                vec![
                    ("me".into(), "pricing-1".into(), 2.0),
                    ("me".into(), "pricing-2".into(), 0.0)
                ]
            );
            // A member that is gone takes its breakers along: only B
            // remains under its name, closed.
            routing.forget(A);
            assert_eq!(routing.breakers.len(), 2);
            routing.collect(names);
            assert_eq!(states(&snap)[0], ("me".into(), "pricing-1".into(), 0.0));
        });
    }
}
