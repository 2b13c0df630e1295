//! Confidence sequences: intervals for a mean that hold at every sample
//! size at once, so a scheduler may look after every result and stop when
//! it likes (ARCHITECTURE.md, "Adaptive sampling").
//!
//! - [`GaussianSequence`], for unbounded metrics: the scale-invariant
//!   normal-mixture (t) sequence of Lai (1976), as in Wang and Ramdas,
//!   "Anytime-valid t-tests and confidence sequences for Gaussian means with
//!   unknown variance" (2023). With `S = Σ(xᵢ − μ)` and `V = Σ(xᵢ − μ)²`,
//!   `M_n(μ) = (1 + c²n)^(-1/2) · (1 − c²S² / ((1 + c²n)V))^(-n/2)` is a
//!   nonnegative martingale under the Gaussian null of mean μ whatever its
//!   variance; by Ville's inequality `{μ : M_n(μ) < 1/α}` misses μ at any
//!   time with probability at most α. It is exact for normal data and, as
//!   the tests' simulations show, holds for skewed ones at the sizes sweeps
//!   use (their paired differences are symmetric under the null).
//! - [`BoundedSequence`], for metrics in a known range (booleans, declared
//!   `range`): the predictable plug-in empirical-Bernstein sequence of
//!   Waudby-Smith and Ramdas, "Estimating means of bounded random variables
//!   by betting" (JRSS-B 2024), Theorem 2: valid for any distribution in the
//!   range, with no assumption.
//!
//! Both are intersected over time (the intersection of a confidence
//! sequence's intervals up to n is again one), so intervals only shrink.

use std::sync::Arc;

use crate::stats::Interval;

/// The mixture's scale c² sets the sample sizes a Gaussian sequence is
/// tightest for; it widens only logarithmically past them. Chosen by the
/// simulations of the tests (`simulations.rs`):
/// - on paired differences, which are symmetric when variations are equal,
///   1/4 suits decisions after tens of runs: over sweeps of 8 variations up
///   to 200 runs each, 1/2 to 1/5 save the most runs (about 66%), 1/20
///   saves 62% and 1/50 54%;
/// - on one variation's mean, 1/20: a skewed metric's spread is
///   underestimated from a handful of runs, and at 1/4 the intervals of
///   log-normal means missed in 8% of sweeps; at 1/20 in under 1%.
pub const DIFFERENCE_SCALE: f64 = 1.0 / 4.0;
pub const MEAN_SCALE: f64 = 1.0 / 20.0;

/// The cap on a bet of the bounded sequence (Waudby-Smith and Ramdas' 1/2).
const MAX_BET: f64 = 0.5;

/// A confidence sequence for the mean of a stream of values.
#[derive(Debug, Clone)]
pub enum Sequence {
    Gaussian(GaussianSequence),
    Bounded(BoundedSequence),
}

impl Sequence {
    /// A sequence at error rate `alpha`: bounded when the values are known to
    /// lie in `range`, else Gaussian.
    pub fn new(alpha: f64, range: Option<(f64, f64)>) -> Self {
        Sequence::sharing(&Boundary::new(alpha, MEAN_SCALE, 0), range)
    }

    /// As [`Sequence::new`], at `boundary`'s error rate, sharing its table:
    /// a family of sequences at one rate computes the boundary once.
    pub fn sharing(boundary: &Boundary, range: Option<(f64, f64)>) -> Self {
        match range {
            Some((low, high)) => Sequence::Bounded(BoundedSequence::new(boundary.alpha, low, high)),
            None => Sequence::Gaussian(GaussianSequence::sharing(boundary.clone())),
        }
    }

    pub fn push(&mut self, value: f64) {
        match self {
            Sequence::Gaussian(sequence) => sequence.push(value),
            Sequence::Bounded(sequence) => sequence.push(value),
        }
    }

    /// The interval after the values so far; `None` while it is the whole line.
    pub fn interval(&self) -> Option<Interval> {
        match self {
            Sequence::Gaussian(sequence) => sequence.interval,
            Sequence::Bounded(sequence) => Some(sequence.interval),
        }
    }

