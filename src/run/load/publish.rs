//! `kind = "publish"`: the driver's publisher cycles over the topics;
//! the `subscribe` nodes count what arrives.
//!
//! Guarantees: lost is what a live subscriber should have had (by its
//! prefixes and the topics cycled over) and did not; latency is measured
//! at the subscribers. Does not: count a killed subscriber's shortfall as
//! lost.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{merged_latency, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// Pub/sub over the driver's publisher.
pub(super) struct Publish;

/// What the subscribers got.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    delivered_per_subscriber: BTreeMap<String, u64>,
    expected_per_subscriber: BTreeMap<String, u64>,
    /// Messages the subscribers know they missed (sequence gaps).
    gaps_reported: u64,
}

impl Load for Publish {
    type Extra = ();
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<()> {
        let Some(publisher) = ctx.sockets.publisher.as_ref() else {
            return Call::failed("no publisher");
        };
        let topic = if load.topics.is_empty() {
            load.target.clone()
        } else {
            load.topics[shot.seq as usize % load.topics.len()].clone()
        };
        match publisher.publish(&topic, &shot.payload).await {
            Ok(()) => Call::Sent,
            Err(e) => Call::Failed(e.to_string()),
        }
    }

    fn figures(
        l: &LoadSpec,
        t: &Tally<()>,
        nodes: &[NodeStats],
        specs: &[NodeSpec],
    ) -> Figures<Outcome> {
        let per: BTreeMap<String, u64> = nodes
            .iter()
            .filter(|n| !n.received.is_empty() || n.lost > 0)
            .map(|n| (n.name.clone(), n.received.values().sum()))
            .collect();
        let expected = expected_per_subscriber(l, t.sent - t.failed, specs);
        // Lost: what a live subscriber should have had and did not.
        let lost = expected
            .iter()
            .filter(|(name, _)| nodes.iter().any(|n| &n.name == *name && !n.killed))
            .map(|(name, e)| e.saturating_sub(per.get(name.as_str()).copied().unwrap_or(0)))
            .sum();
        Figures {
            delivered: per.values().sum(),
            lost,
            latency: merged_latency(nodes),
            outcome: Outcome {
                delivered_per_subscriber: per,
                expected_per_subscriber: expected,
                gaps_reported: nodes.iter().map(|n| n.lost).sum(),
            },
        }
    }

    fn target(l: &LoadSpec) -> String {
        if l.topics.is_empty() {
            l.target.clone()
        } else {
            l.topics.join(",")
        }
    }
}

/// Messages each subscriber should have got: the publish load cycles
/// over its topics, so each topic got `sent / len` (the first ones one
/// more).
fn expected_per_subscriber(l: &LoadSpec, sent: u64, specs: &[NodeSpec]) -> BTreeMap<String, u64> {
    let topics: Vec<&str> = if l.topics.is_empty() {
        vec![l.target.as_str()]
    } else {
        l.topics.iter().map(String::as_str).collect()
    };
    let len = topics.len() as u64;
    specs
        .iter()
        .filter(|n| !n.subscribe.is_empty())
        .map(|n| {
            let expected = topics
                .iter()
                .enumerate()
                .filter(|(_, t)| n.subscribe.iter().any(|p| t.starts_with(p.as_str())))
                .map(|(i, _)| sent / len + u64::from((i as u64) < sent % len))
                .sum();
            (n.name.clone(), expected)
        })
        .collect()
}
