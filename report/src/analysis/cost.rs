//! What runs cost: per variation (per run, per success, runs per dollar) and
//! the cost–quality frontier of each metric.

use serde::Serialize;

use super::interval;
use super::metrics::MetricInfo;
use super::variations::VariationStatistics;
use crate::data::RunData;
use crate::stats;

/// What a variation's runs cost (from the `cost_usd` they reported).
#[derive(Debug, Clone, Serialize)]
pub struct CostStatistics {
    pub runs_with_cost: u64,
    pub total_usd: f64,
    pub mean_per_run_usd: f64,
    pub mean_per_run_ci95_t: Option<[f64; 2]>,
    /// Total over succeeded runs: what one usable result costs, failures included.
    pub per_success_usd: Option<f64>,
    pub runs_per_dollar: Option<f64>,
}

/// The variations no other one beats on both cost and a metric.
#[derive(Debug, Clone, Serialize)]
pub struct CostFrontier {
    pub metric: String,
    /// Cheapest first.
    pub variations: Vec<String>,
}

pub fn cost_statistics(runs: &[RunData], succeeded: u64) -> Option<CostStatistics> {
    let costs: Vec<f64> = runs.iter().filter_map(RunData::cost_usd).collect();
    let description = stats::describe(&costs)?;
    let total: f64 = costs.iter().sum();
    Some(CostStatistics {
        runs_with_cost: costs.len() as u64,
        total_usd: total,
        mean_per_run_usd: description.mean,
        mean_per_run_ci95_t: interval(description.t_ci),
        per_success_usd: (succeeded > 0).then(|| total / succeeded as f64),
        runs_per_dollar: (total > 0.0).then(|| costs.len() as f64 / total),
    })
}

/// For each metric, the variations that no other variation matches or beats on
/// both mean quality and mean cost per run (with at least one strictly better).
pub fn cost_frontiers(
    metrics: &[MetricInfo],
    variations: &[VariationStatistics],
) -> Vec<CostFrontier> {
    let mut frontiers = Vec::new();
    for metric in metrics {
        let sign = if metric.higher_is_better() { 1.0 } else { -1.0 };
        let points: Vec<(&str, f64, f64)> = variations
            .iter()
            .filter_map(|v| {
                let cost = v.cost.as_ref()?.mean_per_run_usd;
                let quality = v.metrics.get(&metric.name)?.mean * sign;
                Some((v.name.as_str(), cost, quality))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        let mut frontier: Vec<(&str, f64, f64)> = points
            .iter()
            .copied()
            .filter(|(_, cost, quality)| {
                !points.iter().any(|(_, other_cost, other_quality)| {
                    other_cost <= cost
                        && other_quality >= quality
                        && (other_cost < cost || other_quality > quality)
                })
            })
            .collect();
        frontier.sort_by(|x, y| x.1.total_cmp(&y.1));
        frontiers.push(CostFrontier {
            metric: metric.name.clone(),
            variations: frontier
                .into_iter()
                .map(|(name, _, _)| name.to_string())
                .collect(),
        });
    }
    frontiers
}
