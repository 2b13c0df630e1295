//! The wire: the gRPC services compiled from `proto/` (`proto`), conversions
//! between their messages and the domain types of `flotilla-shared` (here
//! and in `spending`), TLS settings (`tls`) and errors as gRPC statuses
//! (`status`). Protobuf types stay at the edge: the actors only see domain
//! types (ARCHITECTURE.md, "Wire protocol"). An enum value a message does not
//! define is an error. Only the roles that speak gRPC (coordinator, worker,
//! the command line) depend on this crate; the report and the gateway do not
//! compile it.

pub mod status;
mod status_view;
pub mod tls;

/// Generated protobuf and gRPC code (proto/flotilla/v1/flotilla.proto).
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("flotilla.v1");
}

use std::path::PathBuf;
use std::time::Duration;

use flotilla_shared::calls::{Api, CallRecord, CallStatus};
use flotilla_shared::error::Error;

use crate::proto::coordinator_message::Kind as ToWorkerKind;
use crate::proto::worker_message::Kind as FromWorkerKind;
use flotilla_shared::protocol::{
    Capabilities, FromWorker, Hello, HookKind, HookReport, RunningLease, ToWorker, Welcome,
};
use flotilla_shared::rate::{KeyDemand, KeyUse, RatePause, RateShare};
use flotilla_shared::run::{Assignment, Outcome, RunKey, RunResult, RunSpec, ShippedFile};
use flotilla_shared::status::{ExperimentState, SubmitOutcome};
use flotilla_shared::workdir::BundleFile;

pub mod cache;
mod spending;
mod tier;

fn missing(field: &str) -> Error {
    Error::Protocol(format!("message lacks {field}"))
}

impl From<RunKey> for proto::RunKey {
    fn from(key: RunKey) -> Self {
        proto::RunKey {
            experiment: key.experiment,
            variation: key.variation,
            repetition: key.repetition,
        }
    }
}

impl TryFrom<proto::RunKey> for RunKey {
    type Error = Error;
    fn try_from(key: proto::RunKey) -> Result<Self, Error> {
        if key.experiment.is_empty() || key.variation == 0 || key.repetition == 0 {
            return Err(Error::Protocol(format!("invalid run key {key:?}")));
        }
        Ok(RunKey {
            experiment: key.experiment,
            variation: key.variation,
            repetition: key.repetition,
        })
    }
}

fn hook_to_proto(hook: flotilla_shared::config::Hook) -> proto::Hook {
    proto::Hook {
        command: hook.command,
        timeout_ms: hook.timeout_ms,
    }
}

fn hook_from_proto(hook: proto::Hook) -> flotilla_shared::config::Hook {
    flotilla_shared::config::Hook {
        command: hook.command,
        timeout_ms: hook.timeout_ms,
    }
}

impl From<Assignment> for proto::RunAssignment {
    fn from(assignment: Assignment) -> Self {
        let kind = match assignment.spec {
            RunSpec::Command {
                argv,
                workdir_path,
                workdir_hash,
                setup,
                teardown,
            } => proto::run_spec::Kind::Command(proto::CommandSpec {
                argv,
                workdir_path: workdir_path.to_string_lossy().into_owned(),
                workdir_hash,
                setup: setup.map(hook_to_proto),
                teardown: teardown.map(hook_to_proto),
            }),
            RunSpec::Noop => proto::run_spec::Kind::Noop(proto::NoopSpec {}),
            RunSpec::Chat(chat) => proto::run_spec::Kind::Chat(proto::ChatSpec {
                chat_json: serde_json::to_string(&chat).expect("a chat run serialises"),
            }),
        };
        proto::RunAssignment {
            lease_id: assignment.lease_id,
            run: Some(assignment.run.into()),
            attempt: assignment.attempt,
            seed: assignment.seed,
            params_json: assignment.params_json,
            prices: assignment
                .prices
                .into_iter()
                .map(|(model, price)| proto::ModelPrice {
                    model,
                    input: price.input,
                    output: price.output,
                    cached_input: price.cached_input,
                })
                .collect(),
            spec: Some(proto::RunSpec {
                kind: Some(kind),
                timeout_ms: assignment.timeout.as_millis() as u64,
            }),
            budget: assignment.budget.map(Into::into),
            cache_mode: cache::mode_to_proto(assignment.cache.mode).into(),
            cache_max_age_ms: assignment.cache.max_age_ms.unwrap_or(0),
            tier: tier::tier_to_proto(assignment.tier.tier).into(),
            tier_fallback: tier::fallback_to_proto(assignment.tier.fallback).into(),
        }
    }
}

