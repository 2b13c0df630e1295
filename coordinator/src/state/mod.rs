//! The coordinator's state and the decisions over it: which run goes where,
//! what a result or a lost lease does to a run, when an experiment ends.
//!
//! Everything here is plain functions over `&mut State` that write what must
//! happen next into an [`Outbox`]; the coordinator actor carries it out. Unit
//! tests drive these functions directly, with no runtime and no sockets.

mod budget;
pub mod events;
mod experiment;
mod rate_shares;
mod rate_use;
mod submission;
pub mod telemetry;
#[cfg(test)]
mod tests;

pub use budget::{Ledger, LedgerEvent, TopUpRefusal};
pub use experiment::{Counts, Experiment, RunEntry, StopReason, VariationEntry};
pub use flotilla_shared::status::{AttemptOutcome, ExperimentState, RunStatus};
pub use rate_shares::RateShares;
pub use rate_use::{KeyUseView, RateUse};
pub use submission::{Submission, Submitted};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_shared::config::RunConfig;
use flotilla_shared::grid::run_seed;
use flotilla_shared::money::Usd;
use flotilla_shared::naming::run_id;
use flotilla_shared::protocol::{
    Capabilities, HookKind, HookReport, RunningLease, SpendAnswer, SpendGrant, SpendRequest,
    ToWorker,
};
use flotilla_shared::rate::{KeyDemand, Limits, RatePause, RateShare};
use flotilla_shared::run::{
    AssignedBudget, Assignment, BudgetStop, Outcome, RunKey, RunResult, RunSpec,
};
use tracing::{debug, info, warn};

use events::{Event, EventKind, RunRef};

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
    /// What it serves: run kinds, providers, its Ollama's models.
    pub capabilities: Capabilities,
    /// Draining: it takes no more runs, and leaves when its runs ended or were handed back.
    pub draining: bool,
}

impl WorkerEntry {
    fn free_slots(&self) -> usize {
        if self.draining {
            return 0;
        }
        (self.slots as usize).saturating_sub(self.leases.len())
    }
}

/// Where the experiment's workdir lives on the submitting machine and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkdirRef {
    pub path: PathBuf,
    pub hash: String,
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

impl AttemptRecord {
    /// The record of how attempt `lease.attempt` of the run in `slot` ended,
    /// with the run's status as it now stands.
    pub fn new(
        experiment: &Experiment,
        slot: usize,
        lease: (u64, u32, Arc<str>),
        outcome: AttemptOutcome,
        result: Option<RunResult>,
        error: String,
        finished_at_ms: i64,
    ) -> Self {
        let (lease_id, attempt, worker) = lease;
        let run = &experiment.runs[slot];
        // Only attempts that report have files; noop runs have no directory.
        let run_dir = match (&experiment.config.run, &result) {
            (RunConfig::Command { .. } | RunConfig::Chat { .. }, Some(_)) => Some(
                experiment
                    .dir
                    .join("runs")
                    .join(run_id(run.variation, run.repetition)),
            ),
            _ => None,
        };
        AttemptRecord {
            experiment_db_id: experiment.db_id,
            experiment: experiment.config.name.clone(),
            run_dir,
            variation: run.variation,
            repetition: run.repetition,
            attempt,
            worker,
            lease_id,
            outcome,
            run_status: run.status,
            params_json: experiment.variation_params(run.variation).clone(),
            seed: run_seed(experiment.config.seed, run.repetition),
            result,
            error,
            finished_at_ms,
        }
    }
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
    /// A worker's setup.log or teardown.log under the experiment.
    HookLog {
        path: PathBuf,
        content: Vec<u8>,
    },
}

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

/// What the decisions want done.
#[derive(Debug, Default)]
pub struct Outbox {
    pub assignments: Vec<(Arc<str>, Vec<Assignment>)>,
    pub cancels: Vec<(Arc<str>, Vec<u64>)>,
    pub grants: Vec<(Arc<str>, SpendGrant)>,
    /// Messages sent at once, not waiting for any write: rate shares and
    /// pauses (ARCHITECTURE.md, invariant 6), experiments ended (teardowns).
    pub notices: Vec<(Arc<str>, ToWorker)>,
    pub persist: Vec<Persist>,
    /// Budget ledger events, by experiment. While there are any, the
    /// outbox's assignments and grants wait for their commit: a worker never
    /// spends a reservation a restarted coordinator would not know of
    /// (ARCHITECTURE.md, invariant 1).
    pub ledger: Vec<(i64, LedgerEvent)>,
    /// Experiments whose runs all ended: write their final files, then mark them final.
    pub finalize: Vec<usize>,
    /// What happened, for watchers; filled only while `State::events_wanted`.
    pub events: Vec<Event>,
}

