//! `kind = "anycast"`: any healthy member of the target service answers.
//!
//! Guarantees: `served_by` counts the answers per member, `max_hops` the
//! longest chain seen. Does not: pick the member (the node's routing
//! does).

use super::{answer, classify, Call, Ctx, Figures, Load, Nothing, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// Anycast to a service.
pub(super) struct Anycast;

impl Load for Anycast {
    type Extra = ();
    type Outcome = Nothing;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<()> {
        match ctx
            .driver
            .request_raw(&load.target, shot.body, shot.opts)
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
