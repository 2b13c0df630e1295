//! The Session actor: owns the stream to the coordinator, starts a task per
//! assigned run, batches results, and keeps every result until the
//! coordinator acknowledges it — across reconnects (ARCHITECTURE.md, invariant 2).

use flotilla_wire::status::error_of;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_shared::protocol::{Capabilities, FromWorker, Hello, RunningLease, ToWorker};
use flotilla_shared::run::{Assignment, Outcome, RunKey, RunResult};
use flotilla_shared::{Error, Result};
use flotilla_wire::proto;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use flotilla_gateway::limits::RateSignal;
use flotilla_gateway::TopUpRequest;
use flotilla_shared::protocol::{SpendGrant, SpendRequest};

use crate::connection::CoordinatorLink;

mod hooks;
use crate::run_kinds::{self, RunContext};
use crate::{StopRequest, WorkerConfig};

struct RunningRun {
    key: RunKey,
    attempt: u32,
    cancel: Option<oneshot::Sender<()>>,
}

pub struct Session {
    config: WorkerConfig,
    link: CoordinatorLink,
    context: Arc<RunContext>,
    running: HashMap<u64, RunningRun>,
    /// Results sent (or to send) and not yet acknowledged, by lease id.
    unacked: BTreeMap<u64, RunResult>,
    finished_sender: mpsc::UnboundedSender<RunResult>,
    finished: mpsc::UnboundedReceiver<RunResult>,
    heartbeat: Duration,
    /// What the worker serves, kept current by the Ollama follower.
    capabilities: watch::Receiver<Capabilities>,
    /// Runs asking for more budget (ARCHITECTURE.md, invariant 1).
    top_up_requests: mpsc::UnboundedReceiver<TopUpRequest>,
    /// Top-ups asked of the coordinator and not answered yet, by request id;
    /// asked again after a reconnect.
    top_ups_waiting: BTreeMap<u64, TopUpRequest>,
    next_top_up: u64,
    /// 429s and new demand from the gateway's rate limits (ARCHITECTURE.md, invariant 6).
    rate_signals: mpsc::UnboundedReceiver<RateSignal>,
    /// The demand last reported, so that an unchanged one is not sent again.
    demand_reported: Vec<flotilla_shared::rate::KeyDemand>,
    /// The use of limited keys last sent, so that heartbeats carry it only when it changed.
    usage_reported: Vec<flotilla_shared::rate::KeyUse>,
    /// Experiments' setups and teardowns on this worker.
    hooks: hooks::Hooks,
    /// Messages decided while handling a message, sent right after it.
    outgoing: Vec<FromWorker>,
    /// Draining: when runs still running are handed back.
    drain_deadline: Option<Instant>,
    /// Runs stopped because the drain timed out: their results say handed back.
    handing_back: HashSet<u64>,
    drain_timed_out: bool,
    /// How long after a heartbeat the coordinator acknowledged this worker
    /// may go on spending: the lease timeout less the fence margin
    /// (ARCHITECTURE.md, invariant 8).
    spend_term: Duration,
    /// Heartbeats sent and not yet answered, by number, with when they went.
    heartbeats_sent: VecDeque<(u64, Instant)>,
    next_heartbeat: u64,
}

/// The share of the lease timeout by which a worker's spend lease is
/// shorter: it stops spending this long before the coordinator can give its
/// runs to others (ARCHITECTURE.md, invariant 8).
pub const FENCE_MARGIN_SHARE: u32 = 4;

/// A worker's spend lease for a coordinator's lease timeout.
pub fn spend_term(lease_timeout: Duration) -> Duration {
    lease_timeout - lease_timeout / FENCE_MARGIN_SHARE
}

/// How long a drained worker waits for the coordinator to acknowledge what
/// it handed back before it leaves anyway (the leases then expire).
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How often demand for shared limits is looked at and, when it changed, reported.
const DEMAND_INTERVAL: Duration = Duration::from_millis(500);

enum Disconnect {
    /// The connection broke: reconnect.
    Lost(String),
    /// The spend lease ran out: calls are refused until a new connection
    /// renews it (ARCHITECTURE.md, invariant 8).
    Fenced,
    /// Told to stop.
    Shutdown,
}

