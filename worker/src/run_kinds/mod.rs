//! Run kinds: how one assignment is carried out on this worker.

mod chat;
pub mod command;
pub mod hooks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_gateway::Gateway;
use flotilla_shared::clock::now_ms;
use flotilla_shared::run::{Assignment, Outcome, RunResult, RunSpec};
use tokio::sync::oneshot;

use crate::workdir_cache::WorkdirCache;

/// What every run on this worker shares.
pub struct RunContext {
    /// Scratch space: params files and output directories.
    pub scratch: PathBuf,
    pub workdirs: Arc<WorkdirCache>,
    /// Where the runs' programs make their LLM calls.
    pub gateway: Arc<Gateway>,
    /// Output directories not in use. A finished run empties its directory and
    /// returns it, so short runs create and delete no directories at all.
    pub free_output_dirs: Mutex<Vec<PathBuf>>,
    pub output_dirs_made: AtomicUsize,
    /// Where runs ask for more budget: the session forwards it to the coordinator.
    pub top_ups: flotilla_gateway::TopUps,
    /// This worker's name, for setup and teardown (`FLOTILLA_WORKER`).
    pub worker_name: String,
}

impl RunContext {
    pub fn new(
        scratch: PathBuf,
        workdirs: Arc<WorkdirCache>,
        gateway: Arc<Gateway>,
        top_ups: flotilla_gateway::TopUps,
        worker_name: String,
    ) -> Self {
        RunContext {
            scratch,
            workdirs,
            gateway,
            free_output_dirs: Mutex::new(Vec::new()),
            output_dirs_made: AtomicUsize::new(0),
            top_ups,
            worker_name,
        }
    }

    /// An empty output directory for one run.
    pub fn take_output_dir(&self) -> std::io::Result<PathBuf> {
        if let Some(dir) = self.free_output_dirs.lock().expect("not poisoned").pop() {
            return Ok(dir);
        }
        let number = self.output_dirs_made.fetch_add(1, Ordering::Relaxed);
        let dir = self.scratch.join(format!("output-{number}"));
        // Left over from an earlier worker process with the same work dir.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Empties `dir` and makes it available to the next run; `left_empty`
    /// says the run's files were collected from it and there were none.
    pub fn return_output_dir(&self, dir: PathBuf, left_empty: bool) {
        let is_empty =
            left_empty || std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_none());
        let emptied = is_empty
            || std::fs::remove_dir_all(&dir)
                .and_then(|_| std::fs::create_dir(&dir))
                .is_ok();
        if emptied {
            self.free_output_dirs
                .lock()
                .expect("not poisoned")
                .push(dir);
        }
    }
}

/// Carries out `assignment` until it ends, times out or `cancel` fires.
pub async fn execute(
    assignment: Assignment,
    context: Arc<RunContext>,
    cancel: oneshot::Receiver<()>,
) -> RunResult {
    match &assignment.spec {
        RunSpec::Noop => RunResult {
            outcome: Outcome::Succeeded,
            metrics_json: Some("{}".to_string()),
            ..RunResult::failed(&assignment, String::new(), now_ms())
        },
        RunSpec::Command { .. } => command::execute(assignment, &context, cancel).await,
        RunSpec::Chat(chat) => {
            let chat = chat.clone();
            chat::execute(assignment, &chat, &context, cancel).await
        }
    }
}

/// Opens the run in the worker's gateway: the token its LLM calls present,
/// their ledger, and its part of the budget (ARCHITECTURE.md, "Gateway" and
/// invariant 1).
fn open_gateway_run(assignment: &Assignment, context: &RunContext) -> Result<String, String> {
    let spend = match &assignment.budget {
        None => flotilla_gateway::SpendGate::Unbounded,
        Some(budget) => {
            flotilla_gateway::SpendGate::Budget(Arc::new(flotilla_gateway::RunBudget::new(
                assignment.run.experiment.clone(),
                assignment.lease_id,
                budget,
                context.top_ups.clone(),
            )))
        }
    };
    context
        .gateway
        .state
        .runs
        .open(
            assignment.run.to_string(),
            assignment.seed,
            spend,
            assignment.prices.clone(),
            flotilla_gateway::cache::RunCache::new(
                assignment.cache,
                assignment.run.experiment.clone(),
                assignment.run.run_id(),
            ),
            assignment.tier,
        )
        .map_err(|e| format!("cannot make the run's gateway token: {e}"))
}

/// The run's LLM calls: `calls.jsonl` among its files, and their metered cost
/// added to whatever the program reported itself.
fn add_calls(result: &mut RunResult, calls: Vec<flotilla_gateway::CallRecord>) {
    if calls.is_empty() {
        return;
    }
    let metered: f64 = calls.iter().map(|call| call.cost_usd).sum();
    result.cost_usd = Some(result.cost_usd.unwrap_or(0.0) + metered);
    result.files.push(flotilla_shared::run::ShippedFile {
        path: "calls.jsonl".into(),
        content: flotilla_gateway::calls_jsonl(&calls).into_bytes(),
    });
    result.calls = calls;
}

/// A call refused for budget fails the run, whatever its program made of the
/// refusal: its results would be partial (ARCHITECTURE.md, invariant 1).
fn apply_budget_stop(
    result: &mut RunResult,
    budget_stop: Option<(flotilla_shared::run::BudgetStop, String)>,
) {
    if let Some((stop, reason)) = budget_stop {
        if result.outcome != Outcome::Cancelled {
            result.outcome = Outcome::Failed;
            result.error = reason;
            result.budget_stop = Some(stop);
        }
    }
}
