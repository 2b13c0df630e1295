//! A thousand workers in one process, for measuring what one coordinator
//! holds (bench/README.md, "A thousand workers").
//!
//! Each session is what `flotilla worker join` is on the wire: its own TCP
//! connection and `WorkerService.Connect` stream, `Hello` with the token,
//! `Ready` with its slots, a numbered heartbeat at the interval the
//! coordinator's `Welcome` gives, results kept until acknowledged and sent
//! again after a reconnect, and the worker's reconnect backoff (100 ms
//! doubling to 2 s). Runs are noop runs: a result is sent the moment an
//! assignment arrives, so the coordinator is the only thing measured.
//!
//! Four times a second it prints one JSON line on stdout:
//! `{"t_s":…,"connected":…,"joins":…,"runs":…,"heartbeats":…}`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_shared::clock::now_ms;
use flotilla_shared::protocol::{Capabilities, FromWorker, Hello, ToWorker};
use flotilla_shared::run::{Assignment, Outcome, RunResult, RunSpec};
use flotilla_wire::proto;
use flotilla_wire::proto::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;

#[derive(Parser, Debug)]
#[command(
    about = "Opens many Flotilla worker sessions against one coordinator and runs noop runs."
)]
struct Args {
    /// The coordinator's address, HOST:PORT.
    coordinator: String,
    /// File holding the coordinator's token.
    #[arg(long)]
    token_file: std::path::PathBuf,
    /// How many worker sessions to open.
    #[arg(long, default_value_t = 1000)]
    workers: u32,
    /// Slots each session declares.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Sessions opened per second at the start (workers of a real cluster do
    /// not all start in the same millisecond); reconnects are not paced.
    #[arg(long, default_value_t = 500)]
    join_rate: u32,
}

/// Counters every session adds to, printed once a second.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    joins: AtomicU64,
    runs: AtomicU64,
    heartbeats: AtomicU64,
}

/// Why a session's connection ended.
enum Ended {
    /// The coordinator closed the stream or the connection broke.
    Lost,
    /// The coordinator refused the token: retrying cannot help.
    Refused(String),
}

struct Session {
    name: String,
    slots: u32,
    token: String,
    endpoint: Endpoint,
    counters: Arc<Counters>,
    /// Results sent and not yet acknowledged: sent again after a reconnect.
    unacked: BTreeMap<u64, RunResult>,
    next_heartbeat: u64,
}

