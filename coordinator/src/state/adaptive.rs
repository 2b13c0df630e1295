//! Adaptive sampling in the scheduler (ARCHITECTURE.md, "Adaptive
//! sampling"): each ended run's metric goes to the experiment's
//! `SequentialAnalysis` in repetition order, and once a variation's question
//! is decided its runs that have not started end `decided`. Runs already
//! running finish, and their results still count.

use flotilla_report::sequential::{Plan, SequentialAnalysis, Slot};
use flotilla_shared::config::ExperimentConfig;
use flotilla_shared::status::RunStatus;

use super::experiment::Experiment;

/// How one run of an adaptive experiment ended, as its sampling sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    Value(f64),
    /// A boolean metric: sampled as 0/1 with bounded sequences.
    Flag(bool),
    Missing,
    NotRun,
}

/// An adaptive experiment's sampling state.
#[derive(Debug, Clone)]
pub struct Adaptive {
    metric: String,
    /// The plan, its range settled when the first repetition is complete.
    plan: Plan,
    analysis: Option<SequentialAnalysis>,
    /// `outcomes[r - 1][v - 1]`: how repetition r of variation v ended.
    outcomes: Vec<Vec<Option<Observed>>>,
    /// Variations whose runs not yet started were ended `decided`: each is
    /// swept once, so that a result costs no more than the variations it decides.
    swept: Vec<bool>,
}

impl Adaptive {
    /// The sampling of `config`, or `None` for a fixed sweep.
    pub fn new(config: &ExperimentConfig) -> Option<Self> {
        let sampling = config.sampling.as_ref()?;
        let grid = flotilla_shared::grid::expand(config);
        let variations = grid.len();
        // Validation made sure `baseline:` names one variation's axis values.
        let baseline = config.baseline.as_ref().and_then(|baseline| {
            grid.iter().position(|v| {
                v.axis_values
                    .iter()
                    .all(|(axis, value)| baseline.get(axis) == Some(value))
            })
        });
        let metric = config.metrics.iter().find(|m| m.name == sampling.metric)?;
        Some(Adaptive {
            metric: metric.name.clone(),
            plan: Plan::of(
                sampling,
                metric,
                variations,
                config.runs_per_variation,
                baseline,
            ),
            analysis: None,
            outcomes: Vec::new(),
            swept: vec![false; variations],
        })
    }

    /// What a run that ended with `status` and `metrics_json` gives the sampling.
    pub fn observed(&self, status: RunStatus, metrics_json: Option<&str>) -> Option<Observed> {
        match status {
            RunStatus::Pending | RunStatus::Running => None,
            RunStatus::Decided => Some(Observed::NotRun),
            RunStatus::Failed | RunStatus::Cancelled => Some(Observed::Missing),
            RunStatus::Succeeded => {
                let metrics: serde_json::Value = metrics_json
                    .and_then(|text| serde_json::from_str(text).ok())
                    .unwrap_or_default();
                Some(match metrics.get(&self.metric) {
                    Some(serde_json::Value::Bool(flag)) => Observed::Flag(*flag),
                    Some(value) => value.as_f64().map_or(Observed::Missing, Observed::Value),
                    None => Observed::Missing,
                })
            }
        }
    }

    pub fn observe(&mut self, variation: u32, repetition: u32, observed: Observed) {
        let (v, r) = (variation as usize - 1, repetition as usize - 1);
        if v >= self.plan.variations {
            return;
        }
        while self.outcomes.len() <= r {
            self.outcomes.push(vec![None; self.plan.variations]);
        }
        self.outcomes[r][v] = Some(observed);
    }

    /// Feeds every repetition whose runs have all ended, in order; returns
    /// the variations (1-based) that want no more runs and were not returned before.
    pub fn advance(&mut self) -> Vec<u32> {
        loop {
            let next = self.analysis.as_ref().map_or(0, |a| a.repetitions()) as usize;
            let Some(row) = self.outcomes.get(next) else {
                break;
            };
            let Some(row) = row.iter().copied().collect::<Option<Vec<Observed>>>() else {
                break;
            };
            let flags = row.iter().any(|o| matches!(o, Observed::Flag(_)));
            let analysis = self
                .analysis
                .get_or_insert_with(|| SequentialAnalysis::new(self.plan.with_flags(flags)));
            let slots: Vec<Slot> = row
                .iter()
                .map(|observed| match observed {
                    Observed::Value(value) => Slot::Value(*value),
                    Observed::Flag(flag) => Slot::Value(f64::from(u8::from(*flag))),
                    Observed::Missing => Slot::Missing,
                    Observed::NotRun => Slot::NotRun,
                })
                .collect();
            analysis.add(&slots);
        }
        let Some(analysis) = &self.analysis else {
            return Vec::new();
        };
        let done: Vec<usize> = (0..self.plan.variations)
            .filter(|&v| !self.swept[v] && !analysis.wants_runs(v))
            .collect();
        for &v in &done {
            self.swept[v] = true;
        }
        done.into_iter().map(|v| v as u32 + 1).collect()
    }

    pub fn analysis(&self) -> Option<&SequentialAnalysis> {
        self.analysis.as_ref()
    }

    /// Variation `variation`'s (1-based) standing in words, for screens.
    pub fn standing_words(&self, variation: u32) -> String {
        let v = variation as usize - 1;
        match &self.analysis {
            None => "live".to_string(),
            Some(analysis) if v < self.plan.variations => {
                let standing = analysis.standings()[v];
                let capped = standing.is_live() && !analysis.wants_runs(v);
                standing.words(
                    |other| flotilla_shared::naming::variation_name(other as u32 + 1),
                    capped.then_some(self.plan.max_runs),
                )
            }
            Some(_) => String::new(),
        }
    }
}

impl Experiment {
    /// Records how a run ended for its sampling, then ends `decided` the
    /// runs that have not started of variations that want no more; returns
    /// those runs.
    pub fn sample_adaptively(&mut self, ended: Option<(usize, Option<&str>)>) -> Vec<(u32, u32)> {
        let Some(mut adaptive) = self.adaptive.take() else {
            return Vec::new();
        };
        if let Some((slot, metrics_json)) = ended {
            let run = &self.runs[slot];
            if let Some(observed) = adaptive.observed(run.status, metrics_json) {
                adaptive.observe(run.variation, run.repetition, observed);
            }
        }
        let mut decided = Vec::new();
        loop {
            let mut more = false;
            for variation in adaptive.advance() {
                for repetition in 1..=self.config.runs_per_variation {
                    let Some(slot) = self.slot_of(variation, repetition) else {
                        continue;
                    };
                    if self.runs[slot].status == RunStatus::Pending {
                        self.set_status(slot, RunStatus::Decided);
                        adaptive.observe(variation, repetition, Observed::NotRun);
                        decided.push((variation, repetition));
                        more = true;
                    }
                }
            }
            if !more {
                break;
            }
        }
        self.adaptive = Some(adaptive);
        decided
    }
}
