//! Every statistic against SciPy/NumPy reference values
//! (tests/fixtures/generate_stats_reference.py), to a relative tolerance of 1e-6.

use flotilla_report::stats::*;
use serde_json::Value;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/stats_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture present")).unwrap()
}

fn close(actual: f64, expected: f64, what: &str) {
    let tolerance = 1e-6 * expected.abs() + 1e-12;
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: got {actual}, SciPy says {expected}"
    );
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap()
}

#[test]
fn descriptive_figures_and_t_intervals() {
    for case in reference()["describe"].as_array().unwrap() {
        let values = floats(&case["values"]);
        let d = describe(&values).unwrap();
        assert_eq!(d.n as u64, case["n"].as_u64().unwrap());
        close(d.mean, f(&case["mean"]), "mean");
        close(d.median, f(&case["median"]), "median");
        close(d.min, f(&case["min"]), "min");
        close(d.max, f(&case["max"]), "max");
        match case.get("std") {
            Some(std) => close(d.std.unwrap(), f(std), "std"),
            None => assert!(d.std.is_none(), "n = 1 has no deviation"),
        }
        match case.get("t_ci") {
            Some(ci) => {
                let ci_ref = floats(ci);
                let ci = d.t_ci.unwrap();
                close(ci.low, ci_ref[0], "t interval low");
                close(ci.high, ci_ref[1], "t interval high");
            }
            None => assert!(d.t_ci.is_none()),
        }
    }
    assert!(describe(&[]).is_none());
}

#[test]
fn wilson_intervals() {
    for case in reference()["wilson"].as_array().unwrap() {
        let ci = wilson_interval(
            case["successes"].as_u64().unwrap(),
            case["n"].as_u64().unwrap(),
        )
        .unwrap();
        close(ci.low, f(&case["low"]), "wilson low");
        close(ci.high, f(&case["high"]), "wilson high");
    }
    assert!(wilson_interval(0, 0).is_none());
}

#[test]
fn two_sample_tests_and_effect_sizes() {
    for case in reference()["two_sample"].as_array().unwrap() {
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let welch = welch_t_test(&a, &b).unwrap();
        close(welch.statistic, f(&case["welch"]["statistic"]), "welch t");
        close(welch.p_value, f(&case["welch"]["p_value"]), "welch p");
        close(welch.df.unwrap(), f(&case["welch"]["df"]), "welch df");
        let mwu = mann_whitney_u(&a, &b).unwrap();
        close(mwu.statistic, f(&case["mann_whitney"]["statistic"]), "U");
        close(mwu.p_value, f(&case["mann_whitney"]["p_value"]), "U p");
        close(cohens_d(&a, &b).unwrap(), f(&case["cohens_d"]), "cohen's d");
        close(hedges_g(&a, &b).unwrap(), f(&case["hedges_g"]), "hedges' g");
        close(
            cliffs_delta(&a, &b).unwrap(),
            f(&case["cliffs_delta"]),
            "cliff's delta",
        );
    }
}

#[test]
fn paired_tests() {
    for case in reference()["paired"].as_array().unwrap() {
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let paired = paired_t_test(&a, &b).unwrap();
        close(
            paired.statistic,
            f(&case["paired_t"]["statistic"]),
            "paired t",
        );
        close(paired.p_value, f(&case["paired_t"]["p_value"]), "paired p");
        let wilcoxon = wilcoxon_signed_rank(&a, &b).unwrap();
        let method = case["wilcoxon"]["method"].as_str().unwrap();
        close(
            wilcoxon.statistic,
            f(&case["wilcoxon"]["statistic"]),
            &format!("wilcoxon statistic ({method})"),
        );
        close(
            wilcoxon.p_value,
            f(&case["wilcoxon"]["p_value"]),
            &format!("wilcoxon p ({method})"),
        );
    }
}

#[test]
fn holm_adjustment() {
    for case in reference()["holm"].as_array().unwrap() {
        let adjusted = holm(&floats(&case["p"]));
        for (got, expected) in adjusted.iter().zip(floats(&case["adjusted"])) {
            close(*got, expected, "holm");
        }
    }
}

#[test]
fn noncentral_t_and_power() {
    let reference = reference();
    for case in reference["nct_cdf"].as_array().unwrap() {
        close(
            noncentral_t_cdf(f(&case["t"]), f(&case["df"]), f(&case["nc"])),
            f(&case["cdf"]),
            "nct cdf",
        );
    }
    for case in reference["power"].as_array().unwrap() {
        let effect = f(&case["effect"]);
        close(
            two_sample_power(effect, 20, ALPHA).unwrap(),
            f(&case["power_at_20"]),
            "power at n=20",
        );
        assert_eq!(
            n_per_group_for_power(effect, ALPHA, 0.8),
            case["n_per_group"].as_u64(),
            "n per group for d={effect}"
        );
        assert_eq!(
            paired_n_for_power(effect, ALPHA, 0.8),
            case["paired_n"].as_u64(),
            "pairs for d={effect}"
        );
    }
    assert_eq!(n_per_group_for_power(0.0, ALPHA, 0.8), None);
}

