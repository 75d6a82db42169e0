//! Retries for idempotent requests: jittered backoff inside the deadline,
//! capped by a retry budget.
//!
//! A [`RetryPolicy`] says how many attempts a call may make and how long to
//! wait between them (exponential backoff with full jitter, never past the
//! call's deadline). A [`RetryBudget`] caps retries as a share of first
//! attempts over a sliding window (Finagle's and Linkerd's design), so that
//! during an outage retries add at most `ratio` to the offered load instead
//! of multiplying it by the attempt count.
//!
//! Both are plain state: time is passed in, so they are tested with
//! simulated time.
//!
//! # Not guaranteed
//! Only requests the caller marks idempotent are retried, and only after a
//! failure that says the request was not handled (the member was gone,
//! unreachable, refused it as busy, or its circuit was open). A timeout is
//! not retried: the deadline is spent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Counter: retries made, by `service`.
pub const RETRIES: &str = "zfabric_retries_total";
/// Counter: retries refused because the budget was spent, by `service`.
pub const RETRY_BUDGET_EXHAUSTED: &str = "zfabric_retry_budget_exhausted_total";

/// How an idempotent call is retried.
///
/// Defaults: 3 attempts in all; backoff 5 ms doubling up to 200 ms, each
/// wait drawn uniformly from zero to that bound (full jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff bound before the first retry.
    pub base_backoff: Duration,
    /// Largest backoff bound.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), given a random
    /// `u64`: uniform in `[0, min(max, base * 2^(retry-1))]`.
    pub fn backoff(&self, retry: u32, random: u64) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let bound = self
            .base_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        let micros = bound.as_micros() as u64;
        if micros == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(random % (micros + 1))
    }
}

/// Retry budget settings.
///
/// Defaults (Finagle's): retries may add 20% to first attempts, plus 10
/// retries per second whatever the traffic (so a quiet service can still
/// retry), judged over the last 10 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed per first attempt in the window (0.0–1.0 and up).
    pub ratio: f64,
    /// Retries allowed per second regardless of traffic.
    pub min_per_second: u32,
    /// How far back the budget looks.
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

const BUCKETS: usize = 10;

/// A retry budget: counts first attempts and retries in time buckets over a
/// sliding window; a retry is allowed while
/// `retries < ratio × first attempts + min_per_second × window`.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    config: BudgetConfig,
    /// `(bucket start, first attempts, retries)`, oldest first.
    buckets: VecDeque<(Instant, u64, u64)>,
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(config: BudgetConfig) -> Self {
        RetryBudget {
            config,
            buckets: VecDeque::with_capacity(BUCKETS + 1),
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut (Instant, u64, u64) {
        let width = (self.config.window / BUCKETS as u32).max(Duration::from_millis(1));
        while let Some(&(start, _, _)) = self.buckets.front() {
            if now.saturating_duration_since(start) >= self.config.window {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
        let fresh = match self.buckets.back() {
            Some(&(start, _, _)) => now.saturating_duration_since(start) >= width,
            None => true,
        };
        if fresh {
            self.buckets.push_back((now, 0, 0));
        }
        self.buckets.back_mut().expect("a bucket was just ensured")
    }

    /// Records a first attempt.
    pub fn deposit(&mut self, now: Instant) {
        self.bucket(now).1 += 1;
    }

    /// Asks for one retry; records it and returns true if the budget
    /// allows it.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.bucket(now);
        let (firsts, retries) = self
            .buckets
            .iter()
            .fold((0u64, 0u64), |(f, r), b| (f + b.1, r + b.2));
        let floor = self.config.min_per_second as f64 * self.config.window.as_secs_f64();
        let allowed = self.config.ratio * firsts as f64 + floor;
        if (retries as f64) + 1.0 > allowed {
            return false;
        }
        self.bucket(now).2 += 1;
        true
    }

    /// `(first attempts, retries)` in the current window.
    pub fn counts(&self) -> (u64, u64) {
        self.buckets
            .iter()
            .fold((0, 0), |(f, r), b| (f + b.1, r + b.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0), Duration::ZERO);
        assert_eq!(
            p.backoff(1, u64::MAX),
            Duration::from_micros(u64::MAX % 5_001)
        );
        for r in 1..30 {
            for seed in [1u64, 7, 1 << 40, u64::MAX] {
                assert!(p.backoff(r, seed) <= p.max_backoff);
            }
        }
        assert!(p.backoff(3, 19_999) <= Duration::from_millis(20));
    }

    #[test]
    fn retries_never_exceed_the_budget_during_an_outage() {
        let cfg = BudgetConfig {
            ratio: 0.2,
            min_per_second: 0,
            window: Duration::from_secs(10),
        };
        let mut b = RetryBudget::new(cfg);
        let t0 = Instant::now();
        let mut retries = 0u64;
        // 1,000 calls in 1 s, each failing and asking for 3 retries.
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            b.deposit(now);
            for _ in 0..3 {
                if b.try_withdraw(now) {
                    retries += 1;
                }
            }
        }
        assert!(retries <= 200, "{retries} retries for 1000 first attempts");
        assert!(retries >= 190, "the budget should be usable: {retries}");
    }

    #[test]
    fn the_floor_lets_a_quiet_service_retry_and_the_window_forgets() {
        let cfg = BudgetConfig {
            ratio: 0.0,
            min_per_second: 1,
            window: Duration::from_secs(2),
        };
        let mut b = RetryBudget::new(cfg);
        let t0 = Instant::now();
        assert!(b.try_withdraw(t0));
        assert!(b.try_withdraw(t0));
        assert!(!b.try_withdraw(t0));
        // Two seconds later the old retries have left the window.
        assert!(b.try_withdraw(t0 + Duration::from_millis(2100)));
        assert_eq!(b.counts(), (0, 1));
    }
}
