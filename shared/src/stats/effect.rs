//! Effect sizes: how big a difference is, not just whether it is there.

use super::descriptive::{mean, sample_variance};

/// Cohen's d with the pooled standard deviation; `None` when a side has fewer
/// than 2 values or the pooled deviation is zero.
pub fn cohens_d(a: &[f64], b: &[f64]) -> Option<f64> {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mean_a, mean_b) = (mean(a), mean(b));
    let pooled = ((n1 - 1.0) * sample_variance(a, mean_a)?
        + (n2 - 1.0) * sample_variance(b, mean_b)?)
        / (n1 + n2 - 2.0);
    (pooled > 0.0).then(|| (mean_a - mean_b) / pooled.sqrt())
}

/// Hedges' g: Cohen's d with the small-sample correction J = 1 - 3 / (4 (n1 + n2) - 9).
pub fn hedges_g(a: &[f64], b: &[f64]) -> Option<f64> {
    let correction = 1.0 - 3.0 / (4.0 * (a.len() + b.len()) as f64 - 9.0);
    cohens_d(a, b).map(|d| d * correction)
}

/// Cliff's delta: P(a > b) - P(a < b) over all pairs, in [-1, 1]; `None` when a side is empty.
/// Sorting `b` makes it O((n1 + n2) log n2).
pub fn cliffs_delta(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut sorted = b.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut dominance: i64 = 0;
    for x in a {
        let below = sorted.partition_point(|y| y < x) as i64;
        let not_above = sorted.partition_point(|y| y <= x) as i64;
        let above = sorted.len() as i64 - not_above;
        dominance += below - above;
    }
    Some(dominance as f64 / (a.len() * b.len()) as f64)
}
