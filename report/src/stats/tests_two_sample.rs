//! Hypothesis tests between two variations: Welch's t and Mann–Whitney U for
//! independent runs; the paired t-test and Wilcoxon signed-rank when seeds pair
//! the runs (ARCHITECTURE.md, "Experiments and runs"). All two-sided, matching SciPy's defaults as noted.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use super::descriptive::{mean, sample_variance};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    pub statistic: f64,
    pub p_value: f64,
    /// Degrees of freedom, for t-tests.
    pub df: Option<f64>,
}

fn two_sided_t(t: f64, df: f64) -> Option<f64> {
    let distribution = StudentsT::new(0.0, 1.0, df).ok()?;
    Some((2.0 * distribution.cdf(-t.abs())).min(1.0))
}

pub(super) fn two_sided_normal(z: f64) -> f64 {
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    (2.0 * normal.cdf(-z.abs())).min(1.0)
}

/// Welch's unequal-variance t-test (`scipy.stats.ttest_ind(a, b, equal_var=False)`).
/// `None` when a side has fewer than 2 values or both have zero variance.
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let (mean_a, mean_b) = (mean(a), mean(b));
    let var_a = sample_variance(a, mean_a)? / a.len() as f64;
    let var_b = sample_variance(b, mean_b)? / b.len() as f64;
    let se2 = var_a + var_b;
    if se2 == 0.0 {
        return None;
    }
    let t = (mean_a - mean_b) / se2.sqrt();
    let df =
        se2 * se2 / (var_a * var_a / (a.len() - 1) as f64 + var_b * var_b / (b.len() - 1) as f64);
    Some(TestResult {
        statistic: t,
        p_value: two_sided_t(t, df)?,
        df: Some(df),
    })
}

/// Paired t-test on `a[i] - b[i]` (`scipy.stats.ttest_rel`). `None` for fewer than
/// 2 pairs, unequal lengths, or differences with zero variance.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<TestResult> {
    if a.len() != b.len() {
        return None;
    }
    let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean_d = mean(&differences);
    let var_d = sample_variance(&differences, mean_d)?;
    if var_d == 0.0 {
        return None;
    }
    let n = differences.len() as f64;
    let t = mean_d / (var_d / n).sqrt();
    let df = n - 1.0;
    Some(TestResult {
        statistic: t,
        p_value: two_sided_t(t, df)?,
        df: Some(df),
    })
}

/// Average ranks (1-based) and the tie groups' sizes.
fn rank_with_ties(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let average = (start + end + 1) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = average;
        }
        if end - start > 1 {
            ties.push(end - start);
        }
        start = end;
    }
    (ranks, ties)
}

/// Mann–Whitney U, normal approximation with tie and continuity correction
/// (`scipy.stats.mannwhitneyu(a, b, method="asymptotic")`). The statistic is U of `a`.
/// `None` when a side is empty or every value is equal.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    mann_whitney_u_sorted(&a, &b)
}

/// [`mann_whitney_u`] on ascending inputs: one merge, O(n1 + n2). Reports sort
/// each variation once and compare it with every other.
pub fn mann_whitney_u_sorted(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (mut i, mut j) = (0, 0);
    let mut rank_sum_a = 0.0;
    let mut tie_sum = 0.0;
    let mut position = 0usize;
    while i < a.len() || j < b.len() {
        let value = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => unreachable!(),
        };
        let from_a = a[i..].iter().take_while(|x| **x == value).count();
        let from_b = b[j..].iter().take_while(|y| **y == value).count();
        let group = from_a + from_b;
        // Tied values share the average of the ranks they span.
        let average_rank = position as f64 + (group as f64 + 1.0) / 2.0;
        rank_sum_a += average_rank * from_a as f64;
        if group > 1 {
            tie_sum += (group as f64).powi(3) - group as f64;
        }
        position += group;
        i += from_a;
        j += from_b;
    }
    let u_a = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let u_b = n1 * n2 - u_a;
    let n = n1 + n2;
    let tie_term = tie_sum / (n * (n - 1.0));
    let sigma = (n1 * n2 / 12.0 * ((n + 1.0) - tie_term)).sqrt();
    if sigma == 0.0 {
        return None;
    }
    let z = (u_a.max(u_b) - n1 * n2 / 2.0 - 0.5) / sigma;
    Some(TestResult {
        statistic: u_a,
        p_value: two_sided_normal(z),
        df: None,
    })
}

/// Wilcoxon signed-rank test on `a[i] - b[i]`, zero differences dropped
/// (`scipy.stats.wilcoxon(a, b)`): the exact distribution when at most 50
/// differences remain and none tie, the normal approximation with tie
/// correction otherwise. The statistic is the smaller of the two rank sums.
/// `None` when no non-zero difference remains or lengths differ.
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Option<TestResult> {
    if a.len() != b.len() {
        return None;
    }
    let differences: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x - y)
        .filter(|d| *d != 0.0)
        .collect();
    let n = differences.len();
    if n == 0 {
        return None;
    }
    let magnitudes: Vec<f64> = differences.iter().map(|d| d.abs()).collect();
    let (ranks, ties) = rank_with_ties(&magnitudes);
    let r_plus: f64 = differences
        .iter()
        .zip(&ranks)
        .filter(|(d, _)| **d > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let r_minus = total - r_plus;
    let statistic = r_plus.min(r_minus);
    let p_value = if n <= 50 && ties.is_empty() {
        exact_signed_rank_p(n, statistic)
    } else {
        let nf = n as f64;
        let mean = nf * (nf + 1.0) / 4.0;
        let tie_term: f64 = ties
            .iter()
            .map(|&t| (t as f64).powi(3) - t as f64)
            .sum::<f64>()
            / 48.0;
        let se = (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term).sqrt();
        if se == 0.0 {
            return None;
        }
        two_sided_normal((r_plus - mean) / se)
    };
    Some(TestResult {
        statistic,
        p_value,
        df: None,
    })
}

/// Two-sided exact p-value of the signed-rank statistic: 2 P(R+ <= statistic),
/// from the distribution of rank sums counted by dynamic programming.
fn exact_signed_rank_p(n: usize, statistic: f64) -> f64 {
    let max_sum = n * (n + 1) / 2;
    let mut counts = vec![0f64; max_sum + 1];
    counts[0] = 1.0;
    for rank in 1..=n {
        for sum in (rank..=max_sum).rev() {
            counts[sum] += counts[sum - rank];
        }
    }
    let total = 2f64.powi(n as i32);
    let threshold = statistic.floor() as usize;
    let tail: f64 = counts[..=threshold.min(max_sum)].iter().sum::<f64>() / total;
    (2.0 * tail).min(1.0)
}