impl TryFrom<proto::RunAssignment> for Assignment {
    type Error = Error;
    fn try_from(message: proto::RunAssignment) -> Result<Self, Error> {
        let cache = flotilla_shared::cache::CachePolicy {
            mode: cache::mode_from_proto(message.cache_mode())?,
            max_age_ms: (message.cache_max_age_ms > 0).then_some(message.cache_max_age_ms),
        };
        let tier = tier::policy_from_proto(message.tier(), message.tier_fallback());
        let spec = message.spec.ok_or_else(|| missing("RunAssignment.spec"))?;
        let kind = match spec.kind.ok_or_else(|| missing("RunSpec.kind"))? {
            proto::run_spec::Kind::Command(command) => RunSpec::Command {
                argv: command.argv,
                workdir_path: PathBuf::from(command.workdir_path),
                workdir_hash: command.workdir_hash,
                setup: command.setup.map(hook_from_proto),
                teardown: command.teardown.map(hook_from_proto),
            },
            proto::run_spec::Kind::Noop(_) => RunSpec::Noop,
            proto::run_spec::Kind::Chat(chat) => RunSpec::Chat(
                serde_json::from_str(&chat.chat_json)
                    .map_err(|e| Error::Protocol(format!("a chat run cannot be read: {e}")))?,
            ),
        };
        Ok(Assignment {
            cache,
            tier,
            lease_id: message.lease_id,
            run: message
                .run
                .ok_or_else(|| missing("RunAssignment.run"))?
                .try_into()?,
            attempt: message.attempt,
            seed: message.seed,
            params_json: message.params_json,
            spec: kind,
            timeout: Duration::from_millis(spec.timeout_ms),
            budget: message.budget.map(Into::into),
            prices: message
                .prices
                .into_iter()
                .map(|price| {
                    (
                        price.model,
                        flotilla_shared::pricing::Prices::new(
                            price.input,
                            price.output,
                            price.cached_input,
                        ),
                    )
                })
                .collect(),
        })
    }
}

impl From<RunResult> for proto::RunResult {
    fn from(result: RunResult) -> Self {
        proto::RunResult {
            lease_id: result.lease_id,
            run: Some(result.run.into()),
            attempt: result.attempt,
            outcome: proto::RunOutcome::from(result.outcome).into(),
            metrics_json: result.metrics_json.unwrap_or_default(),
            exit_code: result.exit_code,
            signal: result.signal,
            timed_out: result.timed_out,
            error: result.error,
            stderr_tail: result.stderr_tail,
            duration_s: result.duration_s,
            started_at_ms: result.started_at_ms,
            cost_usd: result.cost_usd,
            calls: result.calls.into_iter().map(Into::into).collect(),
            budget_stop: spending::budget_stop_to_proto(result.budget_stop).into(),
            files: result
                .files
                .into_iter()
                .map(|f| proto::ShippedFile {
                    path: f.path,
                    content: f.content,
                })
                .collect(),
        }
    }
}

impl TryFrom<proto::RunResult> for RunResult {
    type Error = Error;
    fn try_from(message: proto::RunResult) -> Result<Self, Error> {
        let outcome = Outcome::try_from(message.outcome())?;
        if outcome == Outcome::Succeeded && message.metrics_json.is_empty() {
            return Err(Error::Protocol("a succeeded run must carry metrics".into()));
        }
        if let Some(cost) = message.cost_usd.filter(|c| !c.is_finite() || *c < 0.0) {
            return Err(Error::Protocol(format!(
                "a run's cost must be a non-negative number of dollars, got {cost}"
            )));
        }
        let calls = message
            .calls
            .into_iter()
            .map(CallRecord::try_from)
            .collect::<Result<_, _>>()?;
        Ok(RunResult {
            budget_stop: spending::budget_stop_from_proto(message.budget_stop)?,
            lease_id: message.lease_id,
            cost_usd: message.cost_usd,
            calls,
            run: message
                .run
                .ok_or_else(|| missing("RunResult.run"))?
                .try_into()?,
            attempt: message.attempt,
            outcome,
            metrics_json: (!message.metrics_json.is_empty()).then_some(message.metrics_json),
            exit_code: message.exit_code,
            signal: message.signal,
            timed_out: message.timed_out,
            error: message.error,
            stderr_tail: message.stderr_tail,
            duration_s: message.duration_s,
            started_at_ms: message.started_at_ms,
            files: message
                .files
                .into_iter()
                .map(|f| ShippedFile {
                    path: f.path,
                    content: f.content,
                })
                .collect(),
        })
    }
}

