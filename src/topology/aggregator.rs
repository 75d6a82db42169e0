//! Aggregator (scatter-gather): one request fans out to several services,
//! or to every member serving one service, and the replies are gathered.
//!
//! # Guarantees
//! - Every target is called concurrently; the gather ends when the
//!   [`Completion`] policy is met, when every call has ended, or at the
//!   deadline, whichever is first. Calls still out then are cancelled and
//!   reported in [`Gathered::timed_out`].
//! - The result accounts for every target exactly once: in `replies`,
//!   `failed` (with its typed error) or `timed_out`. Partial results are a
//!   normal outcome; [`Gathered::satisfied`] says whether the policy was
//!   met, and [`Gathered::into_result`] turns an unmet policy into an
//!   error for callers that want one.
//! - For [`Scatter::Members`], n (for quorum) is the number of members
//!   known alive when the request is sent; suspect members are called but
//!   not counted in n.
//!
//! # Not guaranteed
//! A cancelled call may still be processed by its target (the reply is
//! discarded). Replies are in arrival order, not target order.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node::{CallError, CallOptions, Node, PeerId, PeerState};
use crate::wire;
use crate::RequestError;

/// Whom a request is scattered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scatter {
    /// One member of each of these services (anycast each).
    Services(Vec<String>),
    /// Every member serving this service (unicast each).
    Members(String),
}

/// When the gather is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Every target answered successfully.
    All,
    /// At least `k` successful replies (k of n).
    Quorum(usize),
    /// The first successful reply.
    FirstSuccess,
    /// Whatever arrived by the deadline; always satisfied.
    ByDeadline,
}

/// One target of a scatter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A service, served by whichever member anycast chose.
    Service(String),
    /// A member, by id and name.
    Member(PeerId, String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Service(s) => write!(f, "service {s}"),
            Target::Member(_, name) => write!(f, "member {name}"),
        }
    }
}

/// What a gather got.
#[derive(Debug)]
pub struct Gathered<Rep> {
    /// Successful replies, in arrival order.
    pub replies: Vec<(Target, Rep)>,
    /// Targets that answered with an error, or could not be reached.
    pub failed: Vec<(Target, CallError)>,
    /// Targets still out when the gather ended (deadline, or the policy
    /// was met first).
    pub timed_out: Vec<Target>,
    /// The n of the scatter: targets counted for quorum.
    pub n: usize,
    /// The policy.
    pub policy: Completion,
}

/// The policy was not met; carries the partial result.
#[derive(Debug, thiserror::Error)]
#[error(
    "gather incomplete: {got} of {needed} needed replies ({failed} failed, {timed_out} timed out)"
)]
pub struct Incomplete<Rep: std::fmt::Debug> {
    /// Successful replies needed.
    pub needed: usize,
    /// Successful replies got.
    pub got: usize,
    /// Targets that failed.
    pub failed: usize,
    /// Targets that timed out.
    pub timed_out: usize,
    /// The partial result.
    pub partial: Gathered<Rep>,
}

impl<Rep> Gathered<Rep> {
    /// Successful replies the policy needs.
    pub fn needed(&self) -> usize {
        match self.policy {
            Completion::All => self.n,
            Completion::Quorum(k) => k,
            Completion::FirstSuccess => 1,
            Completion::ByDeadline => 0,
        }
    }

    /// Whether the policy was met.
    pub fn satisfied(&self) -> bool {
        match self.policy {
            Completion::All => self.failed.is_empty() && self.timed_out.is_empty(),
            _ => self.replies.len() >= self.needed(),
        }
    }

    /// The gather as a `Result`: `Err` with the partial result when the
    /// policy was not met.
    pub fn into_result(self) -> Result<Self, Box<Incomplete<Rep>>>
    where
        Rep: std::fmt::Debug,
    {
        if self.satisfied() {
            return Ok(self);
        }
        Err(Box::new(Incomplete {
            needed: self.needed(),
            got: self.replies.len(),
            failed: self.failed.len(),
            timed_out: self.timed_out.len(),
            partial: self,
        }))
    }
}

/// Scatters `req` as `scatter` says and gathers replies until `policy` is
/// met or `timeout` passes (capped by an inherited deadline).
pub async fn scatter_gather<Req, Rep>(
    node: &Node,
    scatter: &Scatter,
    req: &Req,
    policy: Completion,
    timeout: Duration,
) -> Result<Gathered<Rep>, crate::wire::EncodeError>
where
    Req: Serialize,
    Rep: DeserializeOwned,
{
    let timeout = crate::resilience::deadline::budget(timeout);
    let body = wire::encode_body(req)?;
    let (targets, n) = targets(node, scatter);
    let calls: FuturesUnordered<_> = targets
        .iter()
        .cloned()
        .map(|t| {
            let body = body.clone();
            async move {
                let r = call(node, scatter, &t, body, timeout).await;
                (t, r)
            }
        })
        .collect();
    let mut g = Gathered {
        replies: Vec::new(),
        failed: Vec::new(),
        timed_out: Vec::new(),
        n,
        policy,
    };
    let mut pending = targets;
    let mut calls = calls;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let done = match policy {
            Completion::All => !g.failed.is_empty(),
            Completion::Quorum(k) => g.replies.len() >= k,
            Completion::FirstSuccess => !g.replies.is_empty(),
            Completion::ByDeadline => false,
        };
        if done || pending.is_empty() {
            break;
        }
        match tokio::time::timeout_at(deadline, calls.next()).await {
            Ok(Some((t, r))) => {
                pending.retain(|p| *p != t);
                match r.and_then(|b| {
                    wire::decode_body::<Rep>(&b)
                        .map_err(|e| CallError::Request(RequestError::Decode(e)))
                }) {
                    Ok(rep) => g.replies.push((t, rep)),
                    // The call's own timeout is the gather's deadline.
                    Err(CallError::Request(RequestError::Timeout(_))) => g.timed_out.push(t),
                    Err(e) => g.failed.push((t, e)),
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    g.timed_out.extend(pending);
    Ok(g)
}

fn targets(node: &Node, scatter: &Scatter) -> (Vec<Target>, usize) {
    match scatter {
        Scatter::Services(s) => (
            s.iter().map(|s| Target::Service(s.clone())).collect(),
            s.len(),
        ),
        Scatter::Members(service) => {
            let names: std::collections::HashMap<PeerId, String> =
                node.members().into_iter().map(|m| (m.id, m.name)).collect();
            let members = node.serving(service);
            let alive = members
                .iter()
                .filter(|(_, s)| *s == PeerState::Alive)
                .count();
            (
                members
                    .into_iter()
                    .map(|(id, _)| Target::Member(id, names.get(&id).cloned().unwrap_or_default()))
                    .collect(),
                alive,
            )
        }
    }
}

async fn call(
    node: &Node,
    scatter: &Scatter,
    t: &Target,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, CallError> {
    match (t, scatter) {
        (Target::Member(id, _), Scatter::Members(service)) => {
            node.request_peer_raw(*id, service, body, CallOptions::default().timeout(timeout))
                .await
        }
        (Target::Service(s), _) | (Target::Member(_, s), _) => {
            node.request_raw(s, body, CallOptions::default().timeout(timeout))
                .await
        }
    }
}
