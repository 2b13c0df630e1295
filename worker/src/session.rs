//! The Session actor: owns the stream to the coordinator, starts a task per
//! assigned run, batches results, and keeps every result until the
//! coordinator acknowledges it — across reconnects (DESIGN §7.2).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flotilla_shared::proto;
use flotilla_shared::proto::coordinator_message::Kind as FromCoordinator;
use flotilla_shared::proto::worker_message::Kind as ToCoordinator;
use flotilla_shared::run::{Assignment, RunKey, RunResult};
use flotilla_shared::{Error, Result};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{info, warn};

use crate::connection::CoordinatorLink;
use crate::run_kinds::{self, RunContext};
use crate::WorkerConfig;

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
    unacked: BTreeMap<u64, proto::RunResult>,
    finished_sender: mpsc::UnboundedSender<RunResult>,
    finished: mpsc::UnboundedReceiver<RunResult>,
    heartbeat: Duration,
}

enum Disconnect {
    /// The connection broke: reconnect.
    Lost(String),
    /// Told to stop.
    Shutdown,
}

impl Session {
    pub fn new(config: WorkerConfig, link: CoordinatorLink, context: Arc<RunContext>) -> Self {
        let (finished_sender, finished) = mpsc::unbounded_channel();
        Session {
            config,
            link,
            context,
            running: HashMap::new(),
            unacked: BTreeMap::new(),
            finished_sender,
            finished,
            heartbeat: Duration::from_secs(1),
        }
    }

    /// Joins and serves until `shutdown` resolves. Reconnects when the
    /// connection breaks; returns an error when the token is refused.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut announced_wait = false;
        loop {
            let connected = tokio::select! {
                connected = self.connect() => connected,
                _ = &mut shutdown => return self.stop().await,
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
                        _ = &mut shutdown => return self.stop().await,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            announced_wait = false;
            match self.serve(inbound, outbound, &mut shutdown).await {
                Disconnect::Shutdown => return self.stop().await,
                Disconnect::Lost(why) => {
                    warn!(
                        coordinator = self.link.address(),
                        why,
                        running = self.running.len(),
                        "lost the coordinator; reconnecting"
                    )
                }
            }
        }
    }

    async fn connect(
        &mut self,
    ) -> Result<(
        tonic::Streaming<proto::CoordinatorMessage>,
        mpsc::UnboundedSender<proto::WorkerMessage>,
    )> {
        let mut client = self.link.worker_client().await?;
        let (outbound, outbound_stream) = mpsc::unbounded_channel();
        let running = self
            .running
            .iter()
            .map(|(lease_id, run)| proto::RunningLease {
                lease_id: *lease_id,
                run: Some(run.key.clone().into()),
                attempt: run.attempt,
            })
            .collect();
        let hello = proto::Hello {
            name: self.config.name.clone(),
            slots: self.config.slots,
            version: flotilla_shared::VERSION.to_string(),
            token: self.link.token().to_string(),
            capabilities: vec!["command".into(), "noop".into()],
            running,
        };
        outbound
            .send(proto::WorkerMessage {
                kind: Some(ToCoordinator::Hello(hello)),
            })
            .expect("receiver alive");
        let mut inbound = client
            .connect(UnboundedReceiverStream::new(outbound_stream))
            .await
            .map_err(Error::from)?
            .into_inner();
        match inbound.message().await.map_err(Error::from)? {
            Some(proto::CoordinatorMessage {
                kind: Some(FromCoordinator::Welcome(welcome)),
            }) => {
                info!(
                    coordinator = self.link.address(),
                    worker = self.config.name,
                    slots = self.config.slots,
                    "joined"
                );
                self.heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.max(50));
            }
            other => return Err(Error::Protocol(format!("expected Welcome, got {other:?}"))),
        }
        // Results the coordinator may not have committed: send them again (DESIGN §7.2).
        if !self.unacked.is_empty() {
            let results = self.unacked.values().cloned().collect();
            let _ = outbound.send(proto::WorkerMessage {
                kind: Some(ToCoordinator::Finished(proto::RunsFinished { results })),
            });
        }
        let free = (self.config.slots as usize).saturating_sub(self.running.len()) as u32;
        let _ = outbound.send(proto::WorkerMessage {
            kind: Some(ToCoordinator::Ready(proto::Ready { free_slots: free })),
        });
        Ok((inbound, outbound))
    }

    async fn serve(
        &mut self,
        mut inbound: tonic::Streaming<proto::CoordinatorMessage>,
        outbound: mpsc::UnboundedSender<proto::WorkerMessage>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Disconnect {
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.on_message(message),
                    Ok(None) => return Disconnect::Lost("the coordinator closed the connection".into()),
                    Err(status) => return Disconnect::Lost(status.message().to_string()),
                },
                Some(first) = self.finished.recv() => {
                    // Batch whatever else has finished meanwhile into one message (STYLE §6).
                    let mut results = vec![first];
                    while let Ok(more) = self.finished.try_recv() {
                        results.push(more);
                    }
                    let batch = self.record_finished(results);
                    if outbound.send(proto::WorkerMessage { kind: Some(ToCoordinator::Finished(proto::RunsFinished { results: batch })) }).is_err() {
                        return Disconnect::Lost("stream closed".into());
                    }
                }
                _ = heartbeat.tick() => {
                    let message = proto::WorkerMessage { kind: Some(ToCoordinator::Heartbeat(proto::Heartbeat { running: self.running.len() as u32 })) };
                    if outbound.send(message).is_err() {
                        return Disconnect::Lost("stream closed".into());
                    }
                }
                _ = shutdown.as_mut() => return Disconnect::Shutdown,
            }
        }
    }

    fn record_finished(&mut self, results: Vec<RunResult>) -> Vec<proto::RunResult> {
        results
            .into_iter()
            .map(|result| {
                self.running.remove(&result.lease_id);
                let message: proto::RunResult = result.into();
                self.unacked.insert(message.lease_id, message.clone());
                message
            })
            .collect()
    }

    fn on_message(&mut self, message: proto::CoordinatorMessage) {
        match message.kind {
            Some(FromCoordinator::Assign(assign)) => {
                for run in assign.runs {
                    match Assignment::try_from(run) {
                        Ok(assignment) => self.start_run(assignment),
                        Err(e) => warn!(error = %e, "malformed assignment, ignored"),
                    }
                }
            }
            Some(FromCoordinator::Cancel(cancel)) => {
                for lease_id in cancel.lease_ids {
                    if let Some(cancel) = self
                        .running
                        .get_mut(&lease_id)
                        .and_then(|r| r.cancel.take())
                    {
                        let _ = cancel.send(());
                    }
                }
            }
            Some(FromCoordinator::Ack(ack)) => {
                for lease_id in ack.lease_ids {
                    self.unacked.remove(&lease_id);
                }
            }
            Some(FromCoordinator::Drain(_)) => info!("asked to drain"),
            Some(FromCoordinator::Welcome(_)) | None => {}
        }
    }

    fn start_run(&mut self, assignment: Assignment) {
        if self.running.contains_key(&assignment.lease_id) {
            return;
        }
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
