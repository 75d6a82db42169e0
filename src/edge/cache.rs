//! The response cache: answers kept for a route's TTL, in a bounded table.
//! No I/O, no clock of its own: the caller passes `now`.
//!
//! Guarantees: an entry is served only before its expiry; the table holds
//! at most `max_entries` answers and `max_bytes` of bodies; to make room
//! the expired entries go first, then the oldest. Does not: revalidate,
//! honour `Cache-Control` from callers, or share entries between gateway
//! processes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Bytes,
}

#[derive(Debug)]
struct Entry {
    value: Cached,
    expires: Instant,
    seq: u64,
}

/// The cache's table.
#[derive(Debug)]
pub struct ResponseCache {
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    seq: u64,
    entries: HashMap<String, Entry>,
    /// Insertion order: (seq, key); stale pairs are skipped.
    order: VecDeque<(u64, String)>,
}

impl ResponseCache {
    /// An empty cache of at most `max_entries` answers and `max_bytes` of
    /// bodies.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        ResponseCache {
            max_entries,
            max_bytes,
            bytes: 0,
            seq: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The answer kept for `key`, if it has not expired at `now`.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Cached> {
        let e = self.entries.get(key)?;
        if e.expires > now {
            return Some(e.value.clone());
        }
        self.remove(key);
        None
    }

    /// Keeps `value` for `key` until `now + ttl`. An answer larger than
    /// the whole cache is not kept.
    pub fn put(&mut self, key: String, value: Cached, ttl: Duration, now: Instant) {
        if self.max_entries == 0 || value.body.len() > self.max_bytes {
            return;
        }
        self.remove(&key);
        // Expired entries first, then the oldest, until it fits.
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if self.entries.len() >= self.max_entries || self.bytes + value.body.len() > self.max_bytes
        {
            for k in expired {
                self.remove(&k);
            }
        }
        while self.entries.len() >= self.max_entries
            || self.bytes + value.body.len() > self.max_bytes
        {
            let Some((seq, k)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&k).is_some_and(|e| e.seq == seq) {
                self.remove(&k);
            }
        }
        self.seq += 1;
        self.bytes += value.body.len();
        self.order.push_back((self.seq, key.clone()));
        self.entries.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
                seq: self.seq,
            },
        );
        // Keep the order queue from growing with stale pairs.
        if self.order.len() > 2 * self.max_entries + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(s, k)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.value.body.len();
        }
    }

    /// Answers held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &'static str) -> Cached {
        Cached {
            status: 200,
            body: Bytes::from_static(s.as_bytes()),
        }
    }

    #[test]
    fn an_answer_is_served_until_its_ttl_and_not_after() {
        let mut c = ResponseCache::new(4, 1024);
        let t0 = Instant::now();
        c.put("a".into(), v("1"), Duration::from_secs(2), t0);
        assert_eq!(c.get("a", t0 + Duration::from_secs(1)), Some(v("1")));
        assert_eq!(c.get("a", t0 + Duration::from_secs(2)), None);
        assert!(c.is_empty());
    }

    #[test]
    fn the_cache_is_bounded_by_entries_and_bytes_oldest_out_first() {
        let mut c = ResponseCache::new(2, 6);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        c.put("a".into(), v("aa"), ttl, t0);
        c.put("b".into(), v("bb"), ttl, t0);
        c.put("c".into(), v("cc"), ttl, t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a", t0), None, "the oldest went");
        c.put("d".into(), v("dddddd"), ttl, t0);
        assert_eq!(c.len(), 1, "six bytes: only d fits");
        c.put("e".into(), v("eeeeeee"), ttl, t0);
        assert_eq!(c.get("e", t0), None, "larger than the cache: not kept");
        for i in 0..100 {
            c.put(format!("k{}", i % 3), v("x"), ttl, t0);
        }
        assert!(c.len() <= 2 && c.order.len() <= 2 * 2 + 16);
    }
}
