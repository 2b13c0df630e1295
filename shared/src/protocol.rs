//! The worker stream's messages as domain types (ARCHITECTURE.md, "Wire
//! protocol"): one enum per direction. The coordinator's actor and the
//! worker's session speak these; `wire` converts them to and from protobuf
//! at the gRPC edge.

use std::time::Duration;

use crate::money::Usd;
use crate::rate::{KeyDemand, KeyUse, Limits, RatePause, RateShare};
use crate::run::{Assignment, RunKey, RunResult};

/// A worker introduces itself: the first message of every connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub name: String,
    pub slots: u32,
    pub version: String,
    pub token: String,
    /// What this worker can serve.
    pub capabilities: Capabilities,
    /// Runs still executing from an earlier connection: the coordinator keeps
    /// their leases instead of letting them expire.
    pub running: Vec<RunningLease>,
}

/// What a worker serves: run kinds, the providers its gateway reaches and
/// its Ollama's models (as `ollama/NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub run_kinds: std::collections::BTreeSet<String>,
    pub providers: std::collections::BTreeSet<String>,
    pub models: std::collections::BTreeSet<String>,
    /// Limits the worker's providers file declares, by provider: shared by
    /// the whole cluster (ARCHITECTURE.md, invariant 6).
    pub shared_limits: std::collections::BTreeMap<String, Limits>,
}

impl Capabilities {
    /// Whether this worker serves `model` (`provider/model`): `sim/…` always,
    /// `ollama/…` only the models its Ollama has, others by their provider.
    pub fn serves(&self, model: &str) -> bool {
        match model.split_once('/') {
            Some(("sim", _)) => true,
            Some(("ollama", name)) => {
                let name = name.strip_suffix(":latest").unwrap_or(name);
                self.models.contains(&format!("ollama/{name}"))
            }
            Some((provider, _)) => self.providers.contains(provider),
            None => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunningLease {
    pub lease_id: u64,
    pub run: RunKey,
    pub attempt: u32,
}

/// The coordinator's answer to Hello.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub worker_id: String,
    pub heartbeat_interval: Duration,
    pub lease_timeout: Duration,
}

/// Worker → coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    Hello(Hello),
    Ready {
        free_slots: u32,
    },
    Progress {
        lease_id: u64,
        message: String,
    },
    /// Results of ended attempts, many at once.
    Finished(Vec<RunResult>),
    Heartbeat {
        running: u32,
        /// Calls waiting for or holding each shared limit.
        demand: Vec<KeyDemand>,
        /// How the worker used its limited keys, when that changed.
        usage: Vec<KeyUse>,
        /// What each running run has spent so far (regular heartbeats only).
        spend: Vec<RunSpend>,
        /// Numbers a regular heartbeat, which the coordinator answers with
        /// `Renewed` (ARCHITECTURE.md, invariant 8); 0 asks for no renewal.
        number: u64,
    },
    /// What the worker serves changed.
    Capabilities(Capabilities),
    /// A run needs more budget than it was assigned (ARCHITECTURE.md, invariant 1).
    SpendRequest(SpendRequest),
    /// A provider answered 429: every worker should pause the key.
    RateLimited(RatePause),
    /// Runs this worker will not start: its setup for their experiment failed.
    Declined {
        lease_ids: Vec<u64>,
        reason: String,
    },
    /// A setup or teardown ended.
    HookDone(HookReport),
    /// The worker drains: assign it nothing more.
    Draining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Setup,
    Teardown,
}

impl HookKind {
    /// `setup`, `teardown`: the log file's name without `.log`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Setup => "setup",
            HookKind::Teardown => "teardown",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HookReport {
    pub experiment: String,
    pub kind: HookKind,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
    /// Its output, stdout and stderr together.
    pub log: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpendRequest {
    /// Matches the grant to the request.
    pub request_id: u64,
    pub lease_id: u64,
    /// How much more the run wants reserved.
    pub amount: Usd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpendGrant {
    pub request_id: u64,
    pub lease_id: u64,
    pub answer: SpendAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpendAnswer {
    /// The run may spend `amount` more: at least what it asked for, more
    /// when the coordinator grants a whole slice of the run's reservation.
    Granted { amount: crate::money::Usd },
    /// The experiment's ledger has no room: `left` of `total` is neither
    /// spent nor reserved.
    Refused { left: Usd, total: Usd },
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    Welcome(Welcome),
    /// Runs to start, each under its lease.
    Assign(Vec<Assignment>),
    /// Stop these leases' runs.
    Cancel(Vec<u64>),
    /// These leases' results are durable: forget them.
    Ack(Vec<u64>),
    /// Take no more runs, let running ones finish within the drain timeout,
    /// hand back the rest and leave.
    Drain,
    SpendGrant(SpendGrant),
    /// This worker's shares of shared limits, replacing earlier ones for their keys.
    RateShares(Vec<RateShare>),
    RatePause(RatePause),
    /// The experiment has no more runs for this worker: run its teardown.
    ExperimentEnded(String),
    /// The coordinator heard heartbeat number `.0`: the worker's spend lease
    /// runs from the moment it sent it (ARCHITECTURE.md, invariant 8).
    Renewed(u64),
}

/// What a running run has spent so far, as its worker's gateway knows it:
/// its ended calls' cost, and the worst cases of its calls in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSpend {
    pub lease_id: u64,
    pub spent: crate::money::Usd,
    pub in_flight: crate::money::Usd,
}
