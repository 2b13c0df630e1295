//! The Watch RPC's streams: each watcher wakes when the coordinator's state
//! changes (the actor counts its changes) rather than polling, sends at most
//! one snapshot per `WATCH_INTERVAL`, and with events asked for, the events
//! of its experiment since the previous message. Watchers of one experiment
//! share snapshots, so many watchers cost the actor one status a interval.

use flotilla_wire::status::status_of;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_shared::Result;
use flotilla_wire::proto;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tonic::Status;

use crate::actor::CoordinatorHandle;
use crate::state::events::{Event, EventKind};

/// A watcher gets a snapshot at most this often.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

struct Snapshot {
    version: u64,
    at: Instant,
    reply: Arc<proto::StatusReply>,
}

/// The latest snapshot of each watched experiment.
#[derive(Default)]
pub struct Snapshots {
    by_name: Mutex<HashMap<String, Arc<Snapshot>>>,
    /// One snapshot is made at a time: watchers woken together wait for it
    /// instead of each asking the actor for the same status.
    making: tokio::sync::Mutex<()>,
}

impl Snapshots {
    /// A snapshot of `name` as of `version` or later, or one made less than
    /// an interval ago; made anew (and shared) otherwise.
    async fn get(
        &self,
        handle: &CoordinatorHandle,
        name: &str,
        version: u64,
        urgent: bool,
    ) -> Result<Arc<Snapshot>> {
        if let Some(cached) = self.fresh(name, version, urgent) {
            return Ok(cached);
        }
        let _making = self.making.lock().await;
        if let Some(cached) = self.fresh(name, version, urgent) {
            return Ok(cached);
        }
        let view = handle.status(Some(name.to_string())).await?;
        let snapshot = Arc::new(Snapshot {
            version,
            at: Instant::now(),
            reply: Arc::new(proto::StatusReply::from(view)),
        });
        let mut by_name = self.by_name.lock().expect("not poisoned");
        let keep = by_name.get(name).is_none_or(|c| c.version <= version);
        if keep {
            by_name.insert(name.to_string(), snapshot.clone());
        }
        Ok(snapshot)
    }

    /// A snapshot of `version` or later; unless `urgent`, also one made
    /// less than an interval ago.
    fn fresh(&self, name: &str, version: u64, urgent: bool) -> Option<Arc<Snapshot>> {
        let by_name = self.by_name.lock().expect("not poisoned");
        let cached = by_name.get(name)?;
        let recent = !urgent && cached.at.elapsed() < WATCH_INTERVAL;
        (cached.version >= version || recent).then(|| cached.clone())
    }
}

