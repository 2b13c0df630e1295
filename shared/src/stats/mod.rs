//! Statistics for reports (DESIGN §9): descriptive figures with confidence
//! intervals, two-sample and paired tests, effect sizes, multiple-comparison
//! correction and power. Every function is checked against SciPy reference
//! values in `tests/fixtures/stats_reference.json`.
//!
//! Functions return `None` where a figure is undefined (too few values, zero
//! variance); reports say so in words instead of printing NaN.

mod descriptive;
mod effect;
mod power;
mod rng;
mod tests_two_sample;

pub use descriptive::{
    bootstrap_mean_ci, describe, t_interval, wilson_interval, Description, Interval,
};
pub use effect::{cliffs_delta, cohens_d, hedges_g};
pub use power::{
    holm, n_per_group_for_power, noncentral_t_cdf, paired_n_for_power, two_sample_power,
};
pub use rng::SplitMix64;
pub use tests_two_sample::{
    mann_whitney_u, paired_t_test, welch_t_test, wilcoxon_signed_rank, TestResult,
};

/// Confidence level of every interval, and the significance level of tests.
pub const CONFIDENCE: f64 = 0.95;
pub const ALPHA: f64 = 0.05;
