//! `kind = "shared_data"`: rounds against the shared-data service and the
//! read-through caches of `services` in front of it.
//!
//! One round (one call of the load), for a new email:
//! 1. `concurrency` creates of that email at once (each its own call id),
//!    then one more, retried with a new call id: every answer must name
//!    the same customer, and one at most says it made it;
//! 2. two reads through each cache (a miss, then a hit);
//! 3. an update at version 1 (answered with version 2), and the same
//!    update again, now stale: it must be a `conflict`;
//! 4. reads through each cache until one shows version 2: the reads
//!    before it are stale (their invalidation was missed or is still on
//!    its way), with the age the cache reported for each.
//!
//! A step whose member fails (gone, restarting, timed out) is tried again
//! for up to [`STEP_DEADLINE`]; answers carry the store's boot id, so the
//! rounds see a restart of the data service.
//!
//! Guarantees: the outcome compares what the rounds were told with what
//! the data node's file holds at the end (`rows_in_db`,
//! `email_index_rows`) and held when it was last opened
//! (`rows_at_last_open`, against `customers_before_restart`: those made
//! by the first boot, or whose making was never answered because the
//! store died after committing, `made_but_answer_lost`), and gives
//! per cache the hits and misses it counted, the stale reads seen, the
//! oldest age of a stale value served (`max_stale_age_ms`, never the TTL
//! or more) and the longest a round saw stale values after its update
//! (`max_stale_for_ms`). Does not: restart nodes or drop invalidations
//! (the file's faults do).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use zfabric::node::{CallError, CallOptions};
use zfabric::topology::shared_data::{
    Cached, CreateCustomer, GetCustomer, Stored, UpdateCustomer, CREATE, UPDATE,
};
use zfabric::wire::RemoteCode;
use zfabric::RequestError;

use super::{Call, Ctx, Figures, Load, Shot, Tally};
use crate::run::spec::{LoadSpec, NodeSpec};
use crate::run::world::NodeStats;

/// How long one step is tried again while its member fails.
pub(super) const STEP_DEADLINE: Duration = Duration::from_secs(8);
/// How long a round reads a cache waiting for the new version.
const FRESH_DEADLINE: Duration = Duration::from_secs(10);
/// Between reads of a stale cache.
const POLL: Duration = Duration::from_millis(5);

/// Rounds against the data service.
pub(super) struct SharedData;

/// What one cache showed in a round.
#[derive(Debug, Default, Clone)]
pub(super) struct CacheRound {
    hits: u64,
    stale_reads: u64,
    max_stale_age_us: u64,
    stale_for_us: u64,
}

/// What one round saw.
pub(super) struct Round {
    ids: BTreeSet<u64>,
    made: u64,
    creates: u64,
    conflict: bool,
    /// The boot of the store that answered `created: true`; `None` when
    /// that answer was lost (its node died after committing).
    made_by: Option<u64>,
    boots: BTreeSet<u64>,
    caches: Vec<(String, CacheRound)>,
}

/// One cache's figures over the run.
#[derive(Debug, Serialize, Default)]
pub(super) struct CacheOutcome {
    cache_hits: u64,
    cache_misses: u64,
    hits_seen_by_rounds: u64,
    stale_reads: u64,
    max_stale_age_ms: f64,
    max_stale_for_ms: f64,
    ttl_ms: u64,
    invalidations_applied: u64,
    invalidations_dropped: u64,
    evicted: BTreeMap<String, u64>,
}

/// The load's figures.
#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    rounds: u64,
    create_calls: u64,
    distinct_emails: u64,
    customers_made: u64,
    made_but_answer_lost: u64,
    emails_with_two_ids: u64,
    rows_in_db: Option<u64>,
    email_index_rows: Option<u64>,
    conflicts_refused: u64,
    boots_seen: u64,
    customers_before_restart: u64,
    rows_at_last_open: Option<u64>,
    invalidations_published: u64,
    caches: BTreeMap<String, CacheOutcome>,
}

/// Whether an error means "not done, try again": the member went, was
/// restarting, or did not answer in time.
fn retryable(e: &CallError) -> bool {
    match e {
        CallError::Request(RequestError::Remote(r)) => {
            matches!(
                r.known_code(),
                Some(RemoteCode::Upstream | RemoteCode::Stopping | RemoteCode::Timeout)
            ) || r.code == "internal"
        }
        _ => !e.is_caller_error(),
    }
}

