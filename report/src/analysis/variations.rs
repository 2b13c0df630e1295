//! Per-variation figures: run counts, failure rate, and each metric's
//! descriptive statistics with t, bootstrap and (for rates) Wilson intervals.

use std::collections::BTreeMap;

use flotilla_shared::status::RunStatus;
use serde::Serialize;
use serde_json::Value;

use super::cost::{cost_statistics, CostStatistics};
use super::interval;
use super::keyed::Keyed;
use super::metrics::{MetricInfo, MetricKind};
use crate::data::{ExperimentData, RunData, VariationData};
use crate::stats;

const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Draws one bootstrap interval may cost. Past 2,000 values a variation gets
/// fewer resamples (at least 200): its interval is then near the t interval,
/// and a million-run report stays within seconds. The count used is reported.
const BOOTSTRAP_DRAW_BUDGET: usize = 4_000_000;

fn bootstrap_resamples(n: usize) -> usize {
    (BOOTSTRAP_DRAW_BUDGET / n.max(1)).clamp(200, BOOTSTRAP_RESAMPLES)
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricStatistics {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub std: Option<f64>,
    pub min: f64,
    pub max: f64,
    pub ci95_t: Option<[f64; 2]>,
    pub ci95_bootstrap: Option<[f64; 2]>,
    pub bootstrap_resamples: usize,
    /// For boolean metrics: the share of true, with its Wilson interval.
    pub rate: Option<f64>,
    pub rate_ci95_wilson: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariationStatistics {
    pub index: u32,
    /// `var-003`, or `experiment/var-003` in a comparison of experiments.
    pub name: String,
    pub label: String,
    pub axis_values: BTreeMap<String, Value>,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub unfinished: u64,
    /// failed / (succeeded + failed); `None` before any run ended.
    pub failure_rate: Option<f64>,
    pub failure_rate_ci95_wilson: Option<[f64; 2]>,
    pub metrics: BTreeMap<String, MetricStatistics>,
    /// `None` when none of its runs reported a cost.
    pub cost: Option<CostStatistics>,
}

/// Values of metric number `metric` in succeeded runs, keyed by seed: runs
/// with equal seeds pair up (ARCHITECTURE.md, "Experiments and runs").
fn values_by_seed(data: &ExperimentData, runs: &[RunData], metric: Option<u16>) -> Keyed<u64> {
    Keyed::from_pairs(
        runs.iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .filter_map(|r| {
                let value = data.metric_of(r, metric)?.as_number()?;
                Some((r.seed, value))
            })
            .collect(),
    )
}

pub fn label(axis_values: &BTreeMap<String, Value>) -> String {
    if axis_values.is_empty() {
        return "base".to_string();
    }
    axis_values
        .iter()
        .map(|(k, v)| format!("{k}={}", flotilla_shared::grid::value_as_argument(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per (variation, metric): values keyed by seed.
pub type Values<'m> = BTreeMap<(u32, &'m str), Keyed<u64>>;

pub fn trues(values: &[f64]) -> u64 {
    values.iter().filter(|v| **v > 0.5).count() as u64
}

pub fn sorted_values(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut list: Vec<f64> = values.collect();
    list.sort_by(f64::total_cmp);
    list
}

fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Each variation's figures, and the metric values they came from (keyed by
/// variation and metric, then by seed) for the sections that follow.
pub fn variation_statistics<'m>(
    data: &ExperimentData,
    metrics: &'m [MetricInfo],
) -> (Vec<VariationStatistics>, Values<'m>) {
    let mut values: Values = BTreeMap::new();
    let mut variations = Vec::new();
    for variation in &data.variations {
        let runs = data.runs_of(variation.index);
        let mut per_metric = BTreeMap::new();
        for metric in metrics {
            let by_seed = values_by_seed(data, runs, data.metric_index(&metric.name));
            if let Some(figures) = metric_statistics(data, variation, metric, &by_seed) {
                per_metric.insert(metric.name.clone(), figures);
            }
            values.insert((variation.index, metric.name.as_str()), by_seed);
        }
        variations.push(one_variation(data, variation, runs, per_metric));
    }
    (variations, values)
}

fn one_variation(
    data: &ExperimentData,
    variation: &VariationData,
    runs: &[RunData],
    metrics: BTreeMap<String, MetricStatistics>,
) -> VariationStatistics {
    let count = |status: RunStatus| runs.iter().filter(|r| r.status == status).count() as u64;
    let (succeeded, failed, cancelled) = (
        count(RunStatus::Succeeded),
        count(RunStatus::Failed),
        count(RunStatus::Cancelled),
    );
    let ended = succeeded + failed;
    // In a comparison the name already says which experiment.
    let shown_axes = variation
        .axis_values
        .iter()
        .filter(|(axis, _)| Some(*axis) != data.design.compare_only_across.as_ref())
        .map(|(axis, value)| (axis.clone(), value.clone()))
        .collect();
    VariationStatistics {
        index: variation.index,
        name: variation.name(),
        label: label(&shown_axes),
        axis_values: variation.axis_values.clone(),
        succeeded,
        failed,
        cancelled,
        unfinished: runs.len() as u64 - succeeded - failed - cancelled,
        failure_rate: (ended > 0).then(|| failed as f64 / ended as f64),
        failure_rate_ci95_wilson: interval(stats::wilson_interval(failed, ended)),
        metrics,
        cost: cost_statistics(runs, succeeded),
    }
}

/// One metric of one variation; `None` without values.
fn metric_statistics(
    data: &ExperimentData,
    variation: &VariationData,
    metric: &MetricInfo,
    by_seed: &Keyed<u64>,
) -> Option<MetricStatistics> {
    let list: Vec<f64> = by_seed.values().collect();
    let description = stats::describe(&list)?;
    let bootstrap_seed =
        data.design.seed ^ (u64::from(variation.index) << 32) ^ hash_name(&metric.name);
    let resamples = bootstrap_resamples(list.len());
    let boolean = metric.kind == MetricKind::Boolean;
    Some(MetricStatistics {
        n: description.n,
        mean: description.mean,
        median: description.median,
        std: description.std,
        min: description.min,
        max: description.max,
        ci95_t: interval(description.t_ci),
        ci95_bootstrap: interval(stats::bootstrap_mean_ci(&list, resamples, bootstrap_seed)),
        bootstrap_resamples: resamples,
        rate: boolean.then_some(description.mean),
        rate_ci95_wilson: if boolean {
            interval(stats::wilson_interval(trues(&list), list.len() as u64))
        } else {
            None
        },
    })
}
