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
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            membership: MembershipConfig::default(),
            breaker: Some(BreakerConfig::default()),
            retry_budget: BudgetConfig::default(),
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
