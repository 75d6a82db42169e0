//! A circuit breaker per destination.
//!
//! Plain state, no clock of its own: every call takes the current time, so
//! it is tested with simulated time and driven with the real clock.
//!
//! # States
//! - **Closed**: calls go through; outcomes are recorded in a sliding
//!   window of the last `window` calls. Once at least `minimum_calls` are
//!   in the window and the failure rate or the slow-call rate reaches its
//!   threshold, the breaker **opens**.
//! - **Open**: calls are refused at once (`CircuitOpen`) for `open_for`.
//! - **Half-open**: after the cool-down, up to `half_open_calls` trial calls
//!   go through (others are refused). If all of them succeed fast, the
//!   breaker closes with a fresh window; the first failure or slow call
//!   opens it again for another `open_for`.
//!
//! # Not guaranteed
//! The breaker judges calls it is told about; a caller that skips
//! [`CircuitBreaker::record`] after [`CircuitBreaker::try_acquire`] leaves a
//! half-open trial slot taken until the next transition.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Breaker settings.
///
/// Defaults: judge the last 20 calls once at least 10 are known; open at
/// 50% failures or 80% calls slower than 1 s; stay open 5 s; then allow 3
/// trial calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Calls in the sliding window.
    pub window: usize,
    /// Calls needed in the window before the breaker judges.
    pub minimum_calls: usize,
    /// Failure rate (0.0–1.0) at which it opens.
    pub failure_rate: f64,
    /// Slow-call rate (0.0–1.0) at which it opens.
    pub slow_rate: f64,
    /// A call taking at least this long is slow.
    pub slow_call: Duration,
    /// How long it stays open before trying again.
    pub open_for: Duration,
    /// Trial calls allowed while half-open.
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            minimum_calls: 10,
            failure_rate: 0.5,
            slow_rate: 0.8,
            slow_call: Duration::from_secs(1),
            open_for: Duration::from_secs(5),
            half_open_calls: 3,
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// A few trial calls go through.
    HalfOpen,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed (error, timeout, rejection).
    Failure,
}

/// A state change, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// From this state...
    pub from: BreakerState,
    /// ...to this one.
    pub to: BreakerState,
}

/// The call was refused because the circuit is open (or half-open with all
/// trial slots taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open for another {retry_in:?} (BreakerConfig::open_for)")]
pub struct CircuitOpen {
    /// When a call may be tried again (zero while half-open).
    pub retry_in: Duration,
}