impl From<BundleFile> for proto::WorkdirFile {
    fn from(file: BundleFile) -> Self {
        proto::WorkdirFile {
            path: file.path,
            content: file.content,
            executable: file.executable,
        }
    }
}

impl From<proto::WorkdirFile> for BundleFile {
    fn from(file: proto::WorkdirFile) -> Self {
        BundleFile {
            path: file.path,
            content: file.content,
            executable: file.executable,
        }
    }
}

impl From<Outcome> for proto::RunOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded => proto::RunOutcome::Succeeded,
            Outcome::Failed => proto::RunOutcome::Failed,
            Outcome::Cancelled => proto::RunOutcome::Cancelled,
            Outcome::HandedBack => proto::RunOutcome::HandedBack,
        }
    }
}

impl TryFrom<proto::RunOutcome> for Outcome {
    type Error = Error;
    fn try_from(outcome: proto::RunOutcome) -> Result<Self, Error> {
        match outcome {
            proto::RunOutcome::Succeeded => Ok(Outcome::Succeeded),
            proto::RunOutcome::Failed => Ok(Outcome::Failed),
            proto::RunOutcome::Cancelled => Ok(Outcome::Cancelled),
            proto::RunOutcome::HandedBack => Ok(Outcome::HandedBack),
            proto::RunOutcome::Unspecified => Err(missing("RunResult.outcome")),
        }
    }
}

impl From<CallRecord> for proto::LlmCall {
    fn from(call: CallRecord) -> Self {
        proto::LlmCall {
            started_at_ms: call.started_at_ms,
            provider: call.provider,
            model: call.model,
            api: match call.api {
                Api::Openai => proto::LlmApi::Openai,
                Api::Anthropic => proto::LlmApi::Anthropic,
                Api::Ollama => proto::LlmApi::Ollama,
            }
            .into(),
            streamed: call.streamed,
            input_tokens: call.input_tokens,
            output_tokens: call.output_tokens,
            cached_input_tokens: call.cached_input_tokens,
            cost_usd: call.cost_usd,
            cost_is_worst_case: call.cost_is_worst_case,
            latency_ms: call.latency_ms,
            time_to_first_token_ms: call.time_to_first_token_ms,
            retries: call.retries,
            status: match call.status {
                CallStatus::Succeeded => proto::CallStatus::Succeeded,
                CallStatus::Failed => proto::CallStatus::Failed,
            }
            .into(),
            error: call.error.unwrap_or_default(),
            cache: cache::use_to_proto(call.cache).into(),
            would_cost_usd: call.would_cost_usd,
            cached_from: call.cached_from.map(cache::from_to_proto),
            tier: tier::tier_to_proto(call.tier).into(),
            tier_saved_usd: call.tier_saved_usd,
            tier_refusals: call.tier_refusals,
        }
    }
}

impl TryFrom<proto::LlmCall> for CallRecord {
    type Error = Error;
    fn try_from(call: proto::LlmCall) -> Result<Self, Error> {
        let api = match call.api() {
            proto::LlmApi::Openai => Api::Openai,
            proto::LlmApi::Anthropic => Api::Anthropic,
            proto::LlmApi::Ollama => Api::Ollama,
            proto::LlmApi::Unspecified => return Err(missing("LlmCall.api")),
        };
        let status = match call.status() {
            proto::CallStatus::Succeeded => CallStatus::Succeeded,
            proto::CallStatus::Failed => CallStatus::Failed,
            proto::CallStatus::Unspecified => return Err(missing("LlmCall.status")),
        };
        if !(call.cost_usd.is_finite() && call.cost_usd >= 0.0) {
            return Err(Error::Protocol(format!(
                "a call's cost must be a non-negative number of dollars, got {}",
                call.cost_usd
            )));
        }
        let cache = cache::use_from_proto(call.cache())?;
        let served_tier = tier::tier_from_proto(call.tier());
        Ok(CallRecord {
            cache,
            started_at_ms: call.started_at_ms,
            provider: call.provider,
            model: call.model,
            api,
            streamed: call.streamed,
            input_tokens: call.input_tokens,
            output_tokens: call.output_tokens,
            cached_input_tokens: call.cached_input_tokens,
            cost_usd: call.cost_usd,
            cost_is_worst_case: call.cost_is_worst_case,
            latency_ms: call.latency_ms,
            time_to_first_token_ms: call.time_to_first_token_ms,
            retries: call.retries,
            status,
            would_cost_usd: call.would_cost_usd,
            cached_from: call.cached_from.map(cache::from_from_proto),
            tier: served_tier,
            tier_saved_usd: call.tier_saved_usd,
            tier_refusals: call.tier_refusals,
            error: (!call.error.is_empty()).then_some(call.error),
        })
    }
}

