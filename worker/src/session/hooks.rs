//! `run.setup` and `run.teardown` on this worker (ARCHITECTURE.md, "Worker
//! session"): the first run of an experiment waits for its setup; a failed
//! setup declines the experiment's runs, which go back to the coordinator
//! with no attempt spent; the teardown runs when the coordinator says the
//! experiment has no more runs, or when the worker shuts down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use flotilla_shared::config::Hook;
use flotilla_shared::protocol::{FromWorker, HookKind, HookReport};
use flotilla_shared::run::{Assignment, RunSpec};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::run_kinds::{hooks::run_hook, RunContext};

/// Where an experiment's hooks stand on this worker.
enum HookState {
    /// Its setup runs; these runs wait for it.
    SettingUp {
        queued: Vec<Assignment>,
        teardown: Option<Teardown>,
    },
    Ready {
        teardown: Option<Teardown>,
    },
    /// Its setup failed: its runs are declined.
    Failed {
        reason: String,
    },
    /// Its teardown runs; runs of it assigned meanwhile wait for a new setup.
    TearingDown {
        queued: Vec<Assignment>,
    },
}

#[derive(Clone)]
struct Teardown {
    hook: Hook,
    workdir_path: PathBuf,
    workdir_hash: String,
}

/// A hook that ended.
pub(super) struct HookFinished {
    experiment: String,
    kind: HookKind,
    outcome: Result<(), String>,
    log: Vec<u8>,
}

/// What to do after a hook ended or an assignment arrived.
#[derive(Default)]
pub(super) struct HookEffects {
    /// Runs to start now.
    pub start: Vec<Assignment>,
    /// Messages for the coordinator.
    pub send: Vec<FromWorker>,
}

pub(super) struct Hooks {
    states: HashMap<String, HookState>,
    finished_sender: mpsc::UnboundedSender<HookFinished>,
    pub finished: mpsc::UnboundedReceiver<HookFinished>,
    in_flight: usize,
}

