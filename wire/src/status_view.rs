//! The status every screen reads (`flotilla_shared::view`) as messages and
//! back: the coordinator answers Status and Watch with it, the command line
//! reads it into the same domain types the dashboard shows.

use std::time::Duration;

use flotilla_shared::calls::CacheSavings;
use flotilla_shared::error::Error;
use flotilla_shared::pace::PaceEstimate;
use flotilla_shared::status::ExperimentState;
use flotilla_shared::view::{
    BudgetView, Counts, ExperimentView, KeyUseView, ScoreView, StatusView, VariationView,
    WorkerView,
};

use super::{experiment_state, missing, proto};

impl From<Counts> for proto::StateCounts {
    fn from(counts: Counts) -> Self {
        proto::StateCounts {
            pending: counts.pending,
            running: counts.running,
            succeeded: counts.succeeded,
            failed: counts.failed,
            cancelled: counts.cancelled,
            decided: counts.decided,
        }
    }
}

impl From<proto::StateCounts> for Counts {
    fn from(counts: proto::StateCounts) -> Self {
        Counts {
            pending: counts.pending,
            running: counts.running,
            succeeded: counts.succeeded,
            failed: counts.failed,
            cancelled: counts.cancelled,
            decided: counts.decided,
        }
    }
}

impl From<BudgetView> for proto::BudgetStatus {
    fn from(budget: BudgetView) -> Self {
        proto::BudgetStatus {
            total_usd: budget.total_usd,
            spent_usd: budget.spent_usd,
            reserved_usd: budget.reserved_usd,
            left_usd: budget.left_usd,
            projected_usd: budget.projected_usd,
            observed_attempts: budget.observed_attempts,
            mean_cost_usd: budget.mean_cost_usd,
            cost_sd_usd: budget.cost_sd_usd,
        }
    }
}

impl From<proto::BudgetStatus> for BudgetView {
    fn from(budget: proto::BudgetStatus) -> Self {
        BudgetView {
            total_usd: budget.total_usd,
            spent_usd: budget.spent_usd,
            reserved_usd: budget.reserved_usd,
            left_usd: budget.left_usd,
            projected_usd: budget.projected_usd,
            observed_attempts: budget.observed_attempts,
            mean_cost_usd: budget.mean_cost_usd,
            cost_sd_usd: budget.cost_sd_usd,
        }
    }
}

impl From<ExperimentView> for proto::ExperimentStatus {
    fn from(view: ExperimentView) -> Self {
        proto::ExperimentStatus {
            name: view.name,
            description: view.description,
            state: proto::ExperimentState::from(view.state).into(),
            counts: Some(view.counts.into()),
            total_runs: view.counts.total(),
            variations: view
                .variations
                .into_iter()
                .map(|v| proto::VariationStatus {
                    index: v.index,
                    params_json: v.axis_json,
                    counts: Some(v.counts.into()),
                    standing: v.standing,
                    score: v.score.map(|score| proto::Score {
                        metric: score.metric,
                        n: score.n,
                        mean: score.mean,
                        sd: score.sd,
                        rate: score.rate,
                        minimize: score.minimize,
                    }),
                })
                .collect(),
            started_at_ms: view.started_at_ms,
            finished_at_ms: view.finished_at_ms.unwrap_or(0),
            directory: view.directory,
            spent_usd: view.spent_usd,
            running_spend_usd: view.running_spend_usd,
            waiting: view.waiting.unwrap_or_default(),
            end_reason: view.end_reason.unwrap_or_default(),
            setup_failures: view.setup_failures,
            runs_per_minute: view.pace.runs_per_minute,
            eta_seconds: view.pace.eta.map(|eta| eta.as_secs_f64()),
            budget: view.budget.map(Into::into),
            cache: Some(proto::CacheSavings {
                calls: view.cache.calls,
                hits: view.cache.hits,
                saved_usd: view.cache.saved_usd,
                recorded_from_ms: view.cache.recorded_from_ms.unwrap_or(0),
                recorded_to_ms: view.cache.recorded_to_ms.unwrap_or(0),
            }),
        }
    }
}

