//! Multiple-comparison correction and power analysis.

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::beta::beta_reg;
use statrs::function::gamma::ln_gamma;

/// Holm–Bonferroni adjusted p-values, in the order given.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let mut adjusted = vec![0.0; m];
    let mut running_max: f64 = 0.0;
    for (rank, &index) in order.iter().enumerate() {
        let value = ((m - rank) as f64 * p_values[index]).min(1.0);
        running_max = running_max.max(value);
        adjusted[index] = running_max;
    }
    adjusted
}

/// CDF of the noncentral t distribution, after Lenth's algorithm AS 243
/// (Applied Statistics 38, 1989), to about 1e-12.
pub fn noncentral_t_cdf(t: f64, df: f64, noncentrality: f64) -> f64 {
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    let (tt, delta, negative) = if t < 0.0 {
        (-t, -noncentrality, true)
    } else {
        (t, noncentrality, false)
    };
    let x = tt * tt / (tt * tt + df);
    let mut tail = 0.0;
    if x > 0.0 {
        let lambda = delta * delta;
        let mut p = 0.5 * (-0.5 * lambda).exp();
        let mut q = (2.0 / std::f64::consts::PI).sqrt() * p * delta;
        let mut s = 0.5 - p;
        let mut a = 0.5;
        let b = 0.5 * df;
        let rxb = (1.0 - x).powf(b);
        let log_beta = 0.5 * std::f64::consts::PI.ln() + ln_gamma(b) - ln_gamma(0.5 + b);
        let mut x_odd = beta_reg(a, b, x);
        let mut g_odd = 2.0 * rxb * (a * x.ln() - log_beta).exp();
        let mut x_even = 1.0 - rxb;
        let mut g_even = b * x * rxb;
        tail = p * x_odd + q * x_even;
        let mut term = 1.0;
        while term <= 5000.0 {
            a += 1.0;
            x_odd -= g_odd;
            x_even -= g_even;
            g_odd *= x * (a + b - 1.0) / a;
            g_even *= x * (a + b - 0.5) / (a + 0.5);
            p *= lambda / (2.0 * term);
            q *= lambda / (2.0 * term + 1.0);
            s -= p;
            term += 1.0;
            tail += p * x_odd + q * x_even;
            let error_bound = 2.0 * s * (x_odd - g_odd);
            if error_bound <= 1e-12 {
                break;
            }
        }
    }
    let cdf = tail + normal.cdf(-delta);
    let cdf = if negative { 1.0 - cdf } else { cdf };
    cdf.clamp(0.0, 1.0)
}

/// Power of the two-sided two-sample t-test with `n` runs per variation to
/// detect a standardised difference `effect` (Cohen's d) at level `alpha`.
pub fn two_sample_power(effect: f64, n: u64, alpha: f64) -> Option<f64> {
    if n < 2 {
        return None;
    }
    let df = 2.0 * n as f64 - 2.0;
    power_from(effect * (n as f64 / 2.0).sqrt(), df, alpha)
}

/// Beyond this many degrees of freedom the t distribution is the normal one to
/// far better than report precision.
const NORMAL_DF: f64 = 100_000.0;

fn power_from(noncentrality: f64, df: f64, alpha: f64) -> Option<f64> {
    if df > NORMAL_DF {
        let normal = Normal::new(0.0, 1.0).ok()?;
        let critical = normal.inverse_cdf(1.0 - alpha / 2.0);
        return Some(
            1.0 - normal.cdf(critical - noncentrality) + normal.cdf(-critical - noncentrality),
        );
    }
    let critical = super::t_quantile(1.0 - alpha / 2.0, df)?;
    Some(
        1.0 - noncentral_t_cdf(critical, df, noncentrality)
            + noncentral_t_cdf(-critical, df, noncentrality),
    )
}

/// Smallest runs per variation for which the two-sample t-test reaches `power`;
/// `None` for no effect or more than 10^9 runs.
pub fn n_per_group_for_power(effect: f64, alpha: f64, power: f64) -> Option<u64> {
    let bound = normal_approximation(effect, alpha, power, 2.0);
    smallest_n(|n| two_sample_power(effect, n, alpha), effect, power, bound)
}

/// The normal approximation of the runs needed, used to bound the exact search:
/// k (z_{1-alpha/2} + z_power)^2 / effect^2, with k = 2 for two samples.
fn normal_approximation(effect: f64, alpha: f64, power: f64, k: f64) -> f64 {
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    let z = normal.inverse_cdf(1.0 - alpha / 2.0) + normal.inverse_cdf(power);
    k * z * z / (effect * effect)
}

/// Smallest number of pairs for which the paired t-test reaches `power` for a
/// standardised mean difference `effect` (mean of differences / their deviation).
pub fn paired_n_for_power(effect: f64, alpha: f64, power: f64) -> Option<u64> {
    let bound = normal_approximation(effect, alpha, power, 1.0);
    smallest_n(
        |n| power_from(effect * (n as f64).sqrt(), n as f64 - 1.0, alpha),
        effect,
        power,
        bound,
    )
}

/// Doubling then bisection over n >= 2: power grows with n. `approximate` (the
/// normal approximation) bounds the search; the exact n is a few runs above it.
fn smallest_n(
    power_at: impl Fn(u64) -> Option<f64>,
    effect: f64,
    target: f64,
    approximate: f64,
) -> Option<u64> {
    if !effect.is_finite() || effect == 0.0 || !approximate.is_finite() || approximate > 1e9 {
        return None;
    }
    let reaches = |n: u64| power_at(n).is_some_and(|p| p >= target);
    let limit = (approximate * 2.0 + 16.0) as u64;
    let mut high = 2;
    while !reaches(high) {
        high *= 2;
        if high > limit {
            return None;
        }
    }
    let mut low = (high / 2).max(1);
    if high == 2 {
        return Some(2);
    }
    while high - low > 1 {
        let middle = (low + high) / 2;
        if reaches(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high)
}

/// Cohen's h, the effect size of two rates: 2 asin √a − 2 asin √b
/// (`statsmodels … proportion_effectsize`).
pub fn cohens_h(rate_a: f64, rate_b: f64) -> f64 {
    2.0 * rate_a.sqrt().asin() - 2.0 * rate_b.sqrt().asin()
}

/// Power of the two-sided z-test of two rates with `n` runs per variation for
/// an effect `h` (Cohen's h), by the normal approximation
/// (`statsmodels … NormalIndPower().power(h, n, alpha)`).
pub fn two_rates_power(h: f64, n: u64, alpha: f64) -> Option<f64> {
    if n < 1 {
        return None;
    }
    let normal = Normal::new(0.0, 1.0).ok()?;
    let critical = normal.inverse_cdf(1.0 - alpha / 2.0);
    let shift = h.abs() * (n as f64 / 2.0).sqrt();
    Some(normal.cdf(shift - critical) + normal.cdf(-shift - critical))
}

/// Smallest runs per variation for which the z-test of two rates reaches `power`.
pub fn n_per_group_for_rates(h: f64, alpha: f64, power: f64) -> Option<u64> {
    let bound = normal_approximation(h, alpha, power, 2.0);
    smallest_n(|n| two_rates_power(h, n, alpha), h, power, bound)
}
