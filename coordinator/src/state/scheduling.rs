//! Which run goes where: every connected worker's free slots are filled
//! round-robin over experiments, a run going out only once its estimate is
//! reserved in the budget (ARCHITECTURE.md, invariant 1).

use std::collections::HashSet;
use std::sync::Arc;

use flotilla_shared::config::RunConfig;
use flotilla_shared::grid::run_seed;
use flotilla_shared::run::{AssignedBudget, Assignment, RunKey, RunSpec};

use super::events::{EventKind, RunRef};

use super::*;

impl State {
    /// Fills every connected worker's free slots with pending runs, round-robin
    /// over experiments, honouring each experiment's `max_parallel`.
    pub fn schedule(&mut self, outbox: &mut Outbox) {
        if self.experiments.is_empty() {
            return;
        }
        let worker_names: Vec<Arc<str>> = self
            .workers
            .iter()
            .filter(|(_, w)| w.connected && w.free_slots() > 0)
            .map(|(name, _)| name.clone())
            .collect();
        let mut over_budget = HashSet::new();
        for worker in worker_names {
            let mut free = self.workers[&worker].free_slots();
            let mut batch = Vec::new();
            while free > 0 {
                let Some(assignment) = self.next_assignment(&worker, &mut over_budget, outbox)
                else {
                    break;
                };
                batch.push(assignment);
                free -= 1;
            }
            if !batch.is_empty() {
                outbox.assignments.push((worker, batch));
            }
        }
        for index in over_budget {
            self.check_finished(index, outbox);
        }
    }

    /// The next run for `worker`, its budget reserved first. Budgeted
    /// experiments that had no run for it are noted in `over_budget`, to be
    /// checked for exhaustion once the round is over.
    fn next_assignment(
        &mut self,
        worker: &Arc<str>,
        over_budget: &mut HashSet<usize>,
        outbox: &mut Outbox,
    ) -> Option<Assignment> {
        let count = self.experiments.len();
        let capabilities = self.workers[worker].capabilities.clone();
        for step in 0..count {
            let index = (self.cursor + step) % count;
            let experiment = &mut self.experiments[index];
            if !experiment.accepts_assignments()
                || !experiment.under_parallel_cap()
                || experiment.setup_failed.contains_key(worker)
            {
                continue;
            }
            // Only runs whose models this worker serves (ARCHITECTURE.md,
            // "Placement") and whose estimate fits (invariant 1).
            let Some(slot) = experiment.take_assignable(&capabilities) else {
                if experiment.ledger.is_some() {
                    over_budget.insert(index);
                }
                continue;
            };
            let lease_id = self.next_lease_id;
            let run = &experiment.runs[slot];
            let (variation, repetition, attempt) =
                (run.variation, run.repetition, run.attempts_recorded + 1);
            // Reserve before assigning (ARCHITECTURE.md, invariant 1); the run
            // was taken because its estimate fits.
            let budget = experiment.ledger.as_mut().map(|ledger| {
                let event = ledger
                    .reserve(lease_id, variation)
                    .expect("a run is taken only when its estimate fits");
                let LedgerEvent::Reserved { amount, .. } = event else {
                    unreachable!("reserve makes a reservation")
                };
                outbox.ledger.push((experiment.db_id, event));
                AssignedBudget {
                    // The worker is let out the first slice (ARCHITECTURE.md, invariant 8).
                    granted: super::budget::slice_of(amount),
                    per_run_cap: ledger.per_run_cap(),
                    per_run_declared: ledger.per_run_declared(),
                }
            });
            self.cursor = (index + 1) % count;
            self.next_lease_id += 1;
            experiment.workers_used.insert(worker.clone());
            let assignment = Assignment {
                lease_id,
                run: RunKey {
                    experiment: experiment.config.name.clone(),
                    variation,
                    repetition,
                },
                attempt,
                seed: run_seed(experiment.config.seed, repetition),
                params_json: experiment.variation_params(variation).to_string(),
                spec: run_spec(experiment),
                timeout: experiment.config.run.timeout(),
                prices: experiment.config.prices.clone(),
                budget,
                cache: experiment.config.cache,
                tier: experiment.config.tier,
            };
            outbox.event(self.events_wanted, &assignment.run.experiment, || {
                EventKind::RunStarted(RunRef {
                    variation,
                    repetition,
                    attempt,
                    worker: worker.clone(),
                })
            });
            self.grant_lease(index, slot, worker, lease_id, attempt);
            return Some(assignment);
        }
        None
    }
}

fn run_spec(experiment: &Experiment) -> RunSpec {
    match &experiment.config.run {
        RunConfig::Command {
            command,
            setup,
            teardown,
            ..
        } => {
            let workdir = experiment.workdir.as_ref();
            RunSpec::Command {
                argv: command.clone(),
                workdir_path: workdir.map(|w| w.path.clone()).unwrap_or_default(),
                workdir_hash: workdir.map(|w| w.hash.clone()).unwrap_or_default(),
                setup: setup.clone(),
                teardown: teardown.clone(),
            }
        }
        RunConfig::Noop { .. } => RunSpec::Noop,
        RunConfig::Chat { chat, .. } => RunSpec::Chat(Box::new(chat.clone())),
    }
}
