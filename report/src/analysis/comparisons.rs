//! Pairwise comparisons of variations on each metric: the primary test
//! (paired when seeds pair runs up, rates for booleans), the other tests and
//! effect sizes, Holm's adjustment, power, and the verdict in words.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::interval;
use super::keyed::Keyed;
use super::metrics::{MetricInfo, MetricKind};
use super::variations::{sorted_values, trues, Values, VariationStatistics};
use super::verdict::verdict;
use crate::data::{ExperimentData, VariationData};
use crate::stats::{self, ALPHA};

/// The power every "runs needed" figure is for.
const TARGET_POWER: f64 = 0.8;

/// The test a comparison's verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryTest {
    /// Numbers, runs paired by seed.
    PairedT,
    /// Numbers, independent runs.
    Welch,
    /// Booleans, runs paired by seed: McNemar's asymptotic test, the one
    /// Tango's interval of the difference inverts.
    Mcnemar,
    /// Booleans, independent runs.
    TwoProportionZ,
}

impl PrimaryTest {
    /// How a verdict names the test.
    pub fn description(self) -> &'static str {
        match self {
            PrimaryTest::PairedT => "paired t, runs paired by seed",
            PrimaryTest::Mcnemar => "McNemar, runs paired by seed",
            PrimaryTest::TwoProportionZ => "z-test of rates",
            PrimaryTest::Welch => "Welch",
        }
    }
}

/// The test a "runs needed" figure is computed for, with its effect size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerTest {
    /// Paired t-test, effect d_z.
    PairedT,
    /// Two-sample t-test, effect Cohen's d.
    TwoSampleT,
    /// z-test of two rates, effect Cohen's h.
    TwoRatesZ,
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
    pub primary_test: PrimaryTest,
    pub primary_p: Option<f64>,
    pub welch: Option<TestFigures>,
    pub mann_whitney: Option<TestFigures>,
    /// Runs paired by equal seeds.
    pub pairs: usize,
    pub paired_t: Option<TestFigures>,
    pub wilcoxon: Option<TestFigures>,
    /// Boolean metrics: the z-test of two rates and, for paired runs,
    /// McNemar's test (asymptotic: the primary one) and its exact version.
    pub two_proportion_z: Option<TestFigures>,
    pub mcnemar: Option<TestFigures>,
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
    pub power_test: PowerTest,
    /// Runs per variation the same test needs to detect `--min-effect` (taken
    /// as d_z, d or h).
    pub runs_needed_for_min_effect: Option<u64>,
    pub underpowered: bool,
    pub verdict: String,
}

