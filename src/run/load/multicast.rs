//! `kind = "multicast"`: every current member of the group gets each
//! message, or the driver learns which did not.
//!
//! Guarantees: delivered counts member deliveries, lost the members
//! missed, named in `missed_by_member`. Does not: retry a missed member.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::{classify, count_names, ok, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// Multicast to a group.
pub(super) struct Multicast;

/// Whom one multicast reached.
pub(super) struct Reach {
    delivered: usize,
    missed: Vec<String>,
}

/// Whom the multicasts reached.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    member_deliveries: u64,
    missed_by_member: BTreeMap<String, u64>,
}

impl Load for Multicast {
    type Extra = Reach;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Reach> {
        let started: Instant = shot.started;
        match ctx
            .driver
            .multicast(&load.target, &shot.payload, shot.timeout)
            .await
        {
            Ok(r) => {
                let missed = r
                    .failed
                    .iter()
                    .map(|(id, _)| {
                        ctx.names
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| format!("peer {id}"))
                    })
                    .collect();
                ok(
                    started,
                    Reach {
                        delivered: r.delivered.len(),
                        missed,
                    },
                )
            }
            Err(e) => classify(&e),
        }
    }

    fn figures(
        _: &LoadSpec,
        t: &Tally<Reach>,
        _: &[NodeStats],
        _: &[NodeSpec],
    ) -> Figures<Outcome> {
        let mut missed = BTreeMap::new();
        let mut reached = 0u64;
        for r in &t.extras {
            reached += r.delivered as u64;
            count_names(&r.missed, &mut missed);
        }
        let lost = missed.values().sum();
        let outcome = Outcome {
            member_deliveries: reached,
            missed_by_member: missed,
        };
        Figures {
            delivered: reached,
            lost,
            ..Figures::calls(t, outcome)
        }
    }
}
