//! Conversions between protobuf messages and domain types. Protobuf types stay
//! at the edge: decision code only sees the domain types (STYLE §2).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::proto;
use crate::run::{Assignment, Outcome, RunKey, RunResult, RunSpec, ShippedFile};
use crate::workdir::BundleFile;

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

impl From<Assignment> for proto::RunAssignment {
    fn from(assignment: Assignment) -> Self {
        let kind = match assignment.spec {
            RunSpec::Command {
                argv,
                workdir_path,
                workdir_hash,
            } => proto::run_spec::Kind::Command(proto::CommandSpec {
                argv,
                workdir_path: workdir_path.to_string_lossy().into_owned(),
                workdir_hash,
            }),
            RunSpec::Noop => proto::run_spec::Kind::Noop(proto::NoopSpec {}),
        };
        proto::RunAssignment {
            lease_id: assignment.lease_id,
            run: Some(assignment.run.into()),
            attempt: assignment.attempt,
            seed: assignment.seed,
            params_json: assignment.params_json,
            spec: Some(proto::RunSpec {
                kind: Some(kind),
                timeout_ms: assignment.timeout.as_millis() as u64,
            }),
        }
    }
}

impl TryFrom<proto::RunAssignment> for Assignment {
    type Error = Error;
    fn try_from(message: proto::RunAssignment) -> Result<Self, Error> {
        let spec = message.spec.ok_or_else(|| missing("RunAssignment.spec"))?;
        let kind = match spec.kind.ok_or_else(|| missing("RunSpec.kind"))? {
            proto::run_spec::Kind::Command(command) => RunSpec::Command {
                argv: command.argv,
                workdir_path: PathBuf::from(command.workdir_path),
                workdir_hash: command.workdir_hash,
            },
            proto::run_spec::Kind::Noop(_) => RunSpec::Noop,
        };
        Ok(Assignment {
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
        })
    }
}

impl From<RunResult> for proto::RunResult {
    fn from(result: RunResult) -> Self {
        proto::RunResult {
            lease_id: result.lease_id,
            run: Some(result.run.into()),
            attempt: result.attempt,
            succeeded: result.outcome == Outcome::Succeeded,
            cancelled: result.outcome == Outcome::Cancelled,
            metrics_json: result.metrics_json.unwrap_or_default(),
            exit_code: result.exit_code,
            signal: result.signal,
            timed_out: result.timed_out,
            error: result.error,
            stderr_tail: result.stderr_tail,
            duration_s: result.duration_s,
            started_at_ms: result.started_at_ms,
            cost_usd: result.cost_usd,
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
        let outcome = match (message.succeeded, message.cancelled) {
            (true, _) => Outcome::Succeeded,
            (false, true) => Outcome::Cancelled,
            (false, false) => Outcome::Failed,
        };
        if outcome == Outcome::Succeeded && message.metrics_json.is_empty() {
            return Err(Error::Protocol("a succeeded run must carry metrics".into()));
        }
        if let Some(cost) = message.cost_usd.filter(|c| !c.is_finite() || *c < 0.0) {
            return Err(Error::Protocol(format!(
                "a run's cost must be a non-negative number of dollars, got {cost}"
            )));
        }
        Ok(RunResult {
            lease_id: message.lease_id,
            cost_usd: message.cost_usd,
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
            },
            timeout: Duration::from_secs(5),
        };
        let message: proto::RunAssignment = assignment.clone().into();
        assert_eq!(Assignment::try_from(message).unwrap(), assignment);
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