impl From<ExperimentState> for proto::ExperimentState {
    fn from(state: ExperimentState) -> Self {
        match state {
            ExperimentState::Running => proto::ExperimentState::Running,
            ExperimentState::Completed => proto::ExperimentState::Completed,
            ExperimentState::Failed => proto::ExperimentState::Failed,
            ExperimentState::Cancelled => proto::ExperimentState::Cancelled,
            ExperimentState::BudgetExhausted => proto::ExperimentState::BudgetExhausted,
        }
    }
}

impl TryFrom<proto::ExperimentState> for ExperimentState {
    type Error = Error;
    fn try_from(state: proto::ExperimentState) -> Result<Self, Error> {
        match state {
            proto::ExperimentState::Running => Ok(ExperimentState::Running),
            proto::ExperimentState::Completed => Ok(ExperimentState::Completed),
            proto::ExperimentState::Failed => Ok(ExperimentState::Failed),
            proto::ExperimentState::Cancelled => Ok(ExperimentState::Cancelled),
            proto::ExperimentState::BudgetExhausted => Ok(ExperimentState::BudgetExhausted),
            proto::ExperimentState::Unspecified => Err(missing("ExperimentStatus.state")),
        }
    }
}

/// The state of a status message; an unknown number is an error, not "running".
pub fn experiment_state(status: &proto::ExperimentStatus) -> Result<ExperimentState, Error> {
    proto::ExperimentState::try_from(status.state)
        .map_err(|_| Error::Protocol(format!("unknown experiment state {}", status.state)))?
        .try_into()
}

impl From<SubmitOutcome> for proto::SubmitOutcome {
    fn from(outcome: SubmitOutcome) -> Self {
        match outcome {
            SubmitOutcome::Created => proto::SubmitOutcome::Created,
            SubmitOutcome::Resumed => proto::SubmitOutcome::Resumed,
            SubmitOutcome::Extended => proto::SubmitOutcome::Extended,
            SubmitOutcome::Unchanged => proto::SubmitOutcome::Unchanged,
        }
    }
}

impl TryFrom<proto::SubmitOutcome> for SubmitOutcome {
    type Error = Error;
    fn try_from(outcome: proto::SubmitOutcome) -> Result<Self, Error> {
        match outcome {
            proto::SubmitOutcome::Created => Ok(SubmitOutcome::Created),
            proto::SubmitOutcome::Resumed => Ok(SubmitOutcome::Resumed),
            proto::SubmitOutcome::Extended => Ok(SubmitOutcome::Extended),
            proto::SubmitOutcome::Unchanged => Ok(SubmitOutcome::Unchanged),
            proto::SubmitOutcome::Unspecified => Err(missing("SubmitReply.outcome")),
        }
    }
}

impl From<Capabilities> for proto::Capabilities {
    fn from(capabilities: Capabilities) -> Self {
        proto::Capabilities {
            run_kinds: capabilities.run_kinds.into_iter().collect(),
            providers: capabilities.providers.into_iter().collect(),
            models: capabilities.models.into_iter().collect(),
            shared_limits: capabilities
                .shared_limits
                .into_iter()
                .map(|(provider, limits)| proto::ProviderLimits {
                    provider,
                    limits: Some(limits.into()),
                })
                .collect(),
        }
    }
}