/// Streams `name`'s status (and the events `events` receives, subscribed
/// before the watcher is answered) to `sender` until the experiment ends or
/// the watcher goes away.
pub async fn stream(
    handle: CoordinatorHandle,
    snapshots: Arc<Snapshots>,
    name: String,
    mut events: Option<tokio::sync::broadcast::Receiver<Arc<Vec<Event>>>>,
    sender: mpsc::Sender<std::result::Result<proto::StatusReply, Status>>,
) {
    let mut changes = handle.changes();
    // An ending is sent at once: `submit --wait` returns when the last
    // result is durable, not up to an interval later.
    let mut endings = handle.endings();
    endings.borrow_and_update();
    let mut pending: Vec<proto::WatchEvent> = Vec::new();
    let mut missed = 0u64;
    let mut last_sent: Option<(Instant, Arc<proto::StatusReply>)> = None;
    let mut seen = 0u64;
    loop {
        // Wait for a change (or events), then for the interval since the last message.
        let mut urgent = false;
        if last_sent.is_some() {
            let changed = changes.wait_for(|version| *version > seen);
            tokio::select! {
                changed = changed => if changed.is_err() { return },
                _ = sender.closed() => return,
                batch = next_batch(&mut events) => collect(batch, &name, &mut pending, &mut missed),
            }
            // Events keep being taken in meanwhile, so that a busy sweep's do not pile up.
            if let Some((at, _)) = &last_sent {
                let due = tokio::time::sleep_until((*at + WATCH_INTERVAL).into());
                tokio::pin!(due);
                loop {
                    tokio::select! {
                        _ = &mut due => break,
                        _ = endings.changed() => {
                            urgent = true;
                            break;
                        }
                        _ = sender.closed() => return,
                        batch = next_batch(&mut events) => collect(batch, &name, &mut pending, &mut missed),
                    }
                }
            }
        }
        let version = *changes.borrow_and_update();
        let snapshot = match snapshots.get(&handle, &name, version, urgent).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                let _ = sender.send(Err(status_of(e))).await;
                return;
            }
        };
        seen = snapshot.version;
        // Events already published are in the channel: the last message carries them all.
        if let Some(receiver) = events.as_mut() {
            loop {
                match receiver.try_recv() {
                    Ok(batch) => collect(Ok(batch), &name, &mut pending, &mut missed),
                    Err(TryRecvError::Lagged(n)) => missed += n,
                    Err(_) => break,
                }
            }
        }
        let finished = snapshot
            .reply
            .experiments
            .first()
            .is_some_and(|e| e.state != proto::ExperimentState::Running as i32);
        let unchanged = last_sent.as_ref().is_some_and(|(_, last)| {
            Arc::ptr_eq(last, &snapshot.reply) || **last == *snapshot.reply
        });
        if !unchanged || !pending.is_empty() || missed > 0 {
            let mut reply = (*snapshot.reply).clone();
            reply.events = std::mem::take(&mut pending);
            reply.events_missed = std::mem::take(&mut missed);
            if sender.send(Ok(reply)).await.is_err() {
                return;
            }
            last_sent = Some((Instant::now(), snapshot.reply.clone()));
        } else if let Some((at, _)) = &mut last_sent {
            *at = Instant::now();
        }
        if finished {
            return;
        }
    }
}

async fn next_batch(
    events: &mut Option<tokio::sync::broadcast::Receiver<Arc<Vec<Event>>>>,
) -> std::result::Result<Arc<Vec<Event>>, RecvError> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps the events of experiment `name` and the cluster's own.
fn collect(
    batch: std::result::Result<Arc<Vec<Event>>, RecvError>,
    name: &str,
    pending: &mut Vec<proto::WatchEvent>,
    missed: &mut u64,
) {
    match batch {
        Ok(batch) => pending.extend(
            batch
                .iter()
                .filter(|e| e.experiment == name || e.experiment.is_empty())
                .map(watch_event),
        ),
        Err(RecvError::Lagged(n)) => *missed += n,
        Err(RecvError::Closed) => {}
    }
}

fn watch_event(event: &Event) -> proto::WatchEvent {
    use proto::WatchEventKind as Kind;
    let mut message = proto::WatchEvent {
        at_ms: event.at_ms,
        experiment: event.experiment.clone(),
        ..Default::default()
    };
    let run = |message: &mut proto::WatchEvent, run: &crate::state::events::RunRef| {
        message.variation = run.variation;
        message.repetition = run.repetition;
        message.attempt = run.attempt;
        message.worker = run.worker.to_string();
    };
    let kind = match &event.kind {
        EventKind::RunStarted(r) => {
            run(&mut message, r);
            Kind::RunStarted
        }
        EventKind::RunSucceeded(r) => {
            run(&mut message, r);
            Kind::RunSucceeded
        }
        EventKind::RunFailed { run: r, error } => {
            run(&mut message, r);
            message.message = error.clone();
            Kind::RunFailed
        }
        EventKind::RunRetried { run: r, error } => {
            run(&mut message, r);
            message.message = error.clone();
            Kind::RunRetried
        }
        EventKind::RunCancelled(r) => {
            run(&mut message, r);
            Kind::RunCancelled
        }
        EventKind::RunRequeued { run: r, why } => {
            run(&mut message, r);
            message.message = why.clone();
            Kind::RunRequeued
        }
        EventKind::StateChanged { state } => {
            message.state = proto::ExperimentState::from(*state).into();
            Kind::StateChanged
        }
        EventKind::Budget(words) => {
            message.message = words.clone();
            Kind::Budget
        }
        EventKind::RateLimited {
            key,
            pause_ms,
            worker,
        } => {
            message.key = Some(key.clone().into());
            message.pause_ms = *pause_ms;
            message.worker = worker.to_string();
            Kind::RateLimited
        }
    };
    message.kind = kind.into();
    message
}
