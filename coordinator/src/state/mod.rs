//! The coordinator's state and the decisions over it: which run goes where,
//! what a result or a lost lease does to a run, when an experiment ends.
//!
//! Everything here is plain functions over `&mut State` that write what must
//! happen next into an [`Outbox`]; the coordinator actor carries it out. Unit
//! tests drive these functions directly, with no runtime and no sockets.

mod experiment;
mod submission;
#[cfg(test)]
mod tests;

pub use experiment::{
    Counts, Experiment, ExperimentState, RunEntry, RunStatus, StopReason, VariationEntry,
    WorkdirRef,
};
pub use submission::{Submission, SubmitOutcome};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_shared::config::RunConfig;
use flotilla_shared::grid::run_seed;
use flotilla_shared::run::{Assignment, Outcome, RunKey, RunResult, RunSpec};
use tracing::{debug, info, warn};

/// A run handed to a worker; the lease id travels with the assignment and its result.
#[derive(Debug, Clone)]
pub struct Lease {
    pub experiment: usize,
    pub run: usize,
    pub attempt: u32,
    pub worker: Arc<str>,
    /// The run was settled by another attempt, or cancelled: the worker was told
    /// to stop, and the lease only holds the worker's slot until it reports.
    pub superseded: bool,
}

#[derive(Debug)]
pub struct WorkerEntry {
    pub slots: u32,
    pub connected: bool,
    /// Distinguishes a worker's successive connections.
    pub session: u64,
    pub last_seen: Instant,
    pub leases: HashSet<u64>,
    pub finished: u64,
}

impl WorkerEntry {
    fn free_slots(&self) -> usize {
        (self.slots as usize).saturating_sub(self.leases.len())
    }
}

/// How an attempt ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    Cancelled,
    /// The worker stopped answering before the lease timeout.
    Lost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Lost => "lost",
        }
    }
}

/// An attempt's outcome and the run's new state, to persist.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub experiment_db_id: i64,
    pub experiment: String,
    /// Where the run's files go; `None` for runs that have no directory (noop).
    pub run_dir: Option<PathBuf>,
    pub variation: u32,
    pub repetition: u32,
    pub attempt: u32,
    pub worker: Arc<str>,
    pub lease_id: u64,
    pub outcome: AttemptOutcome,
    pub run_status: RunStatus,
    pub params_json: Arc<str>,
    pub seed: u64,
    /// What the worker reported; `None` for a lost attempt.
    pub result: Option<RunResult>,
    pub error: String,
    pub finished_at_ms: i64,
}

/// Writes for the store, in the order they must be applied.
#[derive(Debug, Clone)]
pub enum Persist {
    /// Insert or replace the experiment row.
    Experiment {
        index: usize,
    },
    Variations {
        experiment_id: i64,
        variations: Vec<VariationEntry>,
    },
    NewRuns {
        experiment_id: i64,
        runs: Vec<(u32, u32)>,
    },
    Attempt(Box<AttemptRecord>),
    RunStatus {
        experiment_id: i64,
        runs: Vec<(u32, u32)>,
        status: RunStatus,
    },
}

/// What the decisions want done.
#[derive(Debug, Default)]
pub struct Outbox {
    pub assignments: Vec<(Arc<str>, Vec<Assignment>)>,
    pub cancels: Vec<(Arc<str>, Vec<u64>)>,
    pub persist: Vec<Persist>,
    /// Experiments whose runs all ended: write their final files, then mark them final.
    pub finalize: Vec<usize>,
}

impl Outbox {
    fn cancel(&mut self, worker: &Arc<str>, lease_id: u64) {
        match self.cancels.iter_mut().find(|(w, _)| w == worker) {
            Some((_, leases)) => leases.push(lease_id),
            None => self.cancels.push((worker.clone(), vec![lease_id])),
        }
    }
}

pub struct State {
    pub root: PathBuf,
    pub experiments: Vec<Experiment>,
    pub by_name: HashMap<String, usize>,
    pub workers: BTreeMap<Arc<str>, WorkerEntry>,
    pub leases: HashMap<u64, Lease>,
    pub lease_timeout: Duration,
    next_lease_id: u64,
    next_session: u64,
    /// Round-robin position over experiments, so that concurrent experiments share workers.
    cursor: usize,
}

impl State {
    /// `first_lease_id` must exceed every lease id handed out before a restart:
    /// the coordinator passes the current time in microseconds.
    pub fn new(root: PathBuf, lease_timeout: Duration, first_lease_id: u64) -> Self {
        State {
            root,
            experiments: Vec::new(),
            by_name: HashMap::new(),
            workers: BTreeMap::new(),
            leases: HashMap::new(),
            lease_timeout,
            next_lease_id: first_lease_id.max(1),
            next_session: 1,
            cursor: 0,
        }
    }

