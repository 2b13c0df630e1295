//! Domain types of runs as they travel between coordinator and worker.
//! The wire module converts them to and from protobuf at the edge.

use std::path::PathBuf;
use std::time::Duration;

use crate::naming::run_id;

/// Which run: experiment, variation (1-based) and repetition (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunKey {
    pub experiment: String,
    pub variation: u32,
    pub repetition: u32,
}

impl RunKey {
    pub fn run_id(&self) -> String {
        run_id(self.variation, self.repetition)
    }
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.experiment, self.run_id())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunSpec {
    Command {
        /// Templates; `{param}` placeholders are substituted by the worker.
        argv: Vec<String>,
        /// Where the workdir is on the submitting machine.
        workdir_path: PathBuf,
        /// Content hash of the workdir; workers whose copy differs fetch it.
        workdir_hash: String,
        /// Once per worker before its first run of the experiment.
        setup: Option<crate::config::Hook>,
        /// Once per worker when it has no more runs of the experiment.
        teardown: Option<crate::config::Hook>,
    },
    Noop,
    /// Send messages to a model and score the answer; the worker renders the
    /// templates with the run's parameters.
    Chat(Box<crate::config::ChatRun>),
}

/// One run handed to a worker under a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub lease_id: u64,
    pub run: RunKey,
    pub attempt: u32,
    pub seed: u64,
    /// JSON object of the run's parameters.
    pub params_json: String,
    pub spec: RunSpec,
    pub timeout: Duration,
    /// The experiment's own prices by model (`provider/model`).
    pub prices: std::collections::BTreeMap<String, crate::pricing::Prices>,
    /// What the run may spend, when its experiment has a budget.
    pub budget: Option<AssignedBudget>,
    /// How its calls use the response cache (`cache:` of its experiment).
    pub cache: crate::cache::CachePolicy,
    /// The service tier its calls ask for (`tier:` and `fallback:`).
    pub tier: crate::tier::TierPolicy,
}

/// A run's part of its experiment's budget (ARCHITECTURE.md, invariant 1).
#[derive(Debug, Clone, PartialEq)]
pub struct AssignedBudget {
    /// What the run may spend before it asks for more: the first slice of
    /// its reservation in the coordinator's ledger (ARCHITECTURE.md, invariant 8).
    pub granted: crate::money::Usd,
    /// No run may spend more (`budget.per_run_usd`, else the total).
    pub per_run_cap: crate::money::Usd,
    /// `budget.per_run_usd` was set: reaching the cap fails the run.
    pub per_run_declared: bool,
}

/// Why the gateway refused a run's call for budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetStop {
    /// The call would have taken the run past `budget.per_run_usd`.
    PerRunCap,
    /// The experiment's ledger had no room for it.
    Exhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped by a draining worker: it runs again, and the attempt does not
    /// count against `max_attempts`.
    HandedBack,
}

/// A file of the run's directory, shipped from worker to coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct ShippedFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// What a worker reports when a run attempt ends.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub lease_id: u64,
    pub run: RunKey,
    pub attempt: u32,
    pub outcome: Outcome,
    /// JSON object of metrics, when the run produced them.
    pub metrics_json: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why the run failed, in words; empty on success.
    pub error: String,
    pub stderr_tail: String,
    pub duration_s: f64,
    pub started_at_ms: i64,
    pub files: Vec<ShippedFile>,
    /// Dollars the attempt spent, when known: its metered calls plus `COST_METRIC`.
    pub cost_usd: Option<f64>,
    /// The attempt's LLM calls through the worker's gateway.
    pub calls: Vec<crate::calls::CallRecord>,
    /// The gateway refused one of its calls for budget: the run fails, and is not retried.
    pub budget_stop: Option<BudgetStop>,
}

/// The metric a program reports its own spending in, in dollars; it is taken
/// out of the metrics and recorded as the run's cost.
pub const COST_METRIC: &str = "cost_usd";

impl RunResult {
    /// A failed result of `assignment` with nothing measured yet; run kinds fill in what they learn.
    pub fn failed(assignment: &Assignment, error: String, started_at_ms: i64) -> Self {
        RunResult {
            lease_id: assignment.lease_id,
            run: assignment.run.clone(),
            attempt: assignment.attempt,
            outcome: Outcome::Failed,
            metrics_json: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            error,
            stderr_tail: String::new(),
            duration_s: 0.0,
            started_at_ms,
            files: Vec::new(),
            cost_usd: None,
            calls: Vec::new(),
            budget_stop: None,
        }
    }
}
