//! Main effects of each axis and the two-way interaction table.

use serde::Serialize;
use serde_json::Value;

use super::comparisons::paired_rates_interval;
use super::interval;
use super::metrics::{MetricInfo, MetricKind};
use super::variations::{trues, Values};
use crate::data::ExperimentData;
use crate::stats;

/// How an interval was made: a t-interval for numbers, Wilson's for a rate,
/// Newcombe's for a difference of rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalMethod {
    T,
    Wilson,
    /// Newcombe's method 10 for paired rates.
    NewcombePaired,
}

impl IntervalMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalMethod::T => "t",
            IntervalMethod::Wilson => "Wilson",
            IntervalMethod::NewcombePaired => "Newcombe, paired",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub value: Value,
    pub n: usize,
    /// The mean, or the rate for a boolean metric.
    pub mean: f64,
    /// 95%: a t-interval, or Wilson's for a rate (`ci95_method`).
    pub ci95: Option<[f64; 2]>,
    pub ci95_method: IntervalMethod,
    /// With an axis of cases: this level minus the best one, over runs
    /// paired by case (and by the other axes and the repetition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus_best: Option<PairedDifference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairedDifference {
    pub pairs: usize,
    pub mean: f64,
    /// 95%: a paired t-interval, or Newcombe's paired interval for rates.
    pub ci95: Option<[f64; 2]>,
    pub ci95_method: IntervalMethod,
}

