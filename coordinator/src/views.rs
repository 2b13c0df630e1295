//! Read-only projections of the coordinator's state: the status every screen
//! reads (types in `flotilla_shared::view`, converted to messages by
//! `flotilla-wire`) and what `/metrics` shows.

use std::collections::{BTreeMap, HashMap};

use flotilla_shared::pace::PaceEstimate;
use flotilla_shared::status::ExperimentState;
use flotilla_shared::{Error, Result};

use crate::state::telemetry::{Histogram, LlmTotals};
pub use flotilla_shared::view::{
    BudgetView, Counts, ExperimentView, KeyUseView, ShareView, StatusView, VariationView,
    WorkerView,
};

use crate::state::{Experiment, RunStatus, State};
use crate::store::StoreHealth;

/// Why an experiment ended, when its state alone does not say it: for a
/// budget that ran out, how much was spent and how many runs did not start.
pub fn end_reason(experiment: &Experiment, state: ExperimentState) -> Option<String> {
    let ledger = experiment.ledger.as_ref()?;
    (state == ExperimentState::BudgetExhausted).then(|| {
        format!(
            "budget exhausted: {} of {} spent; {} runs did not start (resubmit with a larger budget.total_usd to run them)",
            ledger.spent(),
            ledger.total(),
            experiment.counts.cancelled
        )
    })
}

/// The budget figures of `experiment`, when it has a budget.
pub fn budget(experiment: &Experiment) -> Option<BudgetView> {
    let ledger = experiment.ledger.as_ref()?;
    let unfinished = experiment
        .runs
        .iter()
        .filter(|run| !run.status.is_final())
        .map(|run| (run.variation, run.live_spend));
    let (observed, mean, sd) = ledger.cost_spread();
    Some(BudgetView {
        observed_attempts: observed,
        mean_cost_usd: mean,
        cost_sd_usd: sd,
        total_usd: ledger.total().dollars(),
        spent_usd: ledger.spent().dollars(),
        reserved_usd: ledger.reserved().dollars(),
        left_usd: ledger.left().dollars(),
        projected_usd: ledger.projected(unfinished),
    })
}

/// What its running runs have spent so far, as their workers' heartbeats say
/// (ARCHITECTURE.md, "Worker session").
fn running_spend(experiment: &Experiment) -> flotilla_shared::money::Usd {
    if experiment.state.is_final() {
        return flotilla_shared::money::Usd::ZERO;
    }
    experiment
        .runs
        .iter()
        .filter(|run| run.status == flotilla_shared::status::RunStatus::Running)
        .map(|run| run.live_spend)
        .sum()
}

/// An experiment's figures; `detailed` adds per-variation counts.
pub fn experiment(
    experiment: &Experiment,
    detailed: bool,
    state: &State,
    now_ms: i64,
) -> ExperimentView {
    let variations = if detailed {
        let mut per_variation: Vec<Counts> = vec![Counts::default(); experiment.variations.len()];
        for run in &experiment.runs {
            per_variation[(run.variation - 1) as usize].add(run.status);
        }
        experiment
            .variations
            .iter()
            .zip(per_variation)
            .map(|(variation, counts)| VariationView {
                index: variation.index,
                axis_json: variation.axis_json.clone(),
                counts,
                standing: experiment
                    .adaptive
                    .as_ref()
                    .map(|adaptive| adaptive.standing_words(variation.index))
                    .unwrap_or_default(),
                score: experiment
                    .scores
                    .as_ref()
                    .and_then(|scores| scores.view(variation.index)),
            })
            .collect()
    } else {
        Vec::new()
    };
    // Until its final files are written, a finishing experiment still reads as running.
    ExperimentView {
        name: experiment.config.name.clone(),
        description: experiment.config.description.clone(),
        state: experiment.state,
        counts: experiment.counts,
        variations,
        started_at_ms: experiment.started_at_ms,
        finished_at_ms: experiment.finished_at_ms,
        directory: experiment.dir.to_string_lossy().into_owned(),
        spent_usd: experiment.spent_usd,
        running_spend_usd: running_spend(experiment).dollars(),
        cache: experiment.cache,
        pace: if experiment.state.is_final() {
            PaceEstimate::default()
        } else {
            let c = experiment.counts;
            experiment.pace.estimate(now_ms, c.pending + c.running)
        },
        waiting: waiting(experiment, state),
        budget: budget(experiment),
        end_reason: end_reason(experiment, experiment.state),
        setup_failures: experiment
            .setup_failed
            .iter()
            .map(|(worker, why)| format!("{worker}: {why}"))
            .collect(),
    }
}

