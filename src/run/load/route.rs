//! `kind = "route"`: requests cycle over the tiers of `routes`, each
//! tier to its service.
//!
//! Guarantees: `routed` counts successful calls per `tier -> service`.
//! Does not: route by anything but the tier.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{answer, classify, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// Content-based routing by tier.
pub(super) struct Route;

/// Where one call went.
pub(super) struct Routed {
    tier: String,
    service: String,
}

/// Where the calls went.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    routed: BTreeMap<String, u64>,
}

impl Load for Route {
    type Extra = Routed;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Routed> {
        let service = load.routes[shot.seq as usize % load.routes.len()].1.clone();
        match ctx.driver.request_raw(&service, shot.body, shot.opts).await {
            Ok(raw) => answer(&raw, shot.started).with(Routed {
                tier: shot.tier,
                service,
            }),
            Err(e) => classify(&e),
        }
    }

    fn figures(
        _: &LoadSpec,
        t: &Tally<Routed>,
        _: &[NodeStats],
        _: &[NodeSpec],
    ) -> Figures<Outcome> {
        let mut per: BTreeMap<String, u64> = BTreeMap::new();
        for r in &t.extras {
            *per.entry(format!("{} -> {}", r.tier, r.service))
                .or_default() += 1;
        }
        Figures::calls(t, Outcome { routed: per })
    }

    fn target(l: &LoadSpec) -> String {
        let mut s: Vec<&str> = l.routes.iter().map(|r| r.1.as_str()).collect();
        s.dedup();
        s.join("|")
    }
}
