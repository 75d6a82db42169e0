//! Gauges read at scrape time: the state of live things (a node's
//! members, breakers and requests in flight, a bulkhead's slots), set
//! from their owners by [`collect`] just before a scrape is rendered.
//!
//! This is the collector model of Prometheus's client libraries: a gauge
//! describes something that exists now, so it is read from that thing
//! when asked for, never pushed and left behind. An owner registers
//! itself (weakly) when it starts; once it is dropped, or once what a
//! series describes is gone (a member out of every route takes its
//! breakers with it), [`collect`] stops setting the series. The
//! `zfabric` commands install their exporter with an idle timeout on
//! gauges (`metrics-exporter-prometheus`'s `idle_timeout`, gauges only),
//! so a series that was not set since the previous scrape is removed
//! from the next one: the series of a forgotten member disappear.
//! Counters and histograms are never removed (they only go up, and the
//! known ones start at zero).
//!
//! Guarantees: every registered owner still alive is collected, each
//! call; dead owners are pruned; nothing here runs on a message path (a
//! request only moves an atomic). Does not: render, or set anything
//! between calls: an application that installs its own recorder calls
//! [`collect`] from its scrape handler (or on a timer) to see these
//! gauges at all.

use std::sync::{Arc, Mutex, Weak};

/// Something that sets its gauges from its current state.
pub(crate) trait Collector: Send + Sync {
    /// Sets every gauge this owner describes, now.
    fn collect(&self);

    /// Adds what this owner is now to a status report (nothing by
    /// default).
    fn report(&self, _into: &mut super::status::StatusReport) {}
}

/// The owners, weakly: a dropped owner is pruned, never kept alive here.
static OWNERS: Mutex<Vec<Weak<dyn Collector>>> = Mutex::new(Vec::new());

/// Registers `owner` until it is dropped.
pub(crate) fn register(owner: Weak<dyn Collector>) {
    if let Ok(mut owners) = OWNERS.lock() {
        owners.retain(|o| o.strong_count() > 0);
        owners.push(owner);
    }
}

/// Sets every scrape-time gauge from the live owners (nodes, bulkheads)
/// through the installed recorder. Call it right before rendering a
/// scrape; the `zfabric` commands do on every `GET /metrics`.
pub fn collect() {
    for owner in live() {
        owner.collect();
    }
}

/// The live owners, taken out of the lock (an owner may be registering
/// meanwhile); dead ones are pruned.
pub(super) fn live() -> Vec<Arc<dyn Collector>> {
    match OWNERS.lock() {
        Ok(mut owners) => {
            owners.retain(|o| o.strong_count() > 0);
            owners.iter().filter_map(Weak::upgrade).collect()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl Collector for Counting {
        fn collect(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn live_owners_are_collected_and_dropped_ones_forgotten() {
        let a = Arc::new(Counting(AtomicUsize::new(0)));
        let b = Arc::new(Counting(AtomicUsize::new(0)));
        register(Arc::downgrade(&a) as Weak<dyn Collector>);
        register(Arc::downgrade(&b) as Weak<dyn Collector>);
        collect();
        let weak_b = Arc::downgrade(&b);
        drop(b);
        collect();
        assert_eq!(a.0.load(Ordering::Relaxed), 2);
        assert!(
            weak_b.upgrade().is_none(),
            "nothing here keeps an owner alive"
        );
    }
}
