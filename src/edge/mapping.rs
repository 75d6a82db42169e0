//! Fabric errors as HTTP answers: which status each failure of a fabric
//! call becomes, and when a `Retry-After` goes with it.
//!
//! [`MAPPING`] is the table docs/GATEWAY.md shows (a test checks the two
//! agree, and another that [`http_error`] follows the table).
//!
//! Guarantees: every [`CallError`] maps to exactly one status; a remote
//! error keeps its code and message in the JSON body; the 4xx codes a
//! service names (`bad_request`, `not_found`, `unauthorized`, `forbidden`)
//! reach the caller as those statuses; any other remote code is 502.
//! Does not: decide refusals of the edge itself (size, rate, token): those
//! are [`Refusal`](super::server) answers with their own statuses.

use std::time::Duration;

use crate::node::CallError;
use crate::wire::RemoteCode;
use crate::RequestError;

/// One row of the mapping: a fabric failure and the HTTP status it
/// becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingRow {
    /// The failure, as docs/GATEWAY.md names it (`CallError::Timeout`,
    /// or a remote code such as `remote bad_request`).
    pub failure: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// Whether a `Retry-After` header goes with it.
    pub retry_after: bool,
}

const fn row(failure: &'static str, status: u16, retry_after: bool) -> MappingRow {
    MappingRow {
        failure,
        status,
        retry_after,
    }
}

/// Every fabric failure and its HTTP status (docs/GATEWAY.md, "Errors").
pub const MAPPING: &[MappingRow] = &[
    row("CallError::NoSuchService", 404, false),
    row("CallError::UnknownPeer", 502, false),
    row("CallError::Rejected", 503, true),
    row("CallError::CircuitOpen", 503, true),
    row("RequestError::Timeout", 504, false),
    row("RequestError::PeerGone", 502, false),
    row("CallError::BadReply", 502, false),
    row("RequestError (other)", 502, false),
    row("remote bad_request", 400, false),
    row("remote not_found", 404, false),
    row("remote unauthorized", 401, false),
    row("remote forbidden", 403, false),
    row("remote deadline_expired", 504, false),
    row("remote timeout", 504, false),
    row("remote circuit_open", 503, true),
    row("remote no_such_service", 404, false),
    row("remote (any other code)", 502, false),
];

/// What an HTTP caller gets for a failed fabric call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status code.
    pub status: u16,
    /// A short machine-readable code for the JSON body (`no_such_service`,
    /// `timeout`, the remote code, ...).
    pub code: String,
    /// A human-readable description.
    pub message: String,
    /// Seconds for `Retry-After`, when the caller may retry later.
    pub retry_after: Option<u64>,
}

fn status_of(failure: &str) -> (u16, bool) {
    MAPPING
        .iter()
        .find(|r| r.failure == failure)
        .map(|r| (r.status, r.retry_after))
        .unwrap_or((502, false))
}

/// Whole seconds, rounded up, at least one.
fn seconds_up(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// The HTTP answer for a failed fabric call.
pub fn http_error(e: &CallError) -> HttpError {
    let (failure, code, retry): (String, String, Option<Duration>) = match e {
        CallError::NoSuchService(_) => (
            "CallError::NoSuchService".into(),
            "no_such_service".into(),
            None,
        ),
        CallError::UnknownPeer(_) => ("CallError::UnknownPeer".into(), "unknown_peer".into(), None),
        CallError::Rejected { .. } => (
            "CallError::Rejected".into(),
            "rejected".into(),
            Some(Duration::from_secs(1)),
        ),
        CallError::CircuitOpen { retry_in, .. } => (
            "CallError::CircuitOpen".into(),
            "circuit_open".into(),
            Some(*retry_in),
        ),
        CallError::BadReply(_) => ("CallError::BadReply".into(), "bad_reply".into(), None),
        CallError::Request(RequestError::Timeout(_)) => {
            ("RequestError::Timeout".into(), "timeout".into(), None)
        }
        CallError::Request(RequestError::PeerGone) => {
            ("RequestError::PeerGone".into(), "peer_gone".into(), None)
        }
        CallError::Request(RequestError::Remote(r)) => {
            let known = MAPPING
                .iter()
                .any(|row| row.failure.strip_prefix("remote ") == Some(r.code.as_str()));
            let failure = if known {
                format!("remote {}", r.code)
            } else {
                "remote (any other code)".into()
            };
            let retry =
                (r.known_code() == Some(RemoteCode::CircuitOpen)).then_some(Duration::from_secs(1));
            (failure, r.code.clone(), retry)
        }
        CallError::Request(_) => ("RequestError (other)".into(), "upstream".into(), None),
    };
    let (status, with_retry) = status_of(&failure);
    let message = match e {
        CallError::Request(RequestError::Remote(r)) => r.message.clone(),
        other => other.to_string(),
    };
    HttpError {
        status,
        code,
        message,
        retry_after: if with_retry {
            Some(retry.map(seconds_up).unwrap_or(1))
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::PeerId;
    use crate::RemoteError;

    fn remote(code: &str) -> CallError {
        CallError::Request(RequestError::Remote(RemoteError {
            code: code.into(),
            message: "m".into(),
        }))
    }

    #[test]
    fn every_row_of_the_table_is_what_the_mapping_does() {
        let cases: Vec<(&str, CallError)> = vec![
            (
                "CallError::NoSuchService",
                CallError::NoSuchService("s".into()),
            ),
            ("CallError::UnknownPeer", CallError::UnknownPeer(PeerId(1))),
            (
                "CallError::Rejected",
                CallError::Rejected {
                    peer: PeerId(1),
                    reason: "full".into(),
                },
            ),
            (
                "CallError::CircuitOpen",
                CallError::CircuitOpen {
                    service: "s".into(),
                    retry_in: Duration::from_millis(2500),
                },
            ),
            (
                "RequestError::Timeout",
                CallError::Request(RequestError::Timeout(Duration::from_secs(1))),
            ),
            (
                "RequestError::PeerGone",
                CallError::Request(RequestError::PeerGone),
            ),
            ("CallError::BadReply", CallError::BadReply(PeerId(1))),
            (
                "RequestError (other)",
                CallError::Request(RequestError::Decode(
                    crate::wire::decode_body::<u64>(&bytes::Bytes::from_static(b"\xc1"))
                        .unwrap_err(),
                )),
            ),
            ("remote bad_request", remote("bad_request")),
            ("remote not_found", remote("not_found")),
            ("remote unauthorized", remote("unauthorized")),
            ("remote forbidden", remote("forbidden")),
            ("remote deadline_expired", remote("deadline_expired")),
            ("remote timeout", remote("timeout")),
            ("remote circuit_open", remote("circuit_open")),
            ("remote no_such_service", remote("no_such_service")),
            ("remote (any other code)", remote("handler_error")),
        ];
        assert_eq!(cases.len(), MAPPING.len(), "one case per row");
        for (failure, e) in cases {
            let row = MAPPING.iter().find(|r| r.failure == failure).unwrap();
            let got = http_error(&e);
            assert_eq!(got.status, row.status, "{failure}");
            assert_eq!(got.retry_after.is_some(), row.retry_after, "{failure}");
        }
        let open = http_error(&CallError::CircuitOpen {
            service: "s".into(),
            retry_in: Duration::from_millis(2500),
        });
        assert_eq!(open.retry_after, Some(3), "rounded up to whole seconds");
        let bad = http_error(&remote("bad_request"));
        assert_eq!(
            (bad.code.as_str(), bad.message.as_str()),
            ("bad_request", "m")
        );
    }
}
