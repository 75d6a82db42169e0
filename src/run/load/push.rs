//! `kind = "push"`: the driver's pusher deals to the `pull` nodes.
//!
//! Guarantees: lost is what was sent and no worker received; latency is
//! measured at the workers. Does not: retry (push/pull is at most once).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{merged_latency, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// A pipeline from the driver's pusher.
pub(super) struct Push;

/// How the tasks were dealt.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    per_worker: BTreeMap<String, u64>,
}

impl Load for Push {
    type Extra = ();
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, _load: &LoadSpec, shot: Shot) -> Call<()> {
        let Some(pusher) = ctx.sockets.pusher.as_ref() else {
            return Call::failed("no pusher");
        };
        match pusher.send(&shot.payload).await {
            Ok(()) => Call::Sent,
            Err(e) => Call::Failed(e.to_string()),
        }
    }

    fn figures(
        _l: &LoadSpec,
        t: &Tally<()>,
        nodes: &[NodeStats],
        _specs: &[NodeSpec],
    ) -> Figures<Outcome> {
        let per: BTreeMap<String, u64> = nodes
            .iter()
            .filter_map(|n| n.received.get("pull").map(|c| (n.name.clone(), *c)))
            .collect();
        let delivered = per.values().sum();
        Figures {
            delivered,
            lost: t.sent.saturating_sub(t.failed).saturating_sub(delivered),
            latency: merged_latency(nodes),
            outcome: Outcome { per_worker: per },
        }
    }

    fn target(l: &LoadSpec) -> String {
        if l.target.is_empty() {
            "workers".into()
        } else {
            l.target.clone()
        }
    }
}
