//! Bulkheads: bounded concurrency and a bounded wait queue per class of
//! work, so one slow or failing handler cannot starve the others.
//!
//! A [`Bulkhead`] admits at most `max_concurrent` executions at once and
//! lets at most `max_queued` more wait for a slot. Anything beyond that is
//! refused at once with [`Rejected::Full`]: there is no unbounded queue and
//! nothing is dropped silently (every refusal is counted, by reason, and
//! reported to the caller).
//!
//! Two kinds ([`BulkheadKind`]):
//! - **Semaphore**: work runs on the caller's runtime; the bulkhead only
//!   counts. Cheapest (an uncontended pass costs a few atomic operations);
//!   right for handlers that await I/O.
//! - **Threads**: work runs on the bulkhead's own OS threads (its own tokio
//!   runtime), so a handler that blocks or burns CPU holds only those
//!   threads and never the shared runtime's workers.
//!
//! # Guarantees
//! - Waiters get slots in arrival order (tokio's semaphore is fair).
//! - Work whose deadline has passed is not started: a request that waited
//!   in the queue past its deadline is refused with [`Rejected::Expired`].
//! - A bulkhead may be shared by several services (clone it: clones share
//!   the slots) or given to one; see
//!   [`ServeOptions`](crate::node::ServeOptions) for partitioning one
//!   service's callers across several.
//!
//! # Not guaranteed
//! A bulkhead bounds how much runs at once, not how long each run takes:
//! pair it with deadlines. Work already running is never interrupted.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::wire::Deadline;

/// Gauge: executions running in a bulkhead (`bulkhead` label).
pub const BULKHEAD_IN_FLIGHT: &str = "zfabric_bulkhead_in_flight";
/// Gauge: requests waiting for a slot in a bulkhead.
pub const BULKHEAD_QUEUED: &str = "zfabric_bulkhead_queued";
/// Counter: requests a bulkhead refused, by `bulkhead` and `reason`
/// (`full`, `expired`, `closed`).
pub const BULKHEAD_REJECTED: &str = "zfabric_bulkhead_rejected_total";

/// Where a bulkhead's work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BulkheadKind {
    /// On the caller's runtime; the bulkhead only limits concurrency.
    #[default]
    Semaphore,
    /// On `threads` dedicated OS threads (the bulkhead's own runtime).
    Threads {
        /// Worker threads (at least 1).
        threads: usize,
    },
}

/// A bulkhead's limits.
///
/// Defaults (tuned for I/O-bound handlers on a small machine): 32 running,
/// 32 waiting, semaphore kind. Each waiting request costs a few hundred
/// bytes; each dedicated thread its stack (2 MiB reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Executions allowed at once.
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot; 0 means refuse whenever all
    /// slots are taken.
    pub max_queued: usize,
    /// Where the work runs.
    pub kind: BulkheadKind,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 32,
            max_queued: 32,
            kind: BulkheadKind::Semaphore,
        }
    }
}

impl BulkheadConfig {
    /// `max_concurrent` at once, `max_queued` waiting, semaphore kind.
    pub fn new(max_concurrent: usize, max_queued: usize) -> Self {
        BulkheadConfig {
            max_concurrent,
            max_queued,
            kind: BulkheadKind::Semaphore,
        }
    }

    /// Runs the work on `threads` dedicated threads; `max_concurrent`
    /// becomes `threads` unless set lower.
    pub fn threads(mut self, threads: usize) -> Self {
        let threads = threads.max(1);
        self.kind = BulkheadKind::Threads { threads };
        self.max_concurrent = self.max_concurrent.min(threads);
        self
    }
}

/// Why a bulkhead refused work. Travels back to a remote caller as the
/// remote error code `rejected` (or `deadline_expired`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Every slot is taken and the wait queue is full
    /// (`BulkheadConfig::max_concurrent`, `max_queued`).
    #[error("bulkhead {bulkhead:?} is full ({max_concurrent} running, {max_queued} waiting)")]
    Full {
        /// The bulkhead.
        bulkhead: String,
        /// Its concurrency limit.
        max_concurrent: usize,
        /// Its queue limit.
        max_queued: usize,
    },
    /// The deadline passed before a slot was free (or had already passed).
    #[error("deadline passed waiting in bulkhead {bulkhead:?}")]
    Expired {
        /// The bulkhead.
        bulkhead: String,
    },
    /// The bulkhead's dedicated runtime is gone (shut down or the work
    /// panicked).
    #[error("bulkhead {bulkhead:?} could not run the work: {why}")]
    Closed {
        /// The bulkhead.
        bulkhead: String,
        /// What happened.
        why: String,
    },
}

