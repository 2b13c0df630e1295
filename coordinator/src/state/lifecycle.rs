//! How an experiment ends: stopped (cancel, a failure for good, an exhausted
//! budget), finished when nothing is pending or running, final once its
//! files are written.

use flotilla_shared::protocol::ToWorker;
use tracing::info;

use super::events::EventKind;

use super::*;
use crate::store::Write;

impl State {
    /// Notes how many runs of each running experiment ended by `now_ms`, for its pace.
    pub fn observe_pace(&mut self, now_ms: i64) {
        for experiment in &mut self.experiments {
            if !experiment.state.is_final() {
                let ended = experiment.counts.ended();
                experiment.pace.observe(now_ms, ended);
            }
        }
    }

    /// Stops assigning an experiment's runs: pending runs are cancelled; running
    /// runs are told to stop when `kill_running`, otherwise they finish.
    /// Returns how many runs were cancelled or told to stop.
    pub fn stop_experiment(
        &mut self,
        index: usize,
        reason: StopReason,
        kill_running: bool,
        outbox: &mut Outbox,
    ) -> u64 {
        let experiment = &mut self.experiments[index];
        if experiment.state.is_final() {
            return 0;
        }
        if experiment.stopping.is_none() {
            experiment.stopping = Some(reason);
        }
        let mut cancelled = Vec::new();
        while let Some(slot) = experiment.pop_pending() {
            experiment.set_status(slot, RunStatus::Cancelled);
            let run = &experiment.runs[slot];
            cancelled.push((run.variation, run.repetition));
        }
        let mut count = cancelled.len() as u64;
        if !cancelled.is_empty() {
            outbox.writes.push(Write::RunStatus {
                experiment_id: experiment.db_id,
                runs: cancelled,
                status: RunStatus::Cancelled,
            });
        }
        if kill_running {
            for run in &experiment.runs {
                let Some(lease_id) = run.lease else { continue };
                if let Some(lease) = self.leases.get(&lease_id) {
                    if !lease.superseded {
                        outbox.cancel(&lease.worker, lease_id);
                        count += 1;
                    }
                }
            }
        }
        self.check_finished(index, outbox);
        count
    }

    /// When nothing is pending or running, the experiment is finalised.
    pub fn check_finished(&mut self, index: usize, outbox: &mut Outbox) {
        let experiment = &mut self.experiments[index];
        if experiment.state.is_final() || experiment.finalizing.is_some() {
            return;
        }
        if experiment.stopping.is_none() {
            if let Some(why) = experiment.budget_exhaustion() {
                info!(experiment = experiment.name(), "{why}");
                outbox.event(self.events_wanted, experiment.name(), || {
                    EventKind::Budget(why.clone())
                });
                self.stop_experiment(index, StopReason::BudgetExhausted, false, outbox);
                return;
            }
        }
        let experiment = &mut self.experiments[index];
        // A running run always holds its lease, so the running count covers leases too.
        let waiting = experiment.counts.pending > 0 && experiment.stopping.is_none();
        if waiting || experiment.counts.running > 0 {
            return;
        }
        experiment.finalizing = Some(experiment.final_state());
        // Workers that ran it have no more of its runs: their teardowns run.
        for worker in &experiment.workers_used {
            outbox.notices.push((
                worker.clone(),
                ToWorker::ExperimentEnded(experiment.config.name.clone()),
            ));
        }
        experiment.workers_used.clear();
        // Reservations of workers that never reported are freed with the end
        // (ARCHITECTURE.md, invariant 1).
        if let Some(ledger) = experiment.ledger.as_mut() {
            let db_id = experiment.db_id;
            outbox
                .ledger
                .extend(ledger.release_all().into_iter().map(|event| (db_id, event)));
        }
        outbox.finalize.push(index);
    }

    /// The final files are written: the experiment's state turns final, unless it
    /// was resumed in the meantime (a resubmission clears `finalizing`).
    pub fn finalized(&mut self, index: usize, now_ms: i64) {
        let experiment = &mut self.experiments[index];
        if let Some(state) = experiment.finalizing.take() {
            experiment.state = state;
            experiment.finished_at_ms = Some(now_ms);
            info!(
                experiment = experiment.name(),
                state = state.as_str(),
                "experiment finished"
            );
        }
    }
}
