//! What a worker's result does to its run: classified against the run's
//! lease (ARCHITECTURE.md, invariant 2), then recorded in small steps.

use std::sync::Arc;

use flotilla_shared::money::Usd;
use flotilla_shared::protocol::{SpendAnswer, SpendGrant, SpendRequest};
use flotilla_shared::run::{BudgetStop, Outcome, RunKey, RunResult};
use tracing::{debug, info, warn};

use super::events::{EventKind, RunRef};

use super::*;
use crate::store::Write;

/// What an incoming result is to its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultClass {
    /// The result of the run's current lease.
    Current,
    /// Its lease expired (or predates a restart), but the attempt's outcome is
    /// not recorded and the run is not finished: it may still settle the run.
    Late,
    /// The run was settled by another attempt, or cancelled: the result only
    /// frees the worker's slot.
    Superseded,
    /// Nothing to record, for the reason given.
    Stale(&'static str),
}

impl State {
    /// Applies results reported by `worker`. Every result is acknowledged by the
    /// caller once the outbox's writes are committed, accepted or not, so that
    /// the worker stops resending it.
    pub fn apply_results(
        &mut self,
        worker: &str,
        results: Vec<RunResult>,
        now_ms: i64,
        outbox: &mut Outbox,
    ) {
        let worker: Arc<str> = self
            .workers
            .get_key_value(worker)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| worker.into());
        let mut touched = Vec::new();
        for result in results {
            if let Some(index) = self.apply_result(&worker, result, now_ms, outbox) {
                touched.push(index);
            }
        }
        touched.dedup();
        for index in touched {
            self.check_finished(index, outbox);
        }
    }

    fn apply_result(
        &mut self,
        worker: &Arc<str>,
        result: RunResult,
        now_ms: i64,
        outbox: &mut Outbox,
    ) -> Option<usize> {
        let lease = self.release_lease(result.lease_id);
        let Some((index, slot)) = self.locate(&result.run) else {
            warn!(run = %result.run, "result for an unknown experiment or run, dropped");
            return None;
        };
        // Whatever the result is to its run, what the attempt spent is spent.
        self.settle(index, &result, outbox);
        match self.classify(index, slot, lease.as_ref(), &result) {
            ResultClass::Superseded => {
                debug!(run = %result.run, attempt = result.attempt, "result of a superseded attempt, dropped");
                self.experiments[index].runs[slot].forget_lease(result.lease_id);
                return Some(index);
            }
            ResultClass::Stale(why) => {
                debug!(run = %result.run, attempt = result.attempt, why, "stale result, dropped");
                return None;
            }
            ResultClass::Late => {
                info!(run = %result.run, attempt = result.attempt, "accepted a late result");
                if result.outcome == Outcome::Succeeded {
                    self.supersede_running_attempt(index, slot, outbox);
                }
            }
            ResultClass::Current => {}
        }
        self.record_result(index, slot, worker, result, now_ms, outbox);
        Some(index)
    }

    /// Settles the result's reservation to what the attempt cost (ARCHITECTURE.md, invariant 1).
    fn settle(&mut self, index: usize, result: &RunResult, outbox: &mut Outbox) {
        let experiment = &mut self.experiments[index];
        let Some(ledger) = experiment.ledger.as_mut() else {
            return;
        };
        let cost = Usd::charge(result.cost_usd.unwrap_or(0.0));
        if let Some(event) = ledger.settle(result.lease_id, result.run.variation, cost) {
            outbox.ledger.push((experiment.db_id, event));
        }
        experiment.spent_usd = ledger.spent().dollars();
    }

    /// A run asks for more budget: granted within its experiment's ledger
    /// and per-run cap, else refused with what is left.
    pub fn spend_request(&mut self, worker: &str, request: SpendRequest, outbox: &mut Outbox) {
        let Some(lease) = self.leases.get(&request.lease_id) else {
            // Not a current lease: nothing may be granted to it.
            let grant = SpendGrant {
                request_id: request.request_id,
                lease_id: request.lease_id,
                answer: SpendAnswer::Refused {
                    left: Usd::ZERO,
                    total: Usd::ZERO,
                },
            };
            let worker: Arc<str> = worker.into();
            outbox.grants.push((worker, grant));
            return;
        };
        let (index, worker) = (lease.experiment, lease.worker.clone());
        let experiment = &mut self.experiments[index];
        let answer = match experiment.ledger.as_mut() {
            None => SpendAnswer::Granted {
                amount: request.amount,
            },
            Some(ledger) => match ledger.grant(request.lease_id, request.amount) {
                Ok((event, amount)) => {
                    outbox.ledger.push((experiment.db_id, event));
                    SpendAnswer::Granted { amount }
                }
                Err(TopUpRefusal::NoRoom { left, total }) => {
                    outbox.event(self.events_wanted, &experiment.config.name, || {
                        EventKind::Budget(format!(
                            "a run asked for more budget and was refused: {left} left of {total}"
                        ))
                    });
                    SpendAnswer::Refused { left, total }
                }
                Err(TopUpRefusal::PerRunCap(_) | TopUpRefusal::NotReserved) => {
                    SpendAnswer::Refused {
                        left: ledger.left(),
                        total: ledger.total(),
                    }
                }
            },
        };
        outbox.grants.push((
            worker,
            SpendGrant {
                request_id: request.request_id,
                lease_id: request.lease_id,
                answer,
            },
        ));
    }

    /// The experiment index and run slot of `key`.
    fn locate(&self, key: &RunKey) -> Option<(usize, usize)> {
        let index = *self.by_name.get(&key.experiment)?;
        let slot = self.experiments[index].slot_of(key.variation, key.repetition)?;
        Some((index, slot))
    }

    /// What an incoming result is to its run (ARCHITECTURE.md, invariant 2).
    fn classify(
        &self,
        index: usize,
        slot: usize,
        lease: Option<&Lease>,
        result: &RunResult,
    ) -> ResultClass {
        if lease.is_some_and(|l| l.superseded) {
            return ResultClass::Superseded;
        }
        let run = &self.experiments[index].runs[slot];
        if run.status.is_final() {
            return ResultClass::Stale("the run is already finished");
        }
        if run.lease == Some(result.lease_id) {
            return ResultClass::Current;
        }
        // Its lease expired, or the coordinator restarted: the attempt's
        // outcome may still be unrecorded.
        let unrecorded =
            result.attempt > run.attempts_recorded || run.attempt_was_lost(result.attempt);
        if !unrecorded {
            return ResultClass::Stale("this attempt's outcome is already recorded");
        }
        if result.outcome == Outcome::Cancelled {
            return ResultClass::Stale("a late cancellation settles nothing");
        }
        ResultClass::Late
    }

    /// A late success settles the run: the attempt running now is told to stop.
    fn supersede_running_attempt(&mut self, index: usize, slot: usize, outbox: &mut Outbox) {
        let Some(current_lease) = self.experiments[index].runs[slot].lease else {
            return;
        };
        if let Some(current) = self.leases.get_mut(&current_lease) {
            current.superseded = true;
            outbox.cancel(&current.worker.clone(), current_lease);
        }
    }
    /// Records `result` in small steps: the run's new status, the attempt's
    /// record, the worker's count, then what the outcome means for the
    /// experiment (a refusal for budget, or a failure for good).
    fn record_result(
        &mut self,
        index: usize,
        slot: usize,
        worker: &Arc<str>,
        result: RunResult,
        now_ms: i64,
        outbox: &mut Outbox,
    ) {
        self.telemetry.record(&result);
        let experiment = &mut self.experiments[index];
        let new_status = status_after(experiment, slot, &result);
        let keeps_running = update_run(experiment, slot, worker, &result, new_status);
        if !keeps_running {
            note_run_ended(
                self.events_wanted,
                experiment,
                slot,
                worker,
                &result,
                new_status,
                outbox,
            );
        }
        if !keeps_running {
            experiment.record_score(slot, result.metrics_json.as_deref());
            let decided =
                experiment.sample_adaptively(Some((slot, result.metrics_json.as_deref())));
            if !decided.is_empty() {
                outbox.writes.push(Write::RunStatus {
                    experiment_id: experiment.db_id,
                    runs: decided,
                    status: RunStatus::Decided,
                });
            }
        }
        let budget_refused = result.budget_stop == Some(BudgetStop::Exhausted);
        persist_attempt(experiment, slot, worker, result, now_ms, outbox);
        if let Some(entry) = self.workers.get_mut(worker) {
            entry.finished += 1;
        }
        if budget_refused {
            self.refused_for_budget(index, outbox);
        } else if new_status == RunStatus::Failed {
            self.stop_if_failure_ends(index, outbox);
        }
    }

    /// The ledger had no room for one of the run's calls. Runs go on while
    /// their estimates fit: reservations of running runs are mostly given
    /// back as they settle (ARCHITECTURE.md, invariant 1).
    fn refused_for_budget(&mut self, index: usize, outbox: &mut Outbox) {
        let experiment = &mut self.experiments[index];
        experiment.refused_for_budget += 1;
        outbox.event(self.events_wanted, &experiment.config.name, || {
            EventKind::Budget("a run's call was refused: the budget has no room for it".into())
        });
        info!(
            experiment = experiment.name(),
            "a run's call was refused for lack of budget"
        );
    }

    pub(super) fn stop_if_failure_ends(&mut self, index: usize, outbox: &mut Outbox) {
        let experiment = &self.experiments[index];
        if experiment.config.continue_on_error || experiment.stopping.is_some() {
            return;
        }
        info!(
            experiment = experiment.name(),
            "a run failed for good and continue_on_error is false: stopping"
        );
        self.stop_experiment(index, StopReason::RunFailed, true, outbox);
    }
}

