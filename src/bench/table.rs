//! The human-readable table of `zfabric bench`: one row per cell and
//! baseline, median figures, each ratio with its spread over the rounds,
//! delivered and lost counts for streams, and `unstable` marks.
//!
//! Guarantees: prints only what the [`Report`] holds (the JSON carries the
//! same and more). Does not: compute anything beyond formatting.

use super::measure::{Latency, Stats};
use super::rounds::Spread;
use super::Report;

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1e6 => format!("{:.2}M/s", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k/s", v / 1e3),
        Some(v) => format!("{v:.0}/s"),
        None => "—".into(),
    }
}

fn fmt_us(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1000.0 => format!("{:.2}ms", v / 1000.0),
        Some(v) => format!("{v:.1}µs"),
        None => "—".into(),
    }
}

/// `1.13x 1.05-1.20`, with a `!` when the spread is unstable.
fn fmt_ratio(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!(
            "{:.2}x {:.2}-{:.2}{}",
            s.median,
            s.min,
            s.max,
            if s.unstable { "!" } else { "" }
        ),
        None => "—".into(),
    }
}

/// `0`, or `186001 93.0%` of the messages sent.
fn fmt_lost(s: &Stats) -> String {
    match (s.lost, s.sent) {
        (Some(0), _) => "0".into(),
        (Some(l), Some(n)) if n > 0 => format!("{l} {:.1}%", l as f64 * 100.0 / n as f64),
        (Some(l), _) => l.to_string(),
        (None, _) => "—".into(),
    }
}

/// Prints `r` as a table on stdout.
pub(super) fn print(r: &Report) {
    println!(
        "zfabric bench: {} cpus, {} {}; {} rounds per cell in rotated order; {} s per run, {} messages per stream{}{}",
        r.machine.cpus,
        r.machine.os,
        r.machine.arch,
        r.rounds,
        r.seconds_per_run,
        r.messages_per_stream,
        if r.quick { ", quick" } else { "" },
        if r.remote {
            ", serving side in a second process where marked R"
        } else {
            ""
        }
    );
    if r.curve {
        println!("--curve: \"zf\" is zfabric with CURVE, the baseline the same zfabric with NULL, in the same rounds; the ratios are CURVE / NULL");
    }
    println!(
        "{:<11} {:<7} {:>6}  {:<10} {:>9} {:>9} {:>21}  {:>8} {:>8} {:>21}  {:>8} {:>8} {:>21}  {:>13} {:>13}  stable",
        "pattern", "tp", "size", "baseline", "zf thr", "base thr", "thr× (min-max)", "zf p50", "base p50", "p50× (min-max)", "zf p99", "base p99", "p99× (min-max)", "zf lost", "base lost"
    );
    for c in &r.cells {
        for (b, ratio) in c.baselines.iter().zip(&c.ratios) {
            let lat = |s: &Stats, f: fn(&Latency) -> f64| s.latency.as_ref().map(f);
            println!(
                "{:<11} {:<7} {:>6}  {:<10} {:>9} {:>9} {:>21}  {:>8} {:>8} {:>21}  {:>8} {:>8} {:>21}  {:>13} {:>13}  {}",
                format!("{}{}", c.pattern, if c.remote { " R" } else { "" }),
                c.transport,
                c.size,
                b.name,
                fmt_rate(c.zfabric.msgs_per_s),
                fmt_rate(b.msgs_per_s),
                fmt_ratio(ratio.spread.throughput),
                fmt_us(lat(&c.zfabric, |l| l.p50_us)),
                fmt_us(lat(b, |l| l.p50_us)),
                fmt_ratio(ratio.spread.p50_latency),
                fmt_us(lat(&c.zfabric, |l| l.p99_us)),
                fmt_us(lat(b, |l| l.p99_us)),
                fmt_ratio(ratio.spread.p99_latency),
                fmt_lost(&c.zfabric),
                fmt_lost(b),
                if ratio.unstable { "unstable" } else { "yes" },
            );
        }
    }
    println!(
        "Figures are medians over the rounds. thr = delivered messages per second (streams: received, first send to last receipt). \
         thr× = zfabric / baseline throughput (higher is better); p50×, p99× = zfabric / baseline latency (lower is better); \
         each ratio is the median of per-round ratios (both sides measured in the same round), then its min-max. \
         `!`: that ratio's (max - min) / median is above {:.2}; `unstable`: the thr× or p50× of the row is. lost = median of sent and never received, with its share of those sent.",
        r.unstable_spread
    );
    for why in &r.skipped {
        println!("{why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_shows_its_median_its_range_and_whether_it_is_unstable() {
        let s = Spread::of(&[1.0, 0.8, 1.25]).unwrap();
        assert_eq!(fmt_ratio(Some(s)), "1.00x 0.80-1.25!");
        let s = Spread::of(&[1.1, 1.0, 1.05]).unwrap();
        assert_eq!(fmt_ratio(Some(s)), "1.05x 1.00-1.10");
        assert_eq!(fmt_ratio(None), "—");
    }

    #[test]
    fn loss_shows_the_share_of_what_was_sent() {
        let mut s = Stats::stream("libzmq", 64, 1.0, 200, 50);
        assert_eq!(fmt_lost(&s), "50 25.0%");
        s.lost = Some(0);
        assert_eq!(fmt_lost(&s), "0");
        assert_eq!(fmt_lost(&Stats::new("zeromq", 64, None, None)), "—");
    }
}
