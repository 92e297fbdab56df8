//! The chart: end-to-end throughput per backend, framework beside raw client, on a log
//! scale (the in-memory backend runs three orders of magnitude faster than SQS on moto or
//! Kafka on tansu; on a linear axis those were invisible bars), each pair labelled with its
//! ratio. Drawn with plotters' SVG backend: text stays SVG text, rendered by the viewer,
//! so no font is read at build or run time.

use plotters::prelude::*;

use crate::Row;

const FRAMEWORK: RGBColor = RGBColor(59, 111, 182);
const RAW: RGBColor = RGBColor(153, 153, 153);

/// Writes the chart of `rows` to `path` as SVG.
pub(crate) fn draw(rows: &[Row], path: &std::path::Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let width = 180 * rows.len().max(1) as u32 + 160;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let top = rows
        .iter()
        .flat_map(|r| [r.framework.e2e_per_sec, r.raw.e2e_per_sec])
        .fold(10.0, f64::max)
        * 3.0;
    let n = rows.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "end-to-end throughput, msg/s (log scale): framework vs raw client",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (1f64..top).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("msg/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, r) in rows.iter().enumerate() {
        let x = i as f64;
        for (j, (v, color, label)) in [
            (r.framework.e2e_per_sec, FRAMEWORK, "framework"),
            (r.raw.e2e_per_sec, RAW, "raw"),
        ]
        .into_iter()
        .enumerate()
        {
            let (x0, x1) = (x + 0.12 + 0.38 * j as f64, x + 0.46 + 0.38 * j as f64);
            let bar = Rectangle::new([(x0, 1.0), (x1, v.max(1.0))], color.filled());
            let series = chart
                .draw_series(std::iter::once(bar))
                .map_err(|e| err(&e))?;
            if i == 0 {
                series.label(label).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{v:.0}"),
                    (x0, v.max(1.0) * 1.25),
                    ("sans-serif", 12),
                )))
                .map_err(|e| err(&e))?;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{}: ratio {:.2}", r.backend, r.e2e_ratio),
                (x + 0.12, top / 1.6),
                ("sans-serif", 13),
            )))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
