//! Whether results reach the disk: the store thread records each failure and
//! recovery, the actor reads it to hold back assignments and to tell people
//! (ARCHITECTURE.md, invariant 4). Each change of state is logged once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::{error, info};

use super::WriteError;
use crate::state::telemetry::{Histogram, COMMIT_BUCKETS};

/// Results in requests that are queued or being written: how many, and how
/// many bytes of run files they carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub results: u64,
    pub bytes: u64,
}

/// Shared between the store thread (writer) and the actor (reader).
#[derive(Debug)]
pub struct StoreHealth {
    root: PathBuf,
    /// Results queued or being written, not yet committed.
    uncommitted_results: AtomicU64,
    /// Bytes of run files those results carry.
    uncommitted_bytes: AtomicU64,
    /// Why the group at the head of the queue cannot be written; `None` while writes succeed.
    problem: Mutex<Option<String>>,
    /// How long each group commit took, for `/metrics`.
    commit_latency: Mutex<Histogram>,
}

impl StoreHealth {
    pub fn new(root: PathBuf) -> Self {
        StoreHealth {
            root,
            uncommitted_results: AtomicU64::new(0),
            uncommitted_bytes: AtomicU64::new(0),
            problem: Mutex::new(None),
            commit_latency: Mutex::new(Histogram::new(COMMIT_BUCKETS)),
        }
    }

    pub(super) fn commit_took(&self, took: std::time::Duration) {
        self.commit_latency
            .lock()
            .expect("not poisoned")
            .observe(took.as_secs_f64());
    }

    /// Commit latencies so far.
    pub fn commit_latency(&self) -> Histogram {
        self.commit_latency.lock().expect("not poisoned").clone()
    }

    pub(super) fn queued(&self, backlog: Backlog) {
        self.uncommitted_results
            .fetch_add(backlog.results, Ordering::Relaxed);
        self.uncommitted_bytes
            .fetch_add(backlog.bytes, Ordering::Relaxed);
    }

    pub(super) fn committed(&self, backlog: Backlog) {
        self.uncommitted_results
            .fetch_sub(backlog.results, Ordering::Relaxed);
        self.uncommitted_bytes
            .fetch_sub(backlog.bytes, Ordering::Relaxed);
        let mut problem = self.problem.lock().expect("not poisoned");
        if problem.take().is_some() {
            info!(root = %self.root.display(), "writing again under the root; results waiting on workers are being recorded");
        }
    }

    /// Logged when writes start failing; a later cause (the database's
    /// "disk is full" after a file's "no space") only updates the status.
    pub(super) fn failing(&self, failure: &WriteError) {
        let mut problem = self.problem.lock().expect("not poisoned");
        if problem.is_none() {
            error!(root = %self.root.display(), error = %failure, waiting = self.uncommitted_results(),
                "cannot write under the root; results stay with the workers and writing is retried");
        }
        *problem = Some(failure.cause());
    }

    /// Results that are not durable yet: their workers still hold them.
    pub fn uncommitted_results(&self) -> u64 {
        self.uncommitted_results.load(Ordering::Relaxed)
    }

    /// What waits for the disk: results and the bytes of their files.
    pub fn backlog(&self) -> Backlog {
        Backlog {
            results: self.uncommitted_results(),
            bytes: self.uncommitted_bytes.load(Ordering::Relaxed),
        }
    }

    /// Why results cannot be written, in words, or `None` while they can.
    pub fn problem(&self) -> Option<String> {
        let problem = self.problem.lock().expect("not poisoned");
        problem.as_ref().map(|cause| {
            format!(
                "cannot write under {}: {cause}; {} results waiting on workers",
                self.root.display(),
                self.uncommitted_results()
            )
        })
    }

    pub fn is_failing(&self) -> bool {
        self.problem.lock().expect("not poisoned").is_some()
    }
}
