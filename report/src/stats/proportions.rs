//! Tests between two rates (boolean metrics). A t-test on 0/1 values breaks
//! down exactly where rates differ most (one side all true, the other all
//! false: zero variance on both sides); these tests do not.

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};

use super::descriptive::{wilson_interval, Interval};
use super::tests_two_sample::{two_sided_normal, TestResult};
use super::CONFIDENCE;

/// Two-sided z-test of equal rates with the pooled variance
/// (`statsmodels.stats.proportion.proportions_ztest`). `None` when a side is
/// empty or the pooled rate is 0 or 1 (every run agrees: nothing to test).
pub fn two_proportion_z_test(
    successes_a: u64,
    n_a: u64,
    successes_b: u64,
    n_b: u64,
) -> Option<TestResult> {
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let (na, nb) = (n_a as f64, n_b as f64);
    let pooled = (successes_a + successes_b) as f64 / (na + nb);
    let variance = pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb);
    if variance <= 0.0 {
        return None;
    }
    let z = (successes_a as f64 / na - successes_b as f64 / nb) / variance.sqrt();
    Some(TestResult {
        statistic: z,
        p_value: two_sided_normal(z),
        df: None,
    })
}

/// Newcombe's hybrid score interval (his method 10) for the difference of two
/// independent rates, a − b, built from the two Wilson intervals
/// (`statsmodels … confint_proportions_2indep(method="newcomb")`).
pub fn newcombe_difference_interval(
    successes_a: u64,
    n_a: u64,
    successes_b: u64,
    n_b: u64,
) -> Option<Interval> {
    let wilson_a = wilson_interval(successes_a, n_a)?;
    let wilson_b = wilson_interval(successes_b, n_b)?;
    let (p_a, p_b) = (
        successes_a as f64 / n_a as f64,
        successes_b as f64 / n_b as f64,
    );
    let difference = p_a - p_b;
    Some(Interval {
        low: difference - ((p_a - wilson_a.low).powi(2) + (wilson_b.high - p_b).powi(2)).sqrt(),
        high: difference + ((wilson_a.high - p_a).powi(2) + (p_b - wilson_b.low).powi(2)).sqrt(),
    })
}

/// McNemar's exact test for paired rates (`statsmodels … mcnemar(exact=True)`):
/// `only_a` pairs where only a is true, `only_b` where only b is. The statistic
/// is the smaller count. `None` when no pair disagrees.
pub fn mcnemar_exact(only_a: u64, only_b: u64) -> Option<TestResult> {
    let discordant = only_a + only_b;
    if discordant == 0 {
        return None;
    }
    let smaller = only_a.min(only_b);
    let binomial = Binomial::new(0.5, discordant).ok()?;
    Some(TestResult {
        statistic: smaller as f64,
        p_value: (2.0 * binomial.cdf(smaller)).min(1.0),
        df: None,
    })
}

/// McNemar's asymptotic test for paired rates, without continuity correction
/// (`statsmodels … mcnemar(exact=False, correction=False)`): z = (b − c)/√(b + c)
/// over the pairs where only a (`only_a` = b) or only b (`only_b` = c) is
/// true; the statistic is z² (chi-square, one degree of freedom). Fagerland,
/// Lydersen and Laake (BMC Med. Res. Methodol. 2013) found it holds its size
/// even for small samples where the exact test is far too conservative; it is
/// the test [`tango_paired_difference_interval`] inverts, so the two always
/// agree. `None` when no pair disagrees.
pub fn mcnemar_asymptotic(only_a: u64, only_b: u64) -> Option<TestResult> {
    let discordant = only_a + only_b;
    if discordant == 0 {
        return None;
    }
    let z = (only_a as f64 - only_b as f64) / (discordant as f64).sqrt();
    Some(TestResult {
        statistic: z * z,
        p_value: two_sided_normal(z),
        df: Some(1.0),
    })
}

