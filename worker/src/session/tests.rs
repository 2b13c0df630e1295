//! The session against a fake coordinator on 127.0.0.1: it reconnects with
//! backoff, resends results not yet acknowledged, and names the runs still
//! running from an earlier connection in Hello (ARCHITECTURE.md, invariant 2).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_shared::protocol::{FromWorker, Hello, ToWorker, Welcome};
use flotilla_shared::run::{Assignment, Outcome, RunKey, RunResult, RunSpec};
use flotilla_wire::proto;
use flotilla_wire::proto::worker_service_server::{WorkerService, WorkerServiceServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::WorkerConfig;

const DEADLINE: Duration = Duration::from_secs(60);

/// One worker connection as the fake coordinator sees it.
struct Connection {
    hello: Hello,
    inbound: Streaming<proto::WorkerMessage>,
    outbound: mpsc::UnboundedSender<ToWorker>,
}

impl Connection {
    /// The next message other than a heartbeat.
    async fn next(&mut self) -> FromWorker {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.inbound.message())
                .await
                .expect("the worker speaks within the deadline")
                .expect("the stream is healthy")
                .expect("the stream is open");
            match FromWorker::try_from(message).unwrap() {
                FromWorker::Heartbeat { .. } => continue,
                other => return other,
            }
        }
    }

    fn send(&self, message: ToWorker) {
        self.outbound.send(message).unwrap();
    }
}

#[derive(Clone)]
struct FakeCoordinator {
    connections: mpsc::UnboundedSender<Connection>,
    /// Connection attempts refused before the first is accepted.
    refusals: Arc<Mutex<u32>>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    /// The lease timeout its Welcome gives.
    lease_timeout: Duration,
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<proto::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for FakeCoordinator {
    type ConnectStream = MessageStream;

    async fn connect(
        &self,
        request: Request<Streaming<proto::WorkerMessage>>,
    ) -> Result<Response<MessageStream>, Status> {
        self.attempts.lock().unwrap().push(Instant::now());
        {
            let mut refusals = self.refusals.lock().unwrap();
            if *refusals > 0 {
                *refusals -= 1;
                return Err(Status::unavailable("not ready yet"));
            }
        }
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.expect("a Hello");
        let FromWorker::Hello(hello) = FromWorker::try_from(first).unwrap() else {
            panic!("the first message must be Hello");
        };
        let (outbound, messages) = mpsc::unbounded_channel();
        outbound
            .send(ToWorker::Welcome(Welcome {
                worker_id: hello.name.clone(),
                heartbeat_interval: Duration::from_millis(50),
                lease_timeout: self.lease_timeout,
            }))
            .unwrap();
        let _ = self.connections.send(Connection {
            hello,
            inbound,
            outbound,
        });
        let messages = UnboundedReceiverStream::new(messages)
            .map(|message| Ok(proto::CoordinatorMessage::from(message)));
        Ok(Response::new(Box::pin(messages)))
    }

    async fn fetch_workdir(
        &self,
        _request: Request<proto::FetchWorkdirRequest>,
    ) -> Result<Response<proto::WorkdirBundle>, Status> {
        Err(Status::unimplemented("these runs need no workdir"))
    }
}

struct Harness {
    connections: mpsc::UnboundedReceiver<Connection>,
    attempts: Arc<Mutex<Vec<Instant>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: tokio::task::JoinHandle<flotilla_shared::Result<()>>,
    work_dir: tempfile::TempDir,
}

impl Harness {
    async fn start(refusals: u32) -> Harness {
        Harness::start_with(refusals, Duration::from_secs(10)).await
    }

