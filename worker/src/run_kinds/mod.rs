//! Run kinds: how one assignment is carried out on this worker.

mod command;

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_shared::clock::now_ms;
use flotilla_shared::run::{Assignment, Outcome, RunResult, RunSpec};
use tokio::sync::oneshot;

use crate::workdir_cache::WorkdirCache;

/// What every run on this worker shares.
pub struct RunContext {
    /// Scratch space for run directories, removed once a run's files are shipped.
    pub scratch: PathBuf,
    pub workdirs: Arc<WorkdirCache>,
}

/// Carries out `assignment` until it ends, times out or `cancel` fires.
pub async fn execute(
    assignment: Assignment,
    context: Arc<RunContext>,
    cancel: oneshot::Receiver<()>,
) -> RunResult {
    match &assignment.spec {
        RunSpec::Noop => RunResult {
            lease_id: assignment.lease_id,
            run: assignment.run,
            attempt: assignment.attempt,
            outcome: Outcome::Succeeded,
            metrics_json: Some("{}".to_string()),
            exit_code: None,
            signal: None,
            timed_out: false,
            error: String::new(),
            stderr_tail: String::new(),
            duration_s: 0.0,
            started_at_ms: now_ms(),
            files: Vec::new(),
        },
        RunSpec::Command { .. } => command::execute(assignment, &context, cancel).await,
    }
}
