//! A comparison's verdict in words: who beats whom, by how much, how sure.

use super::comparisons::Comparison;
use super::metrics::MetricGoal;
use super::metrics::MetricInfo;
use crate::format::{number, p_value};

/// "A beats B on score by 1.8 [0.9, 2.7], p_adj=0.003", or why no verdict can be given.
pub fn verdict(comparison: &Comparison, metric: &MetricInfo, a: &str, b: &str) -> String {
    let Some(p_adjusted) = comparison.p_adjusted_baseline.or(comparison.p_adjusted) else {
        if comparison.n_a >= 2 && comparison.n_b >= 2 {
            return format!(
                "{a} vs {b} on {}: the values do not vary (every run, or every pair of runs, agrees; difference {}), so no test applies",
                metric.name,
                number(comparison.difference)
            );
        }
        return format!(
            "{a} vs {b} on {}: not enough data to compare (n={} and n={}, or no variation in the values)",
            metric.name, comparison.n_a, comparison.n_b
        );
    };
    let family = if comparison.p_adjusted_baseline.is_some() {
        "Holm over the baseline comparisons"
    } else {
        "Holm over all pairs"
    };
    let test = comparison.primary_test.description();
    if !comparison.significant {
        let ci = comparison
            .difference_ci95
            .map(|[low, high]| format!(", 95% CI [{}, {}] unadjusted", number(low), number(high)))
            .unwrap_or_default();
        return format!(
            "no significant difference between {a} and {b} on {} (difference {}{ci}, {test}, p_adj={}, {family})",
            metric.name,
            number(comparison.difference),
            p_value(p_adjusted)
        );
    }
    let a_higher = comparison.difference > 0.0;
    let a_wins = a_higher == metric.higher_is_better();
    let (winner, loser) = if a_wins { (a, b) } else { (b, a) };
    // The interval of winner minus loser.
    let ci = comparison
        .difference_ci95
        .map(|[low, high]| if a_higher { [low, high] } else { [-high, -low] })
        .map(|[low, high]| format!(" (95% CI [{}, {}] unadjusted)", number(low), number(high)))
        .unwrap_or_default();
    let direction = if metric.goal == MetricGoal::Undeclared {
        " (goal undeclared: higher taken as better)"
    } else {
        ""
    };
    let gap = number(comparison.difference.abs());
    let sense = if metric.goal == MetricGoal::Minimize {
        " (lower is better)"
    } else {
        ""
    };
    format!(
        "{winner} beats {loser} on {} by {gap}{ci}{sense}, {test}, p_adj={}, {family}{direction}",
        metric.name,
        p_value(p_adjusted)
    )
}
