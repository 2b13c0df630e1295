//! Read-only projections of the coordinator's state for the control API.

use flotilla_shared::proto;
use flotilla_shared::{Error, Result};

use crate::state::{Counts, Experiment, RunStatus, State};

fn counts(counts: &Counts) -> proto::StateCounts {
    proto::StateCounts {
        pending: counts.pending,
        running: counts.running,
        succeeded: counts.succeeded,
        failed: counts.failed,
        cancelled: counts.cancelled,
    }
}

/// An experiment's figures; `detailed` adds per-variation counts.
pub fn experiment(experiment: &Experiment, detailed: bool) -> proto::ExperimentStatus {
    let variations = if detailed {
        let mut per_variation: Vec<Counts> = vec![Counts::default(); experiment.variations.len()];
        for run in &experiment.runs {
            per_variation[(run.variation - 1) as usize].add(run.status);
        }
        experiment
            .variations
            .iter()
            .zip(per_variation)
            .map(|(variation, c)| proto::VariationStatus {
                index: variation.index,
                params_json: variation.axis_json.clone(),
                counts: Some(counts(&c)),
            })
            .collect()
    } else {
        Vec::new()
    };
    // Until its final files are written, a finishing experiment still reads as running.
    proto::ExperimentStatus {
        name: experiment.config.name.clone(),
        state: experiment.state.as_str().to_string(),
        counts: Some(counts(&experiment.counts)),
        total_runs: experiment.counts.total(),
        variations,
        started_at_ms: experiment.started_at_ms,
        finished_at_ms: experiment.finished_at_ms.unwrap_or(0),
        directory: experiment.dir.to_string_lossy().into_owned(),
        spent_usd: experiment.spent_usd,
    }
}

/// Status of one experiment (with per-variation and per-worker figures) or of all.
pub fn status(state: &State, name: Option<&str>) -> Result<proto::StatusReply> {
    let experiments = match name {
        Some(name) => {
            let experiment = state
                .experiment(name)
                .ok_or_else(|| Error::NotFound(format!("no experiment named '{name}'")))?;
            vec![self::experiment(experiment, true)]
        }
        None => state
            .experiments
            .iter()
            .map(|e| self::experiment(e, false))
            .collect(),
    };
    let selected = name.and_then(|n| state.by_name.get(n).copied());
    let workers = state
        .workers
        .iter()
        .map(|(worker_name, worker)| {
            let (running, finished) = match selected {
                Some(index) => {
                    let runs = &state.experiments[index].runs;
                    let running = runs
                        .iter()
                        .filter(|r| {
                            r.status == RunStatus::Running
                                && r.worker.as_deref() == Some(&**worker_name)
                        })
                        .count() as u32;
                    let finished = runs
                        .iter()
                        .filter(|r| {
                            r.status.is_final() && r.worker.as_deref() == Some(&**worker_name)
                        })
                        .count() as u64;
                    (running, finished)
                }
                None => (worker.leases.len() as u32, worker.finished),
            };
            proto::WorkerStatus {
                name: worker_name.to_string(),
                connected: worker.connected,
                slots: worker.slots,
                running,
                finished,
            }
        })
        .collect();
    Ok(proto::StatusReply {
        experiments,
        workers,
    })
}