impl Rejected {
    /// The label used in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Full { .. } => "full",
            Rejected::Expired { .. } => "expired",
            Rejected::Closed { .. } => "closed",
        }
    }
}

/// A dedicated runtime, shut down in the background when dropped (dropping
/// a runtime from inside async code would otherwise panic).
struct Dedicated(Option<tokio::runtime::Runtime>);

impl Drop for Dedicated {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Inner {
    name: String,
    config: BulkheadConfig,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    rejected: AtomicU64,
    runtime: Option<Dedicated>,
}

/// Its gauges are read at scrape time ([`crate::telemetry::collect`]).
impl crate::telemetry::Collector for Inner {
    fn collect(&self) {
        metrics::gauge!(BULKHEAD_IN_FLIGHT, "bulkhead" => self.name.clone())
            .set(self.in_flight.load(Ordering::Relaxed) as f64);
        metrics::gauge!(BULKHEAD_QUEUED, "bulkhead" => self.name.clone())
            .set(self.queued.load(Ordering::Relaxed) as f64);
    }

    fn report(&self, into: &mut crate::telemetry::StatusReport) {
        into.bulkheads.push(crate::telemetry::BulkheadStatus {
            name: self.name.clone(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            max_concurrent: self.config.max_concurrent,
            max_queued: self.config.max_queued,
        });
    }
}

/// A named bulkhead. Clones share the same slots and queue.
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

/// A slot in a bulkhead, held while the work runs.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    bulkhead: Bulkhead,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.bulkhead
            .inner
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the queue count however the wait ends (cancelled included).
struct Queued<'a>(&'a Inner);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead named `name` (the metrics label). A thread bulkhead
    /// starts its threads here.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread bulkhead's threads.
    pub fn new(name: impl Into<String>, config: BulkheadConfig) -> Self {
        let name = name.into();
        let config = BulkheadConfig {
            max_concurrent: config.max_concurrent.max(1),
            ..config
        };
        let runtime = match config.kind {
            BulkheadKind::Semaphore => None,
            BulkheadKind::Threads { threads } => Some(Dedicated(Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name(format!("zf-bulkhead-{name}"))
                    .enable_all()
                    .build()
                    .expect("start a bulkhead's threads"),
            ))),
        };
        for reason in ["full", "expired", "closed"] {
            metrics::counter!(BULKHEAD_REJECTED, "bulkhead" => name.clone(), "reason" => reason)
                .absolute(0);
        }
        let b = Bulkhead {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.max_concurrent)),
                queued: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                rejected: AtomicU64::new(0),
                name,
                config,
                runtime,
            }),
        };
        let owner: std::sync::Weak<Inner> = Arc::downgrade(&b.inner);
        crate::telemetry::register(owner);
        b
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its limits.
    pub fn config(&self) -> BulkheadConfig {
        self.inner.config
    }

    /// Executions running now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Requests refused since the bulkhead was made (all reasons).
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    fn reject(&self, r: Rejected) -> Rejected {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(BULKHEAD_REJECTED, "bulkhead" => self.inner.name.clone(), "reason" => r.reason())
            .increment(1);
        r
    }

    fn full(&self) -> Rejected {
        self.reject(Rejected::Full {
            bulkhead: self.inner.name.clone(),
            max_concurrent: self.inner.config.max_concurrent,
            max_queued: self.inner.config.max_queued,
        })
    }

    fn expired(&self) -> Rejected {
        self.reject(Rejected::Expired {
            bulkhead: self.inner.name.clone(),
        })
    }

    fn admitted(&self, permit: OwnedSemaphorePermit) -> Permit {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        Permit {
            _permit: permit,
            bulkhead: self.clone(),
        }
    }

    /// Takes a slot, waiting in the queue (until `deadline`) if all are
    /// taken; refuses at once if the queue is full too.
    pub async fn enter(&self, deadline: Option<Deadline>) -> Result<Permit, Rejected> {
        if deadline.is_some_and(|d| d.is_expired()) {
            return Err(self.expired());
        }
        match self.inner.slots.clone().try_acquire_owned() {
            Ok(p) => return Ok(self.admitted(p)),
            Err(TryAcquireError::Closed) => return Err(self.full()),
            Err(TryAcquireError::NoPermits) => {}
        }
        // Join the queue if there is room.
        let max = self.inner.config.max_queued;
        if self
            .inner
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < max).then_some(q + 1)
            })
            .is_err()
        {
            return Err(self.full());
        }
        let _queued = Queued(&self.inner);
        let wait = self.inner.slots.clone().acquire_owned();
        let permit = match deadline.map(|d| d.remaining().unwrap_or(Duration::ZERO)) {
            None => wait.await,
            Some(left) => match tokio::time::timeout(left, wait).await {
                Ok(p) => p,
                Err(_) => return Err(self.expired()),
            },
        };
        let permit = permit.map_err(|_| self.full())?;
        // A slot came free just as the deadline passed: do not start.
        if deadline.is_some_and(|d| d.is_expired()) {
            return Err(self.expired());
        }
        Ok(self.admitted(permit))
    }

    /// Takes a slot only if one is free now (never queues).
    pub fn try_enter(&self) -> Result<Permit, Rejected> {
        match self.inner.slots.clone().try_acquire_owned() {
            Ok(p) => Ok(self.admitted(p)),
            Err(_) => Err(self.full()),
        }
    }

    /// Runs `work` inside the bulkhead: takes a slot (queueing until
    /// `deadline` at most), then runs it on the caller's runtime
    /// (semaphore kind) or on the bulkhead's threads (thread kind). The
    /// inherited deadline ([`super::deadline`]) goes with it.
    pub async fn run<F>(&self, deadline: Option<Deadline>, work: F) -> Result<F::Output, Rejected>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let permit = self.enter(deadline).await?;
        match &self.inner.runtime {
            None => {
                let out = work.await;
                drop(permit);
                Ok(out)
            }
            Some(rt) => {
                let Some(rt) = rt.0.as_ref() else {
                    return Err(self.closed("runtime gone".into()));
                };
                let inherited = super::deadline::current_deadline();
                let hops = super::deadline::current_hops();
                let task = rt.spawn(async move {
                    let out = super::deadline::with_context(inherited, hops, work).await;
                    drop(permit);
                    out
                });
                task.await.map_err(|e| self.closed(e.to_string()))
            }
        }
    }

    fn closed(&self, why: String) -> Rejected {
        self.reject(Rejected::Closed {
            bulkhead: self.inner.name.clone(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_bulkhead_refuses_at_once_and_frees_slots_when_work_ends() {
        let b = Bulkhead::new("t", BulkheadConfig::new(2, 1));
        let p1 = b.enter(None).await.unwrap();
        let _p2 = b.enter(None).await.unwrap();
        assert_eq!(b.in_flight(), 2);
        // The third waits in the queue...
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.enter(None).await.map(|_| ()) });
        while b.queued() == 0 {
            tokio::task::yield_now().await;
        }
        // ...the fourth is refused, without waiting.
        assert!(matches!(b.enter(None).await, Err(Rejected::Full { .. })));
        assert!(b.try_enter().is_err());
        drop(p1);
        waiter.await.unwrap().unwrap();
        assert_eq!(b.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_work_whose_deadline_passes_is_not_started() {
        let b = Bulkhead::new("t", BulkheadConfig::new(1, 4));
        let _busy = b.enter(None).await.unwrap();
        let d = Deadline::after(Duration::from_millis(50));
        // Paused time: the timeout fires once the runtime is idle; the
        // wall-clock deadline is then checked again before starting.
        let r = b.enter(Some(d)).await;
        assert!(r.is_err());
        assert_eq!(b.queued(), 0);
        assert!(matches!(
            b.enter(Some(Deadline(1))).await,
            Err(Rejected::Expired { .. })
        ));
    }

    #[tokio::test]
    async fn a_thread_bulkhead_runs_blocking_work_off_the_shared_runtime() {
        let b = Bulkhead::new("cpu", BulkheadConfig::new(8, 0).threads(1));
        assert_eq!(b.config().max_concurrent, 1);
        let name = b
            .run(None, async {
                std::thread::current().name().unwrap_or("").to_owned()
            })
            .await
            .unwrap();
        assert!(name.starts_with("zf-bulkhead-cpu"), "{name}");
    }
}
