//! The worker stream's messages as domain types (ARCHITECTURE.md, "Wire
//! protocol"): one enum per direction. The coordinator's actor and the
//! worker's session speak these; `wire` converts them to and from protobuf
//! at the gRPC edge.

use std::time::Duration;

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
    },
    /// What the worker serves changed.
    Capabilities(Capabilities),
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
    Drain,
}
