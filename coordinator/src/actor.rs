//! The Coordinator actor: the one writer of the registry, run manifests, worker
//! table and leases. gRPC handlers talk to it through a [`CoordinatorHandle`];
//! it decides with the functions of [`crate::state`] and carries out their
//! outbox: messages to workers and writes to the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_shared::clock::now_ms;
use flotilla_shared::protocol::{FromWorker, Hello, ToWorker};
use flotilla_shared::status::ExperimentState;
use flotilla_shared::{Error, Result};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, warn};

use crate::outputs::Summary;
use crate::state::events::{Event, EventKind};
use crate::state::{Outbox, RunStatus, State, StopReason, Submission, Submitted};
use crate::store::{Backlog, OnCommit, StoreHandle, Write};
use crate::views::{self, MetricsView, StatusView};

/// Messages to one worker's stream.
pub type WorkerSender = mpsc::UnboundedSender<ToWorker>;

/// What may wait for the store before no new run is assigned: a slow disk
/// slows assignment instead of piling results up in memory. The count suits
/// runs that finish in microseconds (a group commits thousands at once); the
/// bytes bound runs that ship large logs.
const MAX_BACKLOG: Backlog = Backlog {
    results: 65_536,
    bytes: 256 * 1024 * 1024,
};
/// How often leases are checked and summaries rewritten.
const TICK: Duration = Duration::from_millis(500);
/// batch-summary.json of running experiments is rewritten this often (at most 2 s apart).
const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);
/// results.csv of running experiments is rewritten this often, when something changed:
/// it reads every run back from the database, so less often than the summary.
const RESULTS_INTERVAL: Duration = Duration::from_secs(3);
/// ... and once per interval per this many runs for larger experiments: a
/// rewrite reads every run, and ten million runs take the store many seconds
/// (ARCHITECTURE.md, "Scale").
const RESULTS_RUNS_PER_INTERVAL: usize = 100_000;

/// How long after its last rewrite a running experiment's results.csv is due again.
fn results_interval(runs: usize) -> Duration {
    RESULTS_INTERVAL * (runs / RESULTS_RUNS_PER_INTERVAL).max(1) as u32
}

