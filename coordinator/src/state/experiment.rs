//! One experiment's manifest in memory: its variations, every run's state,
//! the queue of pending runs and running counts.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use flotilla_shared::config::ExperimentConfig;
use flotilla_shared::grid::Variation;
use flotilla_shared::pace::Pace;
use flotilla_shared::protocol::Capabilities;
use flotilla_shared::status::{ExperimentState, RunStatus};

use super::budget::Ledger;
use super::Counts;
use super::WorkdirRef;

/// Why an experiment takes no new assignments any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    RunFailed,
    /// No pending run's estimate fits in what the budget has left.
    BudgetExhausted,
}

#[derive(Debug, Clone)]
pub struct VariationEntry {
    /// 1-based.
    pub index: u32,
    pub params_json: Arc<str>,
    pub axis_json: String,
}

impl VariationEntry {
    pub fn from_grid(index: u32, variation: &Variation) -> Self {
        VariationEntry {
            index,
            params_json: variation.params_json().into(),
            axis_json: variation.key(),
        }
    }
}

/// Runs that need the same of a worker: the models it must serve.
#[derive(Debug)]
pub struct RunClass {
    pub requires: BTreeSet<String>,
    /// Slots of runs, as u32: a ten-million-run sweep's queue is 40 MB, not 80
    /// (ARCHITECTURE.md, "Scale").
    pending: VecDeque<u32>,
    /// Runs put in `pending` so far: with the ledger's room version, says
    /// whether a search that found nothing fitting can be skipped.
    pushes: u64,
    /// `(room version, pushes)` when a search found no pending run whose
    /// estimate fits: nothing can fit until the ledger frees room or a run
    /// is queued.
    nothing_fits_at: Option<(u64, u64)>,
}

impl RunClass {
    fn new(requires: BTreeSet<String>) -> Self {
        RunClass {
            requires,
            pending: VecDeque::new(),
            pushes: 0,
            nothing_fits_at: None,
        }
    }

    fn push_back(&mut self, slot: usize) {
        self.pending.push_back(slot as u32);
        self.pushes += 1;
    }
}

#[derive(Debug, Clone)]
pub struct RunEntry {
    pub variation: u32,
    pub repetition: u32,
    pub status: RunStatus,
    /// Number of attempts whose outcome has been recorded.
    pub attempts_recorded: u32,
    /// Bit `n - 1` is set when attempt `n` was recorded as lost (its lease expired):
    /// a late result of that attempt may still settle the run (ARCHITECTURE.md, invariant 2).
    pub lost_attempts: u64,
    /// Attempts handed back by draining workers: they do not count against `max_attempts`.
    pub handed_back: u32,
    pub lease: Option<u64>,
    pub worker: Option<Arc<str>>,
    /// While it runs: what its attempt has spent so far, ended calls and
    /// calls in flight, as its worker's heartbeats say.
    pub live_spend: flotilla_shared::money::Usd,
}

impl RunEntry {
    pub fn pending(variation: u32, repetition: u32) -> Self {
        RunEntry {
            variation,
            repetition,
            status: RunStatus::Pending,
            attempts_recorded: 0,
            lost_attempts: 0,
            handed_back: 0,
            lease: None,
            worker: None,
            live_spend: flotilla_shared::money::Usd::ZERO,
        }
    }

    /// Whether attempt `attempt` leaves room for another under `max_attempts`,
    /// not counting attempts handed back by draining workers.
    pub fn may_retry_after(&self, attempt: u32, max_attempts: u32) -> bool {
        attempt.saturating_sub(self.handed_back) < max_attempts
    }

    /// Whether attempt `attempt` was recorded as lost: a late result of it may
    /// still settle the run (ARCHITECTURE.md, invariant 2).
    pub fn attempt_was_lost(&self, attempt: u32) -> bool {
        Self::lost_bit(attempt).is_some_and(|bit| self.lost_attempts & bit != 0)
    }

    /// Attempt `attempt` ended with a result: recorded, and no longer lost.
    pub fn record_attempt(&mut self, attempt: u32) {
        self.attempts_recorded = self.attempts_recorded.max(attempt);
        if let Some(bit) = Self::lost_bit(attempt) {
            self.lost_attempts &= !bit;
        }
    }

