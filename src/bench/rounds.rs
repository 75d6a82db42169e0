//! Rounds: in which order the sides of a cell run in each round, and how
//! the per-round figures fold into one summary per cell.
//!
//! A cell runs zfabric and each of its baselines once per round; the
//! order rotates from round to round, so no side always runs first (cold)
//! or last (after the others warmed the machine). Each ratio is taken
//! between zfabric and a baseline measured in the same round; the summary
//! is the median of those per-round ratios with their spread (min–max),
//! and the median of each side's absolute figures.
//!
//! Guarantees: pure arithmetic over [`Stats`], no I/O and no clock; a
//! ratio is only formed from figures of the same round. Does not: measure
//! anything or decide what a baseline is (see [`super::measure`],
//! [`super::baseline`]).

use serde::Serialize;

use super::measure::{Latency, Stats};

/// A ratio whose spread over the rounds, `(max - min) / median`, exceeds
/// this is marked `unstable`: the machine moved the figure by more than a
/// quarter between rounds, so the median alone should not be read as the
/// cost of zfabric. A cell is unstable when its throughput or p50 ratio
/// to any baseline is (see [`Ratio::unstable`]).
pub(crate) const UNSTABLE_SPREAD: f64 = 0.25;

/// The order (indices into the cell's sides) of round `round` (from 0):
/// the sides rotated left by `round`.
pub(crate) fn order(sides: usize, round: usize) -> Vec<usize> {
    (0..sides).map(|i| (i + round) % sides.max(1)).collect()
}

/// The median of `v` (the mean of the two middle values for an even
/// count); `None` for an empty slice.
pub(crate) fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// One ratio over the rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Spread {
    /// Median of the per-round ratios.
    pub(crate) median: f64,
    /// Smallest per-round ratio.
    pub(crate) min: f64,
    /// Largest per-round ratio.
    pub(crate) max: f64,
    /// `(max - min) / median`.
    pub(crate) relative: f64,
    /// `relative` is above [`UNSTABLE_SPREAD`].
    pub(crate) unstable: bool,
}

impl Spread {
    /// The spread of per-round ratios `v`; `None` when there are none.
    pub(crate) fn of(v: &[f64]) -> Option<Self> {
        let median = median(v)?;
        let finite = v.iter().copied().filter(|x| x.is_finite());
        let min = finite.clone().fold(f64::INFINITY, f64::min);
        let max = finite.fold(f64::NEG_INFINITY, f64::max);
        let relative = (max - min) / median.max(1e-12);
        Some(Spread {
            median,
            min,
            max,
            relative,
            unstable: relative > UNSTABLE_SPREAD,
        })
    }
}

/// zfabric divided by one baseline, over the rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ratio {
    /// The baseline's name.
    pub(crate) baseline: String,
    /// Median throughput ratio (higher is better for zfabric).
    pub(crate) throughput: Option<f64>,
    /// Median p50 latency ratio (lower is better for zfabric).
    pub(crate) p50_latency: Option<f64>,
    /// Median p99 latency ratio.
    pub(crate) p99_latency: Option<f64>,
    /// The spread of each ratio over the rounds.
    pub(crate) spread: RatioSpread,
    /// The throughput or the p50 ratio is unstable. The p99 ratio has its
    /// own flag in [`RatioSpread`] but does not mark the row: one slow
    /// wake-up in a round moves a p99 by several times on a shared
    /// machine, and the headline figures are throughput and p50.
    pub(crate) unstable: bool,
}

/// The spreads behind a [`Ratio`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RatioSpread {
    pub(crate) throughput: Option<Spread>,
    pub(crate) p50_latency: Option<Spread>,
    pub(crate) p99_latency: Option<Spread>,
}

/// The ratios of zfabric (`z`, one entry per round) to a baseline (`b`,
/// the same rounds), each taken within its round.
pub(crate) fn ratio(z: &[Stats], b: &[Stats]) -> Ratio {
    let per_round = |f: &dyn Fn(&Stats, &Stats) -> Option<f64>| -> Option<Spread> {
        let v: Vec<f64> = z.iter().zip(b).filter_map(|(z, b)| f(z, b)).collect();
        Spread::of(&v)
    };
    let lat = |z: &Stats, b: &Stats, p: fn(&Latency) -> f64| {
        z.latency
            .as_ref()
            .zip(b.latency.as_ref())
            .map(|(z, b)| p(z) / p(b).max(1e-9))
    };
    let spread = RatioSpread {
        throughput: per_round(&|z, b| z.msgs_per_s.zip(b.msgs_per_s).map(|(z, b)| z / b.max(1e-9))),
        p50_latency: per_round(&|z, b| lat(z, b, |l| l.p50_us)),
        p99_latency: per_round(&|z, b| lat(z, b, |l| l.p99_us)),
    };
    let unstable = [spread.throughput, spread.p50_latency]
        .iter()
        .flatten()
        .any(|s| s.unstable);
    Ratio {
        baseline: b.first().map(|s| s.name.clone()).unwrap_or_default(),
        throughput: spread.throughput.map(|s| s.median),
        p50_latency: spread.p50_latency.map(|s| s.median),
        p99_latency: spread.p99_latency.map(|s| s.median),
        spread,
        unstable,
    }
}