fn figures(result: Option<stats::TestResult>) -> Option<TestFigures> {
    result.map(|r| TestFigures {
        statistic: r.statistic,
        p_value: r.p_value,
        df: r.df,
    })
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
pub fn pooled_comparisons(
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
        let pooled = |level: &Value| -> Keyed<(u32, u64)> {
            Keyed::from_pairs(
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
                                    .map(move |(seed, value)| ((cell, seed), value))
                            })
                    })
                    .collect(),
            )
        };
        for (i, level_a) in levels.iter().enumerate() {
            for level_b in &levels[i + 1..] {
                let (values_a, values_b) = (pooled(level_a), pooled(level_b));
                let (sorted_a, sorted_b) = (
                    sorted_values(values_a.values()),
                    sorted_values(values_b.values()),
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

/// One side of a comparison: values keyed for pairing, and the same sorted.
struct Side<'a, K> {
    name: String,
    values: &'a Keyed<K>,
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

/// The figures both sides give before any test: their values as lists, the
/// pairs matched by seed and the paired differences.
struct Samples<'a> {
    a: &'a [f64],
    b: &'a [f64],
    pairs_a: Vec<f64>,
    pairs_b: Vec<f64>,
    differences: Vec<f64>,
}

impl<'a> Samples<'a> {
    fn of<K: Ord + Copy>(a: &Side<'a, K>, b: &Side<'a, K>) -> Self {
        // Order does not matter for the unpaired figures: the sorted lists serve.
        let (pairs_a, pairs_b) = a.values.pair_with(b.values);
        let differences = pairs_a.iter().zip(&pairs_b).map(|(x, y)| x - y).collect();
        Samples {
            a: a.sorted,
            b: b.sorted,
            pairs_a,
            pairs_b,
            differences,
        }
    }

    fn sizes(&self) -> (u64, u64) {
        (self.a.len() as u64, self.b.len() as u64)
    }
}

/// The tests that apply to a metric's kind; the primary one is chosen from them.
struct Tests {
    welch: Option<stats::TestResult>,
    paired_t: Option<stats::TestResult>,
    two_proportion_z: Option<stats::TestResult>,
    mcnemar: Option<stats::TestResult>,
    mcnemar_exact: Option<stats::TestResult>,
}

impl Tests {
    fn run(samples: &Samples<'_>, boolean: bool) -> Self {
        let (n_a, n_b) = samples.sizes();
        let differences = &samples.differences;
        // Pairs where only a, or only b, was true.
        let discordant = (boolean && !differences.is_empty()).then(|| {
            (
                differences.iter().filter(|d| **d > 0.5).count() as u64,
                differences.iter().filter(|d| **d < -0.5).count() as u64,
            )
        });
        Tests {
            welch: stats::welch_t_test(samples.a, samples.b),
            paired_t: stats::paired_t_test(&samples.pairs_a, &samples.pairs_b),
            two_proportion_z: boolean
                .then(|| stats::two_proportion_z_test(trues(samples.a), n_a, trues(samples.b), n_b))
                .flatten(),
            mcnemar: discordant
                .and_then(|(only_a, only_b)| stats::mcnemar_asymptotic(only_a, only_b)),
            mcnemar_exact: discordant
                .and_then(|(only_a, only_b)| stats::mcnemar_exact(only_a, only_b)),
        }
    }
}

/// The primary test's choice, p-value, difference (a minus b) and its interval.
struct Primary {
    test: PrimaryTest,
    result: Option<stats::TestResult>,
    difference: f64,
    interval: Option<[f64; 2]>,
}

/// Equal seeds pair the runs (ARCHITECTURE.md, "Experiments and runs"): the paired test
/// removes what the seed explains, so it is the primary test whenever there
/// are pairs. Rates get tests of rates: a t-test on 0/1 fails exactly when one
/// side is all true and the other all false.
fn primary(samples: &Samples<'_>, tests: &Tests, boolean: bool) -> Primary {
    let paired = if boolean {
        !samples.differences.is_empty()
    } else {
        tests.paired_t.is_some()
    };
    let (n_a, n_b) = samples.sizes();
    match (boolean, paired) {
        (true, true) => {
            // The interval that inverts the same paired test.
            let ci = paired_rates_interval(&samples.pairs_a, &samples.pairs_b);
            Primary {
                test: PrimaryTest::Mcnemar,
                result: tests.mcnemar,
                difference: mean(&samples.differences),
                interval: interval(ci),
            }
        }
        (true, false) => {
            let ci =
                stats::newcombe_difference_interval(trues(samples.a), n_a, trues(samples.b), n_b);
            Primary {
                test: PrimaryTest::TwoProportionZ,
                result: tests.two_proportion_z,
                difference: mean(samples.a) - mean(samples.b),
                interval: interval(ci),
            }
        }
        (false, true) => {
            let difference = mean(&samples.differences);
            Primary {
                test: PrimaryTest::PairedT,
                result: tests.paired_t,
                difference,
                interval: t_interval(difference, tests.paired_t),
            }
        }
        (false, false) => {
            let difference = mean(samples.a) - mean(samples.b);
            Primary {
                test: PrimaryTest::Welch,
                result: tests.welch,
                difference,
                interval: t_interval(difference, tests.welch),
            }
        }
    }
}

/// Tango's paired interval of a − b over 0/1 values matched in pairs.
pub(crate) fn paired_rates_interval(a: &[f64], b: &[f64]) -> Option<stats::Interval> {
    let mut cells = [0u64; 4];
    for (x, y) in a.iter().zip(b) {
        cells[usize::from(*x > 0.5) * 2 + usize::from(*y > 0.5)] += 1;
    }
    let [neither, only_b, only_a, both] = cells;
    stats::tango_paired_difference_interval(both, only_a, only_b, neither)
}

/// The 95 % interval of a difference from its t statistic: the standard
/// error is the difference over the statistic.
fn t_interval(difference: f64, test: Option<stats::TestResult>) -> Option<[f64; 2]> {
    let test = test?;
    if test.statistic == 0.0 {
        return Some([difference, difference]);
    }
    let standard_error = (difference / test.statistic).abs();
    let t = stats::t_quantile(0.975, test.df?)?;
    Some([
        difference - t * standard_error,
        difference + t * standard_error,
    ])
}

/// Effect sizes of a comparison.
struct Effects {
    cohens_d: Option<f64>,
    cohens_dz: Option<f64>,
    cohens_h: Option<f64>,
}

impl Effects {
    fn of(samples: &Samples<'_>, boolean: bool) -> Self {
        let (n_a, n_b) = samples.sizes();
        Effects {
            cohens_d: stats::cohens_d(samples.a, samples.b),
            cohens_dz: standardised_mean(&samples.differences),
            cohens_h: (boolean && n_a > 0 && n_b > 0)
                .then(|| stats::cohens_h(mean(samples.a), mean(samples.b))),
        }
    }
}

/// Which power test fits the primary test, the runs per variation it needs
/// to detect the observed effect, and the runs the comparison has.
fn power(
    samples: &Samples<'_>,
    primary: PrimaryTest,
    effects: &Effects,
) -> (PowerTest, Option<u64>, u64) {
    let (n_a, n_b) = samples.sizes();
    match primary {
        PrimaryTest::Mcnemar | PrimaryTest::TwoProportionZ => (
            PowerTest::TwoRatesZ,
            effects
                .cohens_h
                .and_then(|h| stats::n_per_group_for_rates(h.abs(), ALPHA, TARGET_POWER)),
            n_a.min(n_b),
        ),
        PrimaryTest::PairedT => (
            PowerTest::PairedT,
            effects
                .cohens_dz
                .and_then(|d| stats::paired_n_for_power(d.abs(), ALPHA, TARGET_POWER)),
            samples.pairs_a.len() as u64,
        ),
        PrimaryTest::Welch => (
            PowerTest::TwoSampleT,
            effects
                .cohens_d
                .and_then(|d| stats::n_per_group_for_power(d.abs(), ALPHA, TARGET_POWER)),
            n_a.min(n_b),
        ),
    }
}

fn compare<K: Ord + Copy>(
    metric: &MetricInfo,
    a: Side<'_, K>,
    b: Side<'_, K>,
    against_baseline: bool,
) -> Comparison {
    let boolean = metric.kind == MetricKind::Boolean;
    let samples = Samples::of(&a, &b);
    let tests = Tests::run(&samples, boolean);
    let primary = primary(&samples, &tests, boolean);
    let effects = Effects::of(&samples, boolean);
    let (power_test, runs_needed, runs_had) = power(&samples, primary.test, &effects);
    Comparison {
        metric: metric.name.clone(),
        a: a.name,
        b: b.name,
        against_baseline,
        n_a: samples.a.len(),
        n_b: samples.b.len(),
        difference: if primary.difference.is_finite() {
            primary.difference
        } else {
            0.0
        },
        difference_ci95: primary.interval,
        primary_test: primary.test,
        primary_p: primary.result.map(|t| t.p_value),
        welch: figures(tests.welch),
        mann_whitney: figures(stats::mann_whitney_u_sorted(samples.a, samples.b)),
        pairs: samples.pairs_a.len(),
        paired_t: figures(tests.paired_t),
        wilcoxon: figures(stats::wilcoxon_signed_rank(
            &samples.pairs_a,
            &samples.pairs_b,
        )),
        two_proportion_z: figures(tests.two_proportion_z),
        mcnemar: figures(tests.mcnemar),
        mcnemar_exact: figures(tests.mcnemar_exact),
        cohens_d: effects.cohens_d,
        cohens_dz: effects.cohens_dz,
        cohens_h: effects.cohens_h,
        hedges_g: stats::hedges_g(samples.a, samples.b),
        cliffs_delta: stats::cliffs_delta_sorted(samples.a, samples.b),
        p_adjusted: None,
        p_adjusted_baseline: None,
        significant: false,
        runs_needed,
        power_test,
        runs_needed_for_min_effect: None,
        underpowered: runs_needed.is_some_and(|needed| runs_had < needed),
        verdict: String::new(),
    }
}

/// Every pair of comparable variations on each metric; the baseline, when
/// there is one, is always the second side so that differences read "other
/// minus baseline".
pub fn pairwise_comparisons(
    data: &ExperimentData,
    metrics: &[MetricInfo],
    variations: &[VariationStatistics],
    values: &Values<'_>,
    baseline: Option<u32>,
) -> Vec<Comparison> {
    let displays: BTreeMap<String, String> = variations
        .iter()
        .map(|v| (v.name.clone(), format!("{} ({})", v.name, v.label)))
        .collect();
    let pairs = comparable_pairs(data, baseline);
    let mut comparisons = Vec::new();
    for metric in metrics {
        let start = comparisons.len();
        // Each variation's values sorted once: rank tests and Cliff's delta
        // then merge in linear time. One metric at a time, to hold less.
        let sorted: BTreeMap<u32, Vec<f64>> = data
            .variations
            .iter()
            .filter_map(|v| {
                let by_seed = values.get(&(v.index, metric.name.as_str()))?;
                Some((v.index, sorted_values(by_seed.values())))
            })
            .collect();
        let empty_values = Keyed::default();
        let no_values = Vec::new();
        let side = |variation: &VariationData| Side {
            name: variation.name(),
            values: values
                .get(&(variation.index, metric.name.as_str()))
                .unwrap_or(&empty_values),
            sorted: sorted.get(&variation.index).unwrap_or(&no_values),
        };
        comparisons.extend(in_parallel(&pairs, |(a, b)| {
            compare(metric, side(a), side(b), Some(b.index) == baseline)
        }));
        adjust_and_judge(&mut comparisons[start..], metric, &displays);
    }
    comparisons
}

/// The pairs to compare: all of them, or in a comparison of experiments only
/// the same parameters in different experiments.
fn comparable_pairs(
    data: &ExperimentData,
    baseline: Option<u32>,
) -> Vec<(&VariationData, &VariationData)> {
    let comparable = |a: &VariationData, b: &VariationData| match &data.design.compare_only_across {
        None => true,
        Some(axis) => {
            a.axis_values.get(axis) != b.axis_values.get(axis)
                && a.axis_values
                    .iter()
                    .all(|(k, v)| k == axis || b.axis_values.get(k) == Some(v))
        }
    };
    let mut pairs = Vec::new();
    for (i, a) in data.variations.iter().enumerate() {
        for b in data.variations[i + 1..].iter().filter(|b| comparable(a, b)) {
            pairs.push(if Some(a.index) == baseline {
                (b, a)
            } else {
                (a, b)
            });
        }
    }
    pairs
}

/// Pairs are independent: share them among the cores (a million-run report
/// spends most of its time comparing).
fn in_parallel<T: Sync>(items: &[T], work: impl Fn(&T) -> Comparison + Sync) -> Vec<Comparison> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&work).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("comparison thread"))
            .collect()
    })
}

/// Runs per variation to detect `effect` standard deviations: (two-sample t, paired t).
pub fn runs_needed_for_min_effect(effect: f64) -> (Option<u64>, Option<u64>) {
    (
        stats::n_per_group_for_power(effect, ALPHA, TARGET_POWER),
        stats::paired_n_for_power(effect, ALPHA, TARGET_POWER),
    )
}

/// Sets each comparison's runs needed to detect `effect` with its own power test.
pub fn size_for_min_effect(comparisons: &mut [Comparison], effect: f64) {
    // The same three figures for every pair: computed once.
    let (paired, rates, two_sample) = (
        stats::paired_n_for_power(effect, ALPHA, TARGET_POWER),
        stats::n_per_group_for_rates(effect, ALPHA, TARGET_POWER),
        stats::n_per_group_for_power(effect, ALPHA, TARGET_POWER),
    );
    for comparison in comparisons {
        comparison.runs_needed_for_min_effect = match comparison.power_test {
            PowerTest::PairedT => paired,
            PowerTest::TwoRatesZ => rates,
            PowerTest::TwoSampleT => two_sample,
        };
    }
}
