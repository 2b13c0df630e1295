//! The coordinator's state and the decisions over it: which run goes where,
//! what a result or a lost lease does to a run, when an experiment ends.
//!
//! Everything here is plain functions over `&mut State` that write what must
//! happen next into an [`Outbox`]; the coordinator actor carries it out. Unit
//! tests drive these functions directly, with no runtime and no sockets.

mod adaptive;
mod budget;
pub mod events;
mod experiment;
mod leases;
mod lifecycle;
mod limits;
mod rate_shares;
mod rate_use;
mod results;
mod scheduling;
mod scores;
mod submission;
pub mod telemetry;
#[cfg(test)]
mod tests;
mod workers;

pub use budget::{Ledger, LedgerEvent, TopUpRefusal};
pub use experiment::{Experiment, RunEntry, StopReason, VariationEntry};
pub use flotilla_shared::status::{AttemptOutcome, ExperimentState, RunStatus};
pub use flotilla_shared::view::{Counts, KeyUseView};
pub use rate_shares::RateShares;
pub use rate_use::RateUse;
pub use submission::{Submission, Submitted};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_shared::config::RunConfig;
use flotilla_shared::grid::run_seed;
use flotilla_shared::protocol::{Capabilities, SpendGrant, ToWorker};
use flotilla_shared::run::{Assignment, RunResult};

use events::{Event, EventKind};

use crate::store::Write;

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
    /// Silent past the lease timeout: it has fenced itself (ARCHITECTURE.md,
    /// invariant 8), so it gets no runs until it is heard from again.
    pub silent: bool,
}

impl WorkerEntry {
    fn free_slots(&self) -> usize {
        if self.draining || self.silent {
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
    /// The experiment's directory, where its variations' params files are.
    pub experiment_dir: Arc<std::path::Path>,
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
            (RunConfig::Command { .. } | RunConfig::Chat { .. }, Some(_)) => {
                Some(crate::outputs::run_dir_for(
                    &experiment.dir,
                    run.variation,
                    run.repetition,
                    experiment.runs.len(),
                ))
            }
            _ => None,
        };
        AttemptRecord {
            experiment_db_id: experiment.db_id,
            experiment: experiment.config.name.clone(),
            run_dir,
            experiment_dir: experiment.dir.clone(),
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

/// What the decisions want done, and the moment they are made: decisions
/// read no clock, the actor hands them the time with the outbox
/// ([`Outbox::at`]), so tests decide at whatever moment they like.
#[derive(Debug, Default)]
pub struct Outbox {
    /// When the message being handled arrived (Unix milliseconds).
    pub now_ms: i64,
    pub assignments: Vec<(Arc<str>, Vec<Assignment>)>,
    pub cancels: Vec<(Arc<str>, Vec<u64>)>,
    pub grants: Vec<(Arc<str>, SpendGrant)>,
    /// Messages sent at once, not waiting for any write: rate shares and
    /// pauses (ARCHITECTURE.md, invariant 6), experiments ended (teardowns).
    pub notices: Vec<(Arc<str>, ToWorker)>,
    /// Writes for the store, in the order they must be applied.
    pub writes: Vec<Write>,
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
    /// An empty outbox for decisions made at `now_ms`.
    pub fn at(now_ms: i64) -> Self {
        Outbox {
            now_ms,
            ..Outbox::default()
        }
    }

    /// Notes an event when someone listens; `kind` is made only then.
    fn event(&mut self, wanted: bool, experiment: &str, kind: impl FnOnce() -> EventKind) {
        if wanted {
            self.events.push(Event {
                at_ms: self.now_ms,
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
    /// The first lease check: until a lease timeout after it, reservations
    /// restored from before a restart wait for their workers to report.
    first_lease_check: Option<Instant>,
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
            first_lease_check: None,
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
}