    /// Attempt `attempt` was lost with its lease: recorded as lost.
    pub fn record_lost_attempt(&mut self, attempt: u32) {
        self.attempts_recorded = self.attempts_recorded.max(attempt);
        if let Some(bit) = Self::lost_bit(attempt) {
            self.lost_attempts |= bit;
        }
        self.lease = None;
    }

    /// Drops `lease_id` if it is the run's lease (its result came in or it was lost).
    pub fn forget_lease(&mut self, lease_id: u64) {
        if self.lease == Some(lease_id) {
            self.lease = None;
        }
    }

    /// A resubmitted run starts over with a fresh set of attempts.
    pub fn restart_attempts(&mut self) {
        self.attempts_recorded = 0;
        self.lost_attempts = 0;
        self.handed_back = 0;
    }

    /// Only the first 64 attempts are tracked as lost; later ones can only
    /// settle the run while their lease is current.
    fn lost_bit(attempt: u32) -> Option<u64> {
        (1..=64).contains(&attempt).then(|| 1 << (attempt - 1))
    }
}

#[derive(Debug)]
pub struct Experiment {
    pub db_id: i64,
    pub config: ExperimentConfig,
    pub config_yaml: String,
    pub hash: String,
    /// Shared with every attempt record that writes under it.
    pub dir: std::sync::Arc<std::path::Path>,
    pub workdir: Option<WorkdirRef>,
    pub state: ExperimentState,
    pub stopping: Option<StopReason>,
    /// Set when every run ended and the final files are being written; the
    /// state turns final only once they are (results.csv complete first).
    pub finalizing: Option<ExperimentState>,
    /// `variations[i].index == i + 1`.
    pub variations: Vec<VariationEntry>,
    pub runs: Vec<RunEntry>,
    /// `slots[v - 1][r - 1]`: the slot in `runs` of repetition `r` of
    /// variation `v` (4 bytes a run, where a hash map took over 20).
    slots: Vec<Vec<u32>>,
    /// Runs waiting for a worker, by what they need of one: variations that
    /// name the same models share a class. Entries whose run is no longer
    /// pending are skipped when popped.
    pub classes: Vec<RunClass>,
    /// `class_of_variation[v - 1]`: the class of variation `v`.
    class_of_variation: Vec<usize>,
    pub counts: Counts,
    /// Dollars spent by every recorded attempt.
    pub spent_usd: f64,
    /// How its calls used the response cache (ARCHITECTURE.md, "Response cache").
    pub cache: flotilla_shared::calls::CacheSavings,
    /// The budget ledger, when the config has a budget (ARCHITECTURE.md, invariant 1).
    pub ledger: Option<Ledger>,
    /// Workers whose `run.setup` failed, and why: they get no runs of it.
    pub setup_failed: std::collections::BTreeMap<Arc<str>, String>,
    /// Workers given runs of it since it last ended: told when it ends, for their teardown.
    pub workers_used: BTreeSet<Arc<str>>,
    /// Runs stopped because the ledger had no room for one of their calls:
    /// the experiment ends `budget_exhausted` even if every run ended.
    pub refused_for_budget: u64,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// How fast its runs end: one pace for every screen (`flotilla_shared::pace`).
    pub pace: Pace,
    /// Adaptive sampling, when the config asks for it (ARCHITECTURE.md, "Adaptive sampling").
    pub adaptive: Option<super::adaptive::Adaptive>,
    /// The primary metric per variation so far, for screens.
    pub scores: Option<super::scores::Scores>,
}

