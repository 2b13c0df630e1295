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
    /// Run kinds and providers this worker can serve.
    pub capabilities: Vec<String>,
    /// Runs still executing from an earlier connection: the coordinator keeps
    /// their leases instead of letting them expire.
    pub running: Vec<RunningLease>,
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
