//! A node's settings and the options of its calls.
//!
//! Guarantees: plain values with documented defaults. Does not: act on
//! them (routing, gossip and the call path do).

use std::time::Duration;

use super::error::CallError;
use super::membership::{MembershipConfig, PeerId};
use crate::resilience::{BreakerConfig, BudgetConfig, RetryPolicy};

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Failure-detection timings.
    pub membership: MembershipConfig,
    /// The circuit breaker kept per (member, service) this node calls;
    /// `None` turns breakers off. Default: [`BreakerConfig::default`].
    pub breaker: Option<BreakerConfig>,
    /// The retry budget kept per service this node calls. Default:
    /// [`BudgetConfig::default`].
    pub retry_budget: BudgetConfig,
    /// Bounds on what gossip from other nodes can make this node do.
    pub gossip: GossipLimits,
}

/// Bounds on what gossip can make a node do, so that a hello naming
/// thousands of invented peers costs a bounded amount: the node greets a
/// few of them, a few at a time, and its registry stops growing at
/// `max_members`. What is ignored is counted in
/// `zfabric_gossip_peers_ignored_total{reason}`.
///
/// Defaults (1,024 members, 32 greets per hello, 64 in flight) fit
/// fabrics of hundreds of nodes; each greet in flight costs one outgoing
/// connection attempt (a socket, a link task and 3 file descriptors)
/// for at most one heartbeat interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipLimits {
    /// Most peers the registry holds (members and recently gone ones);
    /// a new peer beyond it is ignored (`members_full`).
    pub max_members: usize,
    /// Most unknown peers greeted from one hello; the rest are ignored
    /// (`greet_limit`) and learned later from other hellos.
    pub greets_per_hello: usize,
    /// Most greets (connection attempts to peers known only by hearsay
    /// or beacon) under way at once; beyond it, ignored (`greet_limit`).
    pub greets_in_flight: usize,
}

impl Default for GossipLimits {
    fn default() -> Self {
        GossipLimits {
            max_members: 1024,
            greets_per_hello: 32,
            greets_in_flight: 64,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            membership: MembershipConfig::default(),
            breaker: Some(BreakerConfig::default()),
            retry_budget: BudgetConfig::default(),
            gossip: GossipLimits::default(),
        }
    }
}

/// How a member is chosen among those serving a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn (the default).
    #[default]
    RoundRobin,
    /// The one with the fewest requests from this node still waiting for a
    /// reply; ties in turn.
    LeastOutstanding,
}

/// Options of an anycast request.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// Deadline for the whole call, retries included. Default 5 s. Inside
    /// a handler it is capped by what is left of the handler's own
    /// deadline.
    pub timeout: Duration,
    /// Whether the request may be processed twice without harm. Only such
    /// requests are retried.
    pub idempotent: bool,
    /// How an idempotent request is retried (attempts, backoff); within the
    /// deadline and the service's retry budget (`NodeConfig::retry_budget`).
    pub retry: RetryPolicy,
    /// How the member is chosen.
    pub balance: Balance,
    /// Priority carried to the member (0 = lowest), for services
    /// partitioned by priority.
    pub priority: u8,
    /// The logical message id (natural idempotency key). `None`: a fresh
    /// one per call. Set it to redeliver the same message: a service with
    /// [`ServeOptions::dedup`](super::ServeOptions::dedup) processes it once and answers the
    /// redelivery from its window.
    pub call_id: Option<u64>,
    /// Whether to wait, within the deadline, for a member that can take
    /// the call instead of failing at once when none can: when nobody
    /// serves the service (yet, or any more) the call waits for a
    /// membership change; when every breaker is open it waits until the
    /// first one lets a trial through (or a member joins). It still ends
    /// with `NoSuchService` or `CircuitOpen` if the deadline comes first.
    /// Default `false` (fail fast).
    pub wait_for_member: bool,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: Duration::from_secs(5),
            idempotent: false,
            retry: RetryPolicy::default(),
            balance: Balance::RoundRobin,
            priority: 0,
            call_id: None,
            wait_for_member: false,
        }
    }
}

impl CallOptions {
    /// Sets the deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Marks the request idempotent: a member failure (gone, unreachable,
    /// busy, circuit open) is retried on another member with jittered
    /// backoff, up to `retry.max_attempts`, within the deadline and the
    /// retry budget.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Sets the retry policy (and marks the request idempotent).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self.idempotent = true;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the logical message id (non-zero), to redeliver a message.
    pub fn call_id(mut self, id: u64) -> Self {
        self.call_id = Some(id.max(1));
        self
    }

    /// Waits within the deadline for a member that can take the call (one
    /// joins, or a breaker's open interval ends) instead of failing at
    /// once with `NoSuchService` or `CircuitOpen`: for a caller that
    /// would only try again (a command-line loop, a batch job) across a
    /// restart. Costs nothing while members answer.
    pub fn wait_for_member(mut self) -> Self {
        self.wait_for_member = true;
        self
    }

    /// Chooses the least-loaded member instead of taking turns.
    pub fn least_outstanding(mut self) -> Self {
        self.balance = Balance::LeastOutstanding;
        self
    }
}

/// The outcome of a multicast: who acknowledged, who did not.
#[derive(Debug, Default)]
pub struct MulticastReport {
    /// Members that received and accepted the message.
    pub delivered: Vec<PeerId>,
    /// Members that did not, with the reason (timeout, refused, gone).
    pub failed: Vec<(PeerId, CallError)>,
}
