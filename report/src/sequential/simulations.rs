//! Proof by simulation: the decisions driven without processes over 2,000
//! seeded sweeps per scenario — normal, skewed (log-normal) and 0/1 metrics;
//! 2, 6 and 24 variations; `runs_per_variation: 200`, `min_runs: 5`,
//! α = 0.05. Under the null (all variations equal) the share of sweeps with
//! any wrong decision must be at most α, and its 95% upper bound (Wilson) at
//! most α + 0.01; under alternatives the true best is named in at least
//! 1 − α of sweeps. Seeded: every run of the tests sees the same sweeps.

use super::{Plan, Question, SequentialAnalysis, Slot, Standing};
use crate::stats::{wilson_interval, SplitMix64};

const SWEEPS: u64 = 2_000;
const ALPHA: f64 = 0.05;
const MAX_RUNS: u32 = 200;

#[derive(Debug, Clone, Copy)]
enum Metric {
    /// N(mean, 1).
    Normal,
    /// exp(N(0, 1)) shifted by the mean: skewed to the right, sd ≈ 2.16.
    Skewed,
    /// 1 with probability `mean`.
    Binary,
}

struct Draws(SplitMix64);

impl Draws {
    fn uniform(&mut self) -> f64 {
        ((self.0.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn value(&mut self, metric: Metric, mean: f64) -> f64 {
        match metric {
            Metric::Normal => mean + self.normal(),
            Metric::Skewed => mean + self.normal().exp(),
            Metric::Binary => f64::from(u8::from(self.uniform() < mean)),
        }
    }
}

fn plan(metric: Metric, question: Question, variations: usize) -> Plan {
    Plan {
        question,
        variations,
        alpha: ALPHA,
        min_runs: 5,
        max_runs: MAX_RUNS,
        maximize: true,
        range: matches!(metric, Metric::Binary).then_some((0.0, 1.0)),
    }
}

/// One sweep: every variation that wants runs gets the next repetition.
fn sweep(plan: Plan, metric: Metric, means: &[f64], seed: u64) -> SequentialAnalysis {
    let mut draws = Draws(SplitMix64::new(seed));
    let mut analysis = SequentialAnalysis::new(plan);
    while !analysis.finished() {
        let slots: Vec<Slot> = (0..plan.variations)
            .map(|v| {
                if analysis.wants_runs(v) {
                    Slot::Value(draws.value(metric, means[v]))
                } else {
                    Slot::NotRun
                }
            })
            .collect();
        analysis.add(&slots);
    }
    analysis
}

/// The share of `SWEEPS` sweeps for which `wrong` holds, and its 95% upper bound.
fn error_rate(
    plan: Plan,
    metric: Metric,
    means: &[f64],
    wrong: impl Fn(&SequentialAnalysis) -> bool,
) -> (f64, f64, f64) {
    let mut errors = 0;
    let mut runs = 0u64;
    for seed in 0..SWEEPS {
        let analysis = sweep(plan, metric, means, seed * 7919 + 1);
        runs += analysis.runs().iter().map(|&r| u64::from(r)).sum::<u64>();
        errors += u64::from(wrong(&analysis));
    }
    let upper = wilson_interval(errors, SWEEPS).unwrap().high;
    let mean_runs = runs as f64 / SWEEPS as f64;
    (errors as f64 / SWEEPS as f64, upper, mean_runs)
}

fn assert_controlled(what: &str, (rate, upper, runs): (f64, f64, f64)) {
    eprintln!("{what}: wrong in {rate:.4} of sweeps (upper {upper:.4}), {runs:.0} runs a sweep");
    assert!(
        rate <= ALPHA && upper <= ALPHA + 0.01,
        "{what}: wrong decisions in {rate} of sweeps (95% upper bound {upper})"
    );
}

fn null_means(metric: Metric, variations: usize) -> Vec<f64> {
    vec![
        if matches!(metric, Metric::Binary) {
            0.5
        } else {
            0.0
        };
        variations
    ]
}

/// The alternative: one variation (the last) better than the rest.
fn alternative_means(metric: Metric, variations: usize) -> Vec<f64> {
    let mut means = null_means(metric, variations);
    means[variations - 1] = match metric {
        Metric::Normal => 1.0,
        Metric::Skewed => 2.0,
        Metric::Binary => 0.85,
    };
    means
}

const METRICS: [Metric; 3] = [Metric::Normal, Metric::Skewed, Metric::Binary];
const SIZES: [usize; 3] = [2, 6, 24];

/// Best, under the null: any elimination is wrong.
fn best_under_the_null(metric: Metric) {
    for variations in SIZES {
        let plan = plan(metric, Question::Best, variations);
        let rate = error_rate(plan, metric, &null_means(metric, variations), |a| {
            a.standings()
                .iter()
                .any(|s| matches!(s, Standing::Eliminated { .. }))
        });
        assert_controlled(
            &format!("best, null, {metric:?}, {variations} variations"),
            rate,
        );
    }
}

#[test]
fn best_eliminates_no_normal_variation_when_all_are_equal() {
    best_under_the_null(Metric::Normal);
}

#[test]
fn best_eliminates_no_skewed_variation_when_all_are_equal() {
    best_under_the_null(Metric::Skewed);
}

#[test]
fn best_eliminates_no_binary_variation_when_all_are_equal() {
    best_under_the_null(Metric::Binary);
}

#[test]
fn best_names_the_true_best_and_never_eliminates_it() {
    for metric in METRICS {
        for variations in SIZES {
            let plan = plan(metric, Question::Best, variations);
            let best = variations - 1;
            let rate = error_rate(plan, metric, &alternative_means(metric, variations), |a| {
                a.leader() != Some(best)
                    || !matches!(a.standings()[best], Standing::Best { .. } | Standing::Live)
            });
            assert_controlled(
                &format!("best, alternative, {metric:?}, {variations} variations"),
                rate,
            );
        }
    }
}

#[test]
fn baseline_decides_no_difference_when_all_are_equal_and_finds_the_better_one() {
    for metric in METRICS {
        for variations in SIZES {
            let question = Question::Baseline {
                baseline: 0,
                min_effect: None,
            };
            let plan = plan(metric, question, variations);
            let null = error_rate(plan, metric, &null_means(metric, variations), |a| {
                a.standings()
                    .iter()
                    .any(|s| matches!(s, Standing::Better { .. } | Standing::Worse { .. }))
            });
            assert_controlled(
                &format!("baseline, null, {metric:?}, {variations} variations"),
                null,
            );
            let better = variations - 1;
            let alternative =
                error_rate(plan, metric, &alternative_means(metric, variations), |a| {
                    let standings = a.standings();
                    let wrong_others = (1..better).any(|v| {
                        matches!(
                            standings[v],
                            Standing::Better { .. } | Standing::Worse { .. }
                        )
                    });
                    wrong_others || !matches!(standings[better], Standing::Better { .. })
                });
            assert_controlled(
                &format!("baseline, alternative, {metric:?}, {variations} variations"),
                alternative,
            );
        }
    }
}

#[test]
fn precision_intervals_cover_every_mean_when_they_stop() {
    for metric in METRICS {
        let width = match metric {
            Metric::Normal => 0.5,
            Metric::Skewed => 1.0,
            Metric::Binary => 0.15,
        };
        for variations in SIZES {
            let plan = plan(metric, Question::Precision { width }, variations);
            let means = alternative_means(metric, variations);
            let truth: Vec<f64> = means
                .iter()
                .map(|m| match metric {
                    Metric::Skewed => m + 0.5f64.exp(),
                    _ => *m,
                })
                .collect();
            let rate = error_rate(plan, metric, &means, |a| {
                (0..variations).any(|v| {
                    let (_, interval) = a.mean(v);
                    interval.is_some_and(|i| truth[v] < i.low || truth[v] > i.high)
                })
            });
            assert_controlled(
                &format!("precision, {metric:?}, {variations} variations"),
                rate,
            );
        }
    }
}

/// The benchmark's scenario (bench/adaptive.py): 8 variations with effects
/// of 0 to 1 standard deviation, at most 200 runs each. Adaptive sampling
/// names the best with at most half the runs a fixed sweep takes.
#[test]
fn best_takes_at_most_half_the_runs_of_a_fixed_sweep_to_name_a_clear_best() {
    let means = [0.0, 0.0, 0.0, 0.0, 0.2, 0.2, 0.5, 1.0];
    let plan = plan(Metric::Normal, Question::Best, means.len());
    let rate = error_rate(plan, Metric::Normal, &means, |a| a.leader() != Some(7));
    assert_controlled("best, 8 variations, effects 0 to 1 sd", rate);
    let fixed = f64::from(MAX_RUNS) * means.len() as f64;
    assert!(
        rate.2 <= fixed / 2.0,
        "{} runs against {fixed} fixed",
        rate.2
    );
}