    pub fn n(&self) -> u32 {
        match self {
            Sequence::Gaussian(sequence) => sequence.n,
            Sequence::Bounded(sequence) => sequence.n,
        }
    }

    /// The mean of the values so far.
    pub fn mean(&self) -> Option<f64> {
        match self {
            Sequence::Gaussian(sequence) => (sequence.n > 0).then_some(sequence.mean),
            Sequence::Bounded(sequence) => (sequence.n > 0)
                .then(|| sequence.low + sequence.sum / f64::from(sequence.n) * sequence.width),
        }
    }
}

/// The Gaussian sequence's boundary at an error rate: `k_n` of
/// [`GaussianSequence`] for each n up to a size, computed once.
#[derive(Debug, Clone)]
pub struct Boundary {
    alpha: f64,
    scale: f64,
    k: Arc<[f64]>,
}

impl Boundary {
    /// The boundary at `alpha` and mixture scale c² = `scale`, tabled up to `n` values.
    pub fn new(alpha: f64, scale: f64, n: u32) -> Self {
        Boundary {
            alpha,
            scale,
            k: (0..=n).map(|n| boundary_k(alpha, scale, n)).collect(),
        }
    }

    fn k(&self, n: u32) -> f64 {
        self.k
            .get(n as usize)
            .copied()
            .unwrap_or_else(|| boundary_k(self.alpha, self.scale, n))
    }
}

/// `k_n = (1 + c²n)/c² · (1 − (α²/(1 + c²n))^(1/n))`; infinite below two values.
fn boundary_k(alpha: f64, scale: f64, n: u32) -> f64 {
    if n < 2 {
        return f64::INFINITY;
    }
    let n = f64::from(n);
    let spread = 1.0 + scale * n;
    spread / scale * -((2.0 * alpha.ln() - spread.ln()) / n).exp_m1()
}

/// Lai's scale-invariant normal-mixture sequence (see the module).
#[derive(Debug, Clone)]
pub struct GaussianSequence {
    boundary: Boundary,
    n: u32,
    mean: f64,
    /// Σ(xᵢ − mean)², kept by Welford's update.
    squares: f64,
    interval: Option<Interval>,
}

impl GaussianSequence {
    pub fn new(alpha: f64) -> Self {
        GaussianSequence::sharing(Boundary::new(alpha, MEAN_SCALE, 0))
    }

    pub fn sharing(boundary: Boundary) -> Self {
        GaussianSequence {
            boundary,
            n: 0,
            mean: 0.0,
            squares: 0.0,
            interval: None,
        }
    }

    pub fn push(&mut self, value: f64) {
        self.n += 1;
        let delta = value - self.mean;
        self.mean += delta / f64::from(self.n);
        self.squares += delta * (value - self.mean);
        if let Some(now) = self.current() {
            self.interval = Some(match self.interval {
                None => now,
                Some(before) => intersect(before, now),
            });
        }
    }

    /// `{μ : M_n(μ) < 1/α}`: with `d = mean − μ`, `S² / V < k_n` where
    /// `k_n = (1 + c²n)/c² · (1 − (α²/(1 + c²n))^(1/n))`, and `S = n·d`,
    /// `V = squares + n·d²`, so `d² < k·squares / (n(n − k))`.
    fn current(&self) -> Option<Interval> {
        let k = self.boundary.k(self.n);
        let n = f64::from(self.n);
        if k >= n {
            return None;
        }
        let half = (k * self.squares / (n * (n - k))).sqrt();
        Some(Interval {
            low: self.mean - half,
            high: self.mean + half,
        })
    }
}

/// Waudby-Smith and Ramdas' predictable plug-in empirical-Bernstein
/// sequence, on values scaled from `[low, low + width]` to `[0, 1]`.
#[derive(Debug, Clone)]
pub struct BoundedSequence {
    /// log(2/α).
    log_term: f64,
    low: f64,
    width: f64,
    n: u32,
    /// Σ of the scaled values.
    sum: f64,
    /// The predictable estimates before the next value: μ̂ and σ̂².
    estimate: f64,
    variance: f64,
    /// Σ (xᵢ − μ̂ᵢ)² of the regularised variance estimate.
    deviations: f64,
    /// Σλᵢ, Σλᵢxᵢ and Σ vᵢψ(λᵢ).
    bets: f64,
    weighted: f64,
    penalty: f64,
    interval: Interval,
}