#[derive(Debug, Clone, Serialize)]
pub struct MainEffect {
    pub axis: String,
    pub metric: String,
    pub levels: Vec<Level>,
    pub best: Option<Value>,
    /// Largest minus smallest level mean.
    pub spread: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interaction {
    pub metric: String,
    pub rows_axis: String,
    pub columns_axis: String,
    pub rows: Vec<Value>,
    pub columns: Vec<Value>,
    /// `means[r][c]`: mean over the runs with row level r and column level c; `None` without values.
    pub means: Vec<Vec<Option<f64>>>,
}

pub fn main_effects(
    data: &ExperimentData,
    metrics: &[MetricInfo],
    values: &Values<'_>,
) -> Vec<MainEffect> {
    let mut effects = Vec::new();
    for axis in &data.design.axes {
        for metric in metrics {
            let mut levels = Vec::new();
            for level in &axis.values {
                let list: Vec<f64> = data
                    .variations
                    .iter()
                    .filter(|v| v.axis_values.get(&axis.param) == Some(level))
                    .filter_map(|v| values.get(&(v.index, metric.name.as_str())))
                    .flat_map(|by_seed| by_seed.values())
                    .collect();
                if let Some(level) = level_figures(level, &list, metric.kind) {
                    levels.push(level);
                }
            }
            let best = levels
                .iter()
                .max_by(|x, y| {
                    let order = x.mean.total_cmp(&y.mean);
                    if metric.higher_is_better() {
                        order
                    } else {
                        order.reverse()
                    }
                })
                .map(|l| l.value.clone());
            let has_cases = data.design.axes.iter().any(|a| a.cases.is_some());
            if let (Some(best), true) = (&best, has_cases && axis.cases.is_none()) {
                for level in &mut levels {
                    if &level.value != best {
                        level.versus_best =
                            paired_by_case(data, values, &axis.param, (&level.value, best), metric);
                    }
                }
            }
            let means: Vec<f64> = levels.iter().map(|l| l.mean).collect();
            let spread = means.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                - means.iter().copied().fold(f64::INFINITY, f64::min);
            effects.push(MainEffect {
                axis: axis.param.clone(),
                metric: metric.name.clone(),
                best,
                spread: if spread.is_finite() { spread } else { 0.0 },
                levels,
            });
        }
    }
    effects
}

/// One level's mean with the interval its kind calls for: Wilson's for a
/// rate (a t-interval of 0/1 values claims certainty where every run agreed).
fn level_figures(value: &Value, list: &[f64], kind: MetricKind) -> Option<Level> {
    let description = stats::describe(list)?;
    let (ci95, ci95_method) = match kind {
        MetricKind::Boolean => (
            interval(stats::wilson_interval(trues(list), list.len() as u64)),
            IntervalMethod::Wilson,
        ),
        MetricKind::Numeric => (interval(description.t_ci), IntervalMethod::T),
    };
    Some(Level {
        value: value.clone(),
        n: description.n,
        mean: description.mean,
        ci95,
        ci95_method,
        versus_best: None,
    })
}

/// Runs of `level` minus runs of `best` on `axis`, paired where every other
/// axis (the case among them) and the repetition are the same.
fn paired_by_case(
    data: &ExperimentData,
    values: &Values<'_>,
    axis: &str,
    (level, best): (&Value, &Value),
    metric: &MetricInfo,
) -> Option<PairedDifference> {
    let (kind, metric) = (metric.kind, metric.name.as_str());
    let runs_of = |wanted: &Value| {
        let mut runs = std::collections::BTreeMap::new();
        for variation in data
            .variations
            .iter()
            .filter(|v| v.axis_values.get(axis) == Some(wanted))
        {
            let mut block = variation.axis_values.clone();
            block.remove(axis);
            let block = serde_json::to_string(&block).unwrap_or_default();
            for (seed, value) in values
                .get(&(variation.index, metric))
                .into_iter()
                .flat_map(|by_seed| by_seed.iter())
            {
                runs.insert((block.clone(), seed), value);
            }
        }
        runs
    };
    let (these, best_runs) = (runs_of(level), runs_of(best));
    let (mut level_values, mut best_values) = (Vec::new(), Vec::new());
    for (key, value) in &these {
        if let Some(other) = best_runs.get(key) {
            level_values.push(*value);
            best_values.push(*other);
        }
    }
    let differences: Vec<f64> = level_values
        .iter()
        .zip(&best_values)
        .map(|(x, y)| x - y)
        .collect();
    let description = stats::describe(&differences)?;
    let (ci95, ci95_method) = match kind {
        MetricKind::Boolean => (
            interval(paired_rates_interval(&level_values, &best_values)),
            IntervalMethod::NewcombePaired,
        ),
        MetricKind::Numeric => (interval(description.t_ci), IntervalMethod::T),
    };
    Some(PairedDifference {
        pairs: description.n,
        mean: description.mean,
        ci95,
        ci95_method,
    })
}

/// The two-way table for the pair of axes whose main effects on the first
/// metric spread the most.
pub fn interaction(
    data: &ExperimentData,
    metrics: &[MetricInfo],
    values: &Values<'_>,
    effects: &[MainEffect],
) -> Option<Interaction> {
    let metric = metrics.first()?;
    let mut axes: Vec<&MainEffect> = effects.iter().filter(|e| e.metric == metric.name).collect();
    if axes.len() < 2 {
        return None;
    }
    axes.sort_by(|a, b| b.spread.total_cmp(&a.spread));
    let (rows_axis, columns_axis) = (&axes[0].axis, &axes[1].axis);
    let levels = |axis: &str| {
        data.design
            .axes
            .iter()
            .find(|a| a.param == axis)
            .map(|a| a.values.clone())
            .unwrap_or_default()
    };
    let (rows, columns) = (levels(rows_axis), levels(columns_axis));
    let means = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| {
                    let cell: Vec<f64> = data
                        .variations
                        .iter()
                        .filter(|v| {
                            v.axis_values.get(rows_axis) == Some(row)
                                && v.axis_values.get(columns_axis) == Some(column)
                        })
                        .filter_map(|v| values.get(&(v.index, metric.name.as_str())))
                        .flat_map(|by_seed| by_seed.values())
                        .collect();
                    (!cell.is_empty()).then(|| cell.iter().sum::<f64>() / cell.len() as f64)
                })
                .collect()
        })
        .collect();
    Some(Interaction {
        metric: metric.name.clone(),
        rows_axis: rows_axis.clone(),
        columns_axis: columns_axis.clone(),
        rows,
        columns,
        means,
    })
}
