//! An adaptive experiment's decisions, as the report states them
//! (ARCHITECTURE.md, "Adaptive sampling"): the same `SequentialAnalysis`
//! the scheduler ran, replayed from the runs in repetition order, with each
//! variation's standing, when it stopped and why, and what stopping saved.

use serde::Serialize;

use flotilla_shared::status::RunStatus;

use super::interval;
use crate::data::ExperimentData;
use crate::sequential::{Plan, Question, SequentialAnalysis, Slot};

#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveSummary {
    pub metric: String,
    pub question: &'static str,
    pub alpha: f64,
    /// How many confidence sequences share α (a union bound).
    pub family: usize,
    pub variations: Vec<AdaptiveLine>,
    /// Runs that ran, and runs never started because their variation was decided.
    pub runs_sampled: u64,
    pub runs_saved: u64,
    /// What the saved runs would have cost, at their variations' mean cost per run.
    pub dollars_saved: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveLine {
    pub variation: String,
    /// Where it stands, in words.
    pub standing: String,
    pub open: bool,
    pub runs: u32,
    pub mean: Option<f64>,
    /// The mean's confidence sequence at α / K.
    pub interval: Option<[f64; 2]>,
}

/// The decisions of an adaptive experiment, or `None` for a fixed one.
pub fn adaptive_summary(data: &ExperimentData, baseline: Option<u32>) -> Option<AdaptiveSummary> {
    let sampling = data.design.sampling.as_ref()?;
    let metric = data
        .design
        .metrics
        .iter()
        .find(|m| m.name == sampling.metric)?;
    let k = data.variations.len();
    let plan = Plan::of(
        sampling,
        metric,
        k,
        data.design.runs_per_variation,
        baseline.map(|b| b as usize - 1),
    );
    let index = data.metric_index(&metric.name);
    let repetitions = data.design.runs_per_variation as usize;
    let mut grid: Vec<Vec<Option<Slot>>> = vec![vec![None; k]; repetitions];
    let mut flags = false;
    let mut cost: Vec<(f64, u32)> = vec![(0.0, 0); k];
    for run in &data.runs {
        let (v, r) = (run.variation as usize - 1, run.repetition as usize - 1);
        if v >= k || r >= repetitions {
            continue;
        }
        if let Some(usd) = run.cost_usd() {
            cost[v].0 += usd;
            cost[v].1 += 1;
        }
        grid[r][v] = match run.status {
            RunStatus::Pending | RunStatus::Running => None,
            RunStatus::Decided => Some(Slot::NotRun),
            RunStatus::Failed | RunStatus::Cancelled => Some(Slot::Missing),
            RunStatus::Succeeded => {
                let value = data.metric_of(run, index);
                flags |= matches!(value, Some(crate::data::MetricValue::Bool(_)));
                Some(
                    value
                        .and_then(|v| v.as_number())
                        .map_or(Slot::Missing, Slot::Value),
                )
            }
        };
    }
    let mut analysis = SequentialAnalysis::new(plan.with_flags(flags));
    for row in &grid {
        let Some(slots) = row.iter().copied().collect::<Option<Vec<Slot>>>() else {
            break;
        };
        analysis.add(&slots);
    }
    let name = |v: usize| data.variations[v].name();
    let variations = (0..k)
        .map(|v| {
            let (mean, sequence) = analysis.mean(v);
            let standing = analysis.standings()[v];
            let capped = standing.is_live() && !analysis.wants_runs(v);
            AdaptiveLine {
                variation: name(v),
                standing: standing.words(name, capped.then_some(plan.max_runs)),
                open: standing.is_live(),
                runs: analysis.runs()[v],
                mean,
                interval: interval(sequence),
            }
        })
        .collect();
    let decided_runs: Vec<u64> = (0..k)
        .map(|v| {
            data.runs
                .iter()
                .filter(|r| r.variation as usize == v + 1 && r.status == RunStatus::Decided)
                .count() as u64
        })
        .collect();
    let dollars_saved = cost.iter().any(|(_, n)| *n > 0).then(|| {
        (0..k)
            .filter(|&v| cost[v].1 > 0)
            .map(|v| decided_runs[v] as f64 * cost[v].0 / f64::from(cost[v].1))
            .sum()
    });
    Some(AdaptiveSummary {
        metric: metric.name.clone(),
        question: sampling.question.name(),
        alpha: plan.alpha,
        family: match plan.question {
            Question::Best => k * (k - 1) / 2,
            Question::Baseline { .. } => k - 1,
            Question::Precision { .. } => k,
        },
        variations,
        runs_sampled: data
            .runs
            .iter()
            .filter(|r| !matches!(r.status, RunStatus::Decided | RunStatus::Pending))
            .count() as u64,
        runs_saved: decided_runs.iter().sum(),
        dollars_saved,
    })
}