/// Tango's score interval (Stat. Med. 1998) for the difference of two rates
/// measured on the same pairs, a − b: every Δ whose score test is not
/// rejected at 95 %. At Δ = 0 the score test is McNemar's asymptotic test, so
/// the interval excludes 0 exactly when [`mcnemar_asymptotic`] gives p < 0.05
/// (Fagerland, Lydersen and Laake, Stat. Methods Med. Res. 2014, recommend
/// this pair). `both`, `only_a`, `only_b`, `neither` count the pairs by which
/// side was true.
pub fn tango_paired_difference_interval(
    both: u64,
    only_a: u64,
    only_b: u64,
    neither: u64,
) -> Option<Interval> {
    let n = both + only_a + only_b + neither;
    if n == 0 {
        return None;
    }
    let z = Normal::new(0.0, 1.0)
        .expect("standard normal")
        .inverse_cdf(0.5 + CONFIDENCE / 2.0);
    let score = |delta: f64| tango_score(n as f64, only_a as f64, only_b as f64, delta);
    let estimate = (only_a as f64 - only_b as f64) / n as f64;
    // The score falls as Δ grows: bisect for where it crosses ±z.
    let crossing = |mut inside: f64, mut outside: f64, level: f64| {
        if (score(outside) - level) * (score(inside) - level) > 0.0 {
            return outside;
        }
        for _ in 0..100 {
            let middle = (inside + outside) / 2.0;
            if (score(middle) - level).signum() == (score(inside) - level).signum() {
                inside = middle;
            } else {
                outside = middle;
            }
        }
        (inside + outside) / 2.0
    };
    Some(Interval {
        low: crossing(estimate, -1.0, z),
        high: crossing(estimate, 1.0, -z),
    })
}

