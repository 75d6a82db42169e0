//! `kind = "request"`: the driver's router/dealer client; the `reply`
//! nodes answer.
//!
//! Guarantees: each request ends with an answer, a timeout or a counted
//! failure; `served_by` names the answering node. Does not: go through
//! the fabric's nodes (plain sockets).

use super::{answer, Call, Ctx, Figures, Load, Nothing, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;
use zfabric::RequestError;

/// Request/reply over the driver's client socket.
pub(super) struct Request;

impl Load for Request {
    type Extra = ();
    type Outcome = Nothing;

    async fn call(ctx: &Ctx, _load: &LoadSpec, shot: Shot) -> Call<()> {
        let Some(c) = ctx.sockets.client.as_ref() else {
            return Call::failed("no client");
        };
        let body = serde_bytes::ByteBuf::from(shot.body.to_vec());
        match c.request_within(&body, shot.timeout).await {
            Ok(raw) => answer(&raw, shot.started),
            Err(RequestError::Timeout(_)) => Call::Timeout,
            Err(e) => Call::Failed(e.to_string()),
        }
    }

    fn figures(_: &LoadSpec, t: &Tally<()>, _: &[NodeStats], _: &[NodeSpec]) -> Figures<Nothing> {
        Figures::calls(t, Nothing {})
    }

    fn target(l: &LoadSpec) -> String {
        if l.target.is_empty() {
            "servers".into()
        } else {
            l.target.clone()
        }
    }
}
