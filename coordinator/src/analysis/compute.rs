//! From runs to figures: per-variation statistics, pairwise comparisons,
//! main effects and failure modes (DESIGN §9).

use std::collections::BTreeMap;

use flotilla_shared::config::Goal;
use flotilla_shared::naming::run_id;
use flotilla_shared::stats::{self, Interval, ALPHA};
use serde::Serialize;
use serde_json::Value;

use super::data::{ExperimentData, MetricValue, RunData};

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

#[derive(Debug, Clone, Serialize)]
pub struct VariationStatistics {
    pub index: u32,
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
    pub a: u32,
    pub b: u32,
    pub against_baseline: bool,
    pub n_a: usize,
    pub n_b: usize,
    /// a minus b: the mean of paired differences when runs pair up by seed,
    /// else the difference of means; with the primary test's 95 % interval.
    pub difference: f64,
    pub difference_ci95: Option<[f64; 2]>,
    /// `paired_t` when runs pair up by repetition (equal seeds), else `welch`.
    pub primary_test: String,
    pub primary_p: Option<f64>,
    pub welch: Option<TestFigures>,
    pub mann_whitney: Option<TestFigures>,
    /// Runs paired by repetition (equal seeds).
    pub pairs: usize,
    pub paired_t: Option<TestFigures>,
    pub wilcoxon: Option<TestFigures>,
    pub cohens_d: Option<f64>,
    pub hedges_g: Option<f64>,
    pub cliffs_delta: Option<f64>,
    /// The primary test's p-value after Holm's adjustment over all pairs of this metric.
    pub p_adjusted: Option<f64>,
    /// After Holm's adjustment over the comparisons with the baseline only (a
    /// smaller family, so more power); set on baseline comparisons.
    pub p_adjusted_baseline: Option<f64>,
    pub significant: bool,
    /// Runs per variation needed to detect the observed difference (power 0.8, alpha 0.05).
    pub runs_needed: Option<u64>,
    /// Runs per variation needed to detect `--min-effect` (in standard deviations).
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
    pub per_variation: BTreeMap<u32, u64>,
    pub example_run: String,
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
    pub baseline: Option<u32>,
    pub min_effect: Option<f64>,
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
        .config
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

/// Values of metric number `metric` in succeeded runs, by repetition.
fn values_by_repetition<'a>(
    runs: impl Iterator<Item = &'a RunData>,
    metric: Option<u16>,
) -> BTreeMap<u32, f64> {
    let Some(metric) = metric else {
        return BTreeMap::new();
    };
    runs.filter(|r| r.status == "succeeded")
        .filter_map(|r| {
            r.metrics
                .iter()
                .find(|(key, _)| *key == metric)
                .and_then(|(_, value)| value.as_number())
                .map(|v| (r.repetition, v))
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

    // Values per (variation, metric), keyed by repetition for pairing.
    let mut values: BTreeMap<(u32, &str), BTreeMap<u32, f64>> = BTreeMap::new();
    let mut variations = Vec::new();
    for variation in &data.variations {
        let runs = runs_by_variation.get(&variation.index).unwrap_or(&empty);
        let count = |status: &str| runs.iter().filter(|r| r.status == status).count() as u64;
        let (succeeded, failed, cancelled) =
            (count("succeeded"), count("failed"), count("cancelled"));
        let ended = succeeded + failed;
        let mut per_metric = BTreeMap::new();
        for metric in &metrics {
            let by_repetition =
                values_by_repetition(runs.iter().copied(), data.metric_index(&metric.name));
            let list: Vec<f64> = by_repetition.values().copied().collect();
            if let Some(description) = stats::describe(&list) {
                let seed =
                    data.config.seed ^ (u64::from(variation.index) << 32) ^ hash_name(&metric.name);
                let (rate, rate_ci) = if metric.kind == MetricKind::Boolean {
                    let trues = list.iter().filter(|v| **v > 0.5).count() as u64;
                    (
                        Some(description.mean),
                        interval(stats::wilson_interval(trues, list.len() as u64)),
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
            values.insert((variation.index, metric.name.as_str()), by_repetition);
        }
        variations.push(VariationStatistics {
            index: variation.index,
            label: label(&variation.axis_values),
            axis_values: variation.axis_values.clone(),
            succeeded,
            failed,
            cancelled,
            unfinished: runs.len() as u64 - succeeded - failed - cancelled,
            failure_rate: (ended > 0).then(|| failed as f64 / ended as f64),
            failure_rate_ci95_wilson: interval(stats::wilson_interval(failed, ended)),
            metrics: per_metric,
        });
    }

    // Each variation's values sorted once: rank tests and Cliff's delta then merge in linear time.
    let sorted: BTreeMap<(u32, &str), Vec<f64>> = values
        .iter()
        .map(|(key, by_repetition)| {
            let mut list: Vec<f64> = by_repetition.values().copied().collect();
            list.sort_by(f64::total_cmp);
            (*key, list)
        })
        .collect();
    let baseline = data.config.baseline.as_ref().and_then(|baseline| {
        data.variations
            .iter()
            .find(|v| {
                v.axis_values
                    .iter()
                    .all(|(k, value)| baseline.get(k) == Some(value))
            })
            .map(|v| v.index)
    });
    let labels: BTreeMap<u32, String> = variations
        .iter()
        .map(|v| (v.index, v.label.clone()))
        .collect();
    let mut comparisons = Vec::new();
    for metric in &metrics {
        let start = comparisons.len();
        let mut pairs = Vec::new();
        for (i, a) in data.variations.iter().enumerate() {
            for b in &data.variations[i + 1..] {
                // The baseline is always the second side, so differences read "other minus baseline".
                pairs.push(if Some(a.index) == baseline {
                    (b.index, a.index)
                } else {
                    (a.index, b.index)
                });
            }
        }
        let empty_values = BTreeMap::new();
        let no_values = Vec::new();
        let compare_pair = |&(a, b): &(u32, u32)| {
            let key_a = (a, metric.name.as_str());
            let key_b = (b, metric.name.as_str());
            compare(
                metric,
                a,
                b,
                (
                    values.get(&key_a).unwrap_or(&empty_values),
                    sorted.get(&key_a).unwrap_or(&no_values),
                ),
                (
                    values.get(&key_b).unwrap_or(&empty_values),
                    sorted.get(&key_b).unwrap_or(&no_values),
                ),
                Some(b) == baseline,
                min_effect,
            )
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
        // Holm over this metric's pairs, and over its baseline comparisons alone.
        let all: Vec<usize> = (start..comparisons.len())
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
        for comparison in &mut comparisons[start..] {
            let p = comparison.p_adjusted_baseline.or(comparison.p_adjusted);
            comparison.significant = p.is_some_and(|p| p < ALPHA);
        }
        for comparison in &mut comparisons[start..] {
            comparison.verdict = verdict(comparison, metric, &labels);
        }
    }

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
        metrics,
        skipped_metrics,
        variations,
        comparisons,
        baseline,
        min_effect,
    }
}

fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn compare(
    metric: &MetricInfo,
    a: u32,
    b: u32,
    (values_a, sorted_a): (&BTreeMap<u32, f64>, &[f64]),
    (values_b, sorted_b): (&BTreeMap<u32, f64>, &[f64]),
    against_baseline: bool,
    min_effect: Option<f64>,
) -> Comparison {
    // Order does not matter for these figures: the sorted lists serve.
    let (list_a, list_b) = (sorted_a, sorted_b);
    let (pairs_a, pairs_b) = pair_by_repetition(values_a, values_b);
    let mean = |l: &[f64]| {
        if l.is_empty() {
            f64::NAN
        } else {
            l.iter().sum::<f64>() / l.len() as f64
        }
    };
    let welch = stats::welch_t_test(list_a, list_b);
    let paired_t = stats::paired_t_test(&pairs_a, &pairs_b);
    // Equal seeds pair the runs (DESIGN §4): the paired test removes what the
    // seed explains, so it is the primary test whenever there are pairs.
    let (primary_test, primary, difference) = match paired_t {
        Some(paired) => {
            let differences: Vec<f64> = pairs_a.iter().zip(&pairs_b).map(|(x, y)| x - y).collect();
            ("paired_t", Some(paired), mean(&differences))
        }
        None => ("welch", welch, mean(list_a) - mean(list_b)),
    };
    let difference_ci95 = primary.and_then(|test| {
        if test.statistic == 0.0 {
            return Some([difference, difference]);
        }
        let standard_error = (difference / test.statistic).abs();
        let t = stats::t_quantile(0.975, test.df?)?;
        Some([
            difference - t * standard_error,
            difference + t * standard_error,
        ])
    });
    let cohens_d = stats::cohens_d(list_a, list_b);
    let n = list_a.len().min(list_b.len()) as u64;
    let runs_needed =
        cohens_d.and_then(|d| stats::n_per_group_for_power(d.abs(), ALPHA, TARGET_POWER));
    Comparison {
        metric: metric.name.clone(),
        a,
        b,
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
        mann_whitney: figures(stats::mann_whitney_u_sorted(sorted_a, sorted_b)),
        pairs: pairs_a.len(),
        paired_t: figures(paired_t),
        wilcoxon: figures(stats::wilcoxon_signed_rank(&pairs_a, &pairs_b)),
        cohens_d,
        hedges_g: stats::hedges_g(list_a, list_b),
        cliffs_delta: stats::cliffs_delta_sorted(sorted_a, sorted_b),
        p_adjusted: None,
        p_adjusted_baseline: None,
        significant: false,
        runs_needed,
        runs_needed_for_min_effect: min_effect
            .and_then(|e| stats::n_per_group_for_power(e, ALPHA, TARGET_POWER)),
        underpowered: runs_needed.is_some_and(|needed| n < needed),
        verdict: String::new(),
    }
}

/// Values of the repetitions both variations have, matched by a merge of the
/// two repetition-ordered maps.
fn pair_by_repetition(a: &BTreeMap<u32, f64>, b: &BTreeMap<u32, f64>) -> (Vec<f64>, Vec<f64>) {
    let (mut pairs_a, mut pairs_b) = (Vec::new(), Vec::new());
    let (mut left, mut right) = (a.iter().peekable(), b.iter().peekable());
    while let (Some((rep_a, value_a)), Some((rep_b, value_b))) = (left.peek(), right.peek()) {
        match rep_a.cmp(rep_b) {
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
fn verdict(comparison: &Comparison, metric: &MetricInfo, labels: &BTreeMap<u32, String>) -> String {
    let name = |index: u32| {
        format!(
            "var-{index:03} ({})",
            labels.get(&index).map(String::as_str).unwrap_or("")
        )
    };
    let (a, b) = (name(comparison.a), name(comparison.b));
    let Some(p_adjusted) = comparison.p_adjusted_baseline.or(comparison.p_adjusted) else {
        if comparison.n_a >= 2 && comparison.n_b >= 2 {
            return format!(
                "{a} vs {b} on {}: every run has the same value within each variation (difference {}), so no test applies",
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
    let test = if comparison.primary_test == "paired_t" {
        "paired by seed"
    } else {
        "Welch"
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
    let (winner, loser) = if a_wins { (&a, &b) } else { (&b, &a) };
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
    values: &BTreeMap<(u32, &str), BTreeMap<u32, f64>>,
) -> Vec<MainEffect> {
    let mut effects = Vec::new();
    for axis in &data.config.variations {
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
    values: &BTreeMap<(u32, &str), BTreeMap<u32, f64>>,
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
        data.config
            .variations
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
    for run in data.runs.iter().filter(|r| r.status == "failed") {
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
                example_run: run_id(run.variation, run.repetition),
            });
        mode.count += 1;
        *mode.per_variation.entry(run.variation).or_default() += 1;
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