/// The run's status after `result`: retried while attempts remain (and the
/// experiment goes on), requeued when handed back, cancelled when the budget
/// stopped it.
fn status_after(experiment: &Experiment, slot: usize, result: &RunResult) -> RunStatus {
    match result.outcome {
        Outcome::Succeeded => RunStatus::Succeeded,
        Outcome::Cancelled => RunStatus::Cancelled,
        // Handed back by a draining worker: it runs again, unless the experiment stops.
        Outcome::HandedBack if experiment.stopping.is_some() => RunStatus::Cancelled,
        Outcome::HandedBack => RunStatus::Pending,
        // Stopped by the budget, not by its program: it runs again when a
        // larger budget resumes the experiment.
        Outcome::Failed if result.budget_stop == Some(BudgetStop::Exhausted) => {
            RunStatus::Cancelled
        }
        // A refusal for budget would only be refused again.
        Outcome::Failed
            if experiment.runs[slot]
                .may_retry_after(result.attempt, experiment.config.retries.max_attempts)
                && experiment.stopping.is_none()
                && result.budget_stop.is_none() =>
        {
            RunStatus::Pending
        }
        Outcome::Failed => RunStatus::Failed,
    }
}

/// Applies the attempt to the run entry, its status and (without a budget;
/// with one the ledger counts it) the experiment's spending. Returns whether
/// a newer attempt keeps the run running: a late attempt that did not
/// succeed must not disturb it.
fn update_run(
    experiment: &mut Experiment,
    slot: usize,
    worker: &Arc<str>,
    result: &RunResult,
    new_status: RunStatus,
) -> bool {
    let is_current = experiment.runs[slot].lease == Some(result.lease_id);
    let newer_attempt_running = !is_current && experiment.runs[slot].lease.is_some();
    let keeps_running = newer_attempt_running && new_status != RunStatus::Succeeded;
    let run = &mut experiment.runs[slot];
    run.record_attempt(result.attempt);
    if result.outcome == Outcome::HandedBack {
        run.handed_back += 1;
    }
    if !keeps_running {
        run.lease = None;
    }
    run.worker = Some(worker.clone());
    experiment.set_status(
        slot,
        if keeps_running {
            RunStatus::Running
        } else {
            new_status
        },
    );
    if experiment.ledger.is_none() {
        experiment.spent_usd += result.cost_usd.unwrap_or(0.0);
    }
    for call in &result.calls {
        experiment.cache.add(call);
    }
    keeps_running
}