impl Session {
    pub fn new(
        config: WorkerConfig,
        link: CoordinatorLink,
        context: Arc<RunContext>,
        capabilities: watch::Receiver<Capabilities>,
        top_up_requests: mpsc::UnboundedReceiver<TopUpRequest>,
    ) -> Self {
        let (finished_sender, finished) = mpsc::unbounded_channel();
        let rate_signals = context.gateway.state.limits.signals();
        Session {
            config,
            link,
            context,
            running: HashMap::new(),
            unacked: BTreeMap::new(),
            finished_sender,
            finished,
            heartbeat: Duration::from_secs(1),
            capabilities,
            top_up_requests,
            top_ups_waiting: BTreeMap::new(),
            next_top_up: 1,
            rate_signals,
            demand_reported: Vec::new(),
            usage_reported: Vec::new(),
            hooks: hooks::Hooks::new(),
            outgoing: Vec::new(),
            drain_deadline: None,
            handing_back: HashSet::new(),
            drain_timed_out: false,
            spend_term: Duration::from_secs(1),
            heartbeats_sent: VecDeque::new(),
            next_heartbeat: 1,
        }
    }

    /// Starts draining: the coordinator hears of it, running runs get until
    /// the drain timeout.
    fn begin_drain(&mut self) {
        if self.drain_deadline.is_some() {
            return;
        }
        let deadline = Instant::now() + self.config.drain_timeout;
        self.drain_deadline = Some(deadline);
        info!(
            running = self.running.len(),
            timeout = ?self.config.drain_timeout,
            "draining: no new runs; running runs finish or are handed back at the timeout"
        );
        self.outgoing.push(FromWorker::Draining);
    }

    /// The drain timed out: running runs are stopped and handed back.
    fn hand_back_running(&mut self) {
        for (lease_id, run) in self.running.iter_mut() {
            if let Some(cancel) = run.cancel.take() {
                self.handing_back.insert(*lease_id);
                let _ = cancel.send(());
            }
        }
    }

    fn drained(&self) -> bool {
        self.drain_deadline.is_some() && self.running.is_empty()
    }

