//! Statistics for reports (ARCHITECTURE.md, "Reports"): descriptive figures with confidence
//! intervals, two-sample and paired tests, effect sizes, multiple-comparison
//! correction and power. Every function is checked against SciPy reference
//! values in `tests/fixtures/stats_reference.json`.
//!
//! Functions return `None` where a figure is undefined (too few values, zero
//! variance); reports say so in words instead of printing NaN.

mod descriptive;
mod effect;
mod power;
mod proportions;
mod rng;
mod tests_two_sample;

pub use descriptive::{
    bootstrap_mean_ci, describe, t_interval, t_interval_from, wilson_interval, Description,
    Interval,
};
pub use effect::{cliffs_delta, cliffs_delta_sorted, cohens_d, hedges_g};
pub use power::{
    cohens_h, holm, n_per_group_for_power, n_per_group_for_rates, noncentral_t_cdf,
    paired_n_for_power, two_rates_power, two_sample_power,
};
pub use proportions::{
    mcnemar_asymptotic, mcnemar_exact, newcombe_difference_interval,
    tango_paired_difference_interval, two_proportion_z_test,
};
pub use rng::SplitMix64;
pub use tests_two_sample::{
    mann_whitney_u, mann_whitney_u_sorted, paired_t_test, welch_t_test, wilcoxon_signed_rank,
    TestResult,
};

/// Confidence level of every interval, and the significance level of tests.
pub const CONFIDENCE: f64 = 0.95;
pub const ALPHA: f64 = 0.05;

/// Quantile of Student's t with `df` degrees of freedom. statrs' inverse is
/// exact but slow (and can stall) for large df; there Newton's method on the
/// CDF, started from the Cornish–Fisher expansion, converges in a few steps.
pub fn t_quantile(p: f64, df: f64) -> Option<f64> {
    use statrs::distribution::{Continuous, ContinuousCDF, Normal, StudentsT};
    let distribution = StudentsT::new(0.0, 1.0, df).ok()?;
    if df <= 1000.0 {
        return Some(distribution.inverse_cdf(p));
    }
    let z = Normal::new(0.0, 1.0).ok()?.inverse_cdf(p);
    let mut x = z + (z.powi(3) + z) / (4.0 * df);
    for _ in 0..50 {
        let step = (distribution.cdf(x) - p) / distribution.pdf(x);
        x -= step;
        if step.abs() <= 1e-14 * (1.0 + x.abs()) {
            break;
        }
    }
    Some(x)
}