    pub fn experiment(&self, name: &str) -> Option<&Experiment> {
        self.by_name
            .get(name)
            .map(|&index| &self.experiments[index])
    }

    pub fn insert_experiment(&mut self, experiment: Experiment) -> usize {
        let index = self.experiments.len();
        self.by_name.insert(experiment.config.name.clone(), index);
        self.experiments.push(experiment);
        index
    }

    // ------------------------------------------------------------ workers

    /// A worker said Hello. `running` lists the runs it is still executing from
    /// an earlier connection (with their lease ids and attempts). Returns the
    /// session number of this connection, or refuses a duplicate name.
    pub fn worker_connected(
        &mut self,
        name: &str,
        slots: u32,
        running: Vec<(u64, RunKey, u32)>,
        now: Instant,
        outbox: &mut Outbox,
    ) -> flotilla_shared::Result<u64> {
        // A second process with the same name would steal the first one's runs.
        // A worker whose old connection went silent (a broken network) gets in
        // once that connection has been quiet for half a lease.
        if let Some(existing) = self.workers.get(name) {
            if existing.connected && now.duration_since(existing.last_seen) < self.lease_timeout / 2
            {
                return Err(flotilla_shared::Error::Conflict(format!(
                    "a worker named '{name}' is already connected; give each worker a unique --name"
                )));
            }
        }
        let session = self.next_session;
        self.next_session += 1;
        let name: Arc<str> = self
            .workers
            .get_key_value(name)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| name.into());
        let entry = self
            .workers
            .entry(name.clone())
            .or_insert_with(|| WorkerEntry {
                slots,
                connected: true,
                session,
                last_seen: now,
                leases: HashSet::new(),
                finished: 0,
            });
        entry.slots = slots;
        entry.connected = true;
        entry.session = session;
        entry.last_seen = now;

