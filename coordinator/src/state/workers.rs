//! Workers coming and going: Hello (refusing a second live worker of one
//! name, adopting runs a worker still executes after a restart), leaving,
//! capabilities, draining, heartbeats, and their setups and teardowns.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use flotilla_shared::protocol::{Capabilities, HookKind, HookReport, RunningLease};
use flotilla_shared::run::RunKey;
use tracing::{debug, info, warn};

use super::events::{EventKind, RunRef};

use super::*;
use crate::store::Write;

impl State {
    /// A worker said Hello. `running` lists the runs it is still executing from
    /// an earlier connection (with their lease ids and attempts). Returns the
    /// session number of this connection, or refuses a duplicate name.
    pub fn worker_connected(
        &mut self,
        name: &str,
        slots: u32,
        capabilities: Capabilities,
        running: Vec<RunningLease>,
        now: Instant,
        outbox: &mut Outbox,
    ) -> flotilla_shared::Result<u64> {
        // A second process with the same name would steal the first one's runs.
        // A worker whose old connection went silent (a broken network) gets in
        // once that connection has been quiet for half a lease.
        if let Some(existing) = self.workers.get(name) {
            if existing.connected && now.duration_since(existing.last_seen) < self.lease_timeout / 2
            {
                return Err(flotilla_shared::Error::Conflict(format!(
                    "a worker named '{name}' is already connected; give each worker a unique --name"
                )));
            }
        }
        let session = self.next_session;
        self.next_session += 1;
        let name: Arc<str> = self
            .workers
            .get_key_value(name)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| name.into());
        let entry = self
            .workers
            .entry(name.clone())
            .or_insert_with(|| WorkerEntry {
                slots,
                connected: true,
                session,
                last_seen: now,
                leases: HashSet::new(),
                finished: 0,
                capabilities: Capabilities::default(),
                draining: false,
                silent: false,
            });
        entry.slots = slots;
        entry.capabilities = capabilities;
        entry.connected = true;
        // A worker still draining says so again on its new connection.
        entry.draining = false;
        entry.silent = false;
        entry.session = session;
        entry.last_seen = now;

        let still_running: HashSet<u64> = running.iter().map(|lease| lease.lease_id).collect();
        // Leases the worker no longer knows: it restarted, so those attempts are lost now.
        let forgotten: Vec<u64> = entry
            .leases
            .iter()
            .copied()
            .filter(|l| !still_running.contains(l))
            .collect();
        for lease_id in forgotten {
            self.lose_lease(lease_id, "worker restarted while running it", outbox);
        }
        for lease in running {
            if self.leases.contains_key(&lease.lease_id) {
                continue;
            }
            if !self.adopt_running(&name, lease.lease_id, &lease.run, lease.attempt) {
                outbox.cancel(&name, lease.lease_id);
            }
        }
        Ok(session)
    }

    /// After a coordinator restart, a worker reports a run it is still executing:
    /// keep it under its lease if the run is still waiting, instead of running it twice.
    fn adopt_running(
        &mut self,
        worker: &Arc<str>,
        lease_id: u64,
        key: &RunKey,
        attempt: u32,
    ) -> bool {
        let Some(&index) = self.by_name.get(&key.experiment) else {
            return false;
        };
        let experiment = &mut self.experiments[index];
        let Some(slot) = experiment.slot_of(key.variation, key.repetition) else {
            return false;
        };
        if experiment.runs[slot].status != RunStatus::Pending || !experiment.accepts_assignments() {
            return false;
        }
        // Its reservation was committed before it was assigned (ARCHITECTURE.md,
        // invariant 1); one the ledger no longer holds is not spent again.
        if let Some(ledger) = &experiment.ledger {
            if ledger.reservation(lease_id).is_none() {
                return false;
            }
        }
        let run = &mut experiment.runs[slot];
        run.attempts_recorded = run.attempts_recorded.max(attempt.saturating_sub(1));
        self.grant_lease(index, slot, worker, lease_id, attempt);
        info!(worker = %worker, lease_id, run = %key, "adopted a run still running from before the restart");
        true
    }

    /// The connection of `session` closed. Its leases stay until they expire: the
    /// worker may reconnect and report.
    pub fn worker_disconnected(&mut self, name: &str, session: u64) {
        if let Some(entry) = self.workers.get_mut(name) {
            if entry.session == session {
                entry.connected = false;
            }
        }
    }

    /// What a worker serves changed (its Ollama's models, say).
    pub fn worker_capabilities(&mut self, name: &str, session: u64, capabilities: Capabilities) {
        if let Some(entry) = self.workers.get_mut(name) {
            if entry.session == session {
                entry.capabilities = capabilities;
            }
        }
    }

    // ------------------------------------------------------------ setup and teardown

    /// A worker returns runs it will not start, its setup for their
    /// experiment having failed: they are pending again, their attempts
    /// untouched and their reservations freed, and that worker gets no more
    /// runs of the experiment.
    pub fn declined(
        &mut self,
        worker: &str,
        lease_ids: Vec<u64>,
        reason: &str,
        outbox: &mut Outbox,
    ) {
        for lease_id in lease_ids {
            let Some(lease) = self.release_lease(lease_id) else {
                continue;
            };
            let experiment = &mut self.experiments[lease.experiment];
            experiment
                .setup_failed
                .entry(lease.worker.clone())
                .or_insert_with(|| reason.to_string());
            if experiment.runs[lease.run].lease != Some(lease_id) {
                continue;
            }
            experiment.runs[lease.run].lease = None;
            experiment.set_status(lease.run, RunStatus::Pending);
            let run = &experiment.runs[lease.run];
            outbox.event(self.events_wanted, &experiment.config.name, || {
                EventKind::RunRequeued {
                    run: RunRef {
                        variation: run.variation,
                        repetition: run.repetition,
                        attempt: lease.attempt,
                        worker: lease.worker.clone(),
                    },
                    why: format!("declined: {reason}"),
                }
            });
            if let Some(ledger) = experiment.ledger.as_mut() {
                let event = LedgerEvent::Released { lease_id };
                ledger.apply(&event);
                outbox.ledger.push((experiment.db_id, event));
            }
        }
        debug!(worker, "runs declined");
    }

    /// A worker's setup or teardown ended: its log is kept under the
    /// experiment, and a failed setup keeps that worker off the experiment.
    pub fn hook_done(&mut self, worker: &str, report: HookReport, outbox: &mut Outbox) {
        let Some(&index) = self.by_name.get(&report.experiment) else {
            return;
        };
        let name: Arc<str> = worker.into();
        let experiment = &mut self.experiments[index];
        let file = format!("workers/{worker}/{}.log", report.kind.as_str());
        if let (HookKind::Setup, Some(error)) = (report.kind, &report.error) {
            warn!(
                experiment = experiment.name(),
                worker, error, "setup failed: the worker takes no runs of the experiment"
            );
            experiment
                .setup_failed
                .insert(name, format!("{error} (see {file})"));
        }
        outbox.writes.push(Write::HookLog {
            path: experiment.dir.join(file),
            content: report.log,
        });
    }
}
