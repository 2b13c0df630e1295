//! From runs to figures: per-variation statistics, pairwise comparisons,
//! main effects and failure modes (DESIGN §9).

use std::collections::BTreeMap;

use flotilla_shared::config::Goal;
use flotilla_shared::stats::{self, Interval, ALPHA};
use serde::Serialize;
use serde_json::Value;

use super::data::{ExperimentData, MetricValue, RunData, VariationData};

const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Draws one bootstrap interval may cost. Past 2,000 values a variation gets
/// fewer resamples (at least 200): its interval is then near the t interval,
/// and a million-run report stays within seconds. The count used is reported.
const BOOTSTRAP_DRAW_BUDGET: usize = 4_000_000;

fn bootstrap_resamples(n: usize) -> usize {
    (BOOTSTRAP_DRAW_BUDGET / n.max(1)).clamp(200, BOOTSTRAP_RESAMPLES)
}
const TARGET_POWER: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Numeric,
    Boolean,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricInfo {
    pub name: String,
    /// `maximize`, `minimize`, or `undeclared` (ranked high to low).
    pub goal: String,
    pub kind: MetricKind,
}

impl MetricInfo {
    fn higher_is_better(&self) -> bool {
        self.goal != "minimize"
    }
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

#[derive(Debug, Clone, Serialize)]
pub struct TestFigures {
    pub statistic: f64,
    pub p_value: f64,
    pub df: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub metric: String,
    /// Variation names (`var-003`), or experiment names for the pooled
    /// comparisons of `flotilla compare`.
    pub a: String,
    pub b: String,
    pub against_baseline: bool,
    pub n_a: usize,
    pub n_b: usize,
    /// a minus b: the mean of paired differences when runs pair up by seed,
    /// else the difference of means; with the primary test's 95 % interval.
    pub difference: f64,
    pub difference_ci95: Option<[f64; 2]>,
    /// Numbers: `paired_t` when runs pair up by seed, else `welch`. Booleans:
    /// `mcnemar_exact` when runs pair up, else `two_proportion_z`.
    pub primary_test: String,
    pub primary_p: Option<f64>,
    pub welch: Option<TestFigures>,
    pub mann_whitney: Option<TestFigures>,
    /// Runs paired by equal seeds.
    pub pairs: usize,
    pub paired_t: Option<TestFigures>,
    pub wilcoxon: Option<TestFigures>,
    /// Boolean metrics: the z-test of two rates and, for paired runs, McNemar's exact test.
    pub two_proportion_z: Option<TestFigures>,
    pub mcnemar_exact: Option<TestFigures>,
    pub cohens_d: Option<f64>,
    /// Mean of the paired differences over their standard deviation.
    pub cohens_dz: Option<f64>,
    /// Boolean metrics: 2 asin √a − 2 asin √b.
    pub cohens_h: Option<f64>,
    pub hedges_g: Option<f64>,
    pub cliffs_delta: Option<f64>,
    /// The primary test's p-value after Holm's adjustment over all pairs of this metric.
    pub p_adjusted: Option<f64>,
    /// After Holm's adjustment over the comparisons with the baseline only (a
    /// smaller family, so more power); set on baseline comparisons.
    pub p_adjusted_baseline: Option<f64>,
    pub significant: bool,
    /// Runs per variation needed to detect the observed difference (power 0.8,
    /// alpha 0.05) with the test named in `power_test`.
    pub runs_needed: Option<u64>,
    /// `paired_t` (effect d_z), `two_sample_t` (Cohen's d) or `two_rates_z` (Cohen's h).
    pub power_test: String,
    /// Runs per variation the same test needs to detect `--min-effect` (taken
    /// as d_z, d or h).
    pub runs_needed_for_min_effect: Option<u64>,
    pub underpowered: bool,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub value: Value,
    pub n: usize,
    pub mean: f64,
    pub ci95_t: Option<[f64; 2]>,
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

#[derive(Debug, Clone, Serialize)]
pub struct FailureMode {
    pub signature: String,
    pub count: u64,
    /// Failed runs by variation name.
    pub per_variation: BTreeMap<String, u64>,
    pub example_run: String,
}

/// The variations no other one beats on both cost and a metric.
#[derive(Debug, Clone, Serialize)]
pub struct CostFrontier {
    pub metric: String,
    /// Cheapest first.
    pub variations: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub experiment: String,
    pub state: String,
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
}

fn interval(interval: Option<Interval>) -> Option<[f64; 2]> {
    interval.map(|i| [i.low, i.high])
}

fn figures(result: Option<stats::TestResult>) -> Option<TestFigures> {
    result.map(|r| TestFigures {
        statistic: r.statistic,
        p_value: r.p_value,
        df: r.df,
    })
}

/// Which metrics to analyse: declared ones first, then every other key whose
/// values are numbers or booleans.
fn metric_infos(data: &ExperimentData) -> (Vec<MetricInfo>, Vec<String>) {
    let mut seen: BTreeMap<&str, (bool, bool, bool)> = BTreeMap::new(); // (any number, any bool, any other)
    for run in data.runs.iter().filter(|r| r.status == "succeeded") {
        for (key, value) in &run.metrics {
            let entry = seen
                .entry(data.metric_names[*key as usize].as_str())
                .or_default();
            match value {
                MetricValue::Bool(_) => entry.1 = true,
                MetricValue::Number(_) => entry.0 = true,
                MetricValue::Other => entry.2 = true,
            }
        }
    }
    let kind_of = |name: &str| match seen.get(name) {
        Some((false, true, _)) => MetricKind::Boolean,
        _ => MetricKind::Numeric,
    };
    let mut metrics: Vec<MetricInfo> = data
        .design
        .metrics
        .iter()
        .map(|m| MetricInfo {
            name: m.name.clone(),
            goal: match m.goal {
                Goal::Maximize => "maximize".into(),
                Goal::Minimize => "minimize".into(),
            },
            kind: kind_of(&m.name),
        })
        .collect();
    let mut skipped = Vec::new();
    for (name, (numbers, booleans, other)) in &seen {
        if metrics.iter().any(|m| m.name == *name) {
            continue;
        }
        if *numbers || *booleans {
            metrics.push(MetricInfo {
                name: name.to_string(),
                goal: "undeclared".into(),
                kind: kind_of(name),
            });
        } else if *other {
            skipped.push(name.to_string());
        }
    }
    (metrics, skipped)
}

/// Values of metric number `metric` in succeeded runs, keyed by seed: runs
/// with equal seeds pair up (DESIGN §4).
fn values_by_seed<'a>(
    runs: impl Iterator<Item = &'a RunData>,
    metric: Option<u16>,
) -> BTreeMap<u64, f64> {
    let Some(metric) = metric else {
        return BTreeMap::new();
    };
    runs.filter(|r| r.status == "succeeded")
        .filter_map(|r| {
            r.metrics
                .iter()
                .find(|(key, _)| *key == metric)
                .and_then(|(_, value)| value.as_number())
                .map(|v| (r.seed, v))
        })
        .collect()
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
type Values<'m> = BTreeMap<(u32, &'m str), BTreeMap<u64, f64>>;

fn cost_statistics(runs: &[&RunData], succeeded: u64) -> Option<CostStatistics> {
    let costs: Vec<f64> = runs.iter().filter_map(|r| r.cost_usd).collect();
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

pub fn analyse(data: &ExperimentData, min_effect: Option<f64>) -> Analysis {
    let (metrics, skipped_metrics) = metric_infos(data);
    let mut runs_by_variation: BTreeMap<u32, Vec<&RunData>> = BTreeMap::new();
    for run in &data.runs {
        runs_by_variation
            .entry(run.variation)
            .or_default()
            .push(run);
    }
    let empty = Vec::new();

    let mut values: Values = BTreeMap::new();
    let mut variations = Vec::new();
    for variation in &data.variations {
        let runs = runs_by_variation.get(&variation.index).unwrap_or(&empty);
        let count = |status: &str| runs.iter().filter(|r| r.status == status).count() as u64;
        let (succeeded, failed, cancelled) =
            (count("succeeded"), count("failed"), count("cancelled"));
        let ended = succeeded + failed;
        let mut per_metric = BTreeMap::new();
        for metric in &metrics {
            let by_seed = values_by_seed(runs.iter().copied(), data.metric_index(&metric.name));
            let list: Vec<f64> = by_seed.values().copied().collect();
            if let Some(description) = stats::describe(&list) {
                let seed =
                    data.design.seed ^ (u64::from(variation.index) << 32) ^ hash_name(&metric.name);
                let (rate, rate_ci) = if metric.kind == MetricKind::Boolean {
                    (
                        Some(description.mean),
                        interval(stats::wilson_interval(trues(&list), list.len() as u64)),
                    )
                } else {
                    (None, None)
                };
                per_metric.insert(
                    metric.name.clone(),
                    MetricStatistics {
                        n: description.n,
                        mean: description.mean,
                        median: description.median,
                        std: description.std,
                        min: description.min,
                        max: description.max,
                        ci95_t: interval(description.t_ci),
                        ci95_bootstrap: interval(stats::bootstrap_mean_ci(
                            &list,
                            bootstrap_resamples(list.len()),
                            seed,
                        )),
                        bootstrap_resamples: bootstrap_resamples(list.len()),
                        rate,
                        rate_ci95_wilson: rate_ci,
                    },
                );
            }
            values.insert((variation.index, metric.name.as_str()), by_seed);
        }
        variations.push(VariationStatistics {
            index: variation.index,
            name: variation.name(),
            // In a comparison the name already says which experiment.
            label: label(
                &variation
                    .axis_values
                    .iter()
                    .filter(|(axis, _)| Some(*axis) != data.design.compare_only_across.as_ref())
                    .map(|(axis, value)| (axis.clone(), value.clone()))
                    .collect(),
            ),
            axis_values: variation.axis_values.clone(),
            succeeded,
            failed,
            cancelled,
            unfinished: runs.len() as u64 - succeeded - failed - cancelled,
            failure_rate: (ended > 0).then(|| failed as f64 / ended as f64),
            failure_rate_ci95_wilson: interval(stats::wilson_interval(failed, ended)),
            metrics: per_metric,
            cost: cost_statistics(runs, succeeded),
        });
    }

    // Each variation's values sorted once: rank tests and Cliff's delta then merge in linear time.
    let sorted: BTreeMap<(u32, &str), Vec<f64>> = values
        .iter()
        .map(|(key, by_seed)| (*key, sorted_values(by_seed.values().copied())))
        .collect();
    let baseline = data.design.baseline.as_ref().and_then(|baseline| {
        data.variations
            .iter()
            .find(|v| {
                v.axis_values
                    .iter()
                    .all(|(k, value)| baseline.get(k) == Some(value))
            })
            .map(|v| v.index)
    });
    let displays: BTreeMap<String, String> = variations
        .iter()
        .map(|v| (v.name.clone(), format!("{} ({})", v.name, v.label)))
        .collect();
    let comparable = |a: &VariationData, b: &VariationData| match &data.design.compare_only_across {
        None => true,
        Some(axis) => {
            a.axis_values.get(axis) != b.axis_values.get(axis)
                && a.axis_values
                    .iter()
                    .all(|(k, v)| k == axis || b.axis_values.get(k) == Some(v))
        }
    };
    let mut comparisons = Vec::new();
    for metric in &metrics {
        let start = comparisons.len();
        let mut pairs = Vec::new();
        for (i, a) in data.variations.iter().enumerate() {
            for b in data.variations[i + 1..].iter().filter(|b| comparable(a, b)) {
                // The baseline is always the second side, so differences read "other minus baseline".
                pairs.push(if Some(a.index) == baseline {
                    (b, a)
                } else {
                    (a, b)
                });
            }
        }
        let empty_values = BTreeMap::new();
        let no_values = Vec::new();
        let side = |variation: &VariationData| {
            let key = (variation.index, metric.name.as_str());
            Side {
                name: variation.name(),
                values: values.get(&key).unwrap_or(&empty_values),
                sorted: sorted.get(&key).unwrap_or(&no_values),
            }
        };
        let compare_pair = |(a, b): &(&VariationData, &VariationData)| {
            compare(metric, side(a), side(b), Some(b.index) == baseline)
        };
        // Pairs are independent: share them among the cores (a million-run
        // report spends most of its time here).
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8);
        let chunk = pairs.len().div_ceil(threads).max(1);
        let results: Vec<Vec<Comparison>> = std::thread::scope(|scope| {
            let handles: Vec<_> = pairs
                .chunks(chunk)
                .map(|part| scope.spawn(|| part.iter().map(compare_pair).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("comparison thread"))
                .collect()
        });
        comparisons.extend(results.into_iter().flatten());
        adjust_and_judge(&mut comparisons[start..], metric, &displays);
    }

    let mut pooled_comparisons = pooled_comparisons(data, &metrics, &values);
    if let Some(effect) = min_effect {
        // The same three figures for every pair: computed once.
        let (paired, rates, two_sample) = (
            stats::paired_n_for_power(effect, ALPHA, TARGET_POWER),
            stats::n_per_group_for_rates(effect, ALPHA, TARGET_POWER),
            stats::n_per_group_for_power(effect, ALPHA, TARGET_POWER),
        );
        for comparison in comparisons.iter_mut().chain(&mut pooled_comparisons) {
            comparison.runs_needed_for_min_effect = match comparison.power_test.as_str() {
                "paired_t" => paired,
                "two_rates_z" => rates,
                _ => two_sample,
            };
        }
    }
    let cost_frontiers = cost_frontiers(&metrics, &variations);
    let main_effects = main_effects(data, &metrics, &values);
    Analysis {
        experiment: data.name.clone(),
        state: data.state.clone(),
        partial: data.state == "running"
            || data
                .runs
                .iter()
                .any(|r| r.status == "pending" || r.status == "cancelled"),
        total_runs: data.runs.len(),
        interaction: interaction(data, &metrics, &values, &main_effects),
        main_effects,
        failure_modes: failure_modes(data),
        has_cost: variations.iter().any(|v| v.cost.is_some()),
        cost_frontiers,
        metrics,
        skipped_metrics,
        variations,
        comparisons,
        pooled_comparisons,
        baseline: baseline.map(|index| format!("var-{index:03}")),
        compared_experiments: Vec::new(),
        notes: Vec::new(),
        min_effect,
        runs_needed_for_min_effect: min_effect.map(|effect| {
            (
                stats::n_per_group_for_power(effect, ALPHA, TARGET_POWER),
                stats::paired_n_for_power(effect, ALPHA, TARGET_POWER),
            )
        }),
    }
}

fn trues(values: &[f64]) -> u64 {
    values.iter().filter(|v| **v > 0.5).count() as u64
}

fn sorted_values(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut list: Vec<f64> = values.collect();
    list.sort_by(f64::total_cmp);
    list
}

/// Holm's adjustment over one metric's comparisons, and separately over its
/// baseline comparisons (a smaller family, so more power); then the verdicts.
fn adjust_and_judge(
    comparisons: &mut [Comparison],
    metric: &MetricInfo,
    displays: &BTreeMap<String, String>,
) {
    let all: Vec<usize> = (0..comparisons.len())
        .filter(|&i| comparisons[i].primary_p.is_some())
        .collect();
    let against_baseline: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| comparisons[i].against_baseline)
        .collect();
    for (family, baseline_family) in [(all, false), (against_baseline, true)] {
        let p_values: Vec<f64> = family
            .iter()
            .map(|&i| comparisons[i].primary_p.unwrap())
            .collect();
        for (position, adjusted) in stats::holm(&p_values).into_iter().enumerate() {
            let comparison = &mut comparisons[family[position]];
            if baseline_family {
                comparison.p_adjusted_baseline = Some(adjusted);
            } else {
                comparison.p_adjusted = Some(adjusted);
            }
        }
    }
    for comparison in comparisons.iter_mut() {
        let p = comparison.p_adjusted_baseline.or(comparison.p_adjusted);
        comparison.significant = p.is_some_and(|p| p < ALPHA);
        let display = |name: &str| displays.get(name).cloned().unwrap_or(name.to_string());
        comparison.verdict = verdict(
            comparison,
            metric,
            &display(&comparison.a),
            &display(&comparison.b),
        );
    }
}

/// `flotilla compare`: each pair of experiments (levels of the axis compared
/// across) on each metric, over all matched variations; runs pair up when
/// they have the same parameters and the same seed.
fn pooled_comparisons(
    data: &ExperimentData,
    metrics: &[MetricInfo],
    values: &Values<'_>,
) -> Vec<Comparison> {
    let Some(across) = &data.design.compare_only_across else {
        return Vec::new();
    };
    let Some(levels) = data
        .design
        .axes
        .iter()
        .find(|a| &a.param == across)
        .map(|a| a.values.clone())
    else {
        return Vec::new();
    };
    // A cell: the parameters other than the compared axis.
    let mut cells: BTreeMap<String, u32> = BTreeMap::new();
    let mut cell_of = BTreeMap::new();
    for variation in &data.variations {
        let mut rest = variation.axis_values.clone();
        rest.remove(across);
        let next = cells.len() as u32;
        let cell = *cells
            .entry(serde_json::to_string(&rest).unwrap_or_default())
            .or_insert(next);
        cell_of.insert(variation.index, cell);
    }
    let level_name = |level: &Value| flotilla_shared::grid::value_as_argument(level);
    let displays: BTreeMap<String, String> = levels
        .iter()
        .map(|l| (level_name(l), level_name(l)))
        .collect();
    let mut comparisons = Vec::new();
    for metric in metrics {
        let start = comparisons.len();
        let pooled = |level: &Value| -> BTreeMap<(u32, u64), f64> {
            data.variations
                .iter()
                .filter(|v| v.axis_values.get(across) == Some(level))
                .flat_map(|v| {
                    let cell = cell_of[&v.index];
                    values
                        .get(&(v.index, metric.name.as_str()))
                        .into_iter()
                        .flat_map(move |by_seed| {
                            by_seed
                                .iter()
                                .map(move |(seed, value)| ((cell, *seed), *value))
                        })
                })
                .collect()
        };
        for (i, level_a) in levels.iter().enumerate() {
            for level_b in &levels[i + 1..] {
                let (values_a, values_b) = (pooled(level_a), pooled(level_b));
                let (sorted_a, sorted_b) = (
                    sorted_values(values_a.values().copied()),
                    sorted_values(values_b.values().copied()),
                );
                comparisons.push(compare(
                    metric,
                    Side {
                        name: level_name(level_a),
                        values: &values_a,
                        sorted: &sorted_a,
                    },
                    Side {
                        name: level_name(level_b),
                        values: &values_b,
                        sorted: &sorted_b,
                    },
                    false,
                ));
            }
        }
        adjust_and_judge(&mut comparisons[start..], metric, &displays);
    }
    comparisons
}

/// For each metric, the variations that no other variation matches or beats on
/// both mean quality and mean cost per run (with at least one strictly better).
fn cost_frontiers(metrics: &[MetricInfo], variations: &[VariationStatistics]) -> Vec<CostFrontier> {
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

fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One side of a comparison: values keyed for pairing, and the same sorted.
struct Side<'a, K> {
    name: String,
    values: &'a BTreeMap<K, f64>,
    sorted: &'a [f64],
}

/// Mean over sample standard deviation (d_z for paired differences); `None`
/// for fewer than 2 values or no spread. No sort: this runs for every pair.
fn standardised_mean(list: &[f64]) -> Option<f64> {
    if list.len() < 2 {
        return None;
    }
    let centre = mean(list);
    let variance = list.iter().map(|v| (v - centre).powi(2)).sum::<f64>() / (list.len() - 1) as f64;
    (variance > 0.0).then(|| centre / variance.sqrt())
}

fn mean(list: &[f64]) -> f64 {
    if list.is_empty() {
        f64::NAN
    } else {
        list.iter().sum::<f64>() / list.len() as f64
    }
}

fn compare<K: Ord>(
    metric: &MetricInfo,
    a: Side<'_, K>,
    b: Side<'_, K>,
    against_baseline: bool,
) -> Comparison {
    // Order does not matter for these figures: the sorted lists serve.
    let (list_a, list_b) = (a.sorted, b.sorted);
    let (pairs_a, pairs_b) = pair_by_key(a.values, b.values);
    let differences: Vec<f64> = pairs_a.iter().zip(&pairs_b).map(|(x, y)| x - y).collect();
    let welch = stats::welch_t_test(list_a, list_b);
    let paired_t = stats::paired_t_test(&pairs_a, &pairs_b);
    let cohens_d = stats::cohens_d(list_a, list_b);
    let cohens_dz = standardised_mean(&differences);
    let boolean = metric.kind == MetricKind::Boolean;
    let (n_a, n_b) = (list_a.len() as u64, list_b.len() as u64);
    let two_proportion_z = boolean
        .then(|| stats::two_proportion_z_test(trues(list_a), n_a, trues(list_b), n_b))
        .flatten();
    let mcnemar = (boolean && !differences.is_empty())
        .then(|| {
            let only_a = differences.iter().filter(|d| **d > 0.5).count() as u64;
            let only_b = differences.iter().filter(|d| **d < -0.5).count() as u64;
            stats::mcnemar_exact(only_a, only_b)
        })
        .flatten();
    let cohens_h =
        (boolean && n_a > 0 && n_b > 0).then(|| stats::cohens_h(mean(list_a), mean(list_b)));
    let t_interval = |difference: f64, test: Option<stats::TestResult>| {
        test.and_then(|test| {
            if test.statistic == 0.0 {
                return Some([difference, difference]);
            }
            let standard_error = (difference / test.statistic).abs();
            let t = stats::t_quantile(0.975, test.df?)?;
            Some([
                difference - t * standard_error,
                difference + t * standard_error,
            ])
        })
    };
    // Equal seeds pair the runs (DESIGN §4): the paired test removes what the
    // seed explains, so it is the primary test whenever there are pairs.
    // Rates get tests of rates: a t-test on 0/1 fails exactly when one side
    // is all true and the other all false.
    let paired = if boolean {
        !differences.is_empty()
    } else {
        paired_t.is_some()
    };
    let (primary_test, primary, difference, difference_ci95) = match (boolean, paired) {
        (true, true) => {
            let n = pairs_a.len() as u64;
            let ci = stats::newcombe_difference_interval(trues(&pairs_a), n, trues(&pairs_b), n);
            ("mcnemar_exact", mcnemar, mean(&differences), interval(ci))
        }
        (true, false) => {
            let ci = stats::newcombe_difference_interval(trues(list_a), n_a, trues(list_b), n_b);
            (
                "two_proportion_z",
                two_proportion_z,
                mean(list_a) - mean(list_b),
                interval(ci),
            )
        }
        (false, true) => {
            let difference = mean(&differences);
            (
                "paired_t",
                paired_t,
                difference,
                t_interval(difference, paired_t),
            )
        }
        (false, false) => {
            let difference = mean(list_a) - mean(list_b);
            ("welch", welch, difference, t_interval(difference, welch))
        }
    };
    let (power_test, runs_needed, n) = if boolean {
        (
            "two_rates_z",
            cohens_h.and_then(|h| stats::n_per_group_for_rates(h.abs(), ALPHA, TARGET_POWER)),
            n_a.min(n_b),
        )
    } else if paired {
        (
            "paired_t",
            cohens_dz.and_then(|d| stats::paired_n_for_power(d.abs(), ALPHA, TARGET_POWER)),
            pairs_a.len() as u64,
        )
    } else {
        (
            "two_sample_t",
            cohens_d.and_then(|d| stats::n_per_group_for_power(d.abs(), ALPHA, TARGET_POWER)),
            n_a.min(n_b),
        )
    };
    Comparison {
        metric: metric.name.clone(),
        a: a.name,
        b: b.name,
        against_baseline,
        n_a: list_a.len(),
        n_b: list_b.len(),
        difference: if difference.is_finite() {
            difference
        } else {
            0.0
        },
        difference_ci95,
        primary_test: primary_test.to_string(),
        primary_p: primary.map(|t| t.p_value),
        welch: figures(welch),
        mann_whitney: figures(stats::mann_whitney_u_sorted(list_a, list_b)),
        pairs: pairs_a.len(),
        paired_t: figures(paired_t),
        wilcoxon: figures(stats::wilcoxon_signed_rank(&pairs_a, &pairs_b)),
        two_proportion_z: figures(two_proportion_z),
        mcnemar_exact: figures(mcnemar),
        cohens_d,
        cohens_dz,
        cohens_h,
        hedges_g: stats::hedges_g(list_a, list_b),
        cliffs_delta: stats::cliffs_delta_sorted(list_a, list_b),
        p_adjusted: None,
        p_adjusted_baseline: None,
        significant: false,
        runs_needed,
        power_test: power_test.to_string(),
        runs_needed_for_min_effect: None,
        underpowered: runs_needed.is_some_and(|needed| n < needed),
        verdict: String::new(),
    }
}

/// Values of the keys both sides have, matched by a merge of the two ordered maps.
fn pair_by_key<K: Ord>(a: &BTreeMap<K, f64>, b: &BTreeMap<K, f64>) -> (Vec<f64>, Vec<f64>) {
    let (mut pairs_a, mut pairs_b) = (Vec::new(), Vec::new());
    let (mut left, mut right) = (a.iter().peekable(), b.iter().peekable());
    while let (Some((key_a, value_a)), Some((key_b, value_b))) = (left.peek(), right.peek()) {
        match key_a.cmp(key_b) {
            std::cmp::Ordering::Less => {
                left.next();
            }
            std::cmp::Ordering::Greater => {
                right.next();
            }
            std::cmp::Ordering::Equal => {
                pairs_a.push(**value_a);
                pairs_b.push(**value_b);
                left.next();
                right.next();
            }
        }
    }
    (pairs_a, pairs_b)
}

fn short(value: f64) -> String {
    if value == 0.0 || (value.abs() >= 0.01 && value.abs() < 10_000.0) {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{value:.3e}")
    }
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "<0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

/// "A beats B on score by 1.8 [0.9, 2.7], p_adj=0.003", or why no verdict can be given.
fn verdict(comparison: &Comparison, metric: &MetricInfo, a: &str, b: &str) -> String {
    let Some(p_adjusted) = comparison.p_adjusted_baseline.or(comparison.p_adjusted) else {
        if comparison.n_a >= 2 && comparison.n_b >= 2 {
            return format!(
                "{a} vs {b} on {}: the values do not vary (every run, or every pair of runs, agrees; difference {}), so no test applies",
                metric.name,
                short(comparison.difference)
            );
        }
        return format!(
            "{a} vs {b} on {}: not enough data to compare (n={} and n={}, or no variation in the values)",
            metric.name, comparison.n_a, comparison.n_b
        );
    };
    let family = if comparison.p_adjusted_baseline.is_some() {
        "Holm over the baseline comparisons"
    } else {
        "Holm over all pairs"
    };
    let test = match comparison.primary_test.as_str() {
        "paired_t" => "paired t, runs paired by seed",
        "mcnemar_exact" => "McNemar, runs paired by seed",
        "two_proportion_z" => "z-test of rates",
        _ => "Welch",
    };
    if !comparison.significant {
        let ci = comparison
            .difference_ci95
            .map(|[low, high]| format!(" [{}, {}]", short(low), short(high)))
            .unwrap_or_default();
        return format!(
            "no significant difference between {a} and {b} on {} (difference {}{ci}, {test}, p_adj={}, {family})",
            metric.name,
            short(comparison.difference),
            p_text(p_adjusted)
        );
    }
    let a_higher = comparison.difference > 0.0;
    let a_wins = a_higher == metric.higher_is_better();
    let (winner, loser) = if a_wins { (a, b) } else { (b, a) };
    // The interval of winner minus loser.
    let ci = comparison
        .difference_ci95
        .map(|[low, high]| if a_higher { [low, high] } else { [-high, -low] })
        .map(|[low, high]| format!(" [{}, {}]", short(low), short(high)))
        .unwrap_or_default();
    let direction = if metric.goal == "undeclared" {
        " (goal undeclared: higher taken as better)"
    } else {
        ""
    };
    let gap = short(comparison.difference.abs());
    let sense = if metric.goal == "minimize" {
        " (lower is better)"
    } else {
        ""
    };
    format!(
        "{winner} beats {loser} on {} by {gap}{ci}{sense}, {test}, p_adj={}, {family}{direction}",
        metric.name,
        p_text(p_adjusted)
    )
}

fn main_effects(
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
                    .flat_map(|by_repetition| by_repetition.values().copied())
                    .collect();
                if let Some(description) = stats::describe(&list) {
                    levels.push(Level {
                        value: level.clone(),
                        n: description.n,
                        mean: description.mean,
                        ci95_t: interval(description.t_ci),
                    });
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

/// The two-way table for the pair of axes whose main effects on the first
/// metric spread the most.
fn interaction(
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
                        .flat_map(|by_repetition| by_repetition.values().copied())
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

/// An error with numbers and paths masked, so that runs failing the same way group together.
pub fn normalise_error(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut chars = error.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '/'
            && out
                .chars()
                .last()
                .is_none_or(|p| p.is_whitespace() || p == '\'' || p == '"' || p == '(')
        {
            while chars.peek().is_some_and(|n| {
                !n.is_whitespace() && *n != '\'' && *n != '"' && *n != ')' && *n != ':'
            }) {
                chars.next();
            }
            out.push_str("<path>");
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_digit() || *n == '.')
            {
                chars.next();
            }
            out.push('N');
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

fn failure_modes(data: &ExperimentData) -> Vec<FailureMode> {
    let mut modes: BTreeMap<String, FailureMode> = BTreeMap::new();
    let variations: BTreeMap<u32, &VariationData> =
        data.variations.iter().map(|v| (v.index, v)).collect();
    for run in data.runs.iter().filter(|r| r.status == "failed") {
        let Some(variation) = variations.get(&run.variation) else {
            continue;
        };
        let mut parts = Vec::new();
        if run.timed_out {
            parts.push("timeout".to_string());
        } else if let Some(signal) = run.signal {
            parts.push(format!("signal {signal}"));
        } else if let Some(code) = run.exit_code {
            parts.push(format!("exit {code}"));
        }
        parts.push(normalise_error(
            run.error.as_deref().unwrap_or("no error recorded"),
        ));
        let signature = parts.join(": ");
        let mode = modes
            .entry(signature.clone())
            .or_insert_with(|| FailureMode {
                signature,
                count: 0,
                per_variation: BTreeMap::new(),
                example_run: variation.run_name(run.repetition),
            });
        mode.count += 1;
        *mode.per_variation.entry(variation.name()).or_default() += 1;
    }
    let mut modes: Vec<FailureMode> = modes.into_values().collect();
    modes.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.signature.cmp(&b.signature))
    });
    modes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_signatures_mask_numbers_and_paths() {
        assert_eq!(normalise_error("exited with code 3"), "exited with code N");
        assert_eq!(
            normalise_error("cannot open /tmp/run-17/data.csv: missing"),
            normalise_error("cannot open /var/x/y.csv: missing")
        );
        assert_eq!(
            normalise_error("timed out after 1.5s"),
            "timed out after Ns"
        );
    }
}