impl Session {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.connect_and_serve(&mut backoff).await {
                Ended::Refused(why) => {
                    eprintln!("{}: refused: {why}", self.name);
                    return;
                }
                Ended::Lost => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn connect_and_serve(&mut self, backoff: &mut Duration) -> Ended {
        let channel = match self.endpoint.connect().await {
            Ok(channel) => channel,
            Err(_) => return Ended::Lost,
        };
        let mut client = WorkerServiceClient::new(channel)
            .max_decoding_message_size(flotilla_wire::MAX_MESSAGE_BYTES);
        let (outbound, outbound_stream) = mpsc::unbounded_channel::<FromWorker>();
        let _ = outbound.send(FromWorker::Hello(self.hello()));
        let messages =
            UnboundedReceiverStream::new(outbound_stream).map(proto::WorkerMessage::from);
        let mut inbound = match client.connect(messages).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Ended::Refused(status.message().to_string())
            }
            Err(_) => return Ended::Lost,
        };
        let heartbeat_interval = match inbound.message().await.map(|m| m.map(ToWorker::try_from)) {
            Ok(Some(Ok(ToWorker::Welcome(welcome)))) => welcome.heartbeat_interval,
            Ok(_) => return Ended::Lost,
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Ended::Refused(status.message().to_string())
            }
            Err(_) => return Ended::Lost,
        };
        *backoff = Duration::from_millis(100);
        self.counters.joins.fetch_add(1, Ordering::Relaxed);
        self.counters.connected.fetch_add(1, Ordering::Relaxed);
        if !self.unacked.is_empty() {
            let _ = outbound.send(FromWorker::Finished(
                self.unacked.values().cloned().collect(),
            ));
        }
        let _ = outbound.send(FromWorker::Ready {
            free_slots: self.slots,
        });
        let ended = self
            .serve(&mut inbound, &outbound, heartbeat_interval)
            .await;
        self.counters.connected.fetch_sub(1, Ordering::Relaxed);
        ended
    }

    async fn serve(
        &mut self,
        inbound: &mut tonic::Streaming<proto::CoordinatorMessage>,
        outbound: &mpsc::UnboundedSender<FromWorker>,
        heartbeat_interval: Duration,
    ) -> Ended {
        let mut heartbeat =
            tokio::time::interval(heartbeat_interval.max(Duration::from_millis(50)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => match ToWorker::try_from(message) {
                        Ok(message) => self.on_message(message, outbound),
                        Err(_) => return Ended::Lost,
                    },
                    Ok(None) => return Ended::Lost,
                    Err(_) => return Ended::Lost,
                },
                _ = heartbeat.tick() => {
                    self.next_heartbeat += 1;
                    let sent = outbound.send(FromWorker::Heartbeat {
                        running: 0,
                        demand: Vec::new(),
                        usage: Vec::new(),
                        spend: Vec::new(),
                        number: self.next_heartbeat,
                    });
                    if sent.is_err() {
                        return Ended::Lost;
                    }
                    self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn on_message(&mut self, message: ToWorker, outbound: &mpsc::UnboundedSender<FromWorker>) {
        match message {
            ToWorker::Assign(assignments) => {
                let results: Vec<RunResult> = assignments.iter().map(noop_result).collect();
                for result in &results {
                    self.unacked.insert(result.lease_id, result.clone());
                }
                self.counters
                    .runs
                    .fetch_add(results.len() as u64, Ordering::Relaxed);
                let _ = outbound.send(FromWorker::Finished(results));
            }
            ToWorker::Ack(lease_ids) => {
                for lease_id in lease_ids {
                    self.unacked.remove(&lease_id);
                }
            }
            // Noop runs end before a cancel could reach them; nothing else
            // asks anything of a worker that makes no LLM calls.
            _ => {}
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            name: self.name.clone(),
            slots: self.slots,
            version: flotilla_shared::VERSION.to_string(),
            token: self.token.clone(),
            capabilities: Capabilities {
                run_kinds: ["noop".to_string()].into(),
                ..Capabilities::default()
            },
            running: Vec::new(),
        }
    }
}

/// What a worker reports for a noop run (the same as `flotilla worker join` does).
fn noop_result(assignment: &Assignment) -> RunResult {
    let mut result = RunResult::failed(assignment, String::new(), now_ms());
    if matches!(assignment.spec, RunSpec::Noop) {
        result.outcome = Outcome::Succeeded;
        result.metrics_json = Some("{}".to_string());
    } else {
        result.error = "the load generator runs noop runs only".to_string();
    }
    result
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| {
            format!(
                "cannot read --token-file {}: {e}",
                args.token_file.display()
            )
        })?
        .trim()
        .to_string();
    let endpoint = Endpoint::from_shared(format!("http://{}", args.coordinator))
        .map_err(|e| format!("'{}' is not a HOST:PORT address: {e}", args.coordinator))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    // One thread: the coordinator shares the machine and is what is measured.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        tokio::spawn(report(counters.clone(), started));
        let pause = Duration::from_secs_f64(1.0 / f64::from(args.join_rate.max(1)));
        for number in 1..=args.workers {
            let session = Session {
                name: format!("load-{number:05}"),
                slots: args.slots,
                token: token.clone(),
                endpoint: endpoint.clone(),
                counters: counters.clone(),
                unacked: BTreeMap::new(),
                next_heartbeat: 0,
            };
            tokio::spawn(session.run());
            tokio::time::sleep(pause).await;
        }
        std::future::pending::<()>().await;
    });
    Ok(())
}

async fn report(counters: Arc<Counters>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        println!(
            "{{\"t_s\":{:.3},\"connected\":{},\"joins\":{},\"runs\":{},\"heartbeats\":{}}}",
            started.elapsed().as_secs_f64(),
            counters.connected.load(Ordering::Relaxed),
            counters.joins.load(Ordering::Relaxed),
            counters.runs.load(Ordering::Relaxed),
            counters.heartbeats.load(Ordering::Relaxed),
        );
    }
}
