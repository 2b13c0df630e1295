//! `flotilla run`: an embedded coordinator and local workers on this machine,
//! talking real gRPC over loopback, following the experiment to its end.

use flotilla_wire::status::error_of;
use std::net::SocketAddr;
use std::path::PathBuf;

use flotilla_coordinator::{CoordinatorConfig, DEFAULT_LEASE_TIMEOUT};
use flotilla_shared::status::SubmitOutcome;
use flotilla_shared::Error;
use flotilla_worker::WorkerConfig;
use tokio::sync::{mpsc, watch};

use clap::Args;

use super::args::{LlmArgs, RootArg, ShowArgs};
use super::{client, progress, submission};

#[derive(Args)]
pub struct RunArgs {
    /// The experiment file (YAML).
    pub file: PathBuf,
    #[command(flatten)]
    pub root: RootArg,
    /// Local workers to start (each runs one run at a time); default: the number of cores.
    #[arg(long)]
    pub workers: Option<u32>,
    /// Runs each local worker runs at once.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Also re-run runs that failed for good in an earlier run of this file.
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub show: ShowArgs,
    /// Serve /metrics (Prometheus) and the JSON API under /api/v1/ here (HOST:PORT) while the
    /// experiment runs.
    #[arg(long)]
    pub http: Option<SocketAddr>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let providers = args.llm.providers()?;
    let (root, show) = (args.root.root.clone(), args.show.show());
    if args.workers == Some(0) || args.slots == 0 {
        return Err(Error::InvalidInput("--workers and --slots must be at least 1".into()).into());
    }
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::io(format!("cannot create {}", root.display()), e))?;
    // Validate (and bundle) before starting anything.
    let (config, request) = submission::prepare(
        &args.file,
        std::slice::from_ref(&root),
        args.retry_failed,
        &providers,
    )?;

    let token = super::random_token()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("cannot listen on 127.0.0.1", e))?;
    let mut coordinator = flotilla_coordinator::start(
        CoordinatorConfig {
            root: root.clone(),
            token: token.clone(),
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            // The report is written below, before the command returns.
            auto_report: false,
            tls: None,
        },
        listener,
    )
    .await?;
    let address = coordinator.address.to_string();
    if let Some(http) = args.http {
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {http} for HTTP"), e))?;
        let served = coordinator.serve_http(listener)?;
        eprintln!("dashboard: http://{served}/ (also /metrics and /api/v1/)");
        if !served.ip().is_loopback() {
            eprintln!(
                "warning: the dashboard listens beyond loopback without TLS: its token and results \
                 cross the network in the clear; for that, use `coordinator start --http` with --tls-cert"
            );
        }
    }

    let scratch = std::env::temp_dir().join(format!("flotilla-run-{}", std::process::id()));
    let (stop_workers, workers_stopped) = watch::channel(false);
    // The workers start once the progress stream is open, so that `--json`
    // hears of every run from the first.
    let (watching, watch_opened) = tokio::sync::oneshot::channel::<()>();
    let worker_count = args.workers.unwrap_or_else(super::serve::cores);
    let (worker_address, worker_token) = (address.clone(), token.clone());
    let (worker_scratch, providers, ollama_url, slots) = (
        scratch.clone(),
        providers.clone(),
        args.llm.ollama_url.clone(),
        args.slots,
    );
    let workers_started = tokio::spawn(async move {
        let _ = watch_opened.await;
        let mut worker_tasks = Vec::new();
        for number in 1..=worker_count {
            let worker = WorkerConfig {
                coordinator: worker_address.clone(),
                token: worker_token.clone(),
                name: format!("local-{number}"),
                slots,
                work_dir: worker_scratch.join(format!("local-{number}")),
                providers: providers.clone(),
                ollama_url: ollama_url.clone(),
                // Stopped when the experiment has ended: nothing is left to drain.
                drain_timeout: std::time::Duration::ZERO,
                tls: Default::default(),
            };
            let mut stopped = workers_stopped.clone();
            worker_tasks.push(tokio::spawn(async move {
                flotilla_worker::run(worker, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
            }));
        }
        worker_tasks
    });

    let mut control = client::connect(&address, &token, &Default::default()).await?;
    let reply = control
        .submit(request)
        .await
        .map_err(error_of)?
        .into_inner();
    let outcome = SubmitOutcome::try_from(reply.outcome())?;
    if outcome != SubmitOutcome::Created {
        eprintln!(
            "{}: {outcome} ({} of {} runs to run)",
            reply.name, reply.runs_to_do, reply.total_runs
        );
    }

    let (interrupt_sender, interrupts) = mpsc::unbounded_channel();
    let ctrl_c = tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if interrupt_sender.send(()).is_err() {
                break;
            }
        }
    });
    let ending = progress::follow(
        &mut control,
        &config.name,
        Some(interrupts),
        show,
        Some(watching),
    )
    .await;
    ctrl_c.abort();

    let _ = stop_workers.send(true);
    for task in workers_started.await.unwrap_or_default() {
        let _ = task.await;
    }
    coordinator.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);

    let ending = ending?;
    let report =
        match flotilla_coordinator::reports::write_report(&root, &config.name, &Default::default())
        {
            Ok((dir, _)) => Some(dir.join("analysis-report.md")),
            Err(e) => {
                eprintln!("warning: cannot write the report: {e}");
                None
            }
        };
    progress::print_final(&ending.status, show, report.as_deref());
    Ok(progress::exit_code_for(&ending))
}