impl Outbox {
    /// Notes an event when someone listens; `kind` is made only then.
    fn event(&mut self, wanted: bool, experiment: &str, kind: impl FnOnce() -> EventKind) {
        if wanted {
            self.events.push(Event {
                at_ms: flotilla_shared::clock::now_ms(),
                experiment: experiment.to_string(),
                kind: kind(),
            });
        }
    }

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
    /// Each worker's share of each shared provider limit.
    pub rate_shares: RateShares,
    /// How the workers use each limited key, for `status`.
    pub rate_use: RateUse,
    /// Someone watches events: decisions note them in the outbox.
    pub events_wanted: bool,
    /// Run durations and LLM calls, for `/metrics`.
    pub telemetry: telemetry::Telemetry,
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
            rate_shares: RateShares::default(),
            rate_use: RateUse::default(),
            events_wanted: false,
            telemetry: telemetry::Telemetry::default(),
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
        capabilities: Capabilities,
        running: Vec<RunningLease>,
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
                capabilities: Capabilities::default(),
                draining: false,
            });
        entry.slots = slots;
        entry.capabilities = capabilities;
        entry.connected = true;
        // A worker still draining says so again on its new connection.
        entry.draining = false;
        entry.session = session;
        entry.last_seen = now;

        let still_running: HashSet<u64> = running.iter().map(|lease| lease.lease_id).collect();
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
        for lease in running {
            if self.leases.contains_key(&lease.lease_id) {
                continue;
            }
            if !self.adopt_running(&name, lease.lease_id, &lease.run, lease.attempt) {
                outbox.cancel(&name, lease.lease_id);
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
        // Its reservation was committed before it was assigned (ARCHITECTURE.md,
        // invariant 1); one the ledger no longer holds is not spent again.
        if let Some(ledger) = &experiment.ledger {
            if ledger.reservation(lease_id).is_none() {
                return false;
            }
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

    /// What a worker serves changed (its Ollama's models, say).
    pub fn worker_capabilities(&mut self, name: &str, session: u64, capabilities: Capabilities) {
        if let Some(entry) = self.workers.get_mut(name) {
            if entry.session == session {
                entry.capabilities = capabilities;
            }
        }
    }

    // ------------------------------------------------------------ setup and teardown

    /// A worker returns runs it will not start, its setup for their
    /// experiment having failed: they are pending again, their attempts
    /// untouched and their reservations freed, and that worker gets no more
    /// runs of the experiment.
    pub fn declined(
        &mut self,
        worker: &str,
        lease_ids: Vec<u64>,
        reason: &str,
        outbox: &mut Outbox,
    ) {
        for lease_id in lease_ids {
            let Some(lease) = self.release_lease(lease_id) else {
                continue;
            };
            let experiment = &mut self.experiments[lease.experiment];
            experiment
                .setup_failed
                .entry(lease.worker.clone())
                .or_insert_with(|| reason.to_string());
            if experiment.runs[lease.run].lease != Some(lease_id) {
                continue;
            }
            experiment.runs[lease.run].lease = None;
            experiment.set_status(lease.run, RunStatus::Pending);
            let run = &experiment.runs[lease.run];
            outbox.event(self.events_wanted, &experiment.config.name, || {
                EventKind::RunRequeued {
                    run: RunRef {
                        variation: run.variation,
                        repetition: run.repetition,
                        attempt: lease.attempt,
                        worker: lease.worker.clone(),
                    },
                    why: format!("declined: {reason}"),
                }
            });
            if let Some(ledger) = experiment.ledger.as_mut() {
                let event = LedgerEvent::Released { lease_id };
                ledger.apply(&event);
                outbox.ledger.push((experiment.db_id, event));
            }
        }
        debug!(worker, "runs declined");
    }

    /// A worker's setup or teardown ended: its log is kept under the
    /// experiment, and a failed setup keeps that worker off the experiment.
    pub fn hook_done(&mut self, worker: &str, report: HookReport, outbox: &mut Outbox) {
        let Some(&index) = self.by_name.get(&report.experiment) else {
            return;
        };
        let name: Arc<str> = worker.into();
        let experiment = &mut self.experiments[index];
        let file = format!("workers/{worker}/{}.log", report.kind.as_str());
        if let (HookKind::Setup, Some(error)) = (report.kind, &report.error) {
            warn!(
                experiment = experiment.name(),
                worker, error, "setup failed: the worker takes no runs of the experiment"
            );
            experiment
                .setup_failed
                .insert(name, format!("{error} (see {file})"));
        }
        outbox.persist.push(Persist::HookLog {
            path: experiment.dir.join(file),
            content: report.log,
        });
    }

    // ------------------------------------------------------------ rate limits

    /// A provider's limits for the whole cluster: the tightest any connected
    /// worker declares (ARCHITECTURE.md, invariant 6).
    fn declared_limits(
        workers: &BTreeMap<Arc<str>, WorkerEntry>,
        provider: &str,
    ) -> Option<Limits> {
        workers
            .values()
            .filter(|w| w.connected)
            .filter_map(|w| w.capabilities.shared_limits.get(provider).copied())
            .reduce(Limits::tightest)
    }

    /// A worker reported its calls per shared key: shares are split anew.
    pub fn rate_demand(&mut self, worker: &str, demand: Vec<KeyDemand>, outbox: &mut Outbox) {
        let Some((name, _)) = self.workers.get_key_value(worker) else {
            return;
        };
        let name = name.clone();
        let workers = &self.workers;
        let changed = self.rate_shares.report(&name, demand, |provider| {
            Self::declared_limits(workers, provider)
        });
        Self::send_shares(changed, outbox);
    }

    /// A worker is gone: its shares go to the others.
    pub fn rate_worker_left(&mut self, worker: &str, outbox: &mut Outbox) {
        let Some((name, _)) = self.workers.get_key_value(worker) else {
            return;
        };
        let name = name.clone();
        let workers = &self.workers;
        let changed = self
            .rate_shares
            .worker_left(&name, |provider| Self::declared_limits(workers, provider));
        Self::send_shares(changed, outbox);
    }

    fn send_shares(changed: Vec<(Arc<str>, RateShare)>, outbox: &mut Outbox) {
        let mut by_worker: Vec<(Arc<str>, Vec<RateShare>)> = Vec::new();
        for (worker, share) in changed {
            match by_worker.iter_mut().find(|(w, _)| *w == worker) {
                Some((_, shares)) => shares.push(share),
                None => by_worker.push((worker, vec![share])),
            }
        }
        for (worker, shares) in by_worker {
            outbox.notices.push((worker, ToWorker::RateShares(shares)));
        }
    }

    /// A provider answered one worker 429: every other worker that calls it
    /// pauses the key too.
    pub fn rate_limited(&mut self, worker: &str, pause: RatePause, outbox: &mut Outbox) {
        if let Some((name, _)) = self.workers.get_key_value(worker) {
            // A provider's limit is the cluster's: the event names no experiment.
            outbox.event(self.events_wanted, "", || EventKind::RateLimited {
                key: pause.key.clone(),
                pause_ms: pause.pause.as_millis() as u64,
                worker: name.clone(),
            });
        }
        for (name, entry) in &self.workers {
            if &**name != worker
                && entry.connected
                && entry.capabilities.providers.contains(&pause.key.provider)
            {
                outbox
                    .notices
                    .push((name.clone(), ToWorker::RatePause(pause.clone())));
            }
        }
    }

    /// The worker drains (SIGTERM, or told to): it gets no more runs.
    pub fn worker_draining(&mut self, name: &str) {
        if let Some(entry) = self.workers.get_mut(name) {
            entry.draining = true;
            info!(
                worker = name,
                running = entry.leases.len(),
                "worker draining"
            );
        }
    }

    /// `flotilla worker drain`: no more runs for the worker, and it is told
    /// to drain. Returns how many runs it is running.
    pub fn drain_worker(
        &mut self,
        name: &str,
        outbox: &mut Outbox,
    ) -> flotilla_shared::Result<u32> {
        let Some((name, entry)) = self.workers.get_key_value(name) else {
            let known: Vec<&str> = self.workers.keys().map(|w| &**w).collect();
            return Err(flotilla_shared::Error::NotFound(format!(
                "no worker named '{name}'; workers: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        if !entry.connected {
            return Err(flotilla_shared::Error::InvalidInput(format!(
                "worker '{name}' is not connected: there is nothing to drain"
            )));
        }
        let name = name.clone();
        outbox.notices.push((name.clone(), ToWorker::Drain));
        self.worker_draining(&name);
        Ok(self.workers[&name].leases.len() as u32)
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
                    reserved: amount,
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
            None => SpendAnswer::Granted,
            Some(ledger) => match ledger.top_up(request.lease_id, request.amount) {
                Ok(event) => {
                    outbox.ledger.push((experiment.db_id, event));
                    SpendAnswer::Granted
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

    /// Removes the lease of a reported result from the lease and worker tables.
    fn release_lease(&mut self, lease_id: u64) -> Option<Lease> {
        let lease = self.leases.remove(&lease_id)?;
        if let Some(entry) = self.workers.get_mut(&lease.worker) {
            entry.leases.remove(&lease_id);
        }
        Some(lease)
    }

    /// The experiment index and run slot of `key`.
    fn locate(&self, key: &RunKey) -> Option<(usize, usize)> {
        let index = *self.by_name.get(&key.experiment)?;
        let slot = *self.experiments[index]
            .run_slots
            .get(&(key.variation, key.repetition))?;
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

    /// Records an accepted result: the run's new status, the attempt's row
    /// and files, the worker's count and the experiment's spending.
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
        let is_current = experiment.runs[slot].lease == Some(result.lease_id);
        let new_status = match result.outcome {
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
        };
        // A late attempt that did not succeed must not disturb a newer attempt that is running.
        let newer_attempt_running = !is_current && experiment.runs[slot].lease.is_some();
        let keeps_running = newer_attempt_running && new_status != RunStatus::Succeeded;
        {
            let run = &mut experiment.runs[slot];
            run.record_attempt(result.attempt);
            if result.outcome == Outcome::HandedBack {
                run.handed_back += 1;
            }
            if !keeps_running {
                run.lease = None;
            }
            run.worker = Some(worker.clone());
        }
        experiment.set_status(
            slot,
            if keeps_running {
                RunStatus::Running
            } else {
                new_status
            },
        );
        // With a budget, the ledger counts spending (`settle`), results that settle nothing included.
        if experiment.ledger.is_none() {
            experiment.spent_usd += result.cost_usd.unwrap_or(0.0);
        }
        let outcome = match result.outcome {
            Outcome::Succeeded => AttemptOutcome::Succeeded,
            Outcome::Failed => AttemptOutcome::Failed,
            Outcome::Cancelled => AttemptOutcome::Cancelled,
            Outcome::HandedBack => AttemptOutcome::HandedBack,
        };
        if !keeps_running {
            let run = RunRef {
                variation: experiment.runs[slot].variation,
                repetition: experiment.runs[slot].repetition,
                attempt: result.attempt,
                worker: worker.clone(),
            };
            let error = || result.error.clone();
            let handed_back = result.outcome == Outcome::HandedBack;
            outbox.event(
                self.events_wanted,
                &experiment.config.name,
                || match new_status {
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
                    RunStatus::Cancelled | RunStatus::Running => EventKind::RunCancelled(run),
                },
            );
        }
        let lease = (result.lease_id, result.attempt, worker.clone());
        let error = result.error.clone();
        let budget_refused = result.budget_stop == Some(BudgetStop::Exhausted);
        outbox
            .persist
            .push(Persist::Attempt(Box::new(AttemptRecord::new(
                experiment,
                slot,
                lease,
                outcome,
                Some(result),
                error,
                now_ms,
            ))));
        if let Some(entry) = self.workers.get_mut(worker) {
            entry.finished += 1;
        }
        if budget_refused {
            // The ledger had no room for one of its calls. Runs go on while
            // their estimates fit: reservations of running runs are mostly
            // given back as they settle (ARCHITECTURE.md, invariant 1).
            let experiment = &mut self.experiments[index];
            experiment.refused_for_budget += 1;
            outbox.event(self.events_wanted, &experiment.config.name, || {
                EventKind::Budget("a run's call was refused: the budget has no room for it".into())
            });
            info!(
                experiment = experiment.name(),
                "a run's call was refused for lack of budget"
            );
        } else if new_status == RunStatus::Failed {
            self.stop_if_failure_ends(index, outbox);
        }
    }

    /// With `continue_on_error: false`, a run that failed for good stops its experiment.
    fn stop_if_failure_ends(&mut self, index: usize, outbox: &mut Outbox) {
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

    // ------------------------------------------------------------ leases

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

    fn lose_lease(&mut self, lease_id: u64, why: &str, outbox: &mut Outbox) {
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
            flotilla_shared::clock::now_ms(),
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
        outbox.persist.push(Persist::Attempt(Box::new(record)));
        if run_status == RunStatus::Failed {
            self.stop_if_failure_ends(index, outbox);
        }
        self.check_finished(index, outbox);
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
