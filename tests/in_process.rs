//! In-process cluster: the coordinator and two workers started through their
//! library entry points on 127.0.0.1 port 0, driven over the real gRPC API.

use std::time::Duration;

use flotilla_coordinator::CoordinatorConfig;
use flotilla_shared::auth::TOKEN_METADATA_KEY;
use flotilla_wire::proto;
use flotilla_wire::proto::control_service_client::ControlServiceClient;
use flotilla_worker::WorkerConfig;
use tokio::sync::watch;

const TOKEN: &str = "in-process-token";

fn authorised<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(TOKEN_METADATA_KEY, TOKEN.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_sweep_through_two_workers_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = flotilla_coordinator::start(
        CoordinatorConfig {
            root: root.clone(),
            token: TOKEN.into(),
            lease_timeout: Duration::from_secs(10),
            auto_report: true,
            tls: None,
        },
        listener,
    )
    .await
    .unwrap();
    let address = coordinator.address.to_string();

    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for number in 1..=2 {
        let config = WorkerConfig {
            coordinator: address.clone(),
            token: TOKEN.into(),
            name: format!("w{number}"),
            slots: 64,
            work_dir: dir.path().join(format!("w{number}")),
            providers: Vec::new(),
            ollama_url: flotilla_gateway::providers::DEFAULT_OLLAMA_URL.into(),
            drain_timeout: std::time::Duration::ZERO,
            tls: Default::default(),
        };
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(flotilla_worker::run(config, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
    }

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ControlServiceClient::new(channel);
    let yaml = "name: overhead\nrun: {kind: noop}\nvariations: [{param: i, values: [1, 2, 3, 4]}]\nruns_per_variation: 500\n";
    let reply = client
        .submit(authorised(proto::SubmitRequest {
            config_yaml: yaml.into(),
            config_path: "overhead.yaml".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.outcome(), reply.total_runs),
        (proto::SubmitOutcome::Created, 2000)
    );

    let mut stream = client
        .watch(authorised(proto::StatusRequest {
            name: "overhead".into(),
            events: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let mut events: std::collections::HashMap<i32, u64> = Default::default();
    let mut missed = 0;
    while let Some(reply) = tokio::time::timeout(Duration::from_secs(120), stream.message())
        .await
        .expect("progress")
        .unwrap()
    {
        for event in &reply.events {
            *events.entry(event.kind).or_default() += 1;
        }
        missed += reply.events_missed;
        last = reply.experiments.into_iter().next();
    }
    let last = last.unwrap();
    assert_eq!(last.state(), proto::ExperimentState::Completed);
    assert_eq!(last.counts.unwrap().succeeded, 2000);
    // Runs started as soon as the experiment was submitted, before the watch:
    // the watcher heard of those that ended after it subscribed, each once,
    // and of the end, missing none.
    let count = |kind: proto::WatchEventKind| events.get(&(kind as i32)).copied().unwrap_or(0);
    assert_eq!(missed, 0);
    assert!(
        count(proto::WatchEventKind::RunSucceeded) <= 2000,
        "{events:?}"
    );
    assert_eq!(count(proto::WatchEventKind::StateChanged), 1, "{events:?}");

    let status = client
        .status(authorised(proto::StatusRequest {
            name: "overhead".into(),
            events: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.workers.iter().all(|w| w.finished > 0),
        "{:?}",
        status.workers
    );

    // Without the token, the control API refuses.
    let refused = client.list(proto::ListRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let _ = stop.send(true);
    for worker in workers {
        worker.await.unwrap().unwrap();
    }
    coordinator.shutdown().await;

    // Every result is durable: the store has them after shutdown.
    let connection = rusqlite::Connection::open(root.join("flotilla.db")).unwrap();
    let succeeded: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(succeeded, 2000);
    let rows = std::fs::read_to_string(root.join("overhead/results.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, 2001);
}
