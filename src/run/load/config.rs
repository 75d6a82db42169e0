//! `kind = "config"`: `target = "service/env"`, fetch that service's
//! `toml` configuration (its highest version) from the configuration
//! service.
//!
//! Guarantees: `versions` counts the fetches per version served, and
//! `highest_on_disk` is the highest version in the directory of the
//! nodes serving it when the load ended (`null`: none there), so a
//! reader sees at once whether every fetch got the newest document. A
//! key with no document fails as `not_found`. Does not: apply the
//! documents, or watch for new versions (`zfabric node
//! --config-from-fabric` does).

use std::collections::BTreeMap;

use serde::Serialize;
use zfabric::topology::config::{ConfigDocument, ConfigKey, ConfigStore, SERVICE};

use super::{classify, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// Fetches from the configuration service.
pub(super) struct Config;

/// The config load's own figures.
#[derive(Debug, Serialize)]
pub(super) struct Versions {
    /// Fetches per version served.
    versions: BTreeMap<u64, u64>,
    /// The highest version on disk at the end.
    highest_on_disk: Option<u64>,
}

fn key(load: &LoadSpec) -> ConfigKey {
    let (service, env) = load.target.split_once('/').unwrap_or((&load.target, ""));
    ConfigKey::latest(service, "toml", env)
}

impl Load for Config {
    type Extra = u64;
    type Outcome = Versions;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<u64> {
        match ctx
            .driver
            .request_with::<_, ConfigDocument>(SERVICE, &key(load), shot.opts)
            .await
        {
            Ok(doc) => Call::Ok {
                latency_us: shot.started.elapsed().as_micros() as u64,
                node: None,
                hops: 1,
                extra: doc.version,
            },
            Err(e) => classify(&e),
        }
    }

    fn figures(
        load: &LoadSpec,
        t: &Tally<u64>,
        _: &[NodeStats],
        specs: &[NodeSpec],
    ) -> Figures<Versions> {
        let mut versions = BTreeMap::new();
        for v in &t.extras {
            *versions.entry(*v).or_insert(0) += 1;
        }
        let k = key(load);
        let highest_on_disk = specs
            .iter()
            .filter_map(|n| n.config_dir.as_ref())
            .filter_map(|d| ConfigStore::new(d).get(&k).ok())
            .map(|d| d.version)
            .max();
        Figures::calls(
            t,
            Versions {
                versions,
                highest_on_disk,
            },
        )
    }
}
