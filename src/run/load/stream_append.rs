//! `kind = "stream_append"`: appends records to the stream `target`
//! through its host (`StreamClient::append`, keyed by the call's sequence
//! number so the records spread over the partitions), one per call, then
//! asks the effect store until it holds that record's effect.
//!
//! A call's latency runs from the append to the effect being seen. An
//! append the host did not acknowledge (it was restarting, the call timed
//! out) is a failed call: it may or may not be in the log (appends are
//! not retried), and is not counted as appended.
//!
//! Guarantees: `lost` counts acknowledged appends whose effect the store
//! did not hold within [`EFFECT_DEADLINE`]; `processed` (distinct),
//! `processed_twice` (effects applied more than once) and `redeliveries`
//! are read from the effect store's file at the end; `gaps_filled` and
//! `duplicates_skipped` are the consumers' own counts (in one process
//! summed over every life of a restarted member; with `--split` only the
//! last life of each child reports them). Does not: kill or restart
//! nodes (the file's faults do).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use zfabric::node::CallOptions;
use zfabric::stream::client::Target;
use zfabric::stream::StreamClient;

use super::{Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::effects::{self, Seen};
use crate::run::report::Latency;
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// How long a call waits for its record's effect.
pub(super) const EFFECT_DEADLINE: Duration = Duration::from_secs(15);
/// Between two questions to the effect store.
const POLL: Duration = Duration::from_millis(20);

/// Appends to a stream and waits for the effects.
pub(super) struct StreamAppend;

/// One acknowledged append.
pub(super) struct Appended {
    /// Its effect was seen within the deadline.
    seen: bool,
}

/// The load's figures.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    /// Appends the host acknowledged.
    appended: u64,
    /// Appends that were not acknowledged (maybe written, maybe not).
    append_failed: u64,
    /// Distinct records whose effect the store holds.
    processed: Option<u64>,
    /// Acknowledged appends whose effect never showed.
    lost: u64,
    /// Records whose effect was applied more than once.
    processed_twice: Option<u64>,
    /// Deliveries of a record after its first (at least once at work;
    /// the idempotent store applied none of them).
    redeliveries: Option<u64>,
    /// Records in the host's log at the end.
    records_in_log: Option<u64>,
    /// Tail gaps the consumers filled by fetching.
    gaps_filled: u64,
    /// Records the consumers skipped below their position.
    duplicates_skipped: u64,
    /// Positions the consumers committed.
    commits: u64,
    /// Records the consumers processed, per member.
    processed_by: std::collections::BTreeMap<String, u64>,
}

async fn append(ctx: &Ctx, load: &LoadSpec, shot: &Shot) -> Call<Appended> {
    let client = StreamClient::new(&ctx.driver, &load.target, shot.timeout);
    let key = shot.seq.to_be_bytes().to_vec();
    let body = Bytes::from(format!("record {}", shot.seq));
    let a = match client.append(Target::Key(key), vec![body]).await {
        Ok(a) => a,
        Err(e) => return Call::Failed(format!("append: {e}").chars().take(60).collect()),
    };
    let until = Instant::now() + EFFECT_DEADLINE;
    let q = Seen {
        partition: a.partition,
        offset: a.first,
    };
    loop {
        let opts = CallOptions::default()
            .timeout(shot.timeout)
            .idempotent()
            .wait_for_member();
        if let Ok(true) = ctx
            .driver
            .request_with::<_, bool>(effects::SEEN, &q, opts)
            .await
        {
            return super::ok(shot.started, Appended { seen: true });
        }
        if Instant::now() >= until {
            return super::ok(shot.started, Appended { seen: false });
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Load for StreamAppend {
    type Extra = Appended;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Appended> {
        append(ctx, load, &shot).await
    }

    fn figures(
        _load: &LoadSpec,
        t: &Tally<Appended>,
        nodes: &[NodeStats],
        specs: &[NodeSpec],
    ) -> Figures<Outcome> {
        let stats = |name: &str| nodes.iter().find(|n| n.name == name);
        let fig = |n: Option<&NodeStats>, k: &str| n.and_then(|n| n.figures.get(k).copied());
        let store = specs
            .iter()
            .find(|s| s.effect_store)
            .and_then(|s| stats(&s.name));
        let host = specs
            .iter()
            .find(|s| s.stream.is_some())
            .and_then(|s| stats(&s.name));
        let consumers: Vec<&NodeStats> = specs
            .iter()
            .filter(|s| s.stream_consumer.is_some())
            .filter_map(|s| stats(&s.name))
            .collect();
        let sum = |k: &str| consumers.iter().map(|n| fig(Some(n), k).unwrap_or(0)).sum();
        let lost = t.extras.iter().filter(|a| !a.seen).count() as u64;
        let outcome = Outcome {
            appended: t.ok,
            append_failed: t.failed + t.timeout,
            processed: fig(store, "effects"),
            lost,
            processed_twice: fig(store, "effects_applied_twice"),
            redeliveries: fig(store, "effect_redeliveries"),
            records_in_log: fig(host, "stream_records_in_log"),
            gaps_filled: sum("stream_gaps_filled"),
            duplicates_skipped: sum("stream_duplicates_skipped"),
            commits: sum("stream_commits"),
            processed_by: consumers
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        fig(Some(n), "stream_processed").unwrap_or(0),
                    )
                })
                .collect(),
        };
        Figures {
            delivered: t.ok - lost,
            lost,
            latency: Latency::of(&t.hist),
            outcome,
        }
    }
}
