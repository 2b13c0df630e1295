//! Per-variation figures: n, mean, median, standard deviation, extremes, and
//! intervals for means and rates.

use statrs::distribution::{ContinuousCDF, Normal};

use super::{SplitMix64, CONFIDENCE};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    /// Sample standard deviation (n - 1 in the denominator); `None` for n < 2.
    pub std: Option<f64>,
    pub min: f64,
    pub max: f64,
    /// Student-t interval of the mean; `None` for n < 2.
    pub t_ci: Option<Interval>,
}

/// Describes finite values; `None` when there are none.
pub fn describe(values: &[f64]) -> Option<Description> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = mean(values);
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let std = sample_variance(values, mean).map(f64::sqrt);
    Some(Description {
        n,
        mean,
        median,
        std,
        min: sorted[0],
        max: sorted[n - 1],
        t_ci: t_interval(values),
    })
}

pub(crate) fn mean(values: &[f64]) -> f64 {
    // Kahan-free two-pass is accurate enough at report sizes; the mean is subtracted before squaring.
    values.iter().sum::<f64>() / values.len() as f64
}

pub(crate) fn sample_variance(values: &[f64], mean: f64) -> Option<f64> {
    let n = values.len();
    (n >= 2).then(|| values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64)
}

/// Student-t interval of the mean at 95 %; `None` for n < 2. Zero variance gives a zero-width interval.
pub fn t_interval(values: &[f64]) -> Option<Interval> {
    let n = values.len();
    let mean = mean(values);
    let sd = sample_variance(values, mean)?.sqrt();
    t_interval_from(n, mean, sd)
}

/// Student-t interval of the mean at 95 % from a summary: the count, the
/// mean and the sample standard deviation (running tallies keep no values).
/// `None` for n < 2.
pub fn t_interval_from(n: usize, mean: f64, sd: f64) -> Option<Interval> {
    if n < 2 {
        return None;
    }
    let half = if sd == 0.0 {
        0.0
    } else {
        let t = super::t_quantile(0.5 + CONFIDENCE / 2.0, (n - 1) as f64)?;
        t * sd / (n as f64).sqrt()
    };
    Some(Interval {
        low: mean - half,
        high: mean + half,
    })
}

/// Wilson score interval of a rate at 95 % (no continuity correction); `None` for n = 0.
pub fn wilson_interval(successes: u64, n: u64) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let z = Normal::new(0.0, 1.0)
        .expect("standard normal")
        .inverse_cdf(0.5 + CONFIDENCE / 2.0);
    let n = n as f64;
    let p = successes as f64 / n;
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * ((p * (1.0 - p) / n) + z * z / (4.0 * n * n)).sqrt() / denominator;
    // With no successes (or no failures) the bound is exactly 0 (or 1);
    // computed, it comes out as rounding noise such as 1.4e-17.
    let successes_seen = successes > 0;
    let failures_seen = p < 1.0;
    Some(Interval {
        low: if successes_seen {
            (centre - half).max(0.0)
        } else {
            0.0
        },
        high: if failures_seen {
            (centre + half).min(1.0)
        } else {
            1.0
        },
    })
}

/// Percentile bootstrap interval of the mean at 95 %, `resamples` resamples
/// drawn with `seed`: the same seed gives the same interval. `None` for n < 2.
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, seed: u64) -> Option<Interval> {
    let n = values.len();
    if n < 2 || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(Interval {
        low: quantile_sorted(&means, tail),
        high: quantile_sorted(&means, 1.0 - tail),
    })
}

/// Linear interpolation between order statistics (NumPy's default method).
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bounds_at_the_edges_are_exact() {
        for n in [1, 3, 7, 20, 1000] {
            let none = wilson_interval(0, n).unwrap();
            assert_eq!(none.low, 0.0, "n={n}");
            assert!(none.high > 0.0 && none.high < 1.0);
            let all = wilson_interval(n, n).unwrap();
            assert_eq!(all.high, 1.0, "n={n}");
            assert!(all.low > 0.0 && all.low < 1.0);
        }
    }
}
