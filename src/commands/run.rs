//! `flotilla run`: an embedded coordinator and local workers on this machine,
//! talking real gRPC over loopback, following the experiment to its end.

use std::path::PathBuf;

use flotilla_coordinator::{CoordinatorConfig, DEFAULT_LEASE_TIMEOUT};
use flotilla_shared::status::SubmitOutcome;
use flotilla_shared::Error;
use flotilla_worker::WorkerConfig;
use tokio::sync::{mpsc, watch};

use super::{client, progress, submission};

pub struct Options {
    pub file: PathBuf,
    pub root: PathBuf,
    pub workers: Option<u32>,
    pub slots: u32,
    pub retry_failed: bool,
    pub providers: Vec<flotilla_gateway::providers::Provider>,
    pub ollama_url: String,
}

pub async fn run(options: Options) -> anyhow::Result<i32> {
    if options.workers == Some(0) || options.slots == 0 {
        return Err(Error::InvalidInput("--workers and --slots must be at least 1".into()).into());
    }
    std::fs::create_dir_all(&options.root)
        .map_err(|e| Error::io(format!("cannot create {}", options.root.display()), e))?;
    // Validate (and bundle) before starting anything.
    let (config, request) = submission::prepare(
        &options.file,
        std::slice::from_ref(&options.root),
        options.retry_failed,
        &options.providers,
    )?;

    let token = super::random_token()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("cannot listen on 127.0.0.1", e))?;
    let coordinator = flotilla_coordinator::start(
        CoordinatorConfig {
            root: options.root.clone(),
            token: token.clone(),
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            // The report is written below, before the command returns.
            auto_report: false,
        },
        listener,
    )
    .await?;
    let address = coordinator.address.to_string();

    let scratch = std::env::temp_dir().join(format!("flotilla-run-{}", std::process::id()));
    let (stop_workers, workers_stopped) = watch::channel(false);
    let mut worker_tasks = Vec::new();
    for number in 1..=options.workers.unwrap_or_else(super::serve::cores) {
        let worker = WorkerConfig {
            coordinator: address.clone(),
            token: token.clone(),
            name: format!("local-{number}"),
            slots: options.slots,
            work_dir: scratch.join(format!("local-{number}")),
            providers: options.providers.clone(),
            ollama_url: options.ollama_url.clone(),
        };
        let mut stopped = workers_stopped.clone();
        worker_tasks.push(tokio::spawn(async move {
            flotilla_worker::run(worker, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        }));
    }

    let mut control = client::connect(&address, &token).await?;
    let reply = control
        .submit(request)
        .await
        .map_err(Error::from)?
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
    let ending = progress::follow(&mut control, &config.name, Some(interrupts)).await;
    ctrl_c.abort();

    let _ = stop_workers.send(true);
    for task in worker_tasks {
        let _ = task.await;
    }
    coordinator.shutdown().await;
    let _ = std::fs::remove_dir_all(&scratch);

    let ending = ending?;
    progress::print_final(&ending.status);
    match flotilla_coordinator::reports::write_report(
        &options.root,
        &config.name,
        &Default::default(),
    ) {
        Ok((dir, _)) => println!("report: {}", dir.join("analysis-report.md").display()),
        Err(e) => eprintln!("warning: cannot write the report: {e}"),
    }
    Ok(progress::exit_code_for(&ending))
}
