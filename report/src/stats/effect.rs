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
pub fn cliffs_delta(a: &[f64], b: &[f64]) -> Option<f64> {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    cliffs_delta_sorted(&a, &b)
}

/// [`cliffs_delta`] on ascending inputs: two pointers, O(n1 + n2).
pub fn cliffs_delta_sorted(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (mut below, mut not_above) = (0usize, 0usize);
    let mut dominance: i64 = 0;
    for x in a {
        while below < b.len() && b[below] < *x {
            below += 1;
        }
        not_above = not_above.max(below);
        while not_above < b.len() && b[not_above] <= *x {
            not_above += 1;
        }
        dominance += below as i64 - (b.len() - not_above) as i64;
    }
    Some(dominance as f64 / (a.len() * b.len()) as f64)
}
