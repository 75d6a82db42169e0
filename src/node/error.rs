//! Why a node call failed, and how remote errors are typed for callers.
//!
//! Guarantees: [`CallError`] is the one error of node calls; which of its
//! cases count as a member failure (retried elsewhere if idempotent) is
//! decided here only. Does not: retry, or know how errors travel.

use std::time::Duration;

use super::membership::PeerId;
use crate::wire::{self, RemoteError};
use crate::RequestError;

/// Why a call to a service or peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No member of the fabric serves this service.
    #[error("no member serves {0:?}")]
    NoSuchService(String),
    /// The peer is not a member (never seen, or gone).
    #[error("peer {0} is not a member")]
    UnknownPeer(PeerId),
    /// The request failed (timeout, remote error, ...).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The reply was not a service result.
    #[error("unexpected reply from peer {0}")]
    BadReply(PeerId),
    /// The member refused the call at once because the service's bulkhead
    /// was full (its `BulkheadConfig` limits); nothing was processed.
    #[error("peer {peer} refused the call: {reason}")]
    Rejected {
        /// The member that refused.
        peer: PeerId,
        /// Its explanation (which bulkhead, its limits).
        reason: String,
    },
    /// Every member serving the service has its circuit open
    /// (`NodeConfig::breaker`); the call was not sent.
    #[error("circuit open for {service:?}; retry in {retry_in:?}")]
    CircuitOpen {
        /// The service.
        service: String,
        /// When the first breaker lets a trial call through.
        retry_in: Duration,
    },
}

impl CallError {
    /// The `outcome` label of this failure in the request metrics.
    pub(super) fn outcome(&self) -> &'static str {
        match self {
            CallError::NoSuchService(_) => "no_such_service",
            CallError::UnknownPeer(_) => "unknown_peer",
            CallError::BadReply(_) => "bad_reply",
            CallError::Rejected { .. } => "rejected",
            CallError::CircuitOpen { .. } => "circuit_open",
            CallError::Request(RequestError::Timeout(_)) => "timeout",
            CallError::Request(RequestError::PeerGone) => "peer_gone",
            CallError::Request(RequestError::Remote(e)) => {
                crate::telemetry::remote_outcome(&e.code)
            }
            CallError::Request(_) => "failed",
        }
    }

    /// Whether the member failed (went away, unreachable), as opposed to
    /// answering: such a call may be retried elsewhere if idempotent.
    /// Whether the member answered and the request was at fault: a remote
    /// error `bad_request`, `not_found`, `unauthorized`, `forbidden` or
    /// `conflict`.
    /// Such an answer is a healthy member's: its circuit breaker counts
    /// it as a success, so callers sending bad requests cannot open the
    /// circuit for everyone.
    pub fn is_caller_error(&self) -> bool {
        match self {
            CallError::Request(RequestError::Remote(e)) => CALLER_ERRORS.contains(&e.code.as_str()),
            _ => false,
        }
    }

    pub(super) fn is_member_failure(&self) -> bool {
        matches!(
            self,
            CallError::UnknownPeer(_)
                | CallError::Rejected { .. }
                | CallError::CircuitOpen { .. }
                | CallError::Request(RequestError::PeerGone | RequestError::Send(_))
        )
    }
}

/// The remote error codes that blame the request, not the member.
const CALLER_ERRORS: [&str; 5] = [
    "bad_request",
    "not_found",
    "unauthorized",
    "forbidden",
    "conflict",
];

/// Types the remote errors of a service call a caller can act on.
pub(super) fn from_remote(peer: PeerId, e: RemoteError, timeout: Duration) -> CallError {
    match e.known_code() {
        Some(wire::RemoteCode::Rejected) => CallError::Rejected {
            peer,
            reason: e.message,
        },
        Some(wire::RemoteCode::DeadlineExpired) => {
            CallError::Request(RequestError::Timeout(timeout))
        }
        _ => CallError::Request(RequestError::Remote(e)),
    }
}