impl Hooks {
    pub fn new() -> Self {
        let (finished_sender, finished) = mpsc::unbounded_channel();
        Hooks {
            states: HashMap::new(),
            finished_sender,
            finished,
            in_flight: 0,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// An assignment arrived: start it, hold it for its experiment's setup, or decline it.
    pub fn assigned(
        &mut self,
        assignment: Assignment,
        context: &Arc<RunContext>,
        effects: &mut HookEffects,
    ) {
        let RunSpec::Command {
            setup,
            teardown,
            workdir_path,
            workdir_hash,
            ..
        } = &assignment.spec
        else {
            effects.start.push(assignment);
            return;
        };
        if setup.is_none() && teardown.is_none() {
            effects.start.push(assignment);
            return;
        }
        let experiment = assignment.run.experiment.clone();
        match self.states.get_mut(&experiment) {
            None => {
                let teardown = teardown.clone().map(|hook| Teardown {
                    hook,
                    workdir_path: workdir_path.clone(),
                    workdir_hash: workdir_hash.clone(),
                });
                match setup.clone() {
                    Some(hook) => {
                        let (path, hash) = (workdir_path.clone(), workdir_hash.clone());
                        self.spawn(context, &experiment, HookKind::Setup, hook, path, hash);
                        self.states.insert(
                            experiment,
                            HookState::SettingUp {
                                queued: vec![assignment],
                                teardown,
                            },
                        );
                    }
                    None => {
                        self.states
                            .insert(experiment, HookState::Ready { teardown });
                        effects.start.push(assignment);
                    }
                }
            }
            Some(HookState::SettingUp { queued, .. }) | Some(HookState::TearingDown { queued }) => {
                queued.push(assignment)
            }
            Some(HookState::Ready { .. }) => effects.start.push(assignment),
            Some(HookState::Failed { reason }) => effects.send.push(FromWorker::Declined {
                lease_ids: vec![assignment.lease_id],
                reason: reason.clone(),
            }),
        }
    }

    /// A hook ended: its report goes to the coordinator, and the runs that waited start or are declined.
    pub fn finished(
        &mut self,
        done: HookFinished,
        context: &Arc<RunContext>,
        effects: &mut HookEffects,
    ) {
        self.in_flight -= 1;
        let state = self.states.remove(&done.experiment);
        match (done.kind, &done.outcome, state) {
            (HookKind::Setup, Ok(()), Some(HookState::SettingUp { queued, teardown })) => {
                info!(experiment = done.experiment, "setup done");
                self.states
                    .insert(done.experiment.clone(), HookState::Ready { teardown });
                effects.start.extend(queued);
            }
            (HookKind::Setup, Err(error), Some(HookState::SettingUp { queued, .. })) => {
                warn!(
                    experiment = done.experiment,
                    error, "setup failed: declining the experiment's runs"
                );
                let reason = format!("setup failed on this worker: {error}");
                effects.send.push(FromWorker::Declined {
                    lease_ids: queued.iter().map(|a| a.lease_id).collect(),
                    reason: reason.clone(),
                });
                self.states
                    .insert(done.experiment.clone(), HookState::Failed { reason });
            }
            (HookKind::Teardown, _, Some(HookState::TearingDown { queued })) => {
                info!(experiment = done.experiment, outcome = ?done.outcome, "teardown done");
                // Runs of it that came meanwhile start over, with a new setup.
                for assignment in queued {
                    self.assigned(assignment, context, effects);
                }
            }
            (_, _, state) => {
                if let Some(state) = state {
                    self.states.insert(done.experiment.clone(), state);
                }
            }
        }
        effects.send.push(FromWorker::HookDone(HookReport {
            experiment: done.experiment,
            kind: done.kind,
            error: done.outcome.err(),
            log: done.log,
        }));
    }

    /// The coordinator says `experiment` has no more runs for this worker.
    pub fn experiment_ended(&mut self, experiment: &str, context: &Arc<RunContext>) {
        match self.states.remove(experiment) {
            Some(HookState::Ready {
                teardown: Some(teardown),
            }) => {
                self.spawn(
                    context,
                    experiment,
                    HookKind::Teardown,
                    teardown.hook,
                    teardown.workdir_path,
                    teardown.workdir_hash,
                );
                self.states.insert(
                    experiment.to_string(),
                    HookState::TearingDown { queued: Vec::new() },
                );
            }
            // Still setting up or tearing down: it ends on its own.
            Some(state @ (HookState::SettingUp { .. } | HookState::TearingDown { .. })) => {
                self.states.insert(experiment.to_string(), state);
            }
            Some(HookState::Ready { teardown: None } | HookState::Failed { .. }) | None => {}
        }
    }

    /// The worker stops: every experiment set up here is torn down.
    pub fn tear_down_all(&mut self, context: &Arc<RunContext>) {
        let ready: Vec<String> = self
            .states
            .iter()
            .filter(|(_, state)| matches!(state, HookState::Ready { teardown: Some(_) }))
            .map(|(experiment, _)| experiment.clone())
            .collect();
        for experiment in ready {
            self.experiment_ended(&experiment, context);
        }
    }

    fn spawn(
        &mut self,
        context: &Arc<RunContext>,
        experiment: &str,
        kind: HookKind,
        hook: Hook,
        workdir_path: PathBuf,
        workdir_hash: String,
    ) {
        self.in_flight += 1;
        let (context, sender, experiment) = (
            context.clone(),
            self.finished_sender.clone(),
            experiment.to_string(),
        );
        tokio::spawn(async move {
            let (outcome, log) =
                run_hook(&context, &experiment, &hook, &workdir_path, &workdir_hash).await;
            let _ = sender.send(HookFinished {
                experiment,
                kind,
                outcome,
                log,
            });
        });
    }
}
