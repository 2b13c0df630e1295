//! States and outcomes as types: experiment states, run statuses, attempt
//! outcomes and submit outcomes. Each has one spelling, used in the database,
//! in JSON files and in messages to people; reading any other spelling is an
//! error, never a silent default (ARCHITECTURE.md, invariant 7).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A spelling that names no value of the enum it was read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{value}'; expected one of: {expected}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

/// Defines `as_str`, `ALL`, `Display` and `FromStr` from one table of spellings.
macro_rules! spelled_enum {
    ($name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(text: &str) -> Result<Self, UnknownValue> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        kind: $kind,
                        value: text.to_string(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

/// Where one run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Never started: adaptive sampling decided its variation's question
    /// first (ARCHITECTURE.md, "Adaptive sampling"). Not a failure, and not
    /// cancelled by anyone.
    Decided,
}

spelled_enum!(RunStatus, "run status", {
    Pending => "pending",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    Decided => "decided",
});

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Decided
        )
    }
}

/// Where an experiment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentState {
    Running,
    /// Every run ended (some may have failed).
    Completed,
    /// Stopped at a run that failed for good, with `continue_on_error: false`.
    Failed,
    Cancelled,
    /// No further run fitted in `budget.total_usd`: the runs that ran are its results.
    BudgetExhausted,
}

spelled_enum!(ExperimentState, "experiment state", {
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
    BudgetExhausted => "budget_exhausted",
});

impl ExperimentState {
    pub fn is_final(self) -> bool {
        self != ExperimentState::Running
    }
}

/// How one attempt of a run ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    Cancelled,
    /// The worker stopped answering before the lease timeout.
    Lost,
    /// A draining worker stopped it and handed the run back; not counted
    /// against `max_attempts`.
    HandedBack,
}

spelled_enum!(AttemptOutcome, "attempt outcome", {
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    Lost => "lost",
    HandedBack => "handed_back",
});

/// What a submission did to the experiment of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitOutcome {
    Created,
    /// Runs that had not finished (or were cancelled) run again.
    Resumed,
    /// More repetitions or new axis values were added.
    Extended,
    /// Nothing left to do.
    Unchanged,
}

spelled_enum!(SubmitOutcome, "submit outcome", {
    Created => "created",
    Resumed => "resumed",
    Extended => "extended",
    Unchanged => "unchanged",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_unknown_ones_are_errors() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>().unwrap(), *status);
            assert_eq!(
                serde_json::to_string(status).unwrap(),
                format!("\"{status}\"")
            );
        }
        for state in ExperimentState::ALL {
            assert_eq!(state.as_str().parse::<ExperimentState>().unwrap(), *state);
        }
        let error = "runing".parse::<RunStatus>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown run status 'runing'; expected one of: pending, running, succeeded, failed, cancelled, decided"
        );
        assert!("".parse::<ExperimentState>().is_err());
        assert!("lost".parse::<AttemptOutcome>().is_ok());
    }
}