/// "waiting: no worker serves ollama/llama3.2; connected workers serve …",
/// when pending runs need models no connected worker serves.
fn waiting(experiment: &Experiment, state: &State) -> Option<String> {
    if experiment.state.is_final() || experiment.counts.pending == 0 {
        return None;
    }
    let connected = state
        .workers
        .values()
        .filter(|w| w.connected)
        .map(|w| &w.capabilities);
    let missing = experiment.unserved_models(connected.clone());
    if missing.is_empty() {
        return None;
    }
    let mut served: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for capabilities in connected {
        served.extend(serves(capabilities));
    }
    let served = if served.is_empty() {
        "no worker is connected".to_string()
    } else {
        format!(
            "connected workers serve {}",
            served.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    Some(format!(
        "waiting: no worker serves {}; {served}",
        missing.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// What a worker serves, in the words of model names: `sim/*`, its
/// Ollama's models, `openrouter/*` for each other provider.
fn serves(capabilities: &flotilla_shared::protocol::Capabilities) -> Vec<String> {
    let mut served = vec!["sim/*".to_string()];
    served.extend(capabilities.models.iter().cloned());
    served.extend(
        capabilities
            .providers
            .iter()
            .filter(|p| *p != "sim" && *p != "ollama")
            .map(|p| format!("{p}/*")),
    );
    served
}

/// Status of one experiment (with per-variation and per-worker figures) or of all.
pub fn status(state: &State, name: Option<&str>, now_ms: i64) -> Result<StatusView> {
    let experiments = match name {
        Some(name) => {
            let experiment = state
                .experiment(name)
                .ok_or_else(|| Error::NotFound(format!("no experiment named '{name}'")))?;
            vec![self::experiment(experiment, true, state, now_ms)]
        }
        None => state
            .experiments
            .iter()
            .map(|e| self::experiment(e, false, state, now_ms))
            .collect(),
    };
    let selected = name.and_then(|n| state.by_name.get(n).copied());
    // Runs of the selected experiment by worker, in one pass: (running, ended).
    let mut per_worker: HashMap<&str, (u32, u64)> = HashMap::new();
    if let Some(index) = selected {
        for run in &state.experiments[index].runs {
            let Some(worker) = run.worker.as_deref() else {
                continue;
            };
            let counts = per_worker.entry(worker).or_default();
            if run.status == RunStatus::Running {
                counts.0 += 1;
            } else if run.status.is_final() {
                counts.1 += 1;
            }
        }
    }
    let workers = state
        .workers
        .iter()
        .map(|(worker_name, worker)| {
            let (running, finished) = match selected {
                Some(_) => per_worker.get(&**worker_name).copied().unwrap_or_default(),
                None => (worker.leases.len() as u32, worker.finished),
            };
            WorkerView {
                name: worker_name.to_string(),
                connected: worker.connected,
                slots: worker.slots,
                running,
                finished,
                serves: serves(&worker.capabilities),
                shares: state
                    .rate_shares
                    .shares_of(worker_name)
                    .into_iter()
                    .map(|(key, share)| {
                        let used = state.rate_use.of_worker(worker_name, &key);
                        ShareView {
                            calls_last_minute: used.map_or(0, |u| u.calls_last_minute),
                            waiting: used.map_or(0, |u| u.waiting),
                            key,
                            share,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let limits = state.rate_use.view(|worker| {
        state
            .workers
            .get(worker)
            .is_some_and(|entry| entry.connected)
    });
    Ok(StatusView {
        experiments,
        workers,
        store_problem: None,
        limits,
    })
}

/// What `/metrics` shows, read from the state and the store's health at one
/// moment by the actor; the HTTP edge renders it (`http/metrics.rs`).
#[derive(Debug, Clone)]
pub struct MetricsView {
    pub experiments: Vec<ExperimentMetrics>,
    pub run_durations: Histogram,
    /// By (provider, model).
    pub llm: BTreeMap<(String, String), LlmTotals>,
    pub limits: Vec<KeyUseView>,
    pub workers_connected: usize,
    pub slots_connected: u64,
    pub commit_latency: Histogram,
    pub uncommitted_results: u64,
}

#[derive(Debug, Clone)]
pub struct ExperimentMetrics {
    pub name: String,
    pub counts: Counts,
    pub running: bool,
    pub spent_usd: f64,
    /// What its running runs have spent so far, beyond `spent_usd`.
    pub running_spend_usd: f64,
    /// Total and reserved, with a budget.
    pub budget: Option<(f64, f64)>,
}

pub fn metrics(state: &State, store: &StoreHealth) -> MetricsView {
    let connected = state.workers.values().filter(|w| w.connected);
    MetricsView {
        experiments: state
            .experiments
            .iter()
            .map(|e| ExperimentMetrics {
                name: e.config.name.clone(),
                counts: e.counts,
                running: !e.state.is_final(),
                spent_usd: e
                    .ledger
                    .as_ref()
                    .map_or(e.spent_usd, |ledger| ledger.spent().dollars()),
                running_spend_usd: running_spend(e).dollars(),
                budget: e
                    .ledger
                    .as_ref()
                    .map(|l| (l.total().dollars(), l.reserved().dollars())),
            })
            .collect(),
        run_durations: state.telemetry.run_durations.clone(),
        llm: state.telemetry.llm.clone(),
        limits: state
            .rate_use
            .view(|worker| state.workers.get(worker).is_some_and(|w| w.connected)),
        workers_connected: connected.clone().count(),
        slots_connected: connected.map(|w| u64::from(w.slots)).sum(),
        commit_latency: store.commit_latency(),
        uncommitted_results: store.uncommitted_results(),
    }
}