#[test]
fn undefined_figures_are_none_not_nan() {
    let constant = [2.0, 2.0, 2.0];
    assert!(welch_t_test(&constant, &constant).is_none());
    assert!(cohens_d(&constant, &constant).is_none());
    assert!(paired_t_test(&constant, &constant).is_none());
    assert!(wilcoxon_signed_rank(&constant, &constant).is_none());
    assert!(mann_whitney_u(&constant, &constant).is_none());
    assert!(welch_t_test(&[1.0], &[2.0, 3.0]).is_none());
    let d = describe(&constant).unwrap();
    assert_eq!(d.t_ci.unwrap().low, 2.0);
}

#[test]
fn bootstrap_is_reproducible_and_covers_the_mean() {
    let values: Vec<f64> = (0..40).map(|i| (f64::from(i) * 0.37).sin() * 3.0).collect();
    let first = bootstrap_mean_ci(&values, 2000, 42).unwrap();
    assert_eq!(
        first,
        bootstrap_mean_ci(&values, 2000, 42).unwrap(),
        "same seed, same interval"
    );
    assert_ne!(first, bootstrap_mean_ci(&values, 2000, 43).unwrap());

    // Coverage by simulation: 95 % intervals from samples of a known distribution
    // contain its mean about 95 % of the time (percentile bootstrap runs a little low at n = 30).
    let mut rng = SplitMix64::new(7);
    let trials = 400;
    let mut covered = 0;
    for trial in 0..trials {
        let sample: Vec<f64> = (0..30)
            .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
            .collect();
        let ci = bootstrap_mean_ci(&sample, 1000, trial).unwrap();
        if ci.low <= 0.5 && 0.5 <= ci.high {
            covered += 1;
        }
    }
    let coverage = covered as f64 / trials as f64;
    assert!((0.90..=0.98).contains(&coverage), "coverage {coverage}");
}

#[test]
fn tiny_effects_need_huge_samples_and_answer_at_once() {
    // Differences near zero (two variations that behave the same) must not stall a report.
    let started = std::time::Instant::now();
    assert_eq!(n_per_group_for_power(1e-12, ALPHA, 0.8), None);
    let needed = n_per_group_for_power(0.001, ALPHA, 0.8).unwrap();
    assert!((15_000_000..16_000_000).contains(&needed), "{needed}");
    assert!(two_sample_power(0.01, 1_000_000, ALPHA).unwrap() > 0.99);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn rates_compared_with_the_z_test_and_newcombe_interval() {
    for case in reference()["proportions"].as_array().unwrap() {
        let counts = |key: &str| case[key].as_u64().unwrap();
        let (xa, na, xb, nb) = (
            counts("successes_a"),
            counts("n_a"),
            counts("successes_b"),
            counts("n_b"),
        );
        let test = two_proportion_z_test(xa, na, xb, nb).unwrap();
        close(test.statistic, f(&case["z"]), "z");
        close(test.p_value, f(&case["p_value"]), "z-test p");
        let interval = newcombe_difference_interval(xa, na, xb, nb).unwrap();
        let expected = floats(&case["newcombe"]);
        close(interval.low, expected[0], "newcombe low");
        close(interval.high, expected[1], "newcombe high");
    }
    // Every run agrees: no test, but the interval of the difference exists.
    assert!(two_proportion_z_test(5, 5, 7, 7).is_none());
    assert!(two_proportion_z_test(0, 0, 1, 2).is_none());
    assert!(newcombe_difference_interval(5, 5, 7, 7).is_some());
}

#[test]
fn paired_rates_use_mcnemars_exact_test() {
    for case in reference()["mcnemar"].as_array().unwrap() {
        let test = mcnemar_exact(
            case["only_a"].as_u64().unwrap(),
            case["only_b"].as_u64().unwrap(),
        )
        .unwrap();
        close(test.statistic, f(&case["statistic"]), "mcnemar statistic");
        close(test.p_value, f(&case["p_value"]), "mcnemar p");
    }
    assert!(mcnemar_exact(0, 0).is_none());
}

#[test]
fn paired_rates_are_tested_by_mcnemars_asymptotic_test() {
    for case in reference()["mcnemar_asymptotic"].as_array().unwrap() {
        let test = mcnemar_asymptotic(
            case["only_a"].as_u64().unwrap(),
            case["only_b"].as_u64().unwrap(),
        )
        .unwrap();
        close(test.statistic, f(&case["statistic"]), "mcnemar statistic");
        close(test.p_value, f(&case["p_value"]), "mcnemar p");
    }
    assert!(mcnemar_asymptotic(0, 0).is_none());
}

#[test]
fn power_for_rates_uses_cohens_h() {
    for case in reference()["rates_power"].as_array().unwrap() {
        let h = cohens_h(f(&case["rate_a"]), f(&case["rate_b"]));
        close(h, f(&case["h"]), "cohen's h");
        close(
            two_rates_power(h, 50, 0.05).unwrap(),
            f(&case["power_at_50"]),
            "power at n=50",
        );
        assert_eq!(
            n_per_group_for_rates(h, 0.05, 0.8),
            case["n_per_group"].as_u64(),
            "runs per variation for h={h}"
        );
    }
    assert!(n_per_group_for_rates(0.0, 0.05, 0.8).is_none());
}