    async fn start_with(refusals: u32, lease_timeout: Duration) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (connections_sender, connections) = mpsc::unbounded_channel();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let fake = FakeCoordinator {
            connections: connections_sender,
            refusals: Arc::new(Mutex::new(refusals)),
            attempts: attempts.clone(),
            lease_timeout,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let work_dir = tempfile::tempdir().unwrap();
        let config = WorkerConfig {
            coordinator: address.to_string(),
            token: "t".into(),
            name: "w1".into(),
            slots: 2,
            work_dir: work_dir.path().join("work"),
            providers: Vec::new(),
            ollama_url: flotilla_gateway::providers::DEFAULT_OLLAMA_URL.into(),
            drain_timeout: std::time::Duration::ZERO,
            tls: Default::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(crate::run(config, async move {
            let _ = stopped.await;
        }));
        Harness {
            connections,
            attempts,
            stop: Some(stop),
            worker,
            work_dir,
        }
    }

    async fn connection(&mut self) -> Connection {
        tokio::time::timeout(DEADLINE, self.connections.recv())
            .await
            .expect("the worker connects within the deadline")
            .expect("the fake coordinator is running")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.worker.await.unwrap().unwrap();
    }
}

fn assignment(lease_id: u64, repetition: u32, spec: RunSpec) -> Assignment {
    Assignment {
        lease_id,
        run: RunKey {
            experiment: "e".into(),
            variation: 1,
            repetition,
        },
        attempt: 1,
        seed: 7,
        params_json: "{}".into(),
        spec,
        timeout: Duration::from_secs(120),
        prices: Default::default(),
        budget: None,
        cache: Default::default(),
        tier: Default::default(),
    }
}

/// A command run that lasts until it is cancelled.
fn long_run(workdir: &std::path::Path) -> RunSpec {
    std::fs::create_dir_all(workdir).unwrap();
    let (hash, _) = flotilla_shared::workdir::read_bundle(workdir, &[]).unwrap();
    RunSpec::Command {
        argv: vec!["sh".into(), "-c".into(), "sleep 120".into()],
        workdir_path: workdir.to_path_buf(),
        workdir_hash: hash,
        setup: None,
        teardown: None,
    }
}

fn finished(message: FromWorker) -> Vec<RunResult> {
    match message {
        FromWorker::Finished(results) => results,
        other => panic!("expected results, got {other:?}"),
    }
}

#[tokio::test]
async fn reconnects_with_growing_backoff_while_the_coordinator_refuses() {
    let mut harness = Harness::start(3).await;
    let connection = harness.connection().await;
    assert_eq!(connection.hello.name, "w1");
    let attempts = harness.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 4, "three refusals, then accepted");
    // The session sleeps 100 ms, then 200, then 400 between attempts: each
    // gap is at least that long, however loaded the machine is.
    for (gap, least) in attempts.windows(2).zip([100u64, 200, 400]) {
        let gap = gap[1] - gap[0];
        assert!(
            gap >= Duration::from_millis(least),
            "gap {gap:?} shorter than the backoff of {least} ms: {attempts:?}"
        );
    }
    drop(connection);
    harness.stop().await;
}

#[tokio::test]
async fn unacknowledged_results_are_resent_and_running_leases_announced_after_a_reconnect() {
    let mut harness = Harness::start(0).await;
    let workdir = harness.work_dir.path().join("scenario");
    let mut first = harness.connection().await;
    assert!(first.hello.running.is_empty());
    assert!(matches!(
        first.next().await,
        FromWorker::Ready { free_slots: 2 }
    ));
    first.send(ToWorker::Assign(vec![
        assignment(1, 1, RunSpec::Noop),
        assignment(2, 2, long_run(&workdir)),
    ]));
    let results = finished(first.next().await);
    assert_eq!(results.len(), 1);
    assert_eq!(
        (results[0].lease_id, results[0].outcome),
        (1, Outcome::Succeeded)
    );

    // The coordinator goes away before acknowledging.
    drop(first);
    let mut second = harness.connection().await;
    let still_running: Vec<(u64, u32, u32)> = second
        .hello
        .running
        .iter()
        .map(|lease| (lease.lease_id, lease.run.repetition, lease.attempt))
        .collect();
    assert_eq!(
        still_running,
        vec![(2, 2, 1)],
        "Hello names the running run"
    );
    let resent = finished(second.next().await);
    assert_eq!(
        resent.iter().map(|r| r.lease_id).collect::<Vec<_>>(),
        vec![1],
        "the unacknowledged result comes again"
    );
    assert!(matches!(
        second.next().await,
        FromWorker::Ready { free_slots: 1 }
    ));
    second.send(ToWorker::Ack(vec![1]));

    // Acknowledged results are not sent again.
    drop(second);
    let mut third = harness.connection().await;
    assert_eq!(third.hello.running.len(), 1);
    assert!(
        matches!(third.next().await, FromWorker::Ready { free_slots: 1 }),
        "nothing to resend once acknowledged"
    );
    third.send(ToWorker::Cancel(vec![2]));
    let cancelled = finished(third.next().await);
    assert_eq!(
        (cancelled[0].lease_id, cancelled[0].outcome),
        (2, Outcome::Cancelled)
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_worker_whose_heartbeats_go_unanswered_fences_itself_and_joins_again() {
    // A lease timeout of 2 s: the worker may spend for 1.5 s after a heartbeat
    // the coordinator answered (ARCHITECTURE.md, invariant 8).
    let mut harness = Harness::start_with(0, Duration::from_secs(2)).await;
    let mut first = harness.connection().await;
    let answered_until = Instant::now() + Duration::from_secs(3);
    let mut renewals = 0;
    while Instant::now() < answered_until {
        let message = tokio::time::timeout(DEADLINE, first.inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let FromWorker::Heartbeat { number, .. } = FromWorker::try_from(message).unwrap() {
            if number != 0 {
                first.send(ToWorker::Renewed(number));
                renewals += 1;
            }
        }
    }
    assert!(renewals > 0, "regular heartbeats are numbered");
    assert!(
        harness.connections.try_recv().is_err(),
        "renewed past its first spend lease, it stays connected"
    );
    // Heartbeats go unanswered: once the lease runs out the worker fences
    // itself, drops the connection and says Hello again.
    let second = harness.connection().await;
    assert_eq!(second.hello.name, "w1");
    drop(first);
    harness.stop().await;
}
