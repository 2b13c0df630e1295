//! What happened, as it happens, for `--json` watchers and the dashboard:
//! runs starting and ending, experiments changing state, budget and
//! rate-limit events. Decisions push them to the outbox only while someone
//! listens (`State::events_wanted`), so an unwatched sweep pays nothing.

use std::sync::Arc;

use flotilla_shared::rate::RateKey;
use flotilla_shared::status::ExperimentState;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at_ms: i64,
    pub experiment: String,
    pub kind: EventKind,
}

/// A run's identity in an event.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRef {
    pub variation: u32,
    pub repetition: u32,
    pub attempt: u32,
    pub worker: Arc<str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    RunStarted(RunRef),
    RunSucceeded(RunRef),
    /// Failed for good.
    RunFailed {
        run: RunRef,
        error: String,
    },
    /// Failed with attempts left: it is pending again.
    RunRetried {
        run: RunRef,
        error: String,
    },
    RunCancelled(RunRef),
    /// Handed back or lost with its worker: pending again, no attempt spent.
    RunRequeued {
        run: RunRef,
        why: String,
    },
    StateChanged {
        state: ExperimentState,
    },
    /// The budget refused something, or ran out; in words.
    Budget(String),
    /// A provider answered 429; every worker calling it pauses.
    RateLimited {
        key: RateKey,
        pause_ms: u64,
        worker: Arc<str>,
    },
}

impl EventKind {
    /// The name scripts match on: `run_started`, `state_changed`, …
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted(_) => "run_started",
            EventKind::RunSucceeded(_) => "run_succeeded",
            EventKind::RunFailed { .. } => "run_failed",
            EventKind::RunRetried { .. } => "run_retried",
            EventKind::RunCancelled(_) => "run_cancelled",
            EventKind::RunRequeued { .. } => "run_requeued",
            EventKind::StateChanged { .. } => "state_changed",
            EventKind::Budget(_) => "budget",
            EventKind::RateLimited { .. } => "rate_limited",
        }
    }
}