impl TryFrom<proto::ExperimentStatus> for ExperimentView {
    type Error = Error;
    fn try_from(status: proto::ExperimentStatus) -> Result<Self, Error> {
        let state: ExperimentState = experiment_state(&status)?;
        let counts = Counts::from(
            status
                .counts
                .ok_or_else(|| missing("ExperimentStatus.counts"))?,
        );
        let pace = PaceEstimate {
            runs_per_minute: status.runs_per_minute,
            eta: status
                .eta_seconds
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64),
            remaining: counts.pending + counts.running,
        };
        Ok(ExperimentView {
            name: status.name,
            description: status.description,
            state,
            counts,
            variations: status
                .variations
                .into_iter()
                .map(|v| VariationView {
                    index: v.index,
                    axis_json: v.params_json,
                    counts: v.counts.unwrap_or_default().into(),
                    standing: v.standing,
                    score: v.score.map(|score| ScoreView {
                        metric: score.metric,
                        n: score.n,
                        mean: score.mean,
                        sd: score.sd,
                        rate: score.rate,
                        minimize: score.minimize,
                    }),
                })
                .collect(),
            started_at_ms: status.started_at_ms,
            finished_at_ms: (status.finished_at_ms > 0).then_some(status.finished_at_ms),
            directory: status.directory,
            spent_usd: status.spent_usd,
            running_spend_usd: status.running_spend_usd,
            pace,
            waiting: (!status.waiting.is_empty()).then_some(status.waiting),
            budget: status.budget.map(Into::into),
            end_reason: (!status.end_reason.is_empty()).then_some(status.end_reason),
            setup_failures: status.setup_failures,
            cache: status
                .cache
                .map(|cache| CacheSavings {
                    calls: cache.calls,
                    hits: cache.hits,
                    saved_usd: cache.saved_usd,
                    recorded_from_ms: (cache.recorded_from_ms > 0)
                        .then_some(cache.recorded_from_ms),
                    recorded_to_ms: (cache.recorded_to_ms > 0).then_some(cache.recorded_to_ms),
                })
                .unwrap_or_default(),
        })
    }
}

impl From<StatusView> for proto::StatusReply {
    fn from(view: StatusView) -> Self {
        proto::StatusReply {
            experiments: view.experiments.into_iter().map(Into::into).collect(),
            workers: view
                .workers
                .into_iter()
                .map(|w| proto::WorkerStatus {
                    name: w.name,
                    connected: w.connected,
                    slots: w.slots,
                    running: w.running,
                    finished: w.finished,
                    serves: w.serves,
                })
                .collect(),
            store_problem: view.store_problem.unwrap_or_default(),
            limits: view
                .limits
                .into_iter()
                .map(|limit| proto::LimitStatus {
                    key: Some(limit.key.into()),
                    declared: Some(limit.declared.into()),
                    shared: limit.shared,
                    workers: limit.workers,
                    calls: limit.calls,
                    calls_last_minute: limit.calls_last_minute,
                    tokens_last_minute: limit.tokens_last_minute,
                    waiting: limit.waiting,
                    throttled: limit.throttled,
                    waited_ms: limit.waited_ms,
                })
                .collect(),
            events: Vec::new(),
            events_missed: 0,
        }
    }
}

/// The status in a reply, as domain types (its events aside). Workers' shares
/// of shared limits do not travel: only the dashboard, on the coordinator, shows them.
impl TryFrom<&proto::StatusReply> for StatusView {
    type Error = Error;
    fn try_from(reply: &proto::StatusReply) -> Result<Self, Error> {
        Ok(StatusView {
            experiments: reply
                .experiments
                .iter()
                .cloned()
                .map(ExperimentView::try_from)
                .collect::<Result<_, _>>()?,
            workers: reply
                .workers
                .iter()
                .map(|w| WorkerView {
                    name: w.name.clone(),
                    connected: w.connected,
                    slots: w.slots,
                    running: w.running,
                    finished: w.finished,
                    serves: w.serves.clone(),
                    shares: Vec::new(),
                })
                .collect(),
            store_problem: (!reply.store_problem.is_empty()).then(|| reply.store_problem.clone()),
            limits: reply
                .limits
                .iter()
                .map(|limit| {
                    Ok(KeyUseView {
                        key: super::spending::rate_key(limit.key.clone())?,
                        declared: limit.declared.unwrap_or_default().into(),
                        shared: limit.shared,
                        workers: limit.workers,
                        calls: limit.calls,
                        calls_last_minute: limit.calls_last_minute,
                        tokens_last_minute: limit.tokens_last_minute,
                        waiting: limit.waiting,
                        throttled: limit.throttled,
                        waited_ms: limit.waited_ms,
                    })
                })
                .collect::<Result<_, Error>>()?,
        })
    }
}