/// Tango's score statistic for H0: a − b = Δ, with the other discordant
/// cell's probability at its maximum-likelihood value under H0 (his
/// closed form). 0 where it is 0/0 (no discordant pair at Δ = 0).
fn tango_score(n: f64, only_a: f64, only_b: f64, delta: f64) -> f64 {
    let numerator = only_a - only_b - n * delta;
    let a = 2.0 * n;
    let b = -only_a - only_b + (2.0 * n - only_a + only_b) * delta;
    let c = -only_b * delta * (1.0 - delta);
    let restricted = ((b * b - 4.0 * a * c).max(0.0).sqrt() - b) / (2.0 * a);
    let variance = n * (2.0 * restricted + delta * (1.0 - delta));
    if numerator == 0.0 {
        return 0.0;
    }
    if variance <= 0.0 {
        return numerator.signum() * f64::INFINITY;
    }
    numerator / variance.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SplitMix64;

    /// The closed form is the maximum of the likelihood under H0: checked
    /// against a search over the discordant cell's probability.
    #[test]
    fn the_restricted_estimate_maximises_the_likelihood() {
        for (n, b, c, delta) in [
            (30.0, 6.0, 2.0, 0.1),
            (20.0, 0.0, 4.0, -0.05),
            (50.0, 9.0, 9.0, 0.2),
        ] {
            let log_likelihood = |q21: f64| {
                let q12 = q21 + delta;
                let rest = 1.0 - q12 - q21;
                if q21 <= 0.0 || q12 <= 0.0 || rest <= 0.0 {
                    return f64::NEG_INFINITY;
                }
                b * q12.ln() + c * q21.ln() + (n - b - c) * rest.ln()
            };
            let best = (1..200_000)
                .map(|k| k as f64 / 200_000.0)
                .max_by(|x, y| log_likelihood(*x).total_cmp(&log_likelihood(*y)))
                .unwrap();
            let a = 2.0 * n;
            let bb = -b - c + (2.0 * n - b + c) * delta;
            let cc = -c * delta * (1.0 - delta);
            let closed = ((bb * bb - 4.0 * a * cc).sqrt() - bb) / (2.0 * a);
            assert!((closed - best).abs() < 1e-4, "{closed} vs {best}");
        }
    }

    /// The interval and McNemar's asymptotic test always agree: 0 is outside
    /// the interval exactly when p < 0.05, for every table of up to 40 pairs.
    #[test]
    fn the_interval_excludes_zero_exactly_when_mcnemar_rejects() {
        for n in [5u64, 12, 40] {
            for only_a in 0..=n {
                for only_b in 0..=(n - only_a) {
                    let rest = n - only_a - only_b;
                    let ci =
                        tango_paired_difference_interval(rest / 2, only_a, only_b, rest - rest / 2)
                            .unwrap();
                    let rejects =
                        mcnemar_asymptotic(only_a, only_b).is_some_and(|t| t.p_value < 0.05);
                    let excludes = ci.low > 0.0 || ci.high < 0.0;
                    assert_eq!(excludes, rejects, "n={n} b={only_a} c={only_b}: {ci:?}");
                    let estimate = (only_a as f64 - only_b as f64) / n as f64;
                    assert!(ci.low <= estimate + 1e-9 && estimate <= ci.high + 1e-9);
                }
            }
        }
        // The example that mixed an unpaired interval with a paired test:
        // 4 of 10 pairs differ, all one way.
        let ci = tango_paired_difference_interval(0, 0, 4, 6).unwrap();
        assert!(ci.low < -0.4 && ci.high < 0.0);
    }

    /// Coverage by seeded simulation: pairs of correlated 0/1 outcomes with
    /// known cell probabilities; the 95% interval must hold the true
    /// difference in at least 93% of 4,000 samples per setting (Tango and
    /// Fagerland et al. report coverage near 95%; the slack covers the
    /// discreteness at small n and the simulation's own error, ±0.7%).
    #[test]
    fn the_paired_interval_covers_the_true_difference() {
        // (P(both), P(only a), P(only b)) of a pair, and the pairs.
        let settings = [
            (0.3, 0.1, 0.1, 30),
            (0.5, 0.2, 0.05, 30),
            (0.1, 0.05, 0.3, 50),
            (0.6, 0.15, 0.15, 20),
            (0.05, 0.05, 0.1, 100),
        ];
        let mut rng = SplitMix64::new(20_261_204);
        for (p_both, p_only_a, p_only_b, n) in settings {
            let truth = p_only_a - p_only_b;
            let samples = 4_000;
            let mut covered = 0;
            for _ in 0..samples {
                let mut counts = [0u64; 4];
                for _ in 0..n {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    let cell = if u < p_both {
                        0
                    } else if u < p_both + p_only_a {
                        1
                    } else if u < p_both + p_only_a + p_only_b {
                        2
                    } else {
                        3
                    };
                    counts[cell] += 1;
                }
                let ci =
                    tango_paired_difference_interval(counts[0], counts[1], counts[2], counts[3])
                        .unwrap();
                if ci.low <= truth && truth <= ci.high {
                    covered += 1;
                }
            }
            let coverage = covered as f64 / samples as f64;
            assert!(
                coverage >= 0.93,
                "coverage {coverage} for {p_both}/{p_only_a}/{p_only_b}, n={n}"
            );
        }
    }

    #[test]
    fn pairs_that_agree_give_an_interval_around_zero() {
        let ci = tango_paired_difference_interval(20, 0, 0, 10).unwrap();
        assert!(ci.low < 0.0 && ci.high > 0.0);
        // Correlated outcomes: the paired interval is narrower than the
        // independent one (10 of 30 against 6 of 30, 4 pairs differ).
        let paired = tango_paired_difference_interval(6, 4, 0, 20).unwrap();
        let independent = newcombe_difference_interval(10, 30, 6, 30).unwrap();
        assert!(paired.high - paired.low < independent.high - independent.low);
        assert!(tango_paired_difference_interval(0, 0, 0, 0).is_none());
    }
}