/// Tells watchers how the run's attempt ended.
fn note_run_ended(
    wanted: bool,
    experiment: &Experiment,
    slot: usize,
    worker: &Arc<str>,
    result: &RunResult,
    new_status: RunStatus,
    outbox: &mut Outbox,
) {
    let run = RunRef {
        variation: experiment.runs[slot].variation,
        repetition: experiment.runs[slot].repetition,
        attempt: result.attempt,
        worker: worker.clone(),
    };
    let error = || result.error.clone();
    let handed_back = result.outcome == Outcome::HandedBack;
    outbox.event(wanted, &experiment.config.name, || match new_status {
        RunStatus::Pending if handed_back => EventKind::RunRequeued {
            why: format!("handed back by draining worker {}", run.worker),
            run,
        },
        RunStatus::Succeeded => EventKind::RunSucceeded(run),
        RunStatus::Pending => EventKind::RunRetried {
            run,
            error: error(),
        },
        RunStatus::Failed => EventKind::RunFailed {
            run,
            error: error(),
        },
        RunStatus::Cancelled | RunStatus::Decided | RunStatus::Running => {
            EventKind::RunCancelled(run)
        }
    });
}

/// The attempt's record, with its result and the run's status, for the store.
fn persist_attempt(
    experiment: &Experiment,
    slot: usize,
    worker: &Arc<str>,
    result: RunResult,
    now_ms: i64,
    outbox: &mut Outbox,
) {
    let outcome = match result.outcome {
        Outcome::Succeeded => AttemptOutcome::Succeeded,
        Outcome::Failed => AttemptOutcome::Failed,
        Outcome::Cancelled => AttemptOutcome::Cancelled,
        Outcome::HandedBack => AttemptOutcome::HandedBack,
    };
    let lease = (result.lease_id, result.attempt, worker.clone());
    let error = result.error.clone();
    outbox
        .writes
        .push(Write::Attempt(Box::new(AttemptRecord::new(
            experiment,
            slot,
            lease,
            outcome,
            Some(result),
            error,
            now_ms,
        ))));
}