enum Msg {
    WorkerHello {
        hello: Box<Hello>,
        outbound: WorkerSender,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// A worker's message after its Hello, as the wire decoded it.
    Worker {
        name: Arc<str>,
        session: u64,
        message: FromWorker,
    },
    WorkerGone {
        name: Arc<str>,
        session: u64,
    },
    Submit {
        submission: Box<Submission>,
        workdir_bundle: Option<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<Submitted>>,
    },
    Status {
        name: Option<String>,
        reply: oneshot::Sender<Result<StatusView>>,
    },
    Cancel {
        name: String,
        kill_running: bool,
        reply: oneshot::Sender<Result<u64>>,
    },
    Resume {
        name: String,
        retry_failed: bool,
        reply: oneshot::Sender<Result<Submitted>>,
    },
    DrainWorker {
        worker: String,
        reply: oneshot::Sender<Result<u32>>,
    },
    Metrics {
        reply: oneshot::Sender<MetricsView>,
    },
    /// An experiment's final files and state are durable, as of `finished_at_ms`.
    Finalized {
        index: usize,
        finished_at_ms: i64,
    },
    WorkerCount {
        reply: oneshot::Sender<u32>,
    },
    /// Results were committed: assignment can go on if it waited for them.
    ResultsDurable,
}

#[derive(Clone)]
pub struct CoordinatorHandle {
    sender: mpsc::UnboundedSender<Msg>,
    store: StoreHandle,
    /// What happened, in batches, while anyone subscribes.
    events: broadcast::Sender<Arc<Vec<Event>>>,
    /// Counts the actor's changes of state: watchers wake on it instead of polling.
    changes: watch::Receiver<u64>,
    /// Counts experiments whose state turned final, after the change is counted
    /// in `changes`: watchers tell an ending at once instead of at their next interval.
    endings: watch::Receiver<u64>,
}

fn gone() -> Error {
    Error::Unavailable("the coordinator is shutting down".into())
}

impl CoordinatorHandle {
    /// Sends the message `ask` makes with a reply channel, and awaits the reply.
    async fn ask<T>(&self, ask: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(ask(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    pub async fn worker_hello(&self, hello: Hello, outbound: WorkerSender) -> Result<u64> {
        self.ask(|reply| Msg::WorkerHello {
            hello: Box::new(hello),
            outbound,
            reply,
        })
        .await?
    }

    /// A message of a worker's stream after its Hello (which `worker_hello` takes).
    pub fn worker_message(&self, name: Arc<str>, session: u64, message: FromWorker) {
        let _ = self.sender.send(Msg::Worker {
            name,
            session,
            message,
        });
    }

    pub fn worker_gone(&self, name: Arc<str>, session: u64) {
        let _ = self.sender.send(Msg::WorkerGone { name, session });
    }

    pub async fn submit(
        &self,
        submission: Submission,
        workdir_bundle: Option<(String, Vec<u8>)>,
    ) -> Result<Submitted> {
        self.ask(|reply| Msg::Submit {
            submission: Box::new(submission),
            workdir_bundle,
            reply,
        })
        .await?
    }

    pub async fn status(&self, name: Option<String>) -> Result<StatusView> {
        self.ask(|reply| Msg::Status { name, reply }).await?
    }

    pub async fn cancel(&self, name: String, kill_running: bool) -> Result<u64> {
        self.ask(|reply| Msg::Cancel {
            name,
            kill_running,
            reply,
        })
        .await?
    }

    pub async fn resume(&self, name: String, retry_failed: bool) -> Result<Submitted> {
        self.ask(|reply| Msg::Resume {
            name,
            retry_failed,
            reply,
        })
        .await?
    }

    /// What `/metrics` shows, read from the state at one moment.
    pub async fn metrics(&self) -> Result<MetricsView> {
        self.ask(|reply| Msg::Metrics { reply }).await
    }

    pub async fn drain_worker(&self, worker: String) -> Result<u32> {
        self.ask(|reply| Msg::DrainWorker { worker, reply }).await?
    }

    pub async fn worker_count(&self) -> Result<u32> {
        self.ask(|reply| Msg::WorkerCount { reply }).await
    }

    pub async fn load_workdir(&self, hash: String) -> Result<Option<Vec<u8>>> {
        self.store.load_workdir(hash).await
    }

    /// Events from now on; a receiver that falls behind by more than
    /// `EVENT_BACKLOG` batches is told how many it missed.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.events.subscribe()
    }

    /// Changes when the coordinator's state may have changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Changes when an experiment's state has turned final.
    pub fn endings(&self) -> watch::Receiver<u64> {
        self.endings.clone()
    }
}

/// Event batches a slow watcher may fall behind by before it misses some.
const EVENT_BACKLOG: usize = 16_384;

struct Actor {
    state: State,
    store: StoreHandle,
    outbound: HashMap<Arc<str>, (u64, WorkerSender)>,
    self_sender: mpsc::UnboundedSender<Msg>,
    last_summary: Instant,
    last_results: Instant,
    /// Counts each experiment's results.csv was last written with.
    results_written: HashMap<usize, (crate::state::Counts, Instant)>,
    report_root: Option<std::path::PathBuf>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    changes: watch::Sender<u64>,
    endings: watch::Sender<u64>,
    /// An experiment ended while handling the current message.
    ended: bool,
}

/// Starts the actor over restored state; `initial` holds writes the restore decided.
/// `report_root`: where to write reports of experiments as they end (None: no automatic reports).
pub fn spawn(
    state: State,
    store: StoreHandle,
    initial: Outbox,
    report_root: Option<std::path::PathBuf>,
) -> CoordinatorHandle {
    let (sender, receiver) = mpsc::unbounded_channel();
    let (events, _) = broadcast::channel(EVENT_BACKLOG);
    let (changes, changes_seen) = watch::channel(0);
    let (endings, endings_seen) = watch::channel(0);
    let mut actor = Actor {
        events: events.clone(),
        changes,
        endings,
        ended: false,
        state,
        store: store.clone(),
        outbound: HashMap::new(),
        self_sender: sender.clone(),
        last_summary: Instant::now(),
        last_results: Instant::now(),
        results_written: HashMap::new(),
        report_root,
    };
    actor.carry_out(initial, None);
    tokio::spawn(actor.run(receiver));
    CoordinatorHandle {
        sender,
        store,
        events,
        changes: changes_seen,
        endings: endings_seen,
    }
}

impl Actor {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = receiver.recv() => match message {
                    Some(message) => {
                        // Reading status changes nothing watchers need to hear of.
                        let changes = !matches!(message, Msg::Status { .. } | Msg::WorkerCount { .. } | Msg::Metrics { .. });
                        self.state.events_wanted = self.events.receiver_count() > 0;
                        self.handle(message);
                        if changes {
                            self.changes.send_modify(|version| *version += 1);
                        }
                        if std::mem::take(&mut self.ended) {
                            self.endings.send_modify(|count| *count += 1);
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.state.events_wanted = self.events.receiver_count() > 0;
                    self.on_tick();
                    self.changes.send_modify(|version| *version += 1);
                }
            }
        }
    }

    /// One method per message.
    fn handle(&mut self, message: Msg) {
        match message {
            Msg::WorkerHello {
                hello,
                outbound,
                reply,
            } => {
                let _ = reply.send(self.on_worker_hello(*hello, outbound));
            }
            Msg::Worker {
                name,
                session,
                message,
            } => self.on_worker_message(name, session, message),
            Msg::WorkerGone { name, session } => self.on_worker_gone(&name, session),
            Msg::Submit {
                submission,
                workdir_bundle,
                reply,
            } => self.on_submit(*submission, workdir_bundle, reply),
            Msg::Status { name, reply } => {
                let _ = reply.send(self.on_status(name.as_deref()));
            }
            Msg::Cancel {
                name,
                kill_running,
                reply,
            } => {
                let _ = reply.send(self.on_cancel(&name, kill_running));
            }
            Msg::Metrics { reply } => {
                let _ = reply.send(self.on_metrics());
            }
            Msg::DrainWorker { worker, reply } => {
                let _ = reply.send(self.on_drain_worker(&worker));
            }
            Msg::Resume {
                name,
                retry_failed,
                reply,
            } => self.on_resume(&name, retry_failed, reply),
            Msg::Finalized {
                index,
                finished_at_ms,
            } => self.on_finalized(index, finished_at_ms),
            Msg::WorkerCount { reply } => {
                let _ = reply.send(self.on_worker_count());
            }
            Msg::ResultsDurable => {}
        }
        self.schedule();
    }

    fn on_status(&self, name: Option<&str>) -> Result<StatusView> {
        views::status(&self.state, name, now_ms()).map(|view| StatusView {
            store_problem: self.store.health().problem(),
            ..view
        })
    }

    fn on_metrics(&self) -> MetricsView {
        crate::views::metrics(&self.state, self.store.health())
    }

    fn on_drain_worker(&mut self, worker: &str) -> Result<u32> {
        let mut outbox = Outbox::at(now_ms());
        let drained = self.state.drain_worker(worker, &mut outbox);
        self.carry_out(outbox, None);
        drained
    }

    /// The caller hears back once the resumed runs' rows are committed.
    fn on_resume(
        &mut self,
        name: &str,
        retry_failed: bool,
        reply: oneshot::Sender<Result<Submitted>>,
    ) {
        let mut outbox = Outbox::at(now_ms());
        match self.state.resume(name, retry_failed, now_ms(), &mut outbox) {
            Ok(resumed) => {
                let on_commit: OnCommit = Box::new(move |_| {
                    let _ = reply.send(Ok(resumed));
                });
                self.carry_out(outbox, Some(on_commit));
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// The final files are durable: the state turns final, watchers hear
    /// it, and the report is written.
    fn on_finalized(&mut self, index: usize, finished_at_ms: i64) {
        self.state.finalized(index, finished_at_ms);
        let experiment = &self.state.experiments[index];
        self.ended |= experiment.state.is_final();
        if self.state.events_wanted && experiment.state.is_final() {
            let event = Event {
                at_ms: finished_at_ms,
                experiment: experiment.config.name.clone(),
                kind: EventKind::StateChanged {
                    state: experiment.state,
                },
            };
            let _ = self.events.send(Arc::new(vec![event]));
        }
        self.report(index);
    }

    fn on_worker_count(&self) -> u32 {
        self.state.workers.values().filter(|w| w.connected).count() as u32
    }

    fn on_worker_hello(&mut self, hello: Hello, outbound: WorkerSender) -> Result<u64> {
        let mut outbox = Outbox::at(now_ms());
        let name = hello.name.as_str();
        let session = self.state.worker_connected(
            name,
            hello.slots,
            hello.capabilities,
            hello.running,
            Instant::now(),
            &mut outbox,
        )?;
        let name: Arc<str> = self
            .state
            .workers
            .get_key_value(name)
            .map(|(k, _)| k.clone())
            .expect("just connected");
        self.outbound.insert(name, (session, outbound));
        self.carry_out(outbox, None);
        Ok(session)
    }

    fn on_worker_message(&mut self, name: Arc<str>, session: u64, message: FromWorker) {
        if !self.is_current(&name, session) {
            // Results are not acknowledged: the worker resends them on its current connection.
            debug!(worker = %name, "message from a replaced connection, ignored");
            return;
        }
        self.state.worker_seen(&name, session, Instant::now());
        let mut outbox = Outbox::at(now_ms());
        let mut on_commit = None;
        match message {
            FromWorker::Capabilities(capabilities) => {
                self.state.worker_capabilities(&name, session, capabilities)
            }
            FromWorker::SpendRequest(request) => {
                self.state.spend_request(&name, request, &mut outbox)
            }
            FromWorker::Heartbeat {
                demand,
                usage,
                spend,
                number,
                ..
            } => {
                if number != 0 {
                    // Heard: the worker's spend lease runs on from when it
                    // sent this (ARCHITECTURE.md, invariant 8).
                    self.send_to(&name, ToWorker::Renewed(number));
                }
                if !spend.is_empty() {
                    self.state.running_spend(&name, spend, &mut outbox);
                }
                if !usage.is_empty() {
                    self.state.rate_use.report(&name, usage);
                }
                if !demand.is_empty() {
                    self.state.rate_demand(&name, demand, &mut outbox);
                }
            }
            FromWorker::RateLimited(pause) => self.state.rate_limited(&name, pause, &mut outbox),
            FromWorker::Declined { lease_ids, reason } => {
                self.state.declined(&name, lease_ids, &reason, &mut outbox)
            }
            FromWorker::HookDone(report) => self.state.hook_done(&name, report, &mut outbox),
            FromWorker::Finished(results) => {
                let lease_ids: Vec<u64> = results.iter().map(|r| r.lease_id).collect();
                self.state
                    .apply_results(&name, results, outbox.now_ms, &mut outbox);
                on_commit = Some(self.ack_after_commit(&name, lease_ids));
            }
            FromWorker::Draining => self.state.worker_draining(&name),
            // Being heard is all a progress note or a Ready does (the worker
            // was seen above); a second Hello is refused by the stream.
            FromWorker::Progress { .. } | FromWorker::Ready { .. } | FromWorker::Hello(_) => {}
        }
        self.carry_out(outbox, on_commit);
    }

    fn on_worker_gone(&mut self, name: &Arc<str>, session: u64) {
        if self.is_current(name, session) {
            self.outbound.remove(name);
            let mut outbox = Outbox::at(now_ms());
            self.state.rate_worker_left(name, &mut outbox);
            self.carry_out(outbox, None);
        }
        self.state.worker_disconnected(name, session);
    }

    /// The submitter hears back once the experiment's rows are committed.
    fn on_submit(
        &mut self,
        submission: Submission,
        workdir_bundle: Option<(String, Vec<u8>)>,
        reply: oneshot::Sender<Result<Submitted>>,
    ) {
        if let Some((hash, bundle)) = workdir_bundle {
            self.store
                .write(vec![Write::Workdir { hash, bundle }], None);
        }
        let mut outbox = Outbox::at(now_ms());
        match self.state.submit(submission, now_ms(), &mut outbox) {
            Ok(submitted) => {
                let on_commit: OnCommit = Box::new(move |_| {
                    let _ = reply.send(Ok(submitted));
                });
                self.carry_out(outbox, Some(on_commit));
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn on_cancel(&mut self, name: &str, kill_running: bool) -> Result<u64> {
        let index = self
            .state
            .by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::NotFound(format!("no experiment named '{name}'")))?;
        let mut outbox = Outbox::at(now_ms());
        let count =
            self.state
                .stop_experiment(index, StopReason::Cancelled, kill_running, &mut outbox);
        self.carry_out(outbox, None);
        Ok(count)
    }

    /// Writes the experiment's report off the actor's thread: it reads every run back.
    fn report(&self, index: usize) {
        let (Some(root), experiment) = (self.report_root.clone(), &self.state.experiments[index])
        else {
            return;
        };
        if !experiment.state.is_final() {
            return;
        }
        let name = experiment.config.name.clone();
        tokio::task::spawn_blocking(move || {
            match crate::reports::write_report(&root, &name, &Default::default()) {
                Ok((dir, _)) => {
                    tracing::info!(experiment = name, dir = %dir.display(), "report written")
                }
                Err(e) => warn!(experiment = name, error = %e, "cannot write the report"),
            }
        });
    }

    fn is_current(&self, name: &Arc<str>, session: u64) -> bool {
        self.state
            .workers
            .get(name)
            .is_some_and(|w| w.session == session)
    }

    /// Results are acknowledged only once their writes are committed
    /// (ARCHITECTURE.md, invariants 2 and 4).
    /// The actor hears of the commit too: assignment may have been held back
    /// while these results waited for the disk, and idle workers send nothing
    /// that would wake it.
    fn ack_after_commit(&self, name: &Arc<str>, lease_ids: Vec<u64>) -> OnCommit {
        let sender = self.outbound.get(name).map(|(_, s)| s.clone());
        let actor = self.self_sender.clone();
        Box::new(move |_| {
            if let Some(sender) = sender {
                let _ = sender.send(ToWorker::Ack(lease_ids));
            }
            let _ = actor.send(Msg::ResultsDurable);
        })
    }

    /// Assigns runs to free slots, unless results are not reaching the disk:
    /// while the store fails or falls behind, new runs would only add results
    /// that workers must hold (ARCHITECTURE.md, invariant 4).
    fn schedule(&mut self) {
        let health = self.store.health();
        let backlog = health.backlog();
        if health.is_failing()
            || backlog.results >= MAX_BACKLOG.results
            || backlog.bytes >= MAX_BACKLOG.bytes
        {
            return;
        }
        let mut outbox = Outbox::at(now_ms());
        self.state.schedule(&mut outbox);
        self.carry_out(outbox, None);
    }

    fn on_tick(&mut self) {
        let mut outbox = Outbox::at(now_ms());
        self.state.observe_pace(outbox.now_ms);
        self.state.expire_leases(Instant::now(), &mut outbox);
        self.carry_out(outbox, None);
        // While writes fail, periodic files would only queue up behind them.
        if self.store.health().is_failing() {
            self.schedule();
            return;
        }
        if self.last_summary.elapsed() >= SUMMARY_INTERVAL {
            self.last_summary = Instant::now();
            let now = now_ms();
            let writes: Vec<Write> = self
                .state
                .experiments
                .iter()
                .filter(|e| !e.state.is_final() && e.finalizing.is_none())
                .map(|e| Write::Summary {
                    dir: e.dir.to_path_buf(),
                    summary: summary(e, e.state, None, now),
                })
                .collect();
            self.store.write(writes, None);
        }
        if self.last_results.elapsed() >= RESULTS_INTERVAL {
            self.last_results = Instant::now();
            self.write_running_results();
        }
        self.schedule();
    }

    fn write_running_results(&mut self) {
        let mut writes = Vec::new();
        for (index, experiment) in self.state.experiments.iter().enumerate() {
            if experiment.state.is_final() || experiment.finalizing.is_some() {
                continue;
            }
            let unchanged_or_recent =
                self.results_written
                    .get(&index)
                    .is_some_and(|(counts, at)| {
                        *counts == experiment.counts
                            || at.elapsed() < results_interval(experiment.runs.len())
                    });
            if unchanged_or_recent {
                continue;
            }
            self.results_written
                .insert(index, (experiment.counts, Instant::now()));
            let running = experiment
                .runs
                .iter()
                .filter(|r| r.status == RunStatus::Running)
                .map(|r| (r.variation, r.repetition))
                .collect();
            writes.push(Write::ResultsCsv {
                experiment_id: experiment.db_id,
                dir: experiment.dir.to_path_buf(),
                config: Box::new(experiment.config.clone()),
                running,
            });
        }
        self.store.write(writes, None);
    }

    /// Sends what the decisions want sent and queues what they want persisted.
    /// Assignments and grants that spend the budget go out only once the
    /// ledger events behind them are committed (ARCHITECTURE.md, invariant 1).
    fn carry_out(&mut self, mut outbox: Outbox, on_commit: Option<OnCommit>) {
        if !outbox.events.is_empty() {
            let _ = self
                .events
                .send(Arc::new(std::mem::take(&mut outbox.events)));
        }
        for (worker, lease_ids) in outbox.cancels {
            self.send_to(&worker, ToWorker::Cancel(lease_ids));
        }
        for (worker, message) in outbox.notices {
            self.send_to(&worker, message);
        }
        let mut messages: Vec<(Arc<str>, ToWorker)> = Vec::new();
        for (worker, assignments) in outbox.assignments {
            messages.push((worker, ToWorker::Assign(assignments)));
        }
        for (worker, grant) in outbox.grants {
            messages.push((worker, ToWorker::SpendGrant(grant)));
        }
        let on_commit = if outbox.ledger.is_empty() {
            for (worker, message) in messages {
                self.send_to(&worker, message);
            }
            on_commit
        } else {
            let senders: Vec<(Arc<str>, Option<WorkerSender>, ToWorker)> = messages
                .into_iter()
                .map(|(worker, message)| {
                    let sender = self.outbound.get(&worker).map(|(_, s)| s.clone());
                    (worker, sender, message)
                })
                .collect();
            let send_held: OnCommit = Box::new(move |committed_at_ms| {
                for (worker, sender, message) in senders {
                    let sent = sender.is_some_and(|s| s.send(message).is_ok());
                    if !sent {
                        warn!(worker = %worker, "worker stream closed; its leases will expire");
                    }
                }
                if let Some(on_commit) = on_commit {
                    on_commit(committed_at_ms);
                }
            });
            Some(send_held)
        };
        let mut writes = outbox.writes;
        if !outbox.ledger.is_empty() {
            writes.push(Write::Ledger(outbox.ledger));
        }
        let now = now_ms();
        for index in outbox.finalize {
            let experiment = &self.state.experiments[index];
            let final_state = experiment.finalizing.unwrap_or(experiment.state);
            let sender = self.self_sender.clone();
            writes.push(Write::Finalize {
                experiment_id: experiment.db_id,
                dir: experiment.dir.to_path_buf(),
                summary: summary(experiment, final_state, Some(now), now),
                config: Box::new(experiment.config.clone()),
            });
            self.store.write(
                std::mem::take(&mut writes),
                Some(Box::new(move |finished_at_ms| {
                    let _ = sender.send(Msg::Finalized {
                        index,
                        finished_at_ms,
                    });
                })),
            );
        }
        self.store.write(writes, on_commit);
    }

    fn send_to(&mut self, worker: &Arc<str>, message: ToWorker) {
        match self.outbound.get(worker) {
            Some((_, sender)) => {
                if sender.send(message).is_err() {
                    warn!(worker = %worker, "worker stream closed; its leases will expire");
                }
            }
            None => warn!(worker = %worker, "no connection to worker; its leases will expire"),
        }
    }
}

fn summary(
    experiment: &crate::state::Experiment,
    state: ExperimentState,
    finished_at_ms: Option<i64>,
    now: i64,
) -> Summary {
    Summary {
        name: experiment.config.name.clone(),
        state,
        counts: experiment.counts,
        spent_usd: experiment.spent_usd,
        budget_usd: experiment.config.budget.as_ref().map(|b| b.total_usd),
        budget: views::budget(experiment),
        reason: views::end_reason(experiment, state),
        started_at_ms: experiment.started_at_ms,
        finished_at_ms,
        now_ms: now,
        config_hash: experiment.hash.clone(),
    }
}