impl From<proto::Capabilities> for Capabilities {
    fn from(capabilities: proto::Capabilities) -> Self {
        Capabilities {
            run_kinds: capabilities.run_kinds.into_iter().collect(),
            providers: capabilities.providers.into_iter().collect(),
            models: capabilities.models.into_iter().collect(),
            shared_limits: capabilities
                .shared_limits
                .into_iter()
                .map(|limits| {
                    (
                        limits.provider,
                        limits.limits.map(Into::into).unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }
}

impl From<RunningLease> for proto::RunningLease {
    fn from(lease: RunningLease) -> Self {
        proto::RunningLease {
            lease_id: lease.lease_id,
            run: Some(lease.run.into()),
            attempt: lease.attempt,
        }
    }
}

impl TryFrom<proto::RunningLease> for RunningLease {
    type Error = Error;
    fn try_from(lease: proto::RunningLease) -> Result<Self, Error> {
        Ok(RunningLease {
            lease_id: lease.lease_id,
            run: lease
                .run
                .ok_or_else(|| missing("RunningLease.run"))?
                .try_into()?,
            attempt: lease.attempt,
        })
    }
}

impl From<FromWorker> for proto::WorkerMessage {
    fn from(message: FromWorker) -> Self {
        let kind = match message {
            FromWorker::Hello(hello) => FromWorkerKind::Hello(proto::Hello {
                name: hello.name,
                slots: hello.slots,
                version: hello.version,
                token: hello.token,
                capabilities: Some(hello.capabilities.into()),
                running: hello.running.into_iter().map(Into::into).collect(),
            }),
            FromWorker::Ready { free_slots } => FromWorkerKind::Ready(proto::Ready { free_slots }),
            FromWorker::Progress { lease_id, message } => {
                FromWorkerKind::Progress(proto::RunProgress { lease_id, message })
            }
            FromWorker::Finished(results) => FromWorkerKind::Finished(proto::RunsFinished {
                results: results.into_iter().map(Into::into).collect(),
            }),
            FromWorker::Heartbeat {
                running,
                demand,
                usage,
                spend,
                number,
            } => FromWorkerKind::Heartbeat(proto::Heartbeat {
                running,
                number,
                demand: demand.into_iter().map(Into::into).collect(),
                usage: usage.into_iter().map(Into::into).collect(),
                spend: spend
                    .into_iter()
                    .map(|run| proto::RunSpend {
                        lease_id: run.lease_id,
                        spent_nanos: run.spent.nanos(),
                        in_flight_nanos: run.in_flight.nanos(),
                    })
                    .collect(),
            }),
            FromWorker::Capabilities(capabilities) => {
                FromWorkerKind::Capabilities(capabilities.into())
            }
            FromWorker::SpendRequest(request) => FromWorkerKind::SpendRequest(request.into()),
            FromWorker::RateLimited(pause) => FromWorkerKind::RateLimited(pause.into()),
            FromWorker::Declined { lease_ids, reason } => {
                FromWorkerKind::Declined(proto::Declined { lease_ids, reason })
            }
            FromWorker::Draining => FromWorkerKind::Draining(proto::Draining {}),
            FromWorker::HookDone(report) => FromWorkerKind::HookDone(proto::HookReport {
                experiment: report.experiment,
                kind: match report.kind {
                    HookKind::Setup => proto::HookKind::Setup,
                    HookKind::Teardown => proto::HookKind::Teardown,
                }
                .into(),
                succeeded: report.error.is_none(),
                error: report.error.unwrap_or_default(),
                log: report.log,
            }),
        };
        proto::WorkerMessage { kind: Some(kind) }
    }
}

impl TryFrom<proto::WorkerMessage> for FromWorker {
    type Error = Error;
    fn try_from(message: proto::WorkerMessage) -> Result<Self, Error> {
        Ok(
            match message.kind.ok_or_else(|| missing("WorkerMessage.kind"))? {
                FromWorkerKind::Hello(hello) => FromWorker::Hello(Hello {
                    name: hello.name,
                    slots: hello.slots,
                    version: hello.version,
                    token: hello.token,
                    capabilities: hello.capabilities.map(Into::into).unwrap_or_default(),
                    running: hello
                        .running
                        .into_iter()
                        .map(RunningLease::try_from)
                        .collect::<Result<_, _>>()?,
                }),
                FromWorkerKind::Ready(ready) => FromWorker::Ready {
                    free_slots: ready.free_slots,
                },
                FromWorkerKind::Progress(progress) => FromWorker::Progress {
                    lease_id: progress.lease_id,
                    message: progress.message,
                },
                FromWorkerKind::Finished(finished) => FromWorker::Finished(
                    finished
                        .results
                        .into_iter()
                        .map(RunResult::try_from)
                        .collect::<Result<_, _>>()?,
                ),
                FromWorkerKind::Heartbeat(heartbeat) => FromWorker::Heartbeat {
                    running: heartbeat.running,
                    number: heartbeat.number,
                    demand: heartbeat
                        .demand
                        .into_iter()
                        .map(KeyDemand::try_from)
                        .collect::<Result<_, _>>()?,
                    usage: heartbeat
                        .usage
                        .into_iter()
                        .map(KeyUse::try_from)
                        .collect::<Result<_, _>>()?,
                    spend: heartbeat
                        .spend
                        .into_iter()
                        .map(|run| flotilla_shared::protocol::RunSpend {
                            lease_id: run.lease_id,
                            spent: flotilla_shared::money::Usd::from_nanos(run.spent_nanos),
                            in_flight: flotilla_shared::money::Usd::from_nanos(run.in_flight_nanos),
                        })
                        .collect(),
                },
                FromWorkerKind::Capabilities(capabilities) => {
                    FromWorker::Capabilities(capabilities.into())
                }
                FromWorkerKind::SpendRequest(request) => FromWorker::SpendRequest(request.into()),
                FromWorkerKind::RateLimited(pause) => {
                    FromWorker::RateLimited(RatePause::try_from(pause)?)
                }
                FromWorkerKind::Declined(declined) => FromWorker::Declined {
                    lease_ids: declined.lease_ids,
                    reason: declined.reason,
                },
                FromWorkerKind::Draining(_) => FromWorker::Draining,
                FromWorkerKind::HookDone(report) => FromWorker::HookDone(HookReport {
                    kind: match proto::HookKind::try_from(report.kind) {
                        Ok(proto::HookKind::Setup) => HookKind::Setup,
                        Ok(proto::HookKind::Teardown) => HookKind::Teardown,
                        _ => {
                            return Err(Error::Protocol(format!(
                                "unknown hook kind {}",
                                report.kind
                            )))
                        }
                    },
                    experiment: report.experiment,
                    error: (!report.succeeded).then_some(report.error),
                    log: report.log,
                }),
            },
        )
    }
}

impl From<ToWorker> for proto::CoordinatorMessage {
    fn from(message: ToWorker) -> Self {
        let kind = match message {
            ToWorker::Welcome(welcome) => ToWorkerKind::Welcome(proto::Welcome {
                worker_id: welcome.worker_id,
                heartbeat_interval_ms: welcome.heartbeat_interval.as_millis() as u64,
                lease_timeout_ms: welcome.lease_timeout.as_millis() as u64,
            }),
            ToWorker::Assign(assignments) => ToWorkerKind::Assign(proto::Assign {
                runs: assignments.into_iter().map(Into::into).collect(),
            }),
            ToWorker::Cancel(lease_ids) => ToWorkerKind::Cancel(proto::Cancel { lease_ids }),
            ToWorker::Ack(lease_ids) => ToWorkerKind::Ack(proto::Ack { lease_ids }),
            ToWorker::Drain => ToWorkerKind::Drain(proto::Drain {}),
            ToWorker::SpendGrant(grant) => ToWorkerKind::SpendGrant(grant.into()),
            ToWorker::RateShares(shares) => ToWorkerKind::RateShares(proto::RateShares {
                shares: shares.into_iter().map(Into::into).collect(),
            }),
            ToWorker::RatePause(pause) => ToWorkerKind::RatePause(pause.into()),
            ToWorker::ExperimentEnded(experiment) => {
                ToWorkerKind::ExperimentEnded(proto::ExperimentEnded { experiment })
            }
            ToWorker::Renewed(heartbeat) => ToWorkerKind::Renewed(proto::Renewed { heartbeat }),
        };
        proto::CoordinatorMessage { kind: Some(kind) }
    }
}

impl TryFrom<proto::CoordinatorMessage> for ToWorker {
    type Error = Error;
    fn try_from(message: proto::CoordinatorMessage) -> Result<Self, Error> {
        Ok(
            match message
                .kind
                .ok_or_else(|| missing("CoordinatorMessage.kind"))?
            {
                ToWorkerKind::Welcome(welcome) => ToWorker::Welcome(Welcome {
                    worker_id: welcome.worker_id,
                    heartbeat_interval: Duration::from_millis(welcome.heartbeat_interval_ms),
                    lease_timeout: Duration::from_millis(welcome.lease_timeout_ms),
                }),
                ToWorkerKind::Assign(assign) => ToWorker::Assign(
                    assign
                        .runs
                        .into_iter()
                        .map(Assignment::try_from)
                        .collect::<Result<_, _>>()?,
                ),
                ToWorkerKind::Cancel(cancel) => ToWorker::Cancel(cancel.lease_ids),
                ToWorkerKind::Ack(ack) => ToWorker::Ack(ack.lease_ids),
                ToWorkerKind::Drain(_) => ToWorker::Drain,
                ToWorkerKind::SpendGrant(grant) => ToWorker::SpendGrant(grant.into()),
                ToWorkerKind::RateShares(shares) => ToWorker::RateShares(
                    shares
                        .shares
                        .into_iter()
                        .map(RateShare::try_from)
                        .collect::<Result<_, _>>()?,
                ),
                ToWorkerKind::RatePause(pause) => ToWorker::RatePause(pause.try_into()?),
                ToWorkerKind::ExperimentEnded(ended) => ToWorker::ExperimentEnded(ended.experiment),
                ToWorkerKind::Renewed(renewed) => ToWorker::Renewed(renewed.heartbeat),
            },
        )
    }
}

/// Largest gRPC message either side accepts: results carry logs and artifacts.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_round_trips() {
        let assignment = Assignment {
            lease_id: 7,
            run: RunKey {
                experiment: "e".into(),
                variation: 2,
                repetition: 3,
            },
            attempt: 1,
            seed: 99,
            params_json: "{\"a\":1}".into(),
            spec: RunSpec::Command {
                argv: vec!["echo".into()],
                workdir_path: "/w".into(),
                workdir_hash: "h".into(),
                setup: Some(flotilla_shared::config::Hook {
                    command: vec!["sh".into(), "prepare.sh".into()],
                    timeout_ms: 30_000,
                }),
                teardown: None,
            },
            timeout: Duration::from_secs(5),
            prices: [(
                "remote/m".to_string(),
                flotilla_shared::pricing::Prices::new(1.0, 2.0, 0.5),
            )]
            .into_iter()
            .collect(),
            budget: Some(flotilla_shared::run::AssignedBudget {
                granted: flotilla_shared::money::Usd::charge(0.25),
                per_run_cap: flotilla_shared::money::Usd::charge(2.0),
                per_run_declared: true,
            }),
            cache: flotilla_shared::cache::CachePolicy {
                mode: flotilla_shared::cache::CacheMode::Replay,
                max_age_ms: Some(86_400_000),
            },
            tier: flotilla_shared::tier::TierPolicy::flex(
                flotilla_shared::tier::TierFallback::Wait,
            ),
        };
        let message: proto::RunAssignment = assignment.clone().into();
        assert_eq!(Assignment::try_from(message).unwrap(), assignment);
    }

    #[test]
    fn a_result_without_an_outcome_is_refused() {
        let result = RunResult {
            outcome: Outcome::Succeeded,
            metrics_json: Some("{}".into()),
            ..RunResult::failed(
                &Assignment {
                    lease_id: 1,
                    run: RunKey {
                        experiment: "e".into(),
                        variation: 1,
                        repetition: 1,
                    },
                    attempt: 1,
                    seed: 0,
                    params_json: "{}".into(),
                    spec: RunSpec::Noop,
                    timeout: Duration::from_secs(1),
                    prices: Default::default(),
                    budget: None,
                    cache: Default::default(),
                    tier: Default::default(),
                },
                String::new(),
                0,
            )
        };
        let mut message: proto::RunResult = result.clone().into();
        assert_eq!(RunResult::try_from(message.clone()).unwrap(), result);
        message.outcome = proto::RunOutcome::Unspecified.into();
        assert!(RunResult::try_from(message.clone()).is_err());
        message.outcome = 42;
        assert!(RunResult::try_from(message).is_err());
    }

    #[test]
    fn refuses_invalid_run_keys() {
        let key = proto::RunKey {
            experiment: "e".into(),
            variation: 0,
            repetition: 1,
        };
        assert!(RunKey::try_from(key).is_err());
    }
}