    /// Joins and serves until drained or told to stop now. Reconnects when
    /// the connection breaks; returns an error when the token is refused.
    pub async fn run(mut self, mut stops: mpsc::UnboundedReceiver<StopRequest>) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        let mut announced_wait = false;
        loop {
            let connected = tokio::select! {
                connected = self.connect() => connected,
                stop = stops.recv() => match stop {
                    Some(StopRequest::Drain) if !self.running.is_empty() => {
                        // Runs go on while the coordinator is away; they are handed back once it is reachable.
                        self.begin_drain();
                        self.outgoing.clear();
                        continue;
                    }
                    _ => return self.stop().await,
                },
            };
            let (inbound, outbound) = match connected {
                Ok(streams) => streams,
                Err(Error::Unauthenticated(message)) => {
                    return Err(Error::Unauthenticated(message))
                }
                Err(Error::InvalidInput(message)) => return Err(Error::InvalidInput(message)),
                Err(error) => {
                    if !announced_wait {
                        warn!(coordinator = self.link.address(), error = %error, "cannot join the coordinator; retrying");
                        announced_wait = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        stop = stops.recv() => match stop {
                            Some(StopRequest::Drain) if !self.running.is_empty() => {
                                self.begin_drain();
                                self.outgoing.clear();
                            }
                            _ => return self.stop().await,
                        },
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            announced_wait = false;
            match self.serve(inbound, outbound, &mut stops).await {
                Disconnect::Shutdown => return self.stop().await,
                Disconnect::Lost(why) => {
                    warn!(
                        coordinator = self.link.address(),
                        why,
                        running = self.running.len(),
                        "lost the coordinator; reconnecting"
                    )
                }
                Disconnect::Fenced => warn!(
                    coordinator = self.link.address(),
                    spend_lease = ?self.spend_term,
                    running = self.running.len(),
                    "no word from the coordinator for longer than the spend lease: runs' calls are refused \
                     and calls in flight cancelled until it answers again; reconnecting"
                ),
            }
        }
    }

    async fn connect(
        &mut self,
    ) -> Result<(
        tonic::Streaming<proto::CoordinatorMessage>,
        mpsc::UnboundedSender<FromWorker>,
    )> {
        let mut client = self.link.worker_client().await?;
        let (outbound, outbound_stream) = mpsc::unbounded_channel();
        // The coordinator hears Hello after this: the lease may run from here.
        let hello_sent = Instant::now();
        outbound
            .send(FromWorker::Hello(self.hello()))
            .expect("receiver alive");
        let messages =
            UnboundedReceiverStream::new(outbound_stream).map(proto::WorkerMessage::from);
        let mut inbound = client
            .connect(messages)
            .await
            .map_err(error_of)?
            .into_inner();
        let first = inbound.message().await.map_err(error_of)?;
        match first.map(ToWorker::try_from) {
            Some(Ok(ToWorker::Welcome(welcome))) => {
                info!(
                    coordinator = self.link.address(),
                    worker = self.config.name,
                    slots = self.config.slots,
                    "joined"
                );
                self.heartbeat = welcome.heartbeat_interval.max(Duration::from_millis(50));
                self.spend_term = spend_term(welcome.lease_timeout);
                self.heartbeats_sent.clear();
                self.context
                    .gateway
                    .state
                    .spend_lease
                    .renew(hello_sent + self.spend_term);
            }
            other => return Err(Error::Protocol(format!("expected Welcome, got {other:?}"))),
        }
        // Results the coordinator may not have committed: send them again
        // (ARCHITECTURE.md, invariant 2).
        if !self.unacked.is_empty() {
            let results = self.unacked.values().cloned().collect();
            let _ = outbound.send(FromWorker::Finished(results));
        }
        for (request_id, waiting) in &self.top_ups_waiting {
            let _ = outbound.send(FromWorker::SpendRequest(SpendRequest {
                request_id: *request_id,
                lease_id: waiting.lease_id,
                amount: waiting.amount,
            }));
        }
        let free_slots = (self.config.slots as usize).saturating_sub(self.running.len()) as u32;
        let _ = outbound.send(FromWorker::Ready { free_slots });
        if self.drain_deadline.is_some() {
            let _ = outbound.send(FromWorker::Draining);
        }
        Ok((inbound, outbound))
    }

    /// Hello names the runs still running from an earlier connection, so that
    /// the coordinator keeps their leases.
    fn hello(&self) -> Hello {
        Hello {
            name: self.config.name.clone(),
            slots: self.config.slots,
            version: flotilla_shared::VERSION.to_string(),
            token: self.link.token().to_string(),
            capabilities: self.capabilities.borrow().clone(),
            running: self
                .running
                .iter()
                .map(|(lease_id, run)| RunningLease {
                    lease_id: *lease_id,
                    run: run.key.clone(),
                    attempt: run.attempt,
                })
                .collect(),
        }
    }

    async fn serve(
        &mut self,
        mut inbound: tonic::Streaming<proto::CoordinatorMessage>,
        outbound: mpsc::UnboundedSender<FromWorker>,
        stops: &mut mpsc::UnboundedReceiver<StopRequest>,
    ) -> Disconnect {
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut demand_check = tokio::time::interval(DEMAND_INTERVAL);
        demand_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A new connection's coordinator may have restarted: it hears the demand again.
        self.demand_reported.clear();
        self.usage_reported.clear();
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => match ToWorker::try_from(message) {
                        Ok(message) => {
                            self.on_message(message);
                            for message in std::mem::take(&mut self.outgoing) {
                                if outbound.send(message).is_err() {
                                    return Disconnect::Lost("stream closed".into());
                                }
                            }
                            if self.drained() {
                                return self.leave(&mut inbound, outbound, true).await;
                            }
                        }
                        Err(e) => warn!(error = %e, "malformed message from the coordinator, ignored"),
                    },
                    Ok(None) => return Disconnect::Lost("the coordinator closed the connection".into()),
                    Err(status) => return Disconnect::Lost(status.message().to_string()),
                },
                Some(done) = self.hooks.finished.recv() => {
                    let mut effects = hooks::HookEffects::default();
                    self.hooks.finished(done, &self.context, &mut effects);
                    for assignment in effects.start {
                        self.launch_run(assignment);
                    }
                    for message in effects.send {
                        if outbound.send(message).is_err() {
                            return Disconnect::Lost("stream closed".into());
                        }
                    }
                }
                Some(first) = self.finished.recv() => {
                    // Batch whatever else has finished meanwhile into one message.
                    let mut results = vec![first];
                    while let Ok(more) = self.finished.try_recv() {
                        results.push(more);
                    }
                    let batch = self.record_finished(results);
                    if outbound.send(FromWorker::Finished(batch)).is_err() {
                        return Disconnect::Lost("stream closed".into());
                    }
                    if self.drained() {
                        return self.leave(&mut inbound, outbound, true).await;
                    }
                }
                _ = sleep_until_drain(self.drain_deadline), if !self.running.is_empty() && !self.drain_timed_out => {
                    self.drain_timed_out = true;
                    self.hand_back_running();
                }
                Some(request) = self.top_up_requests.recv() => {
                    let request_id = self.next_top_up;
                    self.next_top_up += 1;
                    let message = FromWorker::SpendRequest(SpendRequest {
                        request_id,
                        lease_id: request.lease_id,
                        amount: request.amount,
                    });
                    self.top_ups_waiting.insert(request_id, request);
                    if outbound.send(message).is_err() {
                        return Disconnect::Lost("stream closed".into());
                    }
                }
                Some(signal) = self.rate_signals.recv() => {
                    let message = match signal {
                        RateSignal::Paused(pause) => Some(FromWorker::RateLimited(pause)),
                        RateSignal::DemandAppeared => self.demand_report(true),
                    };
                    if message.is_some_and(|m| outbound.send(m).is_err()) {
                        return Disconnect::Lost("stream closed".into());
                    }
                }
                _ = demand_check.tick() => {
                    if let Some(message) = self.demand_report(false) {
                        if outbound.send(message).is_err() {
                            return Disconnect::Lost("stream closed".into());
                        }
                    }
                }
                _ = self.context.gateway.state.spend_lease.lost() => return Disconnect::Fenced,
                _ = heartbeat.tick() => {
                    if !self.context.gateway.state.spend_lease.holds() {
                        return Disconnect::Fenced;
                    }
                    let number = self.next_heartbeat;
                    self.next_heartbeat += 1;
                    if self.heartbeats_sent.len() >= 64 {
                        self.heartbeats_sent.pop_front();
                    }
                    self.heartbeats_sent.push_back((number, Instant::now()));
                    let message = FromWorker::Heartbeat {
                        running: self.running.len() as u32,
                        demand: Vec::new(),
                        usage: self.usage_report(),
                        spend: self.spend_report(),
                        number,
                    };
                    if outbound.send(message).is_err() {
                        return Disconnect::Lost("stream closed".into());
                    }
                }
                Ok(()) = self.capabilities.changed() => {
                    let current = self.capabilities.borrow_and_update().clone();
                    if outbound.send(FromWorker::Capabilities(current)).is_err() {
                        return Disconnect::Lost("stream closed".into());
                    }
                }
                stop = stops.recv() => match stop {
                    Some(StopRequest::Drain) => {
                        self.begin_drain();
                        for message in std::mem::take(&mut self.outgoing) {
                            let _ = outbound.send(message);
                        }
                        if self.drained() {
                            return self.leave(&mut inbound, outbound, true).await;
                        }
                    }
                    Some(StopRequest::Now) | None => {
                        return self.leave(&mut inbound, outbound, false).await;
                    }
                },
            }
        }
    }

    /// Keeps each result until the coordinator acknowledges it.
    fn record_finished(&mut self, mut results: Vec<RunResult>) -> Vec<RunResult> {
        for result in &mut results {
            // Stopped by the drain's timeout, not by the program or the coordinator.
            let stopped_by_drain = self.handing_back.remove(&result.lease_id);
            // Or by the signal that drains the worker, sent to its runs too
            // (Slurm's scancel, systemd's KillMode=control-group).
            let signalled_while_draining = self.drain_deadline.is_some()
                && crate::run_kinds::command::ended_by_stop_signal(result.signal, result.exit_code);
            if (stopped_by_drain || signalled_while_draining)
                && result.outcome != Outcome::Succeeded
            {
                result.outcome = Outcome::HandedBack;
            }
            self.running.remove(&result.lease_id);
            self.unacked.insert(result.lease_id, result.clone());
        }
        results
    }

    fn on_message(&mut self, message: ToWorker) {
        match message {
            ToWorker::Assign(assignments) => {
                for assignment in assignments {
                    self.start_run(assignment);
                }
            }
            ToWorker::Cancel(lease_ids) => {
                for lease_id in lease_ids {
                    if let Some(cancel) = self
                        .running
                        .get_mut(&lease_id)
                        .and_then(|r| r.cancel.take())
                    {
                        let _ = cancel.send(());
                    }
                }
            }
            ToWorker::Ack(lease_ids) => {
                for lease_id in lease_ids {
                    self.unacked.remove(&lease_id);
                }
            }
            ToWorker::Drain => self.begin_drain(),
            ToWorker::Welcome(_) => {}
            ToWorker::SpendGrant(grant) => self.on_spend_grant(grant),
            ToWorker::RateShares(shares) => {
                self.context.gateway.state.limits.set_shares(shares);
            }
            ToWorker::RatePause(pause) => {
                self.context
                    .gateway
                    .state
                    .limits
                    .pause_for(&pause.key, pause.pause);
            }
            ToWorker::ExperimentEnded(experiment) => {
                self.hooks.experiment_ended(&experiment, &self.context);
            }
            ToWorker::Renewed(number) => self.renewed(number),
        }
    }

    /// The coordinator heard heartbeat `number`: the spend lease runs from
    /// when it was sent. A lease that already ran out is renewed only by a
    /// new connection, whose Hello tells the coordinator what still runs.
    fn renewed(&mut self, number: u64) {
        let mut sent_at = None;
        while let Some(&(sent, at)) = self.heartbeats_sent.front() {
            if sent > number {
                break;
            }
            self.heartbeats_sent.pop_front();
            if sent == number {
                sent_at = Some(at);
            }
        }
        let lease = &self.context.gateway.state.spend_lease;
        if let (Some(at), true) = (sent_at, lease.holds()) {
            lease.renew(at + self.spend_term);
        }
    }

    /// A heartbeat carrying the demand for shared limits, when it changed
    /// since the last report (or `always`).
    fn demand_report(&mut self, always: bool) -> Option<FromWorker> {
        let demand = self.context.gateway.state.limits.demand();
        if demand.is_empty() || (!always && demand == self.demand_reported) {
            return None;
        }
        self.demand_reported = demand.clone();
        Some(FromWorker::Heartbeat {
            running: self.running.len() as u32,
            demand,
            usage: Vec::new(),
            spend: Vec::new(),
            number: 0,
        })
    }

    /// What each running run has spent so far, as the gateway knows it.
    fn spend_report(&self) -> Vec<flotilla_shared::protocol::RunSpend> {
        let live = self.context.gateway.state.runs.live_spend();
        self.running
            .iter()
            .filter_map(|(lease_id, run)| {
                let (spent, in_flight) = *live.get(&run.key.to_string())?;
                Some(flotilla_shared::protocol::RunSpend {
                    lease_id: *lease_id,
                    spent,
                    in_flight,
                })
            })
            .collect()
    }

    /// How limited keys were used, when that changed since the last heartbeat.
    fn usage_report(&mut self) -> Vec<flotilla_shared::rate::KeyUse> {
        let usage = self.context.gateway.state.limits.usage();
        if usage == self.usage_reported {
            return Vec::new();
        }
        self.usage_reported = usage.clone();
        usage
    }

    fn on_spend_grant(&mut self, grant: SpendGrant) {
        if let Some(waiting) = self.top_ups_waiting.remove(&grant.request_id) {
            let _ = waiting.reply.send(grant.answer);
        }
    }

    /// An assigned run starts, or waits for its experiment's setup, or is declined.
    fn start_run(&mut self, assignment: Assignment) {
        if self.running.contains_key(&assignment.lease_id) {
            return;
        }
        if !self.context.gateway.state.spend_lease.holds() {
            // Sent before the worker lost contact: it is handed back, not started
            // (ARCHITECTURE.md, invariant 8).
            let lease_id = assignment.lease_id;
            self.launch_run(assignment);
            if let Some(cancel) = self
                .running
                .get_mut(&lease_id)
                .and_then(|r| r.cancel.take())
            {
                self.handing_back.insert(lease_id);
                let _ = cancel.send(());
            }
            return;
        }
        let mut effects = hooks::HookEffects::default();
        self.hooks.assigned(assignment, &self.context, &mut effects);
        for assignment in effects.start {
            self.launch_run(assignment);
        }
        self.outgoing.extend(effects.send);
    }

    /// On shutdown, while still connected: running runs are cancelled and
    /// their results sent, then every experiment set up here is torn down and
    /// the hooks' reports sent, so that teardown logs reach the coordinator.
    async fn wind_down(&mut self, outbound: &mpsc::UnboundedSender<FromWorker>) {
        for run in self.running.values_mut() {
            if let Some(cancel) = run.cancel.take() {
                let _ = cancel.send(());
            }
        }
        while !self.running.is_empty() {
            let Some(result) = self.finished.recv().await else {
                break;
            };
            let batch = self.record_finished(vec![result]);
            let _ = outbound.send(FromWorker::Finished(batch));
        }
        self.hooks.tear_down_all(&self.context);
        while self.hooks.in_flight() > 0 {
            let Some(done) = self.hooks.finished.recv().await else {
                break;
            };
            let mut effects = hooks::HookEffects::default();
            self.hooks.finished(done, &self.context, &mut effects);
            for message in effects.send {
                let _ = outbound.send(message);
            }
        }
    }

    fn launch_run(&mut self, assignment: Assignment) {
        let (cancel, cancelled) = oneshot::channel();
        self.running.insert(
            assignment.lease_id,
            RunningRun {
                key: assignment.run.clone(),
                attempt: assignment.attempt,
                cancel: Some(cancel),
            },
        );
        let context = self.context.clone();
        let finished = self.finished_sender.clone();
        tokio::spawn(async move {
            let result = run_kinds::execute(assignment, context, cancelled).await;
            let _ = finished.send(result);
        });
    }

    /// Leaving: running runs are stopped (none are left when `drained`),
    /// teardowns run, then the worker waits (a while) for the coordinator to
    /// acknowledge its last results (when drained) and to have read all it was
    /// sent, and leaves.
    async fn leave(
        &mut self,
        inbound: &mut tonic::Streaming<proto::CoordinatorMessage>,
        outbound: mpsc::UnboundedSender<FromWorker>,
        drained: bool,
    ) -> Disconnect {
        self.wind_down(&outbound).await;
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        while drained && !self.unacked.is_empty() {
            match tokio::time::timeout_at(deadline, inbound.message()).await {
                Ok(Ok(Some(message))) => {
                    if let Ok(ToWorker::Ack(lease_ids)) = ToWorker::try_from(message) {
                        for lease_id in lease_ids {
                            self.unacked.remove(&lease_id);
                        }
                    }
                }
                _ => break,
            }
        }
        // Our stream ends; the coordinator ends its own once it has read
        // everything sent before, teardown reports included.
        drop(outbound);
        while let Ok(Ok(Some(_))) = tokio::time::timeout_at(deadline, inbound.message()).await {}
        if drained {
            info!(unacknowledged = self.unacked.len(), "drained; leaving");
        }
        Disconnect::Shutdown
    }

    /// Cancels what is running and waits for the runs to end.
    async fn stop(mut self) -> Result<()> {
        let count = self.running.len();
        for run in self.running.values_mut() {
            if let Some(cancel) = run.cancel.take() {
                let _ = cancel.send(());
            }
        }
        for _ in 0..count {
            if self.finished.recv().await.is_none() {
                break;
            }
        }
        Ok(())
    }
}

/// Resolves at the drain's deadline; never when not draining.
async fn sleep_until_drain(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
