//! The PNG chart: four bar panels (64 B and 1500 B forwarding, TCP, request/response latency),
//! bars at the median with min–max whiskers.

use std::path::Path;

use super::{
    LARGE, Results, SMALL, SinkKind, Summary, ceilings, figure_name, forwarding, ip_size,
    traffic_rows,
};

/// Where the chart's text font comes from: `DejaVu Sans` (Debian's `fonts-dejavu-core`).
pub const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// A failed chart.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// No font to draw text with.
    #[error("no TrueType font at {0:?} (install fonts-dejavu-core)")]
    NoFont([&'static str; 2]),
    /// Drawing or writing failed.
    #[error("drawing the chart: {0}")]
    Draw(String),
}

/// A bar: value with min–max whisker.
type Bar = Option<Summary>;

/// One panel: groups of bars, one bar per series.
struct Panel {
    title: String,
    unit: &'static str,
    groups: Vec<(String, Vec<Bar>)>,
}

const SERIES: [(&str, plotters::style::RGBColor); 4] = [
    ("kernel (host-gw)", plotters::style::RGBColor(120, 120, 120)),
    ("fast path", plotters::style::RGBColor(31, 119, 180)),
    (
        "fast path + ct gate",
        plotters::style::RGBColor(255, 127, 14),
    ),
    (
        "no forwarding (ceiling)",
        plotters::style::RGBColor(44, 160, 44),
    ),
];

/// Where bar `k` of a group sits: the three variants side by side, the ceiling in the middle.
fn bar_offset(k: usize) -> f64 {
    if k == 3 { 0.38 } else { 0.12 + 0.26 * k as f64 }
}

fn panels(r: &Results) -> Vec<Panel> {
    let fwd = forwarding(r);
    let ceil = ceilings(r);
    let mut out = Vec::new();
    for (len, unit) in [(SMALL, "Mpps"), (LARGE, "Gbit/s")] {
        let mut groups: Vec<(String, Vec<Bar>)> = fwd
            .iter()
            .filter(|f| f.len == len)
            .map(|f| {
                (
                    figure_name(f.direction, f.family),
                    vec![f.kernel, f.fast, f.gate],
                )
            })
            .collect();
        if let Some(c) = ceil.iter().find(|c| c.len == len && c.kind == SinkKind::Tc) {
            groups.push(("ceiling (TC sink)".into(), vec![None, None, None, c.value]));
        }
        out.push(Panel {
            title: format!("Forwarding per core, {} B packets", ip_size(len)),
            unit,
            groups,
        });
    }
    let rows = traffic_rows(r);
    out.push(Panel {
        title: "TCP pod → remote pod".into(),
        unit: "Gbit/s",
        groups: rows
            .iter()
            .filter(|x| x.figure.starts_with("TCP"))
            .map(|x| {
                let name = if x.figure.contains("IPv6") {
                    "IPv6, 1 stream"
                } else if x.figure.contains("4 streams") {
                    "4 streams"
                } else {
                    "1 stream"
                };
                (name.to_owned(), vec![x.kernel, x.fast, x.gate])
            })
            .collect(),
    });
    out.push(Panel {
        title: "Request/response latency, one core (lower is better)".into(),
        unit: "µs",
        groups: rows
            .iter()
            .filter(|x| x.figure.contains("latency"))
            .map(|x| {
                let name = if x.figure.contains("p50") {
                    "p50"
                } else {
                    "p99"
                };
                (name.to_owned(), vec![x.kernel, x.fast, x.gate])
            })
            .collect(),
    });
    out
}

/// Draws the results as a PNG of four bar panels (64 B and 1500 B forwarding, TCP,
/// request/response latency), bars at the median with min–max whiskers.
pub fn chart(r: &Results, path: &Path) -> Result<(), ChartError> {
    use plotters::prelude::*;

    static FONT: std::sync::OnceLock<Option<&'static [u8]>> = std::sync::OnceLock::new();
    let font = FONT.get_or_init(|| {
        let bytes = FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok())?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .ok()
            .map(|()| bytes)
    });
    if font.is_none() {
        return Err(ChartError::NoFont(FONT_PATHS));
    }
    let draw = |e: &dyn std::fmt::Display| ChartError::Draw(e.to_string());

    let root = BitMapBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let (top, body) = root.split_vertically(50);
    top.draw_text(
        &format!(
            "hostgw benchmark — {}{}",
            r.machine,
            if r.quick { " — quick smoke run" } else { "" }
        ),
        &("sans-serif", 18).into_font().color(&BLACK),
        (20, 15),
    )
    .map_err(|e| draw(&e))?;
    let areas = body.split_evenly((2, 2));
    for (area, panel) in areas.iter().zip(panels(r)) {
        let ymax = panel
            .groups
            .iter()
            .flat_map(|(_, bars)| bars.iter().flatten().map(|s| s.max))
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.4;
        let n = panel.groups.len().max(1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(10)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n, (-0.08 * ymax)..ymax)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(panel.unit)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| draw(&e))?;
        for (g, (name, _)) in panel.groups.iter().enumerate() {
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (g as f64 + 0.3, -0.03 * ymax),
                    ("sans-serif", 15).into_font(),
                )))
                .map_err(|e| draw(&e))?;
        }
        for (k, (label, color)) in SERIES.iter().enumerate() {
            let bars: Vec<(f64, Summary)> = panel
                .groups
                .iter()
                .enumerate()
                .filter_map(|(g, (_, bars))| Some((g as f64 + bar_offset(k), (*bars.get(k)?)?)))
                .collect();
            if bars.is_empty() {
                continue;
            }
            chart
                .draw_series(bars.iter().map(|(x, s)| {
                    Rectangle::new([(*x, 0.0), (x + 0.22, s.median)], color.filled())
                }))
                .map_err(|e| draw(&e))?
                .label(*label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            chart
                .draw_series(bars.iter().filter(|(_, s)| s.n > 1).map(|(x, s)| {
                    PathElement::new(
                        vec![(x + 0.11, s.min), (x + 0.11, s.max)],
                        BLACK.stroke_width(2),
                    )
                }))
                .map_err(|e| draw(&e))?;
            chart
                .draw_series(bars.iter().map(|(x, s)| {
                    Text::new(
                        format!("{:.2}", s.median),
                        (*x, s.max.max(s.median) + 0.02 * ymax),
                        ("sans-serif", 13).into_font(),
                    )
                }))
                .map_err(|e| draw(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
