//! Tests between two rates (boolean metrics). A t-test on 0/1 values breaks
//! down exactly where rates differ most (one side all true, the other all
//! false: zero variance on both sides); these tests do not.

use statrs::distribution::{Binomial, DiscreteCDF};

use super::descriptive::{wilson_interval, Interval};
use super::tests_two_sample::{two_sided_normal, TestResult};

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
