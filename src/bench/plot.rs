//! `--plot FILE.svg`: latency percentiles of the request patterns and
//! stream throughput per message size, zfabric beside its baselines.

use std::path::Path;

use plotters::prelude::*;

use super::Cell;
use crate::app::BoxError;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line of a chart.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// Draws two charts in one SVG: round-trip latency by percentile (log
/// scale) for request/reply on each transport at the smallest size, and
/// throughput by message size for each stream pattern × transport.
pub(super) fn draw(path: &Path, cells: &[Cell]) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (1100, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(500);

    // Latency: x = percentile index (50, 90, 99, 99.9, max), y = µs.
    let smallest = cells.iter().map(|c| c.size).min().unwrap_or(64);
    // Request/reply if it was measured (one line per transport and
    // implementation stays readable), else every request pattern.
    let has_reqrep = cells.iter().any(|c| c.pattern == "reqrep");
    let mut lat: Vec<Series> = Vec::new();
    for c in cells
        .iter()
        .filter(|c| c.size == smallest && (!has_reqrep || c.pattern == "reqrep"))
    {
        let mut add = |name: &str, l: &Option<super::measure::Latency>| {
            if let Some(l) = l {
                lat.push(Series {
                    label: format!("{} {} {name}", c.pattern, c.transport),
                    points: vec![
                        (0.0, l.p50_us),
                        (1.0, l.p90_us),
                        (2.0, l.p99_us),
                        (3.0, l.p999_us),
                        (4.0, l.max_us),
                    ],
                });
            }
        };
        add("zfabric", &c.zfabric.latency);
        for b in &c.baselines {
            add(&b.name, &b.latency);
        }
    }
    let ymax = lat
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("round-trip latency, {smallest} B (µs, log scale)"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4f64, (0.1f64..ymax).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| {
            ["p50", "p90", "p99", "p99.9", "max"]
                .get(x.round() as usize)
                .unwrap_or(&"")
                .to_string()
        })
        .y_desc("µs")
        .draw()?;
    for (i, s) in lat.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let style = if s.label.ends_with("zfabric") {
            colour.stroke_width(2)
        } else {
            colour.stroke_width(1)
        };
        chart
            .draw_series(LineSeries::new(s.points.clone(), style))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Throughput by size for the streams.
    let mut thr: Vec<Series> = Vec::new();
    for c in cells
        .iter()
        .filter(|c| c.pattern == "pushpull" || c.pattern == "pubsub")
    {
        let mut add = |name: &str, v: Option<f64>| {
            let label = format!("{} {} {name}", c.pattern, c.transport);
            if let Some(v) = v {
                match thr.iter_mut().find(|s| s.label == label) {
                    Some(s) => s.points.push((c.size as f64, v / 1e6)),
                    None => thr.push(Series {
                        label,
                        points: vec![(c.size as f64, v / 1e6)],
                    }),
                }
            }
        };
        add("zfabric", c.zfabric.msgs_per_s);
        for b in &c.baselines {
            add(&b.name, b.msgs_per_s);
        }
    }
    let xmax = cells.iter().map(|c| c.size).max().unwrap_or(64) as f64 * 2.0;
    let ymax = thr
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.1f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "stream throughput by message size (M msg/s)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((16f64..xmax).log_scale(), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("bytes")
        .y_desc("M msg/s")
        .draw()?;
    for (i, s) in thr.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
