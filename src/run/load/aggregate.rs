//! `kind = "aggregate"`: scatter-gather over every member of a service,
//! finished by the load's policy.
//!
//! Guarantees: each gather reports whether its policy was satisfied, how
//! many replied of how many asked, and names the members that failed or
//! timed out. Does not: count a partial gather as failed (it is a
//! success with fewer replies).

use std::collections::BTreeMap;

use serde::Serialize;
use zfabric::topology::{scatter_gather, Completion, Scatter, Target};

use super::{count_names, ok, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{parse_policy, LoadSpec, NodeSpec};
use crate::run::world::{Answer, NodeStats, Payload};

/// Scatter-gather over a service's members.
pub(super) struct Aggregate;

/// What one gather collected.
pub(super) struct Gather {
    satisfied: bool,
    replies: usize,
    n: usize,
    failed: Vec<String>,
    timed_out: Vec<String>,
}

/// What the gathers collected.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    policy: String,
    satisfied: u64,
    partial: u64,
    avg_replies: f64,
    avg_n: f64,
    completeness: f64,
    timed_out_members: BTreeMap<String, u64>,
    failed_members: BTreeMap<String, u64>,
}

fn name(t: &Target) -> String {
    match t {
        Target::Member(_, n) => n.clone(),
        Target::Service(s) => s.clone(),
    }
}

impl Load for Aggregate {
    type Extra = Gather;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Gather> {
        let policy = load
            .policy
            .as_deref()
            .map(parse_policy)
            .transpose()
            .ok()
            .flatten()
            .unwrap_or(Completion::ByDeadline);
        let scatter = Scatter::Members(load.target.clone());
        match scatter_gather::<Payload, Answer>(
            &ctx.driver,
            &scatter,
            &shot.payload,
            policy,
            shot.timeout,
        )
        .await
        {
            Ok(g) => ok(
                shot.started,
                Gather {
                    satisfied: g.satisfied(),
                    replies: g.replies.len(),
                    n: g.n,
                    failed: g.failed.iter().map(|(t, _)| name(t)).collect(),
                    timed_out: g.timed_out.iter().map(name).collect(),
                },
            ),
            Err(e) => Call::Failed(e.to_string()),
        }
    }

    fn figures(
        l: &LoadSpec,
        t: &Tally<Gather>,
        _: &[NodeStats],
        _: &[NodeSpec],
    ) -> Figures<Outcome> {
        let (mut satisfied, mut replies, mut n) = (0u64, 0u64, 0u64);
        let mut timed_out = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for g in &t.extras {
            satisfied += u64::from(g.satisfied);
            replies += g.replies as u64;
            n += g.n as u64;
            count_names(&g.timed_out, &mut timed_out);
            count_names(&g.failed, &mut failed);
        }
        let gathers = t.extras.len().max(1) as f64;
        let outcome = Outcome {
            policy: l.policy.clone().unwrap_or_else(|| "deadline".into()),
            satisfied,
            partial: t.extras.len() as u64 - satisfied,
            avg_replies: replies as f64 / gathers,
            avg_n: n as f64 / gathers,
            completeness: if n > 0 {
                replies as f64 / n as f64
            } else {
                0.0
            },
            timed_out_members: timed_out,
            failed_members: failed,
        };
        Figures::calls(t, outcome)
    }
}
