//! The control subcommands that talk to a coordinator: submit, status, ls, cancel.

use flotilla_wire::status::error_of;
use std::path::{Path, PathBuf};

use flotilla_shared::error::exit_code;
use flotilla_shared::status::SubmitOutcome;
use flotilla_shared::view::{ExperimentView, StatusView};
use flotilla_shared::Result;
use flotilla_wire::proto;

use super::client::{connect_target, Target};
use clap::Args;

use super::args::{CoordinatorArg, ShowArgs};
use super::{display, progress};

#[derive(Args)]
pub struct WorkerDrainArgs {
    /// The worker's name, as `flotilla status` lists it.
    pub name: String,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
}

#[derive(Args)]
pub struct SubmitArgs {
    /// The experiment file (YAML).
    pub file: PathBuf,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
    /// Wait until the experiment ends, showing progress; the exit code tells how it ended.
    #[arg(long)]
    pub wait: bool,
    /// Also re-run runs that failed for good earlier.
    #[arg(long)]
    pub retry_failed: bool,
    /// With --wait: how progress is shown.
    #[command(flatten)]
    pub show: ShowArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Experiment name; without it, every experiment.
    pub name: Option<String>,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WatchArgs {
    /// Experiment name.
    pub name: String,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
    #[command(flatten)]
    pub show: ShowArgs,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Read the experiments of --root on this machine (as `report --root` does) instead of
    /// asking a coordinator; works while a coordinator runs there.
    #[arg(long)]
    pub from_root: bool,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// Experiment name.
    pub name: String,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
    /// Also re-run runs that failed for good.
    #[arg(long)]
    pub retry_failed: bool,
    /// Wait until the experiment ends, showing progress; the exit code tells how it ended.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how progress is shown.
    #[command(flatten)]
    pub show: ShowArgs,
}

#[derive(Args)]
pub struct CancelArgs {
    /// Experiment name.
    pub name: String,
    #[command(flatten)]
    pub coordinator: CoordinatorArg,
    /// Also stop runs that are running now.
    #[arg(long)]
    pub kill: bool,
}

/// `flotilla submit`.
pub async fn submit_command(args: SubmitArgs) -> anyhow::Result<i32> {
    let wait = args.wait.then(|| args.show.show());
    submit(
        &args.coordinator.target(),
        &args.file,
        wait,
        args.retry_failed,
    )
    .await
}

/// `flotilla status`.
pub async fn status_command(args: StatusArgs) -> anyhow::Result<i32> {
    status(&args.coordinator.target(), args.name, args.json).await
}

/// `flotilla watch`.
pub async fn watch_command(args: WatchArgs) -> anyhow::Result<i32> {
    let show = args.show.show();
    watch(&args.coordinator.target(), &args.name, show).await
}

/// `flotilla ls`.
pub async fn list_command(args: ListArgs) -> anyhow::Result<i32> {
    if args.from_root {
        return list_root(&args.coordinator.root.root, args.json);
    }
    list(&args.coordinator.target(), args.json).await
}

/// `flotilla ls --from-root`: the experiments of a root on this machine.
fn list_root(root: &Path, as_json: bool) -> anyhow::Result<i32> {
    let experiments = flotilla_coordinator::reports::read_experiment_list(root)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&experiments)?);
        return Ok(exit_code::OK);
    }
    if experiments.is_empty() {
        println!("no experiments under {}", root.display());
    }
    for experiment in &experiments {
        let count = |status: &str| experiment["counts"][status].as_i64().unwrap_or(0);
        println!(
            "{}  {}  {}/{} succeeded, {} failed  {}",
            experiment["name"].as_str().unwrap_or_default(),
            experiment["state"].as_str().unwrap_or_default(),
            count("succeeded"),
            experiment["total_runs"],
            count("failed"),
            flotilla_shared::money::dollars_words(experiment["cost_usd"].as_f64().unwrap_or(0.0)),
        );
    }
    Ok(exit_code::OK)
}

/// `flotilla cancel`.
pub async fn cancel_command(args: CancelArgs) -> anyhow::Result<i32> {
    cancel(&args.coordinator.target(), args.name, args.kill).await
}

/// `flotilla resume`.
pub async fn resume_command(args: ResumeArgs) -> anyhow::Result<i32> {
    let wait = args.wait.then(|| args.show.show());
    resume(
        &args.coordinator.target(),
        &args.name,
        args.retry_failed,
        wait,
    )
    .await
}