impl BoundedSequence {
    pub fn new(alpha: f64, low: f64, high: f64) -> Self {
        BoundedSequence {
            log_term: (2.0 / alpha).ln(),
            low,
            width: (high - low).max(f64::MIN_POSITIVE),
            n: 0,
            sum: 0.0,
            estimate: 0.5,
            variance: 0.25,
            deviations: 0.0,
            bets: 0.0,
            weighted: 0.0,
            penalty: 0.0,
            interval: Interval { low, high },
        }
    }

    pub fn push(&mut self, value: f64) {
        let x = ((value - self.low) / self.width).clamp(0.0, 1.0);
        self.n += 1;
        let t = f64::from(self.n);
        let log_term = self.log_term;
        // λₜ from the estimates of the values before it: predictable.
        let bet = (2.0 * log_term / (self.variance * t * (1.0 + t).ln()))
            .sqrt()
            .min(MAX_BET);
        let v = 4.0 * (x - self.estimate).powi(2);
        let psi = (-(1.0 - bet).ln() - bet) / 4.0;
        self.bets += bet;
        self.weighted += bet * x;
        self.penalty += v * psi;
        self.sum += x;
        self.estimate = (0.5 + self.sum) / (t + 1.0);
        self.deviations += (x - self.estimate).powi(2);
        self.variance = (0.25 + self.deviations) / (t + 1.0);
        let center = self.weighted / self.bets;
        let half = (log_term + self.penalty) / self.bets;
        let now = Interval {
            low: self.low + (center - half).max(0.0) * self.width,
            high: self.low + (center + half).min(1.0) * self.width,
        };
        self.interval = intersect(self.interval, now);
    }
}

/// The intersection of two intervals; a point where they do not meet (the
/// sequence has then already failed, which happens with probability ≤ α).
fn intersect(a: Interval, b: Interval) -> Interval {
    let low = a.low.max(b.low);
    let high = a.high.min(b.high);
    if low <= high {
        Interval { low, high }
    } else {
        let middle = (low + high) / 2.0;
        Interval {
            low: middle,
            high: middle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gaussian_sequence_is_wider_than_a_fixed_sample_interval_and_shrinks() {
        let mut sequence = GaussianSequence::new(0.05);
        sequence.push(1.0);
        assert!(sequence.interval.is_none(), "one value bounds nothing");
        let values: Vec<f64> = (0..100).map(|i| f64::from(i % 10)).collect();
        let mut widths = Vec::new();
        for value in &values {
            sequence.push(*value);
            if let Some(interval) = sequence.interval {
                widths.push(interval.high - interval.low);
            }
        }
        assert!(
            widths.windows(2).all(|w| w[1] <= w[0]),
            "intersected: never wider"
        );
        let interval = sequence.interval.unwrap();
        let fixed = crate::stats::t_interval(&values).unwrap();
        assert!(interval.low < fixed.low && interval.high > fixed.high);
        assert!((interval.high - interval.low) < 3.0 * (fixed.high - fixed.low));
    }

    #[test]
    fn the_bounded_sequence_stays_in_its_range_and_covers_the_rate() {
        let mut sequence = BoundedSequence::new(0.05, 0.0, 1.0);
        for i in 0..400 {
            sequence.push(if i % 4 == 0 { 1.0 } else { 0.0 });
        }
        let interval = sequence.interval;
        assert!(interval.low > 0.15 && interval.high < 0.35, "{interval:?}");
        let mut scaled = BoundedSequence::new(0.05, -10.0, 10.0);
        for i in 0..400 {
            scaled.push(if i % 4 == 0 { 10.0 } else { -10.0 });
        }
        assert!((scaled.interval.low - (-10.0 + 20.0 * interval.low)).abs() < 1e-9);
    }
}
