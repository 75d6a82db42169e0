//! The one latency histogram helper of the commands: HDR histograms with
//! three significant digits, and their percentiles.
//!
//! Guarantees: `run` (µs), `bench` (ns) and `tour` (ns) all record into
//! [`histogram`] and read back through [`Percentiles`]; recording never
//! fails for values inside the bounds of the [`Unit`]. Does not: convert
//! between units (the caller records in the unit it chose).

use hdrhistogram::Histogram;

/// What one count in a histogram is, and so how far it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Microseconds, up to 120 s (`zfabric run`'s calls and deliveries).
    Micros,
    /// Nanoseconds, up to 60 s (`zfabric bench` and `zfabric tour` round
    /// trips).
    Nanos,
}

/// An empty histogram of values from 1 to the reach of `unit`.
pub(crate) fn histogram(unit: Unit) -> Histogram<u64> {
    let highest = match unit {
        Unit::Micros => 120_000_000,
        Unit::Nanos => 60_000_000_000,
    };
    Histogram::new_with_bounds(1, highest, 3).expect("histogram bounds")
}

/// The percentiles a report shows, in the histogram's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Percentiles {
    pub(crate) samples: u64,
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

impl Percentiles {
    /// The percentiles of `h`; `None` when nothing was recorded.
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(Percentiles {
            samples: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_histogram_has_no_percentiles() {
        assert_eq!(Percentiles::of(&histogram(Unit::Micros)), None);
    }

    #[test]
    fn percentiles_come_back_in_the_recorded_unit() {
        let mut h = histogram(Unit::Nanos);
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = Percentiles::of(&h).unwrap();
        assert_eq!(p.samples, 1000);
        assert!((499_000..=501_000).contains(&p.p50), "{p:?}");
        assert!(p.max >= 999_000, "{p:?}");
        // The reach of each unit is recordable.
        assert!(h.record(60_000_000_000).is_ok());
        assert!(histogram(Unit::Micros).record(120_000_000).is_ok());
    }
}
