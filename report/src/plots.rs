//! SVG plots, readable on their own: a box-and-strip plot of each declared
//! numeric metric per variation (a rate with its Wilson interval for a
//! boolean one), and a main-effect plot per axis and metric. Rates are drawn
//! on [0, 1].

use std::fmt::Write as _;

use flotilla_shared::grid::value_as_argument;

use crate::analysis::{Analysis, IntervalMethod, MainEffect};
use crate::format::number;

/// Cost vs quality of each variation (means), the frontier joined by a line.
pub fn cost_vs_quality(analysis: &Analysis, metric: &str, goal: &str) -> Option<String> {
    let frontier = analysis
        .cost_frontiers
        .iter()
        .find(|f| f.metric == metric)?;
    let points: Vec<(&str, f64, f64)> = analysis
        .variations
        .iter()
        .filter_map(|v| {
            Some((
                v.name.as_str(),
                v.cost.as_ref()?.mean_per_run_usd,
                v.metrics.get(metric)?.mean,
            ))
        })
        .collect();
    if points.is_empty() {
        return None;
    }
    let (plot_left, plot_right, plot_top, plot_bottom) = (90.0, WIDTH - 40.0, TOP, 470.0);
    let bounds = |values: &mut dyn Iterator<Item = f64>| {
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
    };
    let (x_min, x_max) = bounds(&mut points.iter().map(|p| p.1));
    let (y_min, y_max) = bounds(&mut points.iter().map(|p| p.2));
    let (xs, ys) = (Scale::new(x_min, x_max), Scale::new(y_min, y_max));
    let x = |v: f64| plot_left + (v - xs.min) / (xs.max - xs.min) * (plot_right - plot_left);
    let y = |v: f64| plot_bottom - (v - ys.min) / (ys.max - ys.min) * (plot_bottom - plot_top);
    let mut out = String::new();
    header(
        &mut out,
        plot_bottom + 60.0,
        &format!("{metric} ({goal}) vs mean cost per run; green: the cost–quality frontier"),
    );
    let _ = writeln!(
        out,
        r##"<polyline points="{plot_left},{plot_top} {plot_left},{plot_bottom} {plot_right},{plot_bottom}" fill="none" stroke="#333"/>"##
    );
    for &x_value in &xs.ticks {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">${}</text>"#,
            x(x_value),
            plot_bottom + 18.0,
            number(x_value)
        );
    }
    for &y_value in &ys.ticks {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            plot_left - 6.0,
            y(y_value) + 4.0,
            number(y_value)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">mean cost per run (USD)</text>"#,
        (plot_left + plot_right) / 2.0,
        plot_bottom + 40.0
    );
    let on_frontier: Vec<(f64, f64)> = frontier
        .variations
        .iter()
        .filter_map(|name| points.iter().find(|p| p.0 == name))
        .map(|p| (x(p.1), y(p.2)))
        .collect();
    let line: Vec<String> = on_frontier
        .iter()
        .map(|(px, py)| format!("{px:.1},{py:.1}"))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#27ae60" stroke-width="1.5"/>"##,
        line.join(" ")
    );
    for (name, cost, quality) in &points {
        let best = frontier.variations.iter().any(|f| f == name);
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/>"##,
            x(*cost),
            y(*quality),
            if best { "#27ae60" } else { "#4a78b5" }
        );
        // Labels of points near the right edge go to their left.
        let (dx, anchor) = if x(*cost) > plot_left + (plot_right - plot_left) * 0.7 {
            (-6.0, "end")
        } else {
            (6.0, "start")
        };
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="{anchor}">{}</text>"#,
            x(*cost) + dx,
            y(*quality) - 5.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    Some(out)
}

const WIDTH: f64 = 860.0;
const LEFT: f64 = 330.0;
const RIGHT: f64 = 30.0;
const ROW: f64 = 26.0;
const TOP: f64 = 50.0;
/// Points drawn per variation at most (evenly spaced order statistics): the box shows all values.
const MAX_POINTS: usize = 200;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

/// A value axis that starts and ends on round ticks.
struct Scale {
    min: f64,
    max: f64,
    ticks: Vec<f64>,
}

/// Ticks wanted on an axis, about.
const TICKS: f64 = 5.0;

/// A step of 1, 2 or 5 times a power of ten giving about `TICKS` ticks over `span`.
fn round_step(span: f64) -> f64 {
    let raw = span / TICKS;
    let magnitude = 10f64.powf(raw.log10().floor());
    let multiple = match raw / magnitude {
        r if r <= 1.0 => 1.0,
        r if r <= 2.0 => 2.0,
        r if r <= 5.0 => 5.0,
        _ => 10.0,
    };
    multiple * magnitude
}