/// One breaker (keep one per peer and one per service).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Closed: the last calls, `(failed, slow)`.
    window: VecDeque<(bool, bool)>,
    opened_at: Option<Instant>,
    trials_started: usize,
    trials_succeeded: usize,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            window: VecDeque::with_capacity(config.window),
            opened_at: None,
            trials_started: 0,
            trials_succeeded: 0,
        }
    }

    /// The current state (an open breaker whose cool-down ended reports
    /// half-open only once a call asks).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Asks to make a call now. `Ok` carries a transition if asking moved
    /// the breaker (open → half-open).
    pub fn try_acquire(&mut self, now: Instant) -> Result<Option<Transition>, CircuitOpen> {
        match self.state {
            BreakerState::Closed => Ok(None),
            BreakerState::Open => {
                let since = self.opened_at.map(|t| now.saturating_duration_since(t));
                let waited = since.unwrap_or(self.config.open_for);
                if waited < self.config.open_for {
                    return Err(CircuitOpen {
                        retry_in: self.config.open_for - waited,
                    });
                }
                self.trials_started = 1;
                self.trials_succeeded = 0;
                Ok(Some(self.move_to(BreakerState::HalfOpen)))
            }
            BreakerState::HalfOpen => {
                if self.trials_started >= self.config.half_open_calls {
                    return Err(CircuitOpen {
                        retry_in: Duration::ZERO,
                    });
                }
                self.trials_started += 1;
                Ok(None)
            }
        }
    }

    /// Records how a call that was let through ended and how long it took.
    pub fn record(&mut self, outcome: Outcome, took: Duration, now: Instant) -> Option<Transition> {
        let failed = outcome == Outcome::Failure;
        let slow = took >= self.config.slow_call;
        match self.state {
            BreakerState::Closed => {
                if self.window.len() == self.config.window {
                    self.window.pop_front();
                }
                self.window.push_back((failed, slow));
                let n = self.window.len();
                if n < self.config.minimum_calls.max(1) {
                    return None;
                }
                let failures = self.window.iter().filter(|(f, _)| *f).count() as f64;
                let slows = self.window.iter().filter(|(_, s)| *s).count() as f64;
                let n = n as f64;
                if failures / n >= self.config.failure_rate || slows / n >= self.config.slow_rate {
                    return Some(self.open(now));
                }
                None
            }
            BreakerState::HalfOpen => {
                if failed || slow {
                    return Some(self.open(now));
                }
                self.trials_succeeded += 1;
                if self.trials_succeeded >= self.config.half_open_calls {
                    self.window.clear();
                    return Some(self.move_to(BreakerState::Closed));
                }
                None
            }
            // A call let through before the breaker opened: already judged.
            BreakerState::Open => None,
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        self.opened_at = Some(now);
        self.window.clear();
        self.move_to(BreakerState::Open)
    }

    fn move_to(&mut self, to: BreakerState) -> Transition {
        let t = Transition {
            from: self.state,
            to,
        };
        self.state = to;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(5);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig::default())
    }

    fn call(
        b: &mut CircuitBreaker,
        outcome: Outcome,
        took: Duration,
        now: Instant,
    ) -> Option<Transition> {
        b.try_acquire(now).expect("let through");
        b.record(outcome, took, now)
    }

    #[test]
    fn it_judges_only_after_the_minimum_number_of_calls() {
        let t = Instant::now();
        let mut b = breaker();
        for _ in 0..9 {
            assert_eq!(call(&mut b, Outcome::Failure, FAST, t), None);
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "9 calls are too few to judge"
        );
        let tr = call(&mut b, Outcome::Failure, FAST, t);
        assert_eq!(
            tr,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
    }

    #[test]
    fn a_steady_minority_of_failures_keeps_it_closed() {
        let t = Instant::now();
        let mut b = breaker();
        // One failure in five, evenly spread: 20% in every window.
        for i in 0..100 {
            let o = if i % 5 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            call(&mut b, o, FAST, t);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_fails_fast_then_half_opens_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = breaker();
        let c = BreakerConfig::default();
        for _ in 0..10 {
            call(&mut b, Outcome::Failure, FAST, t0);
        }
        let e = b.try_acquire(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.retry_in, Duration::from_secs(4));
        let t1 = t0 + c.open_for;
        assert_eq!(
            b.try_acquire(t1).unwrap(),
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        // Two more trial slots, then refusals.
        b.try_acquire(t1).unwrap();
        b.try_acquire(t1).unwrap();
        assert!(b.try_acquire(t1).is_err(), "only 3 trial calls");
        assert_eq!(b.record(Outcome::Success, FAST, t1), None);
        assert_eq!(b.record(Outcome::Success, FAST, t1), None);
        assert_eq!(
            b.record(Outcome::Success, FAST, t1),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert!(b.try_acquire(t1).is_ok());
    }

    #[test]
    fn a_failed_trial_reopens_for_a_full_cool_down() {
        let t0 = Instant::now();
        let mut b = breaker();
        let c = BreakerConfig::default();
        for _ in 0..10 {
            call(&mut b, Outcome::Failure, FAST, t0);
        }
        let t1 = t0 + c.open_for;
        b.try_acquire(t1).unwrap();
        assert_eq!(
            b.record(Outcome::Failure, FAST, t1),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        assert_eq!(
            b.try_acquire(t1 + Duration::from_secs(1))
                .unwrap_err()
                .retry_in,
            Duration::from_secs(4)
        );
    }

    #[test]
    fn slow_calls_open_it_too() {
        let t = Instant::now();
        let mut b = breaker();
        let slow = BreakerConfig::default().slow_call;
        for i in 0..10 {
            // 80% slow successes.
            let took = if i < 8 { slow } else { FAST };
            call(&mut b, Outcome::Success, took, t);
        }
        assert_eq!(b.state(), BreakerState::Open);
        // And a slow trial reopens it.
        let t1 = t + BreakerConfig::default().open_for;
        b.try_acquire(t1).unwrap();
        b.record(Outcome::Success, slow, t1);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
