//! `kind = "event"`: events emitted on a topic to every consumer group,
//! at least once (acknowledged, redelivered) unless `delivery =
//! "at_most_once"`.
//!
//! Guarantees: a call succeeds when every group acknowledged; lost counts
//! the events some group never took; the nodes' handled counts show each
//! group handled each event once. Does not: deduplicate (the consumers
//! do).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use zfabric::topology::events::{emit, EventDelivery};

use super::{count_names, ok, Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// Events to consumer groups.
pub(super) struct Event;

/// Who took one event.
pub(super) struct Emitted {
    acked: Vec<String>,
    redeliveries: u64,
}

/// Who took the events.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    acked_by_group: BTreeMap<String, u64>,
    handled_by_group: BTreeMap<String, u64>,
    redeliveries: u64,
}

impl Load for Event {
    type Extra = Emitted;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Emitted> {
        let delivery = match load.delivery.as_deref() {
            Some("at_most_once") => EventDelivery::AtMostOnce {
                timeout: shot.timeout,
            },
            _ => EventDelivery::AtLeastOnce {
                ack_timeout: shot.timeout,
                max_attempts: 10,
                backoff: Duration::from_millis(20),
            },
        };
        match emit(&ctx.driver, &load.target, &shot.payload, delivery).await {
            Ok(r) if r.lost.is_empty() && !r.acked.is_empty() => ok(
                shot.started,
                Emitted {
                    acked: r.acked,
                    redeliveries: r.redeliveries.into(),
                },
            ),
            Ok(r) if r.acked.is_empty() && r.lost.is_empty() => Call::failed("no_consumer"),
            Ok(_) => Call::failed("group_lost"),
            Err(e) => Call::Failed(e.to_string()),
        }
    }

    fn figures(
        _: &LoadSpec,
        t: &Tally<Emitted>,
        nodes: &[NodeStats],
        _: &[NodeSpec],
    ) -> Figures<Outcome> {
        let mut acked = BTreeMap::new();
        let mut redeliveries = 0u64;
        for e in &t.extras {
            count_names(&e.acked, &mut acked);
            redeliveries += e.redeliveries;
        }
        let mut handled: BTreeMap<String, u64> = BTreeMap::new();
        for n in nodes {
            for (k, v) in &n.handled {
                if let Some(g) = k.strip_prefix("consumer:") {
                    *handled.entry(g.to_owned()).or_default() += v;
                }
            }
        }
        let outcome = Outcome {
            acked_by_group: acked,
            handled_by_group: handled,
            redeliveries,
        };
        Figures {
            lost: t.failed,
            ..Figures::calls(t, outcome)
        }
    }
}
