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
    /// live spend in status and the projected final spend. A run under a
    /// lease that is no longer the worker's (it expired while the worker was
    /// out of touch) is cancelled: another attempt has it.
    pub fn running_spend(
        &mut self,
        worker: &Arc<str>,
        spend: Vec<flotilla_shared::protocol::RunSpend>,
        outbox: &mut Outbox,
    ) {
        for run in spend {
            let Some(lease) = self.leases.get(&run.lease_id) else {
                outbox.cancel(worker, run.lease_id);
                continue;
            };
            if lease.worker != *worker {
                outbox.cancel(worker, run.lease_id);
                continue;
            }
            if lease.superseded {
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

    /// Requeues the runs of workers silent for longer than the lease timeout
    /// (ARCHITECTURE.md, invariant 2), then fences what lost leases held.
    pub fn expire_leases(&mut self, now: Instant, outbox: &mut Outbox) {
        self.expire_silent_workers(now, outbox);
        self.fence_lost_reservations(now, outbox);
    }

    /// A lease no longer live — expired, forgotten by a restarted worker, or
    /// restored from before a coordinator restart and not reported by its
    /// worker within a lease timeout — keeps charged only what its worker was
    /// let out; the rest of its reservation is freed (ARCHITECTURE.md,
    /// invariant 8). Nobody can spend that rest: only this coordinator lets
    /// slices out, and it lets none out to a lease it does not hold.
    fn fence_lost_reservations(&mut self, now: Instant, outbox: &mut Outbox) {
        let first = *self.first_lease_check.get_or_insert(now);
        if now.duration_since(first) < self.lease_timeout {
            return;
        }
        for experiment in &mut self.experiments {
            let Some(ledger) = experiment.ledger.as_mut() else {
                continue;
            };
            let lost: Vec<u64> = ledger
                .unfenced()
                .filter(|lease_id| !self.leases.contains_key(lease_id))
                .collect();
            for lease_id in lost {
                if let Some(event) = ledger.fence(lease_id) {
                    if let LedgerEvent::Fenced { freed, .. } = &event {
                        info!(experiment = experiment.config.name, lease_id, freed = %freed,
                            "a lost lease keeps charged only what its worker was let spend");
                    }
                    outbox.ledger.push((experiment.db_id, event));
                }
            }
        }
    }

    fn expire_silent_workers(&mut self, now: Instant, outbox: &mut Outbox) {
        let silent: Vec<Arc<str>> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.silent && now.duration_since(w.last_seen) > self.lease_timeout)
            .map(|(name, _)| name.clone())
            .collect();
        for worker in silent {
            // Fenced by now: no runs go to it until it speaks again.
            self.workers.get_mut(&worker).expect("listed above").silent = true;
            if self.workers[&worker].leases.is_empty() {
                continue;
            }
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
