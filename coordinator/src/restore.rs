//! Rebuilds the coordinator's state from the database after a (re)start
//! (ARCHITECTURE.md, invariant 3): runs that were running when the coordinator
//! stopped are pending again unless their worker reports them as still running.

use flotilla_shared::pace::Pace;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_shared::config::ExperimentConfig;
use flotilla_shared::{Error, Result};

use crate::state::{Experiment, Outbox, RunEntry, RunStatus, State, WorkdirRef};
use crate::store::Loaded;

pub fn restore(
    root: PathBuf,
    loaded: Loaded,
    lease_timeout: Duration,
    first_lease_id: u64,
    outbox: &mut Outbox,
) -> Result<State> {
    let mut state = State::new(root, lease_timeout, first_lease_id);
    let mut loaded = loaded;
    for (row, variations, runs) in std::mem::take(&mut loaded.experiments) {
        let config = ExperimentConfig::from_canonical_json(&row.config_json).map_err(|e| {
            Error::Internal(format!(
                "stored config of '{}' cannot be read: {e}",
                row.name
            ))
        })?;
        let workdir = match (row.workdir_path, row.workdir_hash) {
            (Some(path), Some(hash)) => Some(WorkdirRef {
                path: path.into(),
                hash,
            }),
            _ => None,
        };
        let mut experiment = Experiment::new(
            row.id,
            config,
            row.config_yaml,
            row.config_hash,
            row.dir.into(),
            workdir,
            variations,
            row.started_at_ms,
        );
        experiment.state = row.state;
        experiment.spent_usd = row.spent_usd;
        experiment.cache = row.cache;
        experiment.finished_at_ms = row.finished_at_ms;
        // The ledger as it was written (ARCHITECTURE.md, invariant 1):
        // reservations of runs no worker reports again stay charged.
        if let Some(ledger) = experiment.ledger.as_mut() {
            for event in loaded.ledger.get(&row.id).into_iter().flatten() {
                ledger.apply(event);
            }
            experiment.spent_usd = ledger.spent().dollars();
        }
        let mut ended = Vec::new();
        experiment.reserve_runs(runs.len());
        for run in runs {
            // A lease lives in memory only: a run recorded as running lost
            // its lease with the restart, unless its worker reports it (then
            // `worker_connected` adopts it again).
            let status = match run.status {
                RunStatus::Running => RunStatus::Pending,
                status => status,
            };
            let mut entry = RunEntry::pending(run.variation, run.repetition);
            entry.status = status;
            entry.attempts_recorded = run.attempts;
            entry.handed_back = run.handed_back;
            entry.worker = run.worker.map(Into::into);
            let slot = experiment.add_run(entry);
            if status.is_final() {
                ended.push((slot, run.metrics_json));
            }
        }
        // Adaptive sampling's decisions, read back from the ended runs.
        let mut decided = experiment.sample_adaptively(None);
        for (slot, metrics_json) in &ended {
            experiment.record_score(*slot, metrics_json.as_deref());
            decided.extend(experiment.sample_adaptively(Some((*slot, metrics_json.as_deref()))));
        }
        if !decided.is_empty() {
            outbox.writes.push(crate::store::Write::RunStatus {
                experiment_id: experiment.db_id,
                runs: decided,
                status: RunStatus::Decided,
            });
        }
        // The pace starts over from the restart: the time it was down says nothing of it.
        experiment.pace = Pace::new(outbox.now_ms, experiment.counts.ended());
        let index = state.insert_experiment(experiment);
        // Crashed between the last result and the final files: finish now.
        state.check_finished(index, outbox);
    }
    Ok(state)
}
