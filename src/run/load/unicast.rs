//! `kind = "unicast"`: `target = "node/service"`, one named node answers.
//!
//! Guarantees: a node the driver does not know fails the call as
//! `unknown_peer`; `served_by` shows who answered. Does not: fall back to
//! another member.

use super::{answer, classify, Call, Ctx, Figures, Load, Nothing, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// Unicast to a service on one named node.
pub(super) struct Unicast;

impl Load for Unicast {
    type Extra = ();
    type Outcome = Nothing;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<()> {
        let (node, service) = load.target.split_once('/').unwrap_or_default();
        let Some(id) = ctx
            .names
            .iter()
            .find(|(_, n)| n.as_str() == node)
            .map(|(id, _)| *id)
        else {
            return Call::failed("unknown_peer");
        };
        match ctx
            .driver
            .request_peer_raw(id, service, shot.body, shot.opts)
            .await
        {
            Ok(raw) => answer(&raw, shot.started),
            Err(e) => classify(&e),
        }
    }

    fn figures(_: &LoadSpec, t: &Tally<()>, _: &[NodeStats], _: &[NodeSpec]) -> Figures<Nothing> {
        Figures::calls(t, Nothing {})
    }
}
