//! Idempotent consumers: a message that is redelivered or retried is
//! processed once, and its duplicates get the first result.
//!
//! [`DedupWindow`] is the plain state: keys remembered in arrival order,
//! bounded by count (`capacity`) and by age (`max_age`); the oldest are
//! forgotten first. [`IdempotentConsumer`] puts it in front of async work:
//! the first arrival of a key runs the work; a duplicate that arrives while
//! it runs waits for it; one that arrives after gets the cached result.
//!
//! Keys ([`DedupKey`]):
//! - **natural**: the id the caller gave the logical message; it stays the
//!   same across retries and redeliveries (a node's call id);
//! - **business**: something taken from the body that names the effect,
//!   e.g. an e-mail address for "send welcome mail".
//!
//! # Guarantees
//! - While a key is in the window, the work runs at most once to success.
//! - A failed run is not cached: the next duplicate runs the work again
//!   (the failure may have been transient; that is why it was retried).
//!
//! # Not guaranteed
//! A key forgotten (evicted by count or age) is new again: size the window
//! to cover the longest redelivery delay. The window lives in memory, in
//! one process; it does not survive a restart.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// Counter: duplicates answered from the window, by `consumer`.
pub const DEDUP_HITS: &str = "zfabric_dedup_hits_total";

/// What identifies a message for deduplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DedupKey {
    /// The logical message id given by its sender: `(sender, id)`.
    Natural(u64, u64),
    /// A key taken from the message body.
    Business(String),
}

/// Window limits.
///
/// Defaults: 10,000 keys, 5 minutes. Each remembered key costs its size
/// plus the cached reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// Keys remembered at most.
    pub capacity: usize,
    /// How long a key is remembered.
    pub max_age: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            capacity: 10_000,
            max_age: Duration::from_secs(300),
        }
    }
}

/// Keys seen recently, each with a value, bounded by count and age.
#[derive(Debug)]
pub struct DedupWindow<K, V> {
    config: DedupConfig,
    entries: HashMap<K, (V, Instant)>,
    order: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Clone, V: Clone> DedupWindow<K, V> {
    /// An empty window.
    pub fn new(config: DedupConfig) -> Self {
        DedupWindow {
            config,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Forgets keys older than `max_age` and beyond `capacity`.
    fn evict(&mut self, now: Instant) {
        while let Some((k, at)) = self.order.front() {
            let too_old = now.saturating_duration_since(*at) >= self.config.max_age;
            if !too_old && self.order.len() <= self.config.capacity {
                break;
            }
            // Only forget the entry if it is the one this order slot made.
            if self.entries.get(k).is_some_and(|(_, t)| t == at) {
                self.entries.remove(k);
            }
            self.order.pop_front();
        }
    }

    /// The value stored for `key`, or stores `make()` for it. The bool says
    /// whether the key was already there (a duplicate).
    pub fn get_or_insert_with(
        &mut self,
        key: K,
        now: Instant,
        make: impl FnOnce() -> V,
    ) -> (V, bool) {
        self.evict(now);
        if let Some((v, _)) = self.entries.get(&key) {
            return (v.clone(), true);
        }
        let v = make();
        self.entries.insert(key.clone(), (v.clone(), now));
        self.order.push_back((key, now));
        self.evict(now);
        (v, false)
    }

    /// Whether `key` is remembered at `now`.
    pub fn contains(&mut self, key: &K, now: Instant) -> bool {
        self.evict(now);
        self.entries.contains_key(key)
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

type Slot<T> = Arc<OnceCell<T>>;

/// Runs work once per key within the window; duplicates share the result.
pub struct IdempotentConsumer<T> {
    name: String,
    window: Mutex<DedupWindow<DedupKey, Slot<T>>>,
    hits: metrics::Counter,
}

impl<T> std::fmt::Debug for IdempotentConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentConsumer")
            .field("name", &self.name)
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> IdempotentConsumer<T> {
    /// A consumer named `name` (the metrics label).
    pub fn new(name: impl Into<String>, config: DedupConfig) -> Self {
        let name = name.into();
        IdempotentConsumer {
            hits: metrics::counter!(DEDUP_HITS, "consumer" => name.clone()),
            name,
            window: Mutex::new(DedupWindow::new(config)),
        }
    }

    /// Runs `work` for `key` unless it already ran (or is running) to
    /// success within the window, in which case that result is returned.
    /// Returns the result and whether it was a duplicate.
    pub async fn process<E, F, Fut>(&self, key: DedupKey, work: F) -> (Result<T, E>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let now = tokio::time::Instant::now().into_std();
        let (slot, dup) = match self.window.lock() {
            Ok(mut w) => w.get_or_insert_with(key, now, || Arc::new(OnceCell::new())),
            Err(_) => (Arc::new(OnceCell::new()), false),
        };
        let mut ran = false;
        let out = slot
            .get_or_try_init(|| {
                ran = true;
                work()
            })
            .await
            .cloned();
        let duplicate = dup && !ran;
        if duplicate {
            self.hits.increment(1);
        }
        (out, duplicate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_window_forgets_by_count_and_by_age() {
        let mut w: DedupWindow<u32, ()> = DedupWindow::new(DedupConfig {
            capacity: 3,
            max_age: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        for k in 0..4 {
            assert!(!w.get_or_insert_with(k, t0, || ()).1);
        }
        assert_eq!(w.len(), 3);
        assert!(!w.contains(&0, t0), "the oldest is evicted by count");
        assert!(w.get_or_insert_with(3, t0, || ()).1);
        assert!(
            !w.contains(&1, t0 + Duration::from_secs(10)),
            "evicted by age"
        );
        assert!(w.is_empty());
    }

    #[tokio::test]
    async fn duplicates_are_processed_once_and_failures_are_not_cached() {
        let c = IdempotentConsumer::<u32>::new("t", DedupConfig::default());
        let runs = AtomicUsize::new(0);
        let key = DedupKey::Business("a@example.com".into());
        let work = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(7)
        };
        assert_eq!(c.process(key.clone(), work).await, (Ok(7), false));
        assert_eq!(c.process(key.clone(), work).await, (Ok(7), true));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // A failure leaves the key open for the next attempt.
        let k2 = DedupKey::Natural(1, 2);
        let (r, _) = c
            .process(k2.clone(), || async { Err::<u32, _>("boom") })
            .await;
        assert!(r.is_err());
        let (r, dup) = c.process(k2, || async { Ok::<_, &str>(9) }).await;
        assert_eq!((r, dup), (Ok(9), false));
    }

    #[tokio::test]
    async fn a_duplicate_arriving_during_processing_waits_for_the_first() {
        let c = Arc::new(IdempotentConsumer::<u32>::new("t", DedupConfig::default()));
        let runs = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let key = DedupKey::Natural(5, 5);
        let first = {
            let (c, runs, key) = (c.clone(), runs.clone(), key.clone());
            tokio::spawn(async move {
                c.process(key, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = go_rx.await;
                    Ok::<_, ()>(1)
                })
                .await
            })
        };
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let (c, runs) = (c.clone(), runs.clone());
            tokio::spawn(async move {
                c.process(key, || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(2)
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        go_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), (Ok(1), false));
        assert_eq!(second.await.unwrap(), (Ok(1), true));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