/// `flotilla worker drain`.
pub async fn drain_command(args: WorkerDrainArgs) -> anyhow::Result<i32> {
    drain(&args.coordinator.target(), &args.name).await
}

pub async fn submit(
    target: &Target,
    file: &Path,
    wait: Option<progress::Show>,
    retry_failed: bool,
) -> anyhow::Result<i32> {
    // A coordinator's workers have their own providers files: prices must be
    // known from the experiment file or Flotilla's table.
    let (_, request) = super::submission::prepare(file, &[], retry_failed, &[])?;
    let mut client = connect_target(target).await?;
    let reply = client.submit(request).await.map_err(error_of)?.into_inner();
    let outcome = SubmitOutcome::try_from(reply.outcome())?;
    println!(
        "{}: {outcome} ({} runs, {} to run) in {}",
        reply.name, reply.total_runs, reply.runs_to_do, reply.directory
    );
    let Some(show) = wait else {
        return Ok(exit_code::OK);
    };
    let ending = progress::follow(&mut client, &reply.name, None, show, None).await?;
    progress::print_final(&ending.status, show, None);
    Ok(progress::exit_code_for(&ending))
}

/// `flotilla resume`: the coordinator submits the experiment's stored config again.
pub async fn resume(
    target: &Target,
    name: &str,
    retry_failed: bool,
    wait: Option<progress::Show>,
) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .resume(proto::ResumeRequest {
            name: name.to_string(),
            retry_failed,
        })
        .await
        .map_err(error_of)?
        .into_inner();
    let outcome = SubmitOutcome::try_from(reply.outcome())?;
    if outcome == SubmitOutcome::Unchanged {
        println!(
            "{name}: nothing to resume: all {} runs ended{}",
            reply.total_runs,
            if retry_failed {
                ""
            } else {
                " (--retry-failed runs failed ones again)"
            }
        );
        return Ok(exit_code::OK);
    }
    println!(
        "{name}: resumed ({} runs, {} to run) in {}",
        reply.total_runs, reply.runs_to_do, reply.directory
    );
    let Some(show) = wait else {
        return Ok(exit_code::OK);
    };
    let ending = progress::follow(&mut client, name, None, show, None).await?;
    progress::print_final(&ending.status, show, None);
    Ok(progress::exit_code_for(&ending))
}

/// `flotilla worker drain`: the coordinator stops assigning to the worker and tells it to drain.
pub async fn drain(target: &Target, worker: &str) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .drain_worker(proto::DrainRequest {
            worker: worker.to_string(),
        })
        .await
        .map_err(error_of)?
        .into_inner();
    println!(
        "{worker}: draining; {} runs running finish within its drain timeout or are handed back",
        reply.running
    );
    Ok(exit_code::OK)
}

/// `flotilla watch`: follows an experiment to its end without touching it.
pub async fn watch(target: &Target, name: &str, show: progress::Show) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let ending = progress::follow(&mut client, name, None, show, None).await?;
    progress::print_final(&ending.status, show, None);
    Ok(progress::exit_code_for(&ending))
}

pub async fn status(target: &Target, name: Option<String>, as_json: bool) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .status(proto::StatusRequest {
            name: name.clone().unwrap_or_default(),
            events: false,
        })
        .await
        .map_err(error_of)?
        .into_inner();
    let status = StatusView::try_from(&reply)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&display::status_json(&status))?
        );
        return Ok(exit_code::OK);
    }
    display::print_status(&status);
    Ok(exit_code::OK)
}

pub async fn list(target: &Target, as_json: bool) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .list(proto::ListRequest {})
        .await
        .map_err(error_of)?
        .into_inner();
    let experiments = reply
        .experiments
        .into_iter()
        .map(ExperimentView::try_from)
        .collect::<Result<Vec<_>>>()?;
    if as_json {
        let experiments: Vec<_> = experiments.iter().map(display::experiment_json).collect();
        println!("{}", serde_json::to_string_pretty(&experiments)?);
        return Ok(exit_code::OK);
    }
    if experiments.is_empty() {
        println!("no experiments");
    }
    for experiment in &experiments {
        println!("{}", display::one_line(experiment));
    }
    Ok(exit_code::OK)
}

pub async fn cancel(target: &Target, name: String, kill: bool) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .cancel(proto::CancelRequest {
            name: name.clone(),
            kill_running: kill,
        })
        .await
        .map_err(error_of)?
        .into_inner();
    println!(
        "{name}: cancelled {} run(s){}",
        reply.cancelled,
        if kill { "" } else { "; running runs finish" }
    );
    Ok(exit_code::OK)
}