impl Experiment {
    /// A running experiment with no runs yet; `add_run` fills it in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db_id: i64,
        config: ExperimentConfig,
        config_yaml: String,
        hash: String,
        dir: std::sync::Arc<std::path::Path>,
        workdir: Option<WorkdirRef>,
        variations: Vec<VariationEntry>,
        started_at_ms: i64,
    ) -> Self {
        let ledger = config.budget.as_ref().map(Ledger::new);
        let adaptive = super::adaptive::Adaptive::new(&config);
        let scores = super::scores::Scores::new(&config, variations.len());
        Experiment {
            adaptive,
            scores,
            db_id,
            config,
            config_yaml,
            hash,
            dir,
            workdir,
            state: ExperimentState::Running,
            stopping: None,
            finalizing: None,
            variations,
            runs: Vec::new(),
            slots: Vec::new(),
            classes: Vec::new(),
            class_of_variation: Vec::new(),
            counts: Counts::default(),
            spent_usd: 0.0,
            cache: Default::default(),
            ledger,
            refused_for_budget: 0,
            setup_failed: Default::default(),
            workers_used: BTreeSet::new(),
            started_at_ms,
            finished_at_ms: None,
            pace: Pace::new(started_at_ms, 0),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Room for `runs` more runs, taken exactly: a sweep of millions of runs
    /// would otherwise hold up to twice what it needs.
    pub fn reserve_runs(&mut self, runs: usize) {
        self.runs.reserve_exact(runs);
    }

    /// The slot of repetition `repetition` of variation `variation`, if it has one.
    pub fn slot_of(&self, variation: u32, repetition: u32) -> Option<usize> {
        let by_repetition = self.slots.get((variation as usize).checked_sub(1)?)?;
        let slot = *by_repetition.get((repetition as usize).checked_sub(1)?)?;
        (slot != u32::MAX).then_some(slot as usize)
    }

    pub fn add_run(&mut self, run: RunEntry) -> usize {
        let slot = self.runs.len();
        assert!(slot < u32::MAX as usize, "more runs than a u32 counts");
        let (v, r) = (run.variation as usize - 1, run.repetition as usize - 1);
        if self.slots.len() <= v {
            self.slots.resize_with(v + 1, Vec::new);
        }
        let by_repetition = &mut self.slots[v];
        if by_repetition.len() <= r {
            let wanted = (self.config.runs_per_variation as usize).max(r + 1);
            by_repetition.reserve_exact(wanted - by_repetition.len());
            by_repetition.resize(r + 1, u32::MAX);
        }
        by_repetition[r] = slot as u32;
        self.counts.add(run.status);
        let variation = run.variation;
        self.runs.push(run);
        if self.runs[slot].status == RunStatus::Pending {
            let class = self.class_of(variation);
            self.classes[class].push_back(slot);
        }
        slot
    }

    /// The class of `variation`, classifying variations added since the last call.
    fn class_of(&mut self, variation: u32) -> usize {
        while self.class_of_variation.len() < self.variations.len() {
            let params: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&self.variations[self.class_of_variation.len()].params_json)
                    .unwrap_or_default();
            let requires = self.config.required_models(&params);
            let class = match self.classes.iter().position(|c| c.requires == requires) {
                Some(class) => class,
                None => {
                    self.classes.push(RunClass::new(requires));
                    self.classes.len() - 1
                }
            };
            self.class_of_variation.push(class);
        }
        self.class_of_variation[(variation - 1) as usize]
    }

    /// Changes a run's status, keeping counts and the pending queue in step.
    pub fn set_status(&mut self, slot: usize, status: RunStatus) {
        let old = self.runs[slot].status;
        if old == status {
            return;
        }
        self.counts.remove(old);
        self.counts.add(status);
        self.runs[slot].status = status;
        if status == RunStatus::Pending {
            let class = self.class_of(self.runs[slot].variation);
            self.classes[class].push_back(slot);
        }
    }

    /// Next pending run of any class, skipping queue entries that went stale.
    pub fn pop_pending(&mut self) -> Option<usize> {
        (0..self.classes.len()).find_map(|class| self.pop_from(class))
    }

    /// The run to assign next to a worker with `capabilities`: the first in
    /// queue order (repetition-major, so variations stay balanced) of the
    /// pending runs it can run whose estimate fits in the budget.
    ///
    /// One rule with [`Experiment::budget_exhaustion`]: a run is assigned
    /// while one fits, and the experiment ends when none fits and nothing
    /// runs (ARCHITECTURE.md, invariant 1).
    pub fn take_assignable(&mut self, capabilities: &Capabilities) -> Option<usize> {
        for class in 0..self.classes.len() {
            let served = self.classes[class]
                .requires
                .iter()
                .all(|m| capabilities.serves(m));
            if let Some(slot) = served.then(|| self.take_fitting(class)).flatten() {
                return Some(slot);
            }
        }
        None
    }

    /// Takes the first pending run of `class` whose estimate fits.
    fn take_fitting(&mut self, class: usize) -> Option<usize> {
        let runs = &self.runs;
        let queue = &mut self.classes[class];
        while let Some(&slot) = queue.pending.front() {
            if runs[slot as usize].status == RunStatus::Pending {
                break;
            }
            queue.pending.pop_front();
        }
        let Some(ledger) = self.ledger.as_ref() else {
            return queue.pending.pop_front().map(|slot| slot as usize);
        };
        let seen = (ledger.room_version(), queue.pushes);
        if queue.nothing_fits_at == Some(seen) {
            return None;
        }
        // The front usually fits; past it, the search is over runs of
        // variations whose estimate is larger than what is left.
        let position = queue.pending.iter().position(|&slot| {
            let run = &runs[slot as usize];
            run.status == RunStatus::Pending && ledger.fits(run.variation)
        });
        match position {
            Some(position) => queue.pending.remove(position).map(|slot| slot as usize),
            None => {
                queue.nothing_fits_at = Some(seen);
                None
            }
        }
    }

    /// Whether some pending run's estimate fits in the budget (any worker's).
    fn some_pending_run_fits(&self) -> bool {
        let Some(ledger) = self.ledger.as_ref() else {
            return self.counts.pending > 0;
        };
        self.classes.iter().any(|class| {
            class.pending.iter().any(|&slot| {
                let run = &self.runs[slot as usize];
                run.status == RunStatus::Pending && ledger.fits(run.variation)
            })
        })
    }

    /// Why the budget ends the experiment, when it does: no pending run's
    /// estimate fits and nothing running could free room — the same rule
    /// [`Experiment::take_assignable`] assigns by.
    pub fn budget_exhaustion(&self) -> Option<String> {
        let ledger = self.ledger.as_ref()?;
        if self.counts.pending == 0 || self.counts.running > 0 || self.some_pending_run_fits() {
            return None;
        }
        let cheapest = self
            .pending_variations()
            .into_iter()
            .map(|variation| ledger.estimate(variation))
            .min()?;
        Some(format!(
            "budget exhausted: {} of {} spent; the cheapest pending run's estimate ({cheapest}) does not fit in the {} left, so {} runs did not start",
            ledger.spent(),
            ledger.total(),
            ledger.left(),
            self.counts.pending
        ))
    }

    /// Variations with a run waiting, each once.
    pub fn pending_variations(&self) -> BTreeSet<u32> {
        self.classes
            .iter()
            .flat_map(|class| class.pending.iter())
            .map(|&slot| &self.runs[slot as usize])
            .filter(|run| run.status == RunStatus::Pending)
            .map(|run| run.variation)
            .collect()
    }

    fn pop_from(&mut self, class: usize) -> Option<usize> {
        while let Some(slot) = self.classes[class].pending.pop_front() {
            if self.runs[slot as usize].status == RunStatus::Pending {
                return Some(slot as usize);
            }
        }
        None
    }

    /// Models that pending runs need and no worker of `connected` serves.
    pub fn unserved_models<'a>(
        &self,
        connected: impl Iterator<Item = &'a Capabilities> + Clone,
    ) -> BTreeSet<String> {
        let mut missing = BTreeSet::new();
        for class in &self.classes {
            let waiting = class
                .pending
                .iter()
                .any(|&slot| self.runs[slot as usize].status == RunStatus::Pending);
            if !waiting {
                continue;
            }
            let served_somewhere = connected
                .clone()
                .any(|caps| class.requires.iter().all(|model| caps.serves(model)));
            if !served_somewhere {
                missing.extend(
                    class
                        .requires
                        .iter()
                        .filter(|model| !connected.clone().any(|caps| caps.serves(model)))
                        .cloned(),
                );
            }
        }
        missing
    }

    pub fn accepts_assignments(&self) -> bool {
        self.state == ExperimentState::Running
            && self.stopping.is_none()
            && self.finalizing.is_none()
    }

    pub fn under_parallel_cap(&self) -> bool {
        self.config
            .max_parallel
            .is_none_or(|cap| self.counts.running < u64::from(cap))
    }

    pub fn variation_params(&self, variation: u32) -> &Arc<str> {
        &self.variations[(variation - 1) as usize].params_json
    }

    /// The state the experiment takes once no run is pending or running.
    pub fn final_state(&self) -> ExperimentState {
        match self.stopping {
            Some(StopReason::Cancelled) => ExperimentState::Cancelled,
            Some(StopReason::RunFailed) => ExperimentState::Failed,
            Some(StopReason::BudgetExhausted) => ExperimentState::BudgetExhausted,
            None if self.refused_for_budget > 0 => ExperimentState::BudgetExhausted,
            None => ExperimentState::Completed,
        }
    }
}