impl Scale {
    /// Covers `min..max` with round ticks, the outer ones at or beyond the data.
    fn new(min: f64, max: f64) -> Self {
        let (min, max) = if (max - min).abs() < f64::EPSILON {
            (min - 1.0, max + 1.0)
        } else {
            (min, max)
        };
        let step = round_step(max - min);
        let (first, last) = ((min / step).floor() as i64, (max / step).ceil() as i64);
        // Multiples of the step, so that zero is exactly zero.
        let ticks: Vec<f64> = (first..=last).map(|k| k as f64 * step).collect();
        Scale {
            min: ticks[0],
            max: ticks[ticks.len() - 1],
            ticks,
        }
    }

    fn x(&self, value: f64) -> f64 {
        LEFT + (value - self.min) / (self.max - self.min) * (WIDTH - LEFT - RIGHT)
    }

    fn axis(&self, out: &mut String, y: f64) {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#333"/>"##,
            WIDTH - RIGHT
        );
        for &value in &self.ticks {
            let x = self.x(value);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{}" stroke="#333"/>"##,
                y + 5.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
                y + 18.0,
                number(value)
            );
        }
    }
}

/// Characters of a row label that fit left of the plot at 11 px.
const LABEL_CHARS: usize = 54;

/// The label left of a plot row, shortened with an ellipsis when it would not
/// fit (the full label is kept as the row's tooltip).
fn row_label(out: &mut String, y: f64, label: &str) {
    let shown: String = if label.chars().count() > LABEL_CHARS {
        label.chars().take(LABEL_CHARS - 1).chain(['…']).collect()
    } else {
        label.to_string()
    };
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="end"><title>{}</title>{}</text>"#,
        LEFT - 8.0,
        y + 4.0,
        escape(label),
        escape(&shown)
    );
}

fn header(out: &mut String, height: f64, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
}

/// "no values" in a plot row.
fn no_values(out: &mut String, y: f64) {
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}" font-size="11" fill="#888">no values</text>"##,
        y + 4.0
    );
}

/// A 95% interval as a horizontal bar in a plot row.
fn interval_bar(out: &mut String, scale: &Scale, y: f64, interval: Option<[f64; 2]>) {
    if let Some([low, high]) = interval {
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y}" x2="{:.1}" y2="{y}" stroke="#4a78b5" stroke-width="2"/>"##,
            scale.x(low),
            scale.x(high)
        );
    }
}

/// Each variation's rate of a boolean metric with its Wilson interval, on [0, 1]:
/// a box plot of 0s and 1s says nothing.
pub fn rates_by_variation(analysis: &Analysis, metric: &str, goal: &str) -> Option<String> {
    let rows: Vec<_> = analysis
        .variations
        .iter()
        .map(|v| (v, v.metrics.get(metric)))
        .collect();
    if rows.iter().all(|(_, figures)| figures.is_none()) {
        return None;
    }
    let scale = Scale::new(0.0, 1.0);
    let height = TOP + ROW * rows.len() as f64 + 40.0;
    let mut out = String::new();
    header(
        &mut out,
        height,
        &format!(
            "{metric} ({goal}): rate by variation of {}; bars: 95% CI (Wilson)",
            analysis.experiment
        ),
    );
    for (row, (variation, figures)) in rows.iter().enumerate() {
        let y = TOP + ROW * row as f64 + ROW / 2.0;
        row_label(
            &mut out,
            y,
            &format!("{} {}", variation.name, variation.label),
        );
        let Some((rate, figures)) = figures.and_then(|f| Some((f.rate?, f))) else {
            no_values(&mut out, y);
            continue;
        };
        interval_bar(&mut out, &scale, y, figures.rate_ci95_wilson);
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{y}" r="4" fill="#1f3f6e"><title>{} of {}</title></circle>"##,
            scale.x(rate),
            number(rate),
            figures.n
        );
    }
    scale.axis(&mut out, TOP + ROW * rows.len() as f64 + 6.0);
    out.push_str("</svg>\n");
    Some(out)
}

