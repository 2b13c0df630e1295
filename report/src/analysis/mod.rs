//! From runs to figures (ARCHITECTURE.md, "Reports"):
//! each section of a report is computed by its own module.

mod comparisons;
mod cost;
mod effects;
mod failures;
mod keyed;
mod metrics;
mod variations;
mod verdict;

use flotilla_shared::naming::variation_name;
use flotilla_shared::status::{ExperimentState, RunStatus};
use serde::Serialize;

use crate::data::ExperimentData;
use crate::stats::Interval;

pub mod adaptive;
pub use comparisons::{Comparison, PowerTest, PrimaryTest, TestFigures};
pub use cost::{CostFrontier, CostStatistics};
pub use effects::{Interaction, IntervalMethod, Level, MainEffect};
pub use failures::{normalise_error, FailureMode};
pub use metrics::{MetricGoal, MetricInfo, MetricKind};
pub use variations::{MetricStatistics, VariationStatistics};

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub experiment: String,
    pub state: ExperimentState,
    /// The experiment has not finished: figures cover the runs done so far.
    pub partial: bool,
    pub total_runs: usize,
    pub metrics: Vec<MetricInfo>,
    /// Metrics seen in results that are neither numbers nor booleans.
    pub skipped_metrics: Vec<String>,
    pub variations: Vec<VariationStatistics>,
    pub comparisons: Vec<Comparison>,
    pub main_effects: Vec<MainEffect>,
    /// Cell means of the two axes with the largest main effects on the first metric.
    pub interaction: Option<Interaction>,
    pub failure_modes: Vec<FailureMode>,
    /// Set when some run reported a cost.
    pub has_cost: bool,
    /// How the calls used the response cache.
    pub cache: flotilla_shared::calls::CacheSavings,
    pub tiers: flotilla_shared::calls::TierSpend,
    pub cost_frontiers: Vec<CostFrontier>,
    /// `flotilla compare`: each pair of experiments on each metric, pooled
    /// over the matched variations (paired by variation and seed).
    pub pooled_comparisons: Vec<Comparison>,
    pub baseline: Option<String>,
    /// `flotilla compare`: the experiments put side by side, and what the
    /// reader should know about how they were matched.
    pub compared_experiments: Vec<String>,
    pub notes: Vec<String>,
    pub min_effect: Option<f64>,
    /// Runs per variation to detect `min_effect`: (two-sample t, paired t).
    pub runs_needed_for_min_effect: Option<(Option<u64>, Option<u64>)>,
    /// An adaptive experiment's decisions (ARCHITECTURE.md, "Adaptive sampling").
    pub adaptive: Option<adaptive::AdaptiveSummary>,
}

fn interval(interval: Option<Interval>) -> Option<[f64; 2]> {
    interval.map(|i| [i.low, i.high])
}

/// What a dashboard shows while a sweep runs: each variation's figures
/// and the failure modes, without the comparisons that follow.
pub fn live_figures(
    data: &ExperimentData,
) -> (Vec<MetricInfo>, Vec<VariationStatistics>, Vec<FailureMode>) {
    let (metrics, _) = metrics::metric_infos(data);
    let (variations, _) = variations::variation_statistics(data, &metrics);
    (metrics, variations, failures::failure_modes(data))
}

/// Every figure of a report, section by section.
pub fn analyse(data: &ExperimentData, min_effect: Option<f64>) -> Analysis {
    let (metrics, skipped_metrics) = metrics::metric_infos(data);
    let (variations, values) = variations::variation_statistics(data, &metrics);
    let baseline = baseline_variation(data);
    let mut comparisons =
        comparisons::pairwise_comparisons(data, &metrics, &variations, &values, baseline);
    let mut pooled_comparisons = comparisons::pooled_comparisons(data, &metrics, &values);
    if let Some(effect) = min_effect {
        comparisons::size_for_min_effect(&mut comparisons, effect);
        comparisons::size_for_min_effect(&mut pooled_comparisons, effect);
    }
    let main_effects = effects::main_effects(data, &metrics, &values);
    Analysis {
        experiment: data.name.clone(),
        state: data.state,
        partial: data.state == ExperimentState::Running
            || data.runs.iter().any(|r| {
                matches!(
                    r.status,
                    RunStatus::Pending | RunStatus::Running | RunStatus::Cancelled
                )
            }),
        total_runs: data.runs.len(),
        interaction: effects::interaction(data, &metrics, &values, &main_effects),
        main_effects,
        failure_modes: failures::failure_modes(data),
        has_cost: variations.iter().any(|v| v.cost.is_some()),
        cache: data.cache,
        tiers: data.tiers.clone(),
        cost_frontiers: cost::cost_frontiers(&metrics, &variations),
        metrics,
        skipped_metrics,
        variations,
        comparisons,
        pooled_comparisons,
        baseline: baseline.map(variation_name),
        compared_experiments: Vec::new(),
        notes: Vec::new(),
        min_effect,
        runs_needed_for_min_effect: min_effect.map(comparisons::runs_needed_for_min_effect),
        adaptive: adaptive::adaptive_summary(data, baseline),
    }
}

/// The variation whose axis values are the experiment's `baseline`.
fn baseline_variation(data: &ExperimentData) -> Option<u32> {
    let baseline = data.design.baseline.as_ref()?;
    data.variations
        .iter()
        .find(|v| {
            v.axis_values
                .iter()
                .all(|(k, value)| baseline.get(k) == Some(value))
        })
        .map(|v| v.index)
}
