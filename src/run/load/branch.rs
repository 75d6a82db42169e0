//! `kind = "branch"`: the load's `services` run side by side and their
//! answers are combined.
//!
//! Guarantees: a call succeeds only when every branch did; `ok_per_branch`
//! counts each branch's successes among the successful calls. Does not:
//! cancel the other branches when one fails.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ok, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::{Answer, NodeStats, Payload};

/// Parallel branches over several services.
pub(super) struct Branch;

/// Each branch of one call, and whether it answered.
pub(super) struct Branches(Vec<(String, bool)>);

/// How the branches did.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    ok_per_branch: BTreeMap<String, u64>,
}

impl Load for Branch {
    type Extra = Branches;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Branches> {
        let services: Vec<&str> = load.services.iter().map(String::as_str).collect();
        let outcomes = zfabric::topology::branch::parallel::<Payload, Answer, _>(
            &ctx.driver,
            &services,
            &shot.payload,
            shot.timeout,
            |v| {
                v.into_iter()
                    .map(|(s, r)| (s, r.is_ok()))
                    .collect::<Vec<_>>()
            },
        )
        .await;
        if outcomes.iter().all(|(_, ok)| *ok) {
            ok(shot.started, Branches(outcomes))
        } else {
            Call::failed("a branch failed")
        }
    }

    fn figures(
        _: &LoadSpec,
        t: &Tally<Branches>,
        _: &[NodeStats],
        _: &[NodeSpec],
    ) -> Figures<Outcome> {
        let mut per: BTreeMap<String, u64> = BTreeMap::new();
        for Branches(bs) in &t.extras {
            for (s, ok) in bs {
                if *ok {
                    *per.entry(s.clone()).or_default() += 1;
                }
            }
        }
        Figures::calls(t, Outcome { ok_per_branch: per })
    }

    fn target(l: &LoadSpec) -> String {
        l.services.join("+")
    }
}
