//! Shared provider limits: each worker's demand splits a key's declared
//! limit (`rate_shares.rs`), a leaving worker's share goes to the others,
//! and a 429 one worker saw pauses the key on the others (ARCHITECTURE.md,
//! invariant 6).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use flotilla_shared::protocol::ToWorker;
use flotilla_shared::rate::{KeyDemand, Limits, RatePause, RateShare};
use tracing::info;

use super::events::EventKind;

use super::*;

impl State {
    /// A provider's limits for the whole cluster: the tightest any connected
    /// worker declares (ARCHITECTURE.md, invariant 6).
    fn declared_limits(
        workers: &BTreeMap<Arc<str>, WorkerEntry>,
        provider: &str,
    ) -> Option<Limits> {
        workers
            .values()
            .filter(|w| w.connected)
            .filter_map(|w| w.capabilities.shared_limits.get(provider).copied())
            .reduce(Limits::tightest)
    }

    /// A worker reported its calls per shared key: shares are split anew.
    pub fn rate_demand(&mut self, worker: &str, demand: Vec<KeyDemand>, outbox: &mut Outbox) {
        let Some((name, _)) = self.workers.get_key_value(worker) else {
            return;
        };
        let name = name.clone();
        let workers = &self.workers;
        let changed = self.rate_shares.report(&name, demand, |provider| {
            Self::declared_limits(workers, provider)
        });
        Self::send_shares(changed, outbox);
    }

    /// A worker is gone: its shares go to the others.
    pub fn rate_worker_left(&mut self, worker: &str, outbox: &mut Outbox) {
        let Some((name, _)) = self.workers.get_key_value(worker) else {
            return;
        };
        let name = name.clone();
        let workers = &self.workers;
        let changed = self
            .rate_shares
            .worker_left(&name, |provider| Self::declared_limits(workers, provider));
        Self::send_shares(changed, outbox);
    }

    fn send_shares(changed: Vec<(Arc<str>, RateShare)>, outbox: &mut Outbox) {
        let mut by_worker: Vec<(Arc<str>, Vec<RateShare>)> = Vec::new();
        for (worker, share) in changed {
            match by_worker.iter_mut().find(|(w, _)| *w == worker) {
                Some((_, shares)) => shares.push(share),
                None => by_worker.push((worker, vec![share])),
            }
        }
        for (worker, shares) in by_worker {
            outbox.notices.push((worker, ToWorker::RateShares(shares)));
        }
    }

    /// A provider answered one worker 429: every other worker that calls it
    /// pauses the key too.
    pub fn rate_limited(&mut self, worker: &str, pause: RatePause, outbox: &mut Outbox) {
        if let Some((name, _)) = self.workers.get_key_value(worker) {
            // A provider's limit is the cluster's: the event names no experiment.
            outbox.event(self.events_wanted, "", || EventKind::RateLimited {
                key: pause.key.clone(),
                pause_ms: pause.pause.as_millis() as u64,
                worker: name.clone(),
            });
        }
        for (name, entry) in &self.workers {
            if &**name != worker
                && entry.connected
                && entry.capabilities.providers.contains(&pause.key.provider)
            {
                outbox
                    .notices
                    .push((name.clone(), ToWorker::RatePause(pause.clone())));
            }
        }
    }

    /// The worker drains (SIGTERM, or told to): it gets no more runs.
    pub fn worker_draining(&mut self, name: &str) {
        if let Some(entry) = self.workers.get_mut(name) {
            entry.draining = true;
            info!(
                worker = name,
                running = entry.leases.len(),
                "worker draining"
            );
        }
    }

    /// `flotilla worker drain`: no more runs for the worker, and it is told
    /// to drain. Returns how many runs it is running.
    pub fn drain_worker(
        &mut self,
        name: &str,
        outbox: &mut Outbox,
    ) -> flotilla_shared::Result<u32> {
        let Some((name, entry)) = self.workers.get_key_value(name) else {
            let known: Vec<&str> = self.workers.keys().map(|w| &**w).collect();
            return Err(flotilla_shared::Error::NotFound(format!(
                "no worker named '{name}'; workers: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        if !entry.connected {
            return Err(flotilla_shared::Error::InvalidInput(format!(
                "worker '{name}' is not connected: there is nothing to drain"
            )));
        }
        let name = name.clone();
        outbox.notices.push((name.clone(), ToWorker::Drain));
        self.worker_draining(&name);
        Ok(self.workers[&name].leases.len() as u32)
    }

    pub fn worker_seen(&mut self, name: &str, session: u64, now: Instant) {
        if let Some(entry) = self.workers.get_mut(name) {
            if entry.session == session {
                entry.last_seen = now;
                entry.silent = false;
            }
        }
    }
}