fn code(e: &CallError) -> String {
    match e {
        CallError::Request(RequestError::Remote(r)) => r.code.clone(),
        CallError::Request(RequestError::Timeout(_)) => "timeout".into(),
        other => format!("{other}").chars().take(40).collect(),
    }
}

/// Calls `service` with `req` until it answers or fails for the caller's
/// fault, within [`STEP_DEADLINE`].
async fn step<Req: serde::Serialize, Rep: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    service: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Rep, CallError> {
    let until = Instant::now() + STEP_DEADLINE;
    loop {
        // Every attempt is a new call (its own call id): the store, not a
        // dedup window, keeps a retried create from making another.
        let opts = CallOptions::default().timeout(timeout).wait_for_member();
        match ctx.driver.request_with(service, req, opts).await {
            Err(e) if retryable(&e) && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r,
        }
    }
}

async fn round(ctx: &Ctx, load: &LoadSpec, shot: &Shot) -> Result<Round, String> {
    let timeout = shot.timeout;
    let email = format!(
        "customer-{}-{:x}@example.com",
        shot.seq,
        ctx.driver.id().0 & 0xffff_ffff
    );
    let create = CreateCustomer {
        email: email.clone(),
        name: format!("Customer {}", shot.seq),
    };
    // 1. Concurrent creates, then one retried with a new call id.
    let concurrent = futures_util::future::join_all(
        (0..load.concurrency.max(2)).map(|_| step::<_, Stored>(ctx, CREATE, &create, timeout)),
    )
    .await;
    let mut answers = Vec::new();
    for r in concurrent {
        answers.push(r.map_err(|e| format!("create: {}", code(&e)))?);
    }
    let retried: Stored = step(ctx, CREATE, &create, timeout)
        .await
        .map_err(|e| format!("create retried: {}", code(&e)))?;
    answers.push(retried);
    let ids: BTreeSet<u64> = answers.iter().map(|s| s.customer.id).collect();
    let made = answers.iter().filter(|s| s.created).count() as u64;
    let mut boots: BTreeSet<u64> = answers.iter().map(|s| s.boot).collect();
    let made_by = answers.iter().find(|s| s.created).map(|s| s.boot);
    let id = answers[0].customer.id;
    let version = answers
        .iter()
        .map(|s| s.customer.version)
        .max()
        .unwrap_or(1);
    // 2. Two reads through each cache.
    let mut caches: Vec<(String, CacheRound)> = Vec::new();
    for svc in &load.services {
        let mut cr = CacheRound::default();
        for _ in 0..2 {
            let c: Cached = step(ctx, svc, &GetCustomer { id }, timeout)
                .await
                .map_err(|e| format!("{svc}: {}", code(&e)))?;
            cr.hits += u64::from(c.hit);
        }
        caches.push((svc.clone(), cr));
    }
    // 3. An update at the version read, then the same one, now stale.
    let update = UpdateCustomer {
        id,
        expected_version: version,
        name: format!("Customer {} (renamed)", shot.seq),
    };
    let updated: Result<Stored, CallError> = step(ctx, UPDATE, &update, timeout).await;
    let new_version = match updated {
        Ok(s) => {
            boots.insert(s.boot);
            s.customer.version
        }
        // Answered by an attempt whose reply was lost: the stored version
        // moved on, which the conflict names.
        Err(e) if code(&e) == RemoteCode::Conflict.as_str() => version + 1,
        Err(e) => return Err(format!("update: {}", code(&e))),
    };
    let updated_at = Instant::now();
    let conflict = match step::<_, Stored>(ctx, UPDATE, &update, timeout).await {
        Err(e) => code(&e) == RemoteCode::Conflict.as_str(),
        Ok(_) => false,
    };
    // 4. Reads until the new version shows.
    for (svc, cr) in &mut caches {
        let until = updated_at + FRESH_DEADLINE;
        loop {
            let c: Cached = step(ctx, svc, &GetCustomer { id }, timeout)
                .await
                .map_err(|e| format!("{svc}: {}", code(&e)))?;
            boots.insert(c.boot);
            if c.customer.version >= new_version {
                break;
            }
            cr.stale_reads += 1;
            cr.max_stale_age_us = cr.max_stale_age_us.max(c.age_us);
            cr.stale_for_us = updated_at.elapsed().as_micros() as u64;
            if Instant::now() >= until {
                return Err(format!("{svc}: stale past {FRESH_DEADLINE:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(Round {
        ids,
        made,
        creates: answers.len() as u64,
        conflict,
        made_by,
        boots,
        caches,
    })
}

impl Load for SharedData {
    type Extra = Round;
    type Outcome = Outcome;

    async fn call(ctx: &Ctx, load: &LoadSpec, shot: Shot) -> Call<Round> {
        match round(ctx, load, &shot).await {
            Ok(r) => super::ok(shot.started, r),
            Err(why) => Call::Failed(why),
        }
    }

    fn figures(
        load: &LoadSpec,
        t: &Tally<Round>,
        nodes: &[NodeStats],
        specs: &[NodeSpec],
    ) -> Figures<Outcome> {
        let stats = |name: &str| nodes.iter().find(|n| n.name == name);
        let data = specs
            .iter()
            .find(|s| s.data_service)
            .and_then(|s| stats(&s.name));
        let fig = |n: Option<&NodeStats>, k: &str| n.and_then(|n| n.figures.get(k).copied());
        let first_boot = t.extras.iter().find_map(|r| r.made_by);
        let boots: BTreeSet<u64> = t
            .extras
            .iter()
            .flat_map(|r| r.boots.iter().copied())
            .collect();
        let mut caches = BTreeMap::new();
        for svc in &load.services {
            let spec = specs
                .iter()
                .find(|s| s.customer_cache.as_ref().is_some_and(|c| &c.service == svc));
            let mut o = CacheOutcome {
                ttl_ms: spec
                    .and_then(|s| s.customer_cache.as_ref())
                    .map_or(0, |c| c.ttl_ms),
                ..CacheOutcome::default()
            };
            if let Some(n) = spec.and_then(|s| stats(&s.name)) {
                let g = |k: &str| n.figures.get(k).copied().unwrap_or(0);
                o.cache_hits = g("cache_hits");
                o.cache_misses = g("cache_misses");
                o.invalidations_applied = g("invalidations_applied");
                o.invalidations_dropped = g("invalidations_dropped");
                o.evicted = n
                    .figures
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix("evicted_")?.to_owned(), *v)))
                    .collect();
            }
            for r in &t.extras {
                for (_, cr) in r.caches.iter().filter(|(s, _)| s == svc) {
                    o.hits_seen_by_rounds += cr.hits;
                    o.stale_reads += cr.stale_reads;
                    o.max_stale_age_ms = o.max_stale_age_ms.max(cr.max_stale_age_us as f64 / 1e3);
                    o.max_stale_for_ms = o.max_stale_for_ms.max(cr.stale_for_us as f64 / 1e3);
                }
            }
            caches.insert(svc.clone(), o);
        }
        let outcome = Outcome {
            rounds: t.extras.len() as u64,
            create_calls: t.extras.iter().map(|r| r.creates).sum(),
            distinct_emails: t.extras.len() as u64,
            customers_made: t.extras.iter().map(|r| r.made).sum(),
            made_but_answer_lost: t.extras.iter().filter(|r| r.made_by.is_none()).count() as u64,
            emails_with_two_ids: t.extras.iter().filter(|r| r.ids.len() > 1).count() as u64,
            rows_in_db: fig(data, "rows"),
            email_index_rows: fig(data, "email_index_rows"),
            conflicts_refused: t.extras.iter().filter(|r| r.conflict).count() as u64,
            boots_seen: boots.len() as u64,
            // A customer whose making was never answered was made by a
            // store that then died: the first, in a run with one restart.
            customers_before_restart: t
                .extras
                .iter()
                .filter(|r| r.made_by.is_none() || r.made_by == first_boot)
                .count() as u64,
            rows_at_last_open: fig(data, "rows_at_open"),
            invalidations_published: fig(data, "invalidations_published").unwrap_or(0),
            caches,
        };
        Figures::calls(t, outcome)
    }

    fn target(load: &LoadSpec) -> String {
        if load.target.is_empty() {
            "customers".into()
        } else {
            load.target.clone()
        }
    }
}