        let still_running: HashSet<u64> = running.iter().map(|(lease, _, _)| *lease).collect();
        // Leases the worker no longer knows: it restarted, so those attempts are lost now.
        let forgotten: Vec<u64> = entry
            .leases
            .iter()
            .copied()
            .filter(|l| !still_running.contains(l))
            .collect();
        for lease_id in forgotten {
            self.lose_lease(lease_id, "worker restarted while running it", outbox);
        }
        for (lease_id, key, attempt) in running {
            if self.leases.contains_key(&lease_id) {
                continue;
            }
            if !self.adopt_running(&name, lease_id, &key, attempt) {
                outbox.cancel(&name, lease_id);
            }
        }
        Ok(session)
    }

    /// After a coordinator restart, a worker reports a run it is still executing:
    /// keep it under its lease if the run is still waiting, instead of running it twice.
    fn adopt_running(
        &mut self,
        worker: &Arc<str>,
        lease_id: u64,
        key: &RunKey,
        attempt: u32,
    ) -> bool {
        let Some(&index) = self.by_name.get(&key.experiment) else {
            return false;
        };
        let experiment = &mut self.experiments[index];
        let Some(&slot) = experiment.run_slots.get(&(key.variation, key.repetition)) else {
            return false;
        };
        if experiment.runs[slot].status != RunStatus::Pending || !experiment.accepts_assignments() {
            return false;
        }
        let run = &mut experiment.runs[slot];
        run.attempts_recorded = run.attempts_recorded.max(attempt.saturating_sub(1));
        self.grant_lease(index, slot, worker, lease_id, attempt);
        info!(worker = %worker, lease_id, run = %key, "adopted a run still running from before the restart");
        true
    }

    /// The connection of `session` closed. Its leases stay until they expire: the
    /// worker may reconnect and report.
    pub fn worker_disconnected(&mut self, name: &str, session: u64) {
        if let Some(entry) = self.workers.get_mut(name) {
            if entry.session == session {
                entry.connected = false;
            }
        }
    }

    pub fn worker_seen(&mut self, name: &str, session: u64, now: Instant) {
        if let Some(entry) = self.workers.get_mut(name) {
            if entry.session == session {
                entry.last_seen = now;
            }
        }
    }

    // ------------------------------------------------------------ scheduling

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
        for worker in worker_names {
            let mut free = self.workers[&worker].free_slots();
            let mut batch = Vec::new();
            while free > 0 {
                let Some(assignment) = self.next_assignment(&worker) else {
                    break;
                };
                batch.push(assignment);
                free -= 1;
            }
            if !batch.is_empty() {
                outbox.assignments.push((worker, batch));
            }
        }
    }

    fn next_assignment(&mut self, worker: &Arc<str>) -> Option<Assignment> {
        let count = self.experiments.len();
        for step in 0..count {
            let index = (self.cursor + step) % count;
            let experiment = &mut self.experiments[index];
            if !experiment.accepts_assignments() || !experiment.under_parallel_cap() {
                continue;
            }
            let Some(slot) = experiment.pop_pending() else {
                continue;
            };
            self.cursor = (index + 1) % count;
            let lease_id = self.next_lease_id;
            self.next_lease_id += 1;
            let run = &experiment.runs[slot];
            let (variation, repetition, attempt) =
                (run.variation, run.repetition, run.attempts_recorded + 1);
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
            };
            self.grant_lease(index, slot, worker, lease_id, attempt);
            return Some(assignment);
        }
        None
    }

    /// Marks a pending run running under `lease_id` on `worker`.
    fn grant_lease(
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

    // ------------------------------------------------------------ results

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
        let lease = self.leases.remove(&result.lease_id);
        if let Some(lease) = &lease {
            if let Some(entry) = self.workers.get_mut(&lease.worker) {
                entry.leases.remove(&result.lease_id);
            }
        }
        let Some(&index) = self.by_name.get(&result.run.experiment) else {
            warn!(run = %result.run, "result for an unknown experiment, dropped");
            return None;
        };
        let experiment = &mut self.experiments[index];
        let Some(&slot) = experiment
            .run_slots
            .get(&(result.run.variation, result.run.repetition))
        else {
            warn!(run = %result.run, "result for an unknown run, dropped");
            return None;
        };
        if lease.as_ref().is_some_and(|l| l.superseded) {
            debug!(run = %result.run, attempt = result.attempt, "result of a superseded attempt, dropped");
            if experiment.runs[slot].lease == Some(result.lease_id) {
                experiment.runs[slot].lease = None;
            }
            return Some(index);
        }
        let run = &experiment.runs[slot];
        let is_current = run.lease == Some(result.lease_id);
        if run.status.is_final() {
            debug!(run = %result.run, attempt = result.attempt, "result for a finished run, dropped");
            return None;
        }
        if !is_current {
            // A late result (its lease expired, or the coordinator restarted):
            // accepted only if this attempt's outcome is not already recorded.
            let unrecorded =
                result.attempt > run.attempts_recorded || run.attempt_was_lost(result.attempt);
            if !unrecorded || result.outcome == Outcome::Cancelled {
                debug!(run = %result.run, attempt = result.attempt, "stale result, dropped");
                return None;
            }
            if let Some(current_lease) = run.lease {
                if let Some(current) = self.leases.get_mut(&current_lease) {
                    if result.outcome == Outcome::Succeeded {
                        current.superseded = true;
                        outbox.cancel(&current.worker.clone(), current_lease);
                    }
                }
            }
            info!(run = %result.run, attempt = result.attempt, "accepted a late result");
        }
        let experiment = &mut self.experiments[index];
        let max_attempts = experiment.config.retries.max_attempts;
        let stopping = experiment.stopping.is_some();
        let new_status = match result.outcome {
            Outcome::Succeeded => RunStatus::Succeeded,
            Outcome::Cancelled => RunStatus::Cancelled,
            Outcome::Failed if result.attempt < max_attempts && !stopping => RunStatus::Pending,
            Outcome::Failed => RunStatus::Failed,
        };
        // A failed late attempt must not disturb a newer attempt that is running.
        let newer_attempt_running = !is_current && experiment.runs[slot].lease.is_some();
        let run_status = if newer_attempt_running && new_status != RunStatus::Succeeded {
            RunStatus::Running
        } else {
            new_status
        };
        {
            let run = &mut experiment.runs[slot];
            run.attempts_recorded = run.attempts_recorded.max(result.attempt);
            if result.attempt <= 64 && result.attempt > 0 {
                run.lost_attempts &= !(1 << (result.attempt - 1));
            }
            if !newer_attempt_running || run_status == RunStatus::Succeeded {
                run.lease = None;
            }
            run.worker = Some(worker.clone());
        }
        experiment.set_status(slot, run_status);
        if new_status == RunStatus::Failed
            && !experiment.config.continue_on_error
            && experiment.stopping.is_none()
        {
            info!(experiment = experiment.name(), run = %result.run, "run failed for good and continue_on_error is false: stopping");
            self.stop_experiment(index, StopReason::RunFailed, true, outbox);
        }
        if let Some(entry) = self.workers.get_mut(worker) {
            entry.finished += 1;
        }
        let experiment = &mut self.experiments[index];
        experiment.spent_usd += result.cost_usd.unwrap_or(0.0);
        let experiment = &self.experiments[index];
        let outcome = match result.outcome {
            Outcome::Succeeded => AttemptOutcome::Succeeded,
            Outcome::Failed => AttemptOutcome::Failed,
            Outcome::Cancelled => AttemptOutcome::Cancelled,
        };
        outbox
            .persist
            .push(Persist::Attempt(Box::new(AttemptRecord {
                experiment_db_id: experiment.db_id,
                experiment: experiment.config.name.clone(),
                run_dir: run_dir(experiment, &result.run),
                variation: result.run.variation,
                repetition: result.run.repetition,
                attempt: result.attempt,
                worker: worker.clone(),
                lease_id: result.lease_id,
                outcome,
                run_status,
                params_json: experiment.variation_params(result.run.variation).clone(),
                seed: run_seed(experiment.config.seed, result.run.repetition),
                error: result.error.clone(),
                result: Some(result),
                finished_at_ms: now_ms,
            })));
        Some(index)
    }

    // ------------------------------------------------------------ leases

    /// Requeues the runs of workers silent for longer than the lease timeout (DESIGN §7.2).
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

    fn lose_lease(&mut self, lease_id: u64, why: &str, outbox: &mut Outbox) {
        let Some(lease) = self.leases.remove(&lease_id) else {
            return;
        };
        if let Some(entry) = self.workers.get_mut(&lease.worker) {
            entry.leases.remove(&lease_id);
        }
        let experiment = &mut self.experiments[lease.experiment];
        if experiment.runs[lease.run].lease != Some(lease_id) {
            return;
        }
        if lease.superseded {
            experiment.runs[lease.run].lease = None;
            self.check_finished(lease.experiment, outbox);
            return;
        }
        let max_attempts = experiment.config.retries.max_attempts;
        let run_status = if experiment.stopping.is_some() {
            RunStatus::Cancelled
        } else if lease.attempt < max_attempts {
            RunStatus::Pending
        } else {
            RunStatus::Failed
        };
        {
            let run = &mut experiment.runs[lease.run];
            run.lease = None;
            run.attempts_recorded = run.attempts_recorded.max(lease.attempt);
            if (1..=64).contains(&lease.attempt) {
                run.lost_attempts |= 1 << (lease.attempt - 1);
            }
        }
        experiment.set_status(lease.run, run_status);
        let run = &experiment.runs[lease.run];
        let key = RunKey {
            experiment: experiment.config.name.clone(),
            variation: run.variation,
            repetition: run.repetition,
        };
        outbox
            .persist
            .push(Persist::Attempt(Box::new(AttemptRecord {
                experiment_db_id: experiment.db_id,
                experiment: experiment.config.name.clone(),
                run_dir: None,
                variation: run.variation,
                repetition: run.repetition,
                attempt: lease.attempt,
                worker: lease.worker.clone(),
                lease_id,
                outcome: AttemptOutcome::Lost,
                run_status,
                params_json: experiment.variation_params(run.variation).clone(),
                seed: run_seed(experiment.config.seed, run.repetition),
                result: None,
                error: why.to_string(),
                finished_at_ms: flotilla_shared::clock::now_ms(),
            })));
        info!(run = %key, attempt = lease.attempt, status = run_status.as_str(), "lease lost");
        if run_status == RunStatus::Failed && !experiment.config.continue_on_error {
            self.stop_experiment(lease.experiment, StopReason::RunFailed, true, outbox);
        }
        self.check_finished(lease.experiment, outbox);
    }

    // ------------------------------------------------------------ stopping

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
            outbox.persist.push(Persist::RunStatus {
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
        // A running run always holds its lease, so the running count covers leases too.
        let waiting = experiment.counts.pending > 0 && experiment.stopping.is_none();
        if waiting || experiment.counts.running > 0 {
            return;
        }
        experiment.finalizing = Some(experiment.final_state());
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

fn run_spec(experiment: &Experiment) -> RunSpec {
    match &experiment.config.run {
        RunConfig::Command { command, .. } => {
            let workdir = experiment.workdir.as_ref();
            RunSpec::Command {
                argv: command.clone(),
                workdir_path: workdir.map(|w| w.path.clone()).unwrap_or_default(),
                workdir_hash: workdir.map(|w| w.hash.clone()).unwrap_or_default(),
            }
        }
        RunConfig::Noop { .. } => RunSpec::Noop,
    }
}

fn run_dir(experiment: &Experiment, key: &RunKey) -> Option<PathBuf> {
    match experiment.config.run {
        RunConfig::Command { .. } => Some(experiment.dir.join("runs").join(key.run_id())),
        RunConfig::Noop { .. } => None,
    }
}
