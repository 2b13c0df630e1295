//! Following an experiment until it ends: a progress bar on a terminal, a
//! line every few seconds otherwise, and Ctrl+C handling for `flotilla run`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use flotilla_shared::error::exit_code;
use flotilla_shared::proto;
use flotilla_shared::status::ExperimentState;
use flotilla_shared::wire::experiment_state;
use flotilla_shared::Error;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::client::Client;
use super::display;

/// How a followed experiment ended.
pub struct Ending {
    pub status: proto::ExperimentStatus,
    pub interrupted: bool,
}

/// Lines are printed this often when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// Streams status until the experiment's state is final. Each message on
/// `interrupts` (Ctrl+C) escalates: first stop assigning, then stop running runs.
pub async fn follow(
    client: &mut Client,
    name: &str,
    mut interrupts: Option<mpsc::UnboundedReceiver<()>>,
) -> anyhow::Result<Ending> {
    let mut stream = client
        .watch(proto::StatusRequest {
            name: name.to_string(),
        })
        .await
        .map_err(Error::from)?
        .into_inner();
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut last_line = Instant::now() - PLAIN_INTERVAL;
    let mut interrupted = 0u32;
    let mut latest: Option<proto::ExperimentStatus> = None;
    let mut store_problem = String::new();
    let mut waiting = String::new();
    loop {
        let interrupt = async {
            match interrupts.as_mut() {
                Some(receiver) => receiver.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = stream.message() => {
                let Some(reply) = message.map_err(Error::from)? else { break };
                // The store's trouble is said once when it starts, changes or ends.
                if reply.store_problem != store_problem {
                    let line = if reply.store_problem.is_empty() {
                        "results are being written again".to_string()
                    } else {
                        reply.store_problem.clone()
                    };
                    match &bar { Some(bar) => bar.println(&line), None => eprintln!("{line}") }
                    store_problem = reply.store_problem.clone();
                }
                let Some(experiment) = reply.experiments.into_iter().next() else { continue };
                // Why runs wait for a worker is said once each time it changes.
                if experiment.waiting != waiting {
                    if !experiment.waiting.is_empty() {
                        match &bar { Some(bar) => bar.println(&experiment.waiting), None => eprintln!("{}", experiment.waiting) }
                    }
                    waiting = experiment.waiting.clone();
                }
                let c = experiment.counts.unwrap_or_default();
                let done = c.succeeded + c.failed + c.cancelled;
                match &bar {
                    Some(bar) => {
                        bar.set_length(experiment.total_runs);
                        bar.set_position(done);
                        let waiting = if store_problem.is_empty() { "" } else { " — waiting for disk space" };
                        let budget = experiment.budget.as_ref().map(|b| format!(" · {}", display::budget_words(b))).unwrap_or_default();
                        bar.set_message(format!("{} ok, {} failed, {} running{budget}{waiting}", c.succeeded, c.failed, c.running));
                    }
                    None if last_line.elapsed() >= PLAIN_INTERVAL || display::is_final(&experiment)? => {
                        last_line = Instant::now();
                        let waiting = if store_problem.is_empty() { String::new() } else { format!("  [{store_problem}]") };
                        eprintln!("{}{waiting}", display::one_line(&experiment));
                    }
                    None => {}
                }
                let finished = display::is_final(&experiment)?;
                latest = Some(experiment);
                if finished {
                    break;
                }
            }
            Some(()) = interrupt => {
                interrupted += 1;
                let kill = interrupted > 1;
                let message = if kill {
                    "interrupted again: stopping running runs"
                } else {
                    "interrupted: no new runs start; running runs finish (Ctrl+C again to stop them)"
                };
                match &bar { Some(bar) => bar.println(message), None => eprintln!("{message}") }
                client.cancel(proto::CancelRequest { name: name.to_string(), kill_running: kill }).await.map_err(Error::from)?;
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let status = latest.ok_or_else(|| Error::Internal("the coordinator sent no status".into()))?;
    Ok(Ending {
        status,
        interrupted: interrupted > 0,
    })
}

pub fn print_final(status: &proto::ExperimentStatus) {
    println!("{}", display::one_line(status));
    println!("results: {}/results.csv", status.directory);
}

pub fn exit_code_for(ending: &Ending) -> i32 {
    if ending.interrupted {
        return exit_code::INTERRUPTED;
    }
    match experiment_state(&ending.status) {
        Ok(ExperimentState::Completed) => exit_code::OK,
        Ok(ExperimentState::BudgetExhausted) => exit_code::BUDGET_EXHAUSTED,
        _ => exit_code::EXPERIMENT_FAILED,
    }
}