/// Box (quartiles, median) and points of one metric for each variation.
/// `values[i]` holds variation `analysis.variations[i]`'s values, sorted.
pub fn by_variation(
    analysis: &Analysis,
    metric: &str,
    goal: &str,
    values: &[Vec<f64>],
) -> Option<String> {
    let all = values.iter().flatten().copied();
    let (min, max) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !min.is_finite() {
        return None;
    }
    let scale = Scale::new(min, max);
    let height = TOP + ROW * values.len() as f64 + 40.0;
    let mut out = String::new();
    header(
        &mut out,
        height,
        &format!("{metric} ({goal}) by variation of {}", analysis.experiment),
    );
    for (row, (variation, sorted)) in analysis.variations.iter().zip(values).enumerate() {
        let y = TOP + ROW * row as f64 + ROW / 2.0;
        let label = format!("{} {}", variation.name, variation.label);
        row_label(&mut out, y, &label);
        if sorted.is_empty() {
            no_values(&mut out, y);
            continue;
        }
        let (q1, median, q3) = (
            quantile(sorted, 0.25),
            quantile(sorted, 0.5),
            quantile(sorted, 0.75),
        );
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{}" width="{:.1}" height="{}" fill="#dde8f6" stroke="#4a78b5"/>"##,
            scale.x(q1),
            y - 8.0,
            (scale.x(q3) - scale.x(q1)).max(1.0),
            16.0
        );
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#1f3f6e" stroke-width="2"/>"##,
            scale.x(median),
            y - 8.0,
            y + 8.0
        );
        let shown = sorted.len().min(MAX_POINTS);
        for k in 0..shown {
            let value = if shown == 1 {
                sorted[0]
            } else {
                quantile(sorted, k as f64 / (shown - 1) as f64)
            };
            // Deterministic jitter so that equal values stay visible.
            let jitter = ((k * 7919) % 13) as f64 - 6.0;
            let _ = writeln!(
                out,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#c0392b" fill-opacity="0.6"/>"##,
                scale.x(value),
                y + jitter * 0.8
            );
        }
    }
    scale.axis(&mut out, TOP + ROW * values.len() as f64 + 6.0);
    out.push_str("</svg>\n");
    Some(out)
}

/// Mean and 95 % interval of each level of an axis.
pub fn main_effect(effect: &MainEffect, goal: &str) -> Option<String> {
    if effect.levels.is_empty() {
        return None;
    }
    let rates = effect
        .levels
        .iter()
        .all(|l| l.ci95_method == IntervalMethod::Wilson);
    let scale = if rates {
        Scale::new(0.0, 1.0)
    } else {
        let low = effect
            .levels
            .iter()
            .map(|l| l.ci95.map_or(l.mean, |c| c[0]))
            .fold(f64::INFINITY, f64::min);
        let high = effect
            .levels
            .iter()
            .map(|l| l.ci95.map_or(l.mean, |c| c[1]))
            .fold(f64::NEG_INFINITY, f64::max);
        Scale::new(low, high)
    };
    let height = TOP + ROW * effect.levels.len() as f64 + 40.0;
    let mut out = String::new();
    header(
        &mut out,
        height,
        &format!(
            "main effect of {} on {} ({goal}); bars: 95% CI ({})",
            effect.axis,
            effect.metric,
            effect.levels[0].ci95_method.as_str()
        ),
    );
    for (row, level) in effect.levels.iter().enumerate() {
        let y = TOP + ROW * row as f64 + ROW / 2.0;
        let best = effect.best.as_ref() == Some(&level.value);
        let label = format!(
            "{}{}",
            value_as_argument(&level.value),
            if best { " (best)" } else { "" }
        );
        row_label(&mut out, y, &label);
        interval_bar(&mut out, &scale, y, level.ci95);
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{y}" r="4" fill="{}"/>"##,
            scale.x(level.mean),
            if best { "#27ae60" } else { "#1f3f6e" }
        );
    }
    scale.axis(&mut out, TOP + ROW * effect.levels.len() as f64 + 6.0);
    out.push_str("</svg>\n");
    Some(out)
}

/// File name for a plot: letters, digits, '-' and '_' only.
pub fn file_name(parts: &[&str]) -> String {
    let joined = parts.join("-");
    joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        + ".svg"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_labelled_at_round_values() {
        let scale = Scale::new(0.259, 2.742);
        assert_eq!(scale.ticks, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        let labels: Vec<String> = Scale::new(-0.013, 0.021)
            .ticks
            .iter()
            .map(|t| number(*t))
            .collect();
        assert_eq!(labels, ["-0.02", "-0.01", "0", "0.01", "0.02", "0.03"]);
        let flat = Scale::new(3.0, 3.0);
        assert!(flat.min <= 2.0 && flat.max >= 4.0);
    }
}
