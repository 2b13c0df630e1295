//! Leases that expire: a worker silent past the lease timeout loses its
//! runs, each requeued with the next attempt number (ARCHITECTURE.md, invariant 2).

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::events::{EventKind, RunRef};

use super::*;
use crate::store::Write;

impl State {
    /// Marks a pending run running under `lease_id` on `worker`.
    pub(super) fn grant_lease(
        &mut self,
        index: usize,
        slot: usize,
        worker: &Arc<str>,
        lease_id: u64,
        attempt: u32,
    ) {
        let experiment = &mut self.experiments[index];
        experiment.set_status(slot, RunStatus::Running);
        let run = &mut experiment.runs[slot];
        run.lease = Some(lease_id);
        run.worker = Some(worker.clone());
        run.live_spend = flotilla_shared::money::Usd::ZERO;
        self.leases.insert(
            lease_id,
            Lease {
                experiment: index,
                run: slot,
                attempt,
                worker: worker.clone(),
                superseded: false,
            },
        );
        if let Some(entry) = self.workers.get_mut(worker) {
            entry.leases.insert(lease_id);
        }
    }

    /// Notes what `worker`'s running runs have spent so far (its heartbeat):
    /// live spend in status and the projected final spend.
    pub fn running_spend(&mut self, worker: &str, spend: Vec<flotilla_shared::protocol::RunSpend>) {
        for run in spend {
            let Some(lease) = self.leases.get(&run.lease_id) else {
                continue;
            };
            if &*lease.worker != worker || lease.superseded {
                continue;
            }
            let entry = &mut self.experiments[lease.experiment].runs[lease.run];
            if entry.lease == Some(run.lease_id) {
                entry.live_spend = run.spent + run.in_flight;
            }
        }
    }

    /// Removes the lease of a reported result from the lease and worker tables.
    pub(super) fn release_lease(&mut self, lease_id: u64) -> Option<Lease> {
        let lease = self.leases.remove(&lease_id)?;
        if let Some(entry) = self.workers.get_mut(&lease.worker) {
            entry.leases.remove(&lease_id);
        }
        Some(lease)
    }

    /// Requeues the runs of workers silent for longer than the lease timeout (ARCHITECTURE.md, invariant 2).
    pub fn expire_leases(&mut self, now: Instant, outbox: &mut Outbox) {
        let silent: Vec<Arc<str>> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                !w.leases.is_empty() && now.duration_since(w.last_seen) > self.lease_timeout
            })
            .map(|(name, _)| name.clone())
            .collect();
        for worker in silent {
            let leases: Vec<u64> = self.workers[&worker].leases.iter().copied().collect();
            warn!(worker = %worker, runs = leases.len(), "worker missed its heartbeats past the lease timeout, requeueing its runs");
            for lease_id in leases {
                self.lose_lease(
                    lease_id,
                    &format!("worker {worker} stopped answering (lease expired)"),
                    outbox,
                );
            }
        }
    }

    pub(super) fn lose_lease(&mut self, lease_id: u64, why: &str, outbox: &mut Outbox) {
        let Some(lease) = self.release_lease(lease_id) else {
            return;
        };
        let (index, slot) = (lease.experiment, lease.run);
        let experiment = &mut self.experiments[index];
        if experiment.runs[slot].lease != Some(lease_id) {
            return;
        }
        if lease.superseded {
            experiment.runs[slot].lease = None;
            self.check_finished(index, outbox);
            return;
        }
        let run_status = if experiment.stopping.is_some() {
            RunStatus::Cancelled
        } else if experiment.runs[slot]
            .may_retry_after(lease.attempt, experiment.config.retries.max_attempts)
        {
            RunStatus::Pending
        } else {
            RunStatus::Failed
        };
        experiment.runs[slot].record_lost_attempt(lease.attempt);
        experiment.set_status(slot, run_status);
        let record = AttemptRecord::new(
            experiment,
            slot,
            (lease_id, lease.attempt, lease.worker.clone()),
            AttemptOutcome::Lost,
            None,
            why.to_string(),
            outbox.now_ms,
        );
        info!(experiment = record.experiment, variation = record.variation, repetition = record.repetition,
            attempt = lease.attempt, status = %run_status, "lease lost");
        let run = RunRef {
            variation: record.variation,
            repetition: record.repetition,
            attempt: lease.attempt,
            worker: lease.worker.clone(),
        };
        outbox.event(
            self.events_wanted,
            &record.experiment,
            || match run_status {
                RunStatus::Pending => EventKind::RunRetried {
                    run,
                    error: why.to_string(),
                },
                RunStatus::Failed => EventKind::RunFailed {
                    run,
                    error: why.to_string(),
                },
                _ => EventKind::RunCancelled(run),
            },
        );
        outbox.writes.push(Write::Attempt(Box::new(record)));
        if run_status == RunStatus::Failed {
            self.stop_if_failure_ends(index, outbox);
        }
        self.check_finished(index, outbox);
    }
}