fn median_of<T>(v: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    let xs: Vec<f64> = v.iter().filter_map(f).collect();
    median(&xs)
}

/// One side's figures over the rounds: the median of each (throughput,
/// each latency percentile, sample count, sent and lost counts), each
/// taken on its own; delivered is sent minus that lost, so the three
/// always add up.
pub(crate) fn summary(rounds: &[Stats]) -> Stats {
    let first = &rounds[0];
    let count = |f: fn(&Stats) -> Option<u64>| {
        median_of(rounds, |s| f(s).map(|x| x as f64)).map(|m| m.round() as u64)
    };
    let (sent, lost) = (count(|s| s.sent), count(|s| s.lost));
    let lats: Vec<&Latency> = rounds.iter().filter_map(|s| s.latency.as_ref()).collect();
    let latency = (!lats.is_empty()).then(|| {
        let m = |f: fn(&Latency) -> f64| median_of(&lats, |l| Some(f(l))).unwrap_or(0.0);
        Latency {
            samples: m(|l| l.samples as f64).round() as u64,
            p50_us: m(|l| l.p50_us),
            p90_us: m(|l| l.p90_us),
            p99_us: m(|l| l.p99_us),
            p999_us: m(|l| l.p999_us),
            max_us: m(|l| l.max_us),
        }
    });
    Stats {
        name: first.name.clone(),
        msgs_per_s: median_of(rounds, |s| s.msgs_per_s),
        mb_per_s: median_of(rounds, |s| s.mb_per_s),
        latency,
        sent,
        // Sent is the same in every round, so the round with the median
        // loss is the round with the median delivery.
        delivered: sent.zip(lost).map(|(s, l)| s.saturating_sub(l)),
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thr(name: &str, v: f64) -> Stats {
        Stats {
            name: name.into(),
            msgs_per_s: Some(v),
            mb_per_s: Some(v / 1e6),
            latency: None,
            sent: Some(100),
            delivered: Some(100),
            lost: Some(0),
        }
    }

    #[test]
    fn each_round_rotates_the_order_so_every_side_runs_first_once() {
        assert_eq!(order(3, 0), vec![0, 1, 2]);
        assert_eq!(order(3, 1), vec![1, 2, 0]);
        assert_eq!(order(3, 2), vec![2, 0, 1]);
        assert_eq!(order(3, 3), vec![0, 1, 2]);
        let firsts: Vec<usize> = (0..3).map(|r| order(3, r)[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2]);
        assert_eq!(order(2, 1), vec![1, 0]);
    }

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn a_ratio_is_taken_within_each_round_not_between_medians() {
        // Round 1 slow for both, round 2 fast for both: the per-round
        // ratio is 0.5 in both, whatever the medians of the sides are.
        let z = [thr("zfabric", 100.0), thr("zfabric", 1000.0)];
        let b = [thr("zeromq", 200.0), thr("zeromq", 2000.0)];
        let r = ratio(&z, &b);
        assert_eq!(r.baseline, "zeromq");
        assert_eq!(r.throughput, Some(0.5));
        let s = r.spread.throughput.unwrap();
        assert_eq!((s.min, s.max, s.relative), (0.5, 0.5, 0.0));
        assert!(!r.unstable);
        assert_eq!(r.p50_latency, None);
    }

    #[test]
    fn a_wide_spread_marks_the_ratio_unstable() {
        let z = [
            thr("zfabric", 100.0),
            thr("zfabric", 100.0),
            thr("zfabric", 100.0),
        ];
        let b = [
            thr("zeromq", 100.0),
            thr("zeromq", 80.0),
            thr("zeromq", 125.0),
        ];
        let r = ratio(&z, &b);
        let s = r.spread.throughput.unwrap();
        assert_eq!(s.median, 1.0);
        assert_eq!((s.min, s.max), (0.8, 1.25));
        assert!(s.relative > UNSTABLE_SPREAD && s.unstable && r.unstable);
        // Just inside the threshold: stable.
        let b = [
            thr("zeromq", 100.0),
            thr("zeromq", 90.0),
            thr("zeromq", 110.0),
        ];
        assert!(!ratio(&z, &b).unstable);
    }

    #[test]
    fn a_summary_takes_the_median_of_each_figure_on_its_own() {
        let mut a = thr("zeromq", 10.0);
        a.lost = Some(7);
        a.delivered = Some(93);
        let b = thr("zeromq", 30.0);
        let mut c = thr("zeromq", 20.0);
        c.lost = Some(1);
        c.delivered = Some(99);
        let s = summary(&[a.clone(), b, c]);
        assert_eq!(s.name, "zeromq");
        assert_eq!(s.msgs_per_s, Some(20.0));
        assert_eq!(
            (s.sent, s.delivered, s.lost),
            (Some(100), Some(99), Some(1))
        );
        assert!(s.latency.is_none());
        // An even count: the mean of the middle two, still adding up.
        let mut d = thr("zeromq", 10.0);
        d.lost = Some(4);
        let s = summary(&[a, d]);
        assert_eq!(s.lost, Some(6));
        assert_eq!((s.sent, s.delivered), (Some(100), Some(94)));
    }
}
