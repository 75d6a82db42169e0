//! Per-client rate limits: one token bucket per client key (its address,
//! or its token's subject), in a bounded table. No I/O, no clock of its
//! own: the caller passes `now`.
//!
//! Guarantees: a client with a full bucket may send `burst` requests at
//! once, then `per_second` on average; a refusal says how long until the
//! next token. The table holds at most `max_clients` keys: when a new one
//! comes and it is full, the key seen least recently goes (its client
//! starts again with a full bucket). Does not: share buckets between
//! gateway processes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The limit's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// The bucket's size (requests that may come at once).
    pub burst: f64,
    /// Keys kept at most (memory: about 100 bytes each).
    pub max_clients: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every client seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// An empty table for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `key` at `now`: `Ok` if there was one, else how
    /// long until there is.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let RateLimit {
            per_second, burst, ..
        } = self.limit;
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.limit.max_clients.max(1) {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
        let b = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        if per_second <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_the_rate_and_others_are_not_affected() {
        let mut l = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
            max_clients: 10,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
        }
        let wait = l.check("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(
            l.check("b", t0).is_ok(),
            "another client has its own bucket"
        );
        assert!(l.check("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.check("a", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recent_client() {
        let mut l = RateLimiter::new(RateLimit {
            per_second: 0.0,
            burst: 1.0,
            max_clients: 2,
        });
        let t0 = Instant::now();
        assert!(l.check("a", t0).is_ok());
        assert!(l.check("b", t0 + Duration::from_secs(1)).is_ok());
        assert!(l.check("a", t0 + Duration::from_secs(2)).is_err());
        assert!(l.check("c", t0 + Duration::from_secs(3)).is_ok());
        assert_eq!(l.len(), 2);
        // b was least recent: forgotten, so it starts full again.
        assert!(l.check("b", t0 + Duration::from_secs(4)).is_ok());
    }
}
