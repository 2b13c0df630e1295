//! What a coordinator's status says, as domain types: experiments with
//! their counts, pace, budget and variations, workers, and each limited
//! provider model's use. The coordinator makes them from its state, the
//! wire carries them, and every screen — the live display, `status`, the
//! dashboard and its JSON API — reads these same types.

use serde::Serialize;

use crate::pace::PaceEstimate;
use crate::rate::{Limits, RateKey};
use crate::status::{ExperimentState, RunStatus};

/// Runs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Never started: adaptive sampling had decided their variation.
    pub decided: u64,
}

impl Counts {
    fn slot(&mut self, status: RunStatus) -> &mut u64 {
        match status {
            RunStatus::Pending => &mut self.pending,
            RunStatus::Running => &mut self.running,
            RunStatus::Succeeded => &mut self.succeeded,
            RunStatus::Failed => &mut self.failed,
            RunStatus::Cancelled => &mut self.cancelled,
            RunStatus::Decided => &mut self.decided,
        }
    }

    pub fn add(&mut self, status: RunStatus) {
        *self.slot(status) += 1;
    }

    pub fn remove(&mut self, status: RunStatus) {
        *self.slot(status) -= 1;
    }

    /// Runs that ended in any way.
    pub fn ended(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled + self.decided
    }

    pub fn total(&self) -> u64 {
        self.pending + self.running + self.ended()
    }
}

/// One experiment's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentView {
    pub name: String,
    /// The experiment file's `description`, or empty.
    pub description: String,
    pub state: ExperimentState,
    pub counts: Counts,
    pub variations: Vec<VariationView>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub directory: String,
    pub spent_usd: f64,
    /// What its running runs have spent so far, beyond `spent_usd`: ended
    /// calls and the worst cases of calls in flight, from heartbeats.
    pub running_spend_usd: f64,
    /// Runs per minute lately and the ETA (ARCHITECTURE.md, "Following an experiment").
    pub pace: PaceEstimate,
    /// Why pending runs wait, when no connected worker serves their models.
    pub waiting: Option<String>,
    pub budget: Option<BudgetView>,
    /// Why it ended, when its state alone does not say.
    pub end_reason: Option<String>,
    /// `w2: exited with code 1 (see workers/w2/setup.log)`: workers that take none of its runs.
    pub setup_failures: Vec<String>,
    /// How its calls used the response cache, and what that saved.
    pub cache: crate::calls::CacheSavings,
}

/// The budget ledger's figures (ARCHITECTURE.md, invariant 1), in dollars.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetView {
    pub total_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub left_usd: f64,
    /// Spent plus the mean observed cost of every run not finished (of a
    /// running run, what it has spent so far when that is more); `None`
    /// before any attempt finished.
    pub projected_usd: Option<f64>,
    /// Attempts settled so far, and the mean and spread of their costs.
    pub observed_attempts: u64,
    pub mean_cost_usd: f64,
    pub cost_sd_usd: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariationView {
    pub index: u32,
    pub axis_json: String,
    pub counts: Counts,
    /// With adaptive sampling: live, eliminated (by which), or decided, in
    /// words; empty for a fixed sweep.
    pub standing: String,
    /// The primary metric over the variation's succeeded runs so far.
    pub score: Option<ScoreView>,
}

/// A variation's primary metric (the sampled one, else the first declared)
/// over its succeeded runs so far: enough for a mean's t interval or a
/// rate's Wilson interval on any screen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreView {
    pub metric: String,
    /// Runs that reported it.
    pub n: u64,
    /// The mean; for a boolean metric, the rate of `true`.
    pub mean: f64,
    /// The sample standard deviation (0 below two runs).
    pub sd: f64,
    /// A boolean metric: `mean` is a rate.
    pub rate: bool,
    /// Lower is better (`goal: minimize`).
    pub minimize: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerView {
    pub name: String,
    pub connected: bool,
    pub slots: u32,
    pub running: u32,
    pub finished: u64,
    /// `sim/*`, `ollama/llama3.2`, `openrouter/*`.
    pub serves: Vec<String>,
    /// Its shares of shared provider limits and its use of each.
    pub shares: Vec<ShareView>,
}

/// A worker's share of a shared limit, and its calls in the last minute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShareView {
    pub key: RateKey,
    pub share: Limits,
    pub calls_last_minute: u32,
    pub waiting: u32,
}

/// What `status` answers: experiments, workers, and what keeps results from disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    pub experiments: Vec<ExperimentView>,
    pub workers: Vec<WorkerView>,
    /// Set while results cannot be written (ARCHITECTURE.md, invariant 4).
    pub store_problem: Option<String>,
    /// Each limited provider model and how the cluster uses it.
    pub limits: Vec<KeyUseView>,
}

/// One key's use, summed over workers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyUseView {
    pub key: RateKey,
    pub declared: Limits,
    pub shared: bool,
    /// Connected workers that called it.
    pub workers: u32,
    pub calls: u64,
    pub calls_last_minute: u32,
    pub tokens_last_minute: u64,
    pub waiting: u32,
    pub throttled: u64,
    pub waited_ms: u64,
}
