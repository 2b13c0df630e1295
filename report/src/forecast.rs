//! What the rest of an experiment will likely cost, from the costs of the
//! runs that finished: the expected total of the remaining runs with a 95%
//! interval, and whether the budget will likely run out and after about how
//! many more runs.

use serde::Serialize;

/// Observed costs of finished runs, summarised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObservedCosts {
    pub runs: u64,
    pub mean_usd: f64,
    /// Sample standard deviation; `None` for fewer than two runs.
    pub sd_usd: Option<f64>,
}

impl ObservedCosts {
    pub fn of(costs: &[f64]) -> Option<ObservedCosts> {
        let description = crate::stats::describe(costs)?;
        Some(ObservedCosts {
            runs: description.n as u64,
            mean_usd: description.mean,
            sd_usd: description.std,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub remaining_runs: u64,
    pub expected_remaining_usd: f64,
    /// 95% interval of the remaining runs' total: the spread of single runs
    /// plus the uncertainty of the mean.
    pub interval_usd: Option<[f64; 2]>,
    /// Spent plus the expected remaining cost.
    pub expected_final_usd: f64,
    pub budget: Option<BudgetOutlook>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetOutlook {
    pub left_usd: f64,
    pub outcome: Outlook,
    /// About how many more runs the money left pays for, at the mean cost.
    pub runs_affordable: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outlook {
    /// Even the interval's low end passes what is left.
    WillRunOut,
    /// What is left lies within the interval.
    MayRunOut,
    /// Even the interval's high end fits.
    WillLast,
}

/// The forecast for `remaining_runs` more runs, having spent `spent_usd`;
/// `left_usd` is what the budget has left, when there is one.
pub fn forecast(
    observed: ObservedCosts,
    remaining_runs: u64,
    spent_usd: f64,
    left_usd: Option<f64>,
) -> Forecast {
    let r = remaining_runs as f64;
    let expected = r * observed.mean_usd;
    // Var(sum of r new runs) + r² Var(mean) = σ² (r + r²/n).
    let interval = observed.sd_usd.map(|sd| {
        let half = 1.96 * sd * (r + r * r / observed.runs as f64).sqrt();
        [(expected - half).max(0.0), expected + half]
    });
    let budget = left_usd.map(|left| {
        let [low, high] = interval.unwrap_or([expected, expected]);
        let outcome = if low > left {
            Outlook::WillRunOut
        } else if high > left {
            Outlook::MayRunOut
        } else {
            Outlook::WillLast
        };
        BudgetOutlook {
            left_usd: left,
            outcome,
            runs_affordable: (observed.mean_usd > 0.0)
                .then(|| (left / observed.mean_usd + 1e-9).floor() as u64),
        }
    });
    Forecast {
        remaining_runs,
        expected_remaining_usd: expected,
        interval_usd: interval,
        expected_final_usd: spent_usd + expected,
        budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_widens_with_spread_and_with_few_observations() {
        let observed = ObservedCosts::of(&[0.01, 0.03, 0.02, 0.02]).unwrap();
        let f = forecast(observed, 100, 0.08, Some(5.0));
        assert!((f.expected_remaining_usd - 2.0).abs() < 1e-9);
        let [low, high] = f.interval_usd.unwrap();
        // sd 0.008165; half-width 1.96 × sd × √(100 + 10000/4) = 0.816.
        assert!((high - low - 2.0 * 0.8160).abs() < 1e-3, "{low} {high}");
        assert_eq!(f.budget.as_ref().unwrap().outcome, Outlook::WillLast);
        assert_eq!(f.budget.unwrap().runs_affordable, Some(250));
    }

    #[test]
    fn a_budget_below_the_interval_will_run_out() {
        let observed = ObservedCosts::of(&[0.1; 30]).unwrap();
        let f = forecast(observed, 100, 3.0, Some(2.0));
        let budget = f.budget.unwrap();
        assert_eq!(budget.outcome, Outlook::WillRunOut);
        assert_eq!(budget.runs_affordable, Some(20));
        assert!((f.expected_final_usd - 13.0).abs() < 1e-9);
    }
}
