//! Chart geometry for the dashboard: horizontal bars (`hbars`) and columns over time (`columns`),
//! computed here and drawn by the SVG templates (`hbars.svg`, `columns.svg`) as inline SVG.

use askama::Template;

/// A horizontal bar of a series.
pub struct HBar {
    pub y: f64,
    pub w: f64,
    pub class: &'static str,
    pub value: String,
}

pub struct HRow {
    pub label: String,
    /// The label cut to fit left of the bars (the whole one is the tooltip).
    pub short: String,
    pub y: f64,
    pub bars: Vec<HBar>,
}

/// Horizontal bars, one group per label, up to two series.
#[derive(Template)]
#[template(path = "hbars.svg", escape = "html")]
pub struct HBars {
    pub title: String,
    pub legend: Vec<(&'static str, String)>,
    pub height: f64,
    pub rows: Vec<HRow>,
}

const PLOT_W: f64 = 520.0;

pub(crate) fn hbars(title: &str, series: &[(&'static str, &str)], data: Vec<(String, Vec<f64>)>, unit: &str) -> String {
    if data.is_empty() {
        // The table below says why there is nothing; an empty frame would only take room.
        return String::new();
    }
    let max = data.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max).max(1e-9);
    let bar_h = 14.0;
    let group_h = bar_h * series.len() as f64 + 8.0;
    let rows: Vec<HRow> = data
        .into_iter()
        .enumerate()
        .map(|(i, (label, values))| {
            let y = 24.0 + i as f64 * group_h;
            let bars = values
                .iter()
                .zip(series)
                .enumerate()
                .map(|(j, (v, (class, _)))| HBar {
                    y: y + j as f64 * bar_h,
                    w: (v / max * PLOT_W).max(0.0),
                    class,
                    value: format!("{v:.1}{unit}"),
                })
                .collect();
            HRow { short: short_label(&label), label, y, bars }
        })
        .collect();
    let chart = HBars {
        title: title.into(),
        legend: series.iter().map(|(c, n)| (*c, n.to_string())).collect(),
        height: 30.0 + rows.len() as f64 * group_h,
        rows,
    };
    chart.render().unwrap_or_default()
}

/// `s` cut to 30 characters with an ellipsis.
fn short_label(s: &str) -> String {
    match s.char_indices().nth(29) {
        Some((i, _)) if s.chars().count() > 30 => format!("{}…", &s[..i]),
        _ => s.to_string(),
    }
}

/// A vertical column of a time series.
pub struct Col {
    pub x: f64,
    pub y: f64,
    pub h: f64,
    pub label: String,
    pub value: String,
}

/// Columns over time.
#[derive(Template)]
#[template(path = "columns.svg", escape = "html")]
pub struct Columns {
    pub title: String,
    /// Shown inside the plot when every value is zero.
    pub note: String,
    pub width: f64,
    pub col_w: f64,
    pub max: String,
    /// Label every `step`-th column.
    pub step: usize,
    pub cols: Vec<Col>,
}

/// Width of a column chart's drawing, whatever the number of columns, so its text keeps one size.
const COLUMNS_W: f64 = 760.0;

pub(crate) fn columns(title: &str, data: &[(String, f64)], unit: &str, none: &str) -> String {
    let max = data.iter().map(|d| d.1).fold(0.0f64, f64::max);
    let plot_h = 140.0;
    let left = 48.0;
    let col_w = ((COLUMNS_W - left - 10.0) / data.len().max(1) as f64).min(40.0);
    let cols = data
        .iter()
        .enumerate()
        .map(|(i, (label, v))| {
            let h = if max > 0.0 { v / max * plot_h } else { 0.0 };
            Col {
                x: left + i as f64 * col_w,
                y: 20.0 + plot_h - h,
                h,
                label: label.clone(),
                value: format!("{v:.2}{unit}"),
            }
        })
        .collect();
    // Date labels are about 70 px wide: no more of them than fit.
    let step = (70.0 / col_w).ceil().max(1.0) as usize;
    Columns {
        title: title.into(),
        note: if max > 0.0 { String::new() } else { none.into() },
        width: COLUMNS_W,
        col_w: (col_w - 2.0).max(1.0),
        max: format!("{max:.1}{unit}"),
        step,
        cols,
    }
    .render()
    .unwrap_or_default()
}
