//! Following an experiment until it ends: the live display on a terminal
//! (`live.rs` says what it shows), a line every few seconds otherwise, and
//! Ctrl+C handling for `flotilla run`.

use flotilla_wire::status::error_of;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use flotilla_shared::error::exit_code;
use flotilla_shared::status::ExperimentState;
use flotilla_shared::view::{ExperimentView, StatusView};
use flotilla_shared::Error;
use flotilla_wire::proto;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::client::Client;
use super::{display, live};

/// How progress is shown while following an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// The live display, on a terminal.
    Display,
    /// A line every 5 s on stderr.
    Plain,
    /// One JSON event per line on stdout, for scripts.
    Json,
}

impl Show {
    /// `--json` wins; `--no-progress` or a stderr that is not a terminal gives plain lines.
    pub fn choose(no_progress: bool, json: bool) -> Show {
        if json {
            Show::Json
        } else if no_progress || !std::io::stderr().is_terminal() {
            Show::Plain
        } else {
            Show::Display
        }
    }
}

/// How a followed experiment ended.
pub struct Ending {
    pub status: ExperimentView,
    pub interrupted: bool,
}

/// Lines are printed this often when stderr is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);
/// The terminal display is redrawn this often between status messages, so
/// that elapsed time, pace and ETA move.
const REDRAW_INTERVAL: Duration = Duration::from_secs(1);
/// Variations given a line of their own on a terminal.
const VARIATION_ROOM: usize = 8;

/// Streams status until the experiment's state is final. Each message on
/// `interrupts` (Ctrl+C) escalates: first stop assigning, then stop running runs.
pub async fn follow(
    client: &mut Client,
    name: &str,
    mut interrupts: Option<mpsc::UnboundedReceiver<()>>,
    show: Show,
    opened: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<Ending> {
    let mut stream = client
        .watch(proto::StatusRequest {
            name: name.to_string(),
            events: show == Show::Json,
        })
        .await
        .map_err(error_of)?
        .into_inner();
    if let Some(opened) = opened {
        let _ = opened.send(());
    }
    let bar = (show == Show::Display).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} ended · {elapsed_precise}\n{msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut redraw = tokio::time::interval(REDRAW_INTERVAL);
    let mut last_line = Instant::now() - PLAIN_INTERVAL;
    let mut interrupted = 0u32;
    let mut latest: Option<(StatusView, ExperimentView)> = None;
    let mut store_problem = String::new();
    let mut waiting: Option<String> = None;
    loop {
        let interrupt = async {
            match interrupts.as_mut() {
                Some(receiver) => receiver.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = stream.message() => {
                let Some(reply) = message.map_err(error_of)? else { break };
                // The store's trouble is said once when it starts, changes or ends.
                if reply.store_problem != store_problem {
                    let line = if reply.store_problem.is_empty() {
                        "results are being written again".to_string()
                    } else {
                        reply.store_problem.clone()
                    };
                    say(&bar, &line);
                    store_problem = reply.store_problem.clone();
                }
                if show == Show::Json {
                    for event in &reply.events {
                        println!("{}", display::event_json(event));
                    }
                    if reply.events_missed > 0 {
                        println!("{}", serde_json::json!({"event": "events_missed", "count": reply.events_missed}));
                    }
                }
                let mut status = StatusView::try_from(&reply)?;
                let Some(experiment) = status.experiments.pop() else { continue };
                // Scripts learn the state they start from, and that they are subscribed.
                if show == Show::Json && latest.is_none() {
                    let status = display::experiment_json(&experiment);
                    println!("{}", serde_json::json!({"event": "watching", "experiment": status}));
                }
                // Why runs wait for a worker is said once each time it changes.
                if experiment.waiting != waiting {
                    if let Some(why) = &experiment.waiting {
                        say(&bar, why);
                    }
                    waiting = experiment.waiting.clone();
                }
                let finished = experiment.state.is_final();
                latest = Some((status, experiment));
                let (status, experiment) = latest.as_ref().expect("just set");
                match &bar {
                    Some(bar) => draw(bar, status, experiment, &store_problem),
                    None if show == Show::Json => {}
                    None if last_line.elapsed() >= PLAIN_INTERVAL || finished => {
                        last_line = Instant::now();
                        let waiting = if store_problem.is_empty() { String::new() } else { format!("  [{store_problem}]") };
                        eprintln!("{}{waiting}", live::plain_line(status, experiment));
                    }
                    None => {}
                }
                if finished {
                    break;
                }
            }
            _ = redraw.tick() => {
                if let (Some(bar), Some((status, experiment))) = (&bar, &latest) {
                    draw(bar, status, experiment, &store_problem);
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
                say(&bar, message);
                client.cancel(proto::CancelRequest { name: name.to_string(), kill_running: kill }).await.map_err(error_of)?;
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (_, status) =
        latest.ok_or_else(|| Error::Internal("the coordinator sent no status".into()))?;
    Ok(Ending {
        status,
        interrupted: interrupted > 0,
    })
}

/// A line above the display, or on stderr without one.
fn say(bar: &Option<ProgressBar>, line: &str) {
    match bar {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

/// The terminal display: the bar, then pace, budget, limits, workers and
/// variations, each line cut to the terminal's width so that redraws stay in place.
fn draw(bar: &ProgressBar, status: &StatusView, experiment: &ExperimentView, store_problem: &str) {
    bar.set_length(experiment.counts.total());
    bar.set_position(experiment.counts.ended());
    let width = console::Term::stderr()
        .size_checked()
        .map_or(100, |(_, columns)| columns as usize);
    let mut lines = live::detail_lines(status, experiment, VARIATION_ROOM);
    if !store_problem.is_empty() {
        lines.push(format!("  waiting for disk space: {store_problem}"));
    }
    let lines: Vec<String> = lines
        .into_iter()
        .map(|line| cut(&line, width.saturating_sub(1).max(20)))
        .collect();
    bar.set_message(lines.join("\n"));
}

fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// The last words: the status line, where results are and, when one was
/// written, the report; or with `--json` an `ended` event with the same —
/// always the last line.
pub fn print_final(status: &ExperimentView, show: Show, report: Option<&Path>) {
    let results = format!("{}/results.csv", status.directory);
    if show == Show::Json {
        let experiment = display::experiment_json(status);
        let mut ended =
            serde_json::json!({"event": "ended", "experiment": experiment, "results": results});
        if let Some(report) = report {
            ended["report"] = serde_json::json!(report);
        }
        println!("{ended}");
        return;
    }
    println!("{}", display::one_line(status));
    println!("results: {results}");
    if let Some(report) = report {
        println!("report: {}", report.display());
    }
}

pub fn exit_code_for(ending: &Ending) -> i32 {
    if ending.interrupted {
        return exit_code::INTERRUPTED;
    }
    match ending.status.state {
        ExperimentState::Completed => exit_code::OK,
        ExperimentState::BudgetExhausted => exit_code::BUDGET_EXHAUSTED,
        _ => exit_code::EXPERIMENT_FAILED,
    }
}
