//! Charts of a run, as SVG next to `benchmarks.md` (the `plotters` crate): the suspect decision latency
//! distribution, the cloud's throughput against batch size, and the drain curve. Each is drawn only from
//! results that hold its data; [`written`] names those the report shows.

use crate::Results;
use anyhow::anyhow;
use plotters::prelude::*;
use std::path::Path;

/// File name of the latency chart.
pub const LATENCY: &str = "latency.svg";
/// File name of the batch-size chart.
pub const BATCH: &str = "batch.svg";
/// File name of the drain chart.
pub const DRAIN: &str = "drain.svg";

const SIZE: (u32, u32) = (720, 400);
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// The charts `r` has data for, as (file name, caption).
pub fn written(r: &Results) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if r.latency
        .as_ref()
        .is_some_and(|l| l.rows.iter().any(|row| !row.cdf_ms.is_empty()))
    {
        out.push((
            LATENCY,
            "Suspect decision latency, capture to line decision (section 2)",
        ));
    }
    if r.cloud.as_ref().is_some_and(|c| !c.rows.is_empty()) {
        out.push((
            BATCH,
            "Full model: raw ONNX Runtime and the cloud runner against batch size (section 5)",
        ));
    }
    if r.recovery
        .as_ref()
        .is_some_and(|rec| rec.drain_curve.len() > 1)
    {
        out.push((
            DRAIN,
            "Backlog left while draining with live traffic (section 4)",
        ));
    }
    out
}

/// Draws every chart `r` has data for into `dir`.
pub fn draw(r: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, _) in written(r) {
        let path = dir.join(file);
        match file {
            LATENCY => latency(r, &path),
            BATCH => batch(r, &path),
            _ => drain(r, &path),
        }
        .map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    }
    Ok(())
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// One figure of a row of section 5.
type RowValue = fn(&crate::cloud::CloudRow) -> f64;

fn latency(r: &Results, path: &Path) -> Drawn {
    let Some(l) = &r.latency else { return Ok(()) };
    let max_ms = l
        .rows
        .iter()
        .flat_map(|row| row.cdf_ms.iter().map(|p| p[1]))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Suspect decision latency (capture to line decision)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max_ms * 1.05, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .y_desc("% of suspects decided within")
        .draw()?;
    for (i, row) in l.rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                row.cdf_ms.iter().map(|p| (p[1], p[0] * 100.0)),
                color.stroke_width(2),
            ))?
            .label(format!(
                "{} ({:.0} frames/s offered)",
                row.load, row.offered_fps
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

fn batch(r: &Results, path: &Path) -> Drawn {
    let Some(c) = &r.cloud else { return Ok(()) };
    let max_batch = c.rows.iter().map(|row| row.batch).max().unwrap_or(1) as f64;
    let max_ips = c
        .rows
        .iter()
        .map(|row| row.raw_ort_ips.max(row.runner_ips))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Full model throughput against batch size (one thread)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..max_batch * 1.2).log_scale(), 0f64..max_ips * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("batch size")
        .y_desc("images/s")
        .draw()?;
    let series: [(&str, RowValue); 2] = [
        ("raw ONNX Runtime", |row| row.raw_ort_ips),
        ("cloud runner (decode, resize, normalize, run)", |row| {
            row.runner_ips
        }),
    ];
    for (i, (name, value)) in series.into_iter().enumerate() {
        let color = COLORS[i];
        let points: Vec<(f64, f64)> = c
            .rows
            .iter()
            .map(|row| (row.batch as f64, value(row)))
            .collect();
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

fn drain(r: &Results, path: &Path) -> Drawn {
    let Some(rec) = &r.recovery else {
        return Ok(());
    };
    let end = rec.drain_curve.last().map_or(1.0, |p| p[0]).max(0.1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Drain of {} queued frames with live traffic: {:.0} frames/s",
                rec.drain_queued, rec.drain_fps
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end * 1.05, 0f64..rec.drain_queued as f64 * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first publish")
        .y_desc("backlog frames left")
        .draw()?;
    chart.draw_series(LineSeries::new(
        rec.drain_curve.iter().map(|p| (p[0], p[1])),
        COLORS[0].stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}
