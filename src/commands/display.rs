//! How experiments and workers read on a terminal and in `--json`: status
//! lines, the status table and the JSON documents, from the domain status
//! (`flotilla_shared::view`) the dashboard reads too.

use std::time::Duration;

use flotilla_shared::duration::duration_words;
use flotilla_shared::money::dollars_words;
use flotilla_shared::status::ExperimentState;
use flotilla_shared::view::{BudgetView, Counts, ExperimentView, StatusView, WorkerView};
use flotilla_wire::proto;
use serde_json::json;

/// One line per experiment: state, counts, time and spending.
pub fn one_line(e: &ExperimentView) -> String {
    let c = e.counts;
    let end = e
        .finished_at_ms
        .unwrap_or_else(flotilla_shared::clock::now_ms);
    let spent = if let Some(budget) = &e.budget {
        format!(", {}", budget_words(budget))
    } else if e.spent_usd > 0.0 {
        format!(", {} spent", dollars_words(e.spent_usd))
    } else {
        String::new()
    };
    let spent = if e.running_spend_usd > 0.0 {
        format!(
            "{spent}, {} so far in running runs",
            dollars_words(e.running_spend_usd)
        )
    } else {
        spent
    };
    let spent = match cache_words(e) {
        Some(cache) => format!("{spent}, {cache}"),
        None => spent,
    };
    let mut notes = String::new();
    if let Some(waiting) = &e.waiting {
        notes.push_str(&format!("  [{waiting}]"));
    }
    if let Some(reason) = &e.end_reason {
        notes.push_str(&format!("\n  {reason}"));
    }
    for failure in &e.setup_failures {
        notes.push_str(&format!(
            "\n  setup failed on {failure}; that worker takes no runs of it"
        ));
    }
    // Adaptive sampling: runs its decisions made unnecessary.
    let decided = if c.decided > 0 {
        format!(", {} decided", c.decided)
    } else {
        String::new()
    };
    format!(
        "{}  {}  {} runs: {} succeeded, {} failed, {} cancelled{decided}, {} running, {} pending  ({}{spent}){notes}",
        e.name,
        e.state,
        c.total(),
        c.succeeded,
        c.failed,
        c.cancelled,
        c.running,
        c.pending,
        duration_words(Duration::from_millis((end - e.started_at_ms).max(0) as u64))
    )
}

/// `412 of 480 calls from the cache, $1.20 saved`, once a call was answered from it.
pub fn cache_words(e: &ExperimentView) -> Option<String> {
    let cache = &e.cache;
    (cache.hits > 0).then(|| {
        format!(
            "{} of {} calls from the cache, {} saved",
            cache.hits,
            cache.calls,
            dollars_words(cache.saved_usd)
        )
    })
}

/// `$1.20 spent, $0.40 reserved, $3.40 left of $5.00, projected $4.10`.
pub fn budget_words(budget: &BudgetView) -> String {
    let projected = budget
        .projected_usd
        .map(|p| format!(", projected {}", dollars_words(p)))
        .unwrap_or_default();
    format!(
        "{} spent, {} reserved, {} left of {}{projected}",
        dollars_words(budget.spent_usd),
        dollars_words(budget.reserved_usd),
        dollars_words(budget.left_usd),
        dollars_words(budget.total_usd)
    )
}

/// Columns padded to their widest cell; numbers right-aligned, the last column left free.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let numeric = |column: usize| {
        rows.iter().all(|row| {
            row.get(column).is_none_or(|cell| {
                cell == "-"
                    || cell
                        .trim_start_matches('$')
                        .replace([',', '.', '%'], "")
                        .parse::<u64>()
                        .is_ok()
            })
        })
    };
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::from("  ");
        for (column, cell) in cells.into_iter().enumerate() {
            let pad = widths[column].saturating_sub(cell.chars().count());
            if column == last {
                out.push_str(cell);
            } else if numeric(column) && column > 0 {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
                out.push_str("  ");
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push('\n');
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// Spent, and the budget when there is one: `$1.20 of $5.00`.
fn spend_cell(e: &ExperimentView) -> String {
    match &e.budget {
        Some(budget) => format!(
            "{} of {}",
            dollars_words(budget.spent_usd),
            dollars_words(budget.total_usd)
        ),
        None if e.spent_usd > 0.0 => dollars_words(e.spent_usd),
        None => "-".to_string(),
    }
}

/// `flotilla status`: a table of experiments (with one's variations when
/// named), a table of workers, provider limits, and what keeps results from disk.
pub fn print_status(status: &StatusView) {
    if status.experiments.is_empty() {
        println!("no experiments");
    } else {
        println!("experiments:\n{}", experiments_table(&status.experiments));
    }
    for experiment in &status.experiments {
        print_experiment_details(experiment);
    }
    if !status.workers.is_empty() {
        println!("workers:\n{}", workers_table(&status.workers));
    }
    if !status.limits.is_empty() {
        println!("provider limits:");
        for limit in &status.limits {
            println!("  {}", super::live::limit_words(limit));
        }
    }
    if let Some(problem) = &status.store_problem {
        println!("{problem}");
    }
}

fn experiments_table(experiments: &[ExperimentView]) -> String {
    let rows: Vec<Vec<String>> = experiments
        .iter()
        .map(|e| {
            let c = e.counts;
            vec![
                e.name.clone(),
                e.state.to_string(),
                c.total().to_string(),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.cancelled.to_string(),
                c.running.to_string(),
                c.pending.to_string(),
                spend_cell(e),
                e.directory.clone(),
            ]
        })
        .collect();
    table(
        &[
            "name",
            "state",
            "runs",
            "succeeded",
            "failed",
            "cancelled",
            "running",
            "pending",
            "spent",
            "directory",
        ],
        &rows,
    )
}

/// Notes, the budget and the variations of one experiment.
fn print_experiment_details(experiment: &ExperimentView) {
    for note in [&experiment.waiting, &experiment.end_reason]
        .into_iter()
        .flatten()
    {
        println!("  {}: {note}", experiment.name);
    }
    for failure in &experiment.setup_failures {
        println!(
            "  {}: setup failed on {failure}; that worker takes no runs of it",
            experiment.name
        );
    }
    if let Some(budget) = &experiment.budget {
        println!("  {}: budget {}", experiment.name, budget_words(budget));
    }
    if let Some(cache) = cache_words(experiment) {
        println!("  {}: {cache}", experiment.name);
    }
    if experiment.variations.is_empty() {
        return;
    }
    // Adaptive sampling: each variation's standing, and the runs its decisions spared.
    let adaptive = experiment.variations.iter().any(|v| !v.standing.is_empty());
    let rows: Vec<Vec<String>> = experiment
        .variations
        .iter()
        .map(|variation| {
            let c = variation.counts;
            let mut row = vec![
                flotilla_shared::naming::variation_name(variation.index),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.cancelled.to_string(),
                c.running.to_string(),
                c.pending.to_string(),
            ];
            if adaptive {
                row.extend([c.decided.to_string(), variation.standing.clone()]);
            }
            row.push(variation.axis_json.clone());
            row
        })
        .collect();
    let mut header = vec![
        "variation",
        "succeeded",
        "failed",
        "cancelled",
        "running",
        "pending",
    ];
    if adaptive {
        header.extend(["decided", "standing"]);
    }
    header.push("parameters");
    println!(
        "variations of {}:\n{}",
        experiment.name,
        table(&header, &rows)
    );
}

fn workers_table(workers: &[WorkerView]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|worker| {
            vec![
                worker.name.clone(),
                if worker.connected {
                    "connected"
                } else {
                    "disconnected"
                }
                .to_string(),
                worker.slots.to_string(),
                worker.running.to_string(),
                worker.finished.to_string(),
                worker.serves.join(", "),
            ]
        })
        .collect();
    table(
        &["name", "state", "slots", "running", "finished", "serves"],
        &rows,
    )
}

fn counts_json(c: Counts) -> serde_json::Value {
    json!({"pending": c.pending, "running": c.running, "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled, "decided": c.decided})
}

pub fn experiment_json(e: &ExperimentView) -> serde_json::Value {
    json!({
        "name": e.name,
        "description": (!e.description.is_empty()).then_some(&e.description),
        "state": e.state,
        "total_runs": e.counts.total(),
        "counts": counts_json(e.counts),
        "directory": e.directory,
        "cost_usd": e.spent_usd,
        "running_spend_usd": e.running_spend_usd,
        "waiting": e.waiting,
        "end_reason": e.end_reason,
        "setup_failures": e.setup_failures,
        "budget": e.budget.as_ref().map(|b| json!({
            "total_usd": b.total_usd,
            "spent_usd": b.spent_usd,
            "reserved_usd": b.reserved_usd,
            "left_usd": b.left_usd,
            "projected_usd": b.projected_usd,
        })),
        "cache": {
            "calls": e.cache.calls,
            "hits": e.cache.hits,
            "saved_usd": e.cache.saved_usd,
            "recorded_from": e.cache.recorded_from_ms.map(flotilla_shared::clock::rfc3339),
            "recorded_to": e.cache.recorded_to_ms.map(flotilla_shared::clock::rfc3339),
        },
        "started_at": flotilla_shared::clock::rfc3339(e.started_at_ms),
        "finished_at": e.finished_at_ms.map(flotilla_shared::clock::rfc3339),
        "runs_per_minute": e.pace.runs_per_minute,
        "eta_seconds": e.pace.eta.map(|eta| eta.as_secs_f64()),
        "variations": e.variations.iter().map(|v| json!({
            "index": v.index,
            "axis_values": serde_json::from_str::<serde_json::Value>(&v.axis_json).unwrap_or_default(),
            "counts": counts_json(v.counts),
            "standing": (!v.standing.is_empty()).then_some(&v.standing),
        })).collect::<Vec<_>>(),
    })
}

pub fn status_json(status: &StatusView) -> serde_json::Value {
    json!({
        "experiments": status.experiments.iter().map(experiment_json).collect::<Vec<_>>(),
        "workers": status.workers.iter().map(|w| json!({
            "name": w.name, "connected": w.connected, "slots": w.slots, "running": w.running, "finished": w.finished,
            "serves": w.serves,
        })).collect::<Vec<_>>(),
        "store_problem": status.store_problem,
        "limits": status.limits.iter().map(|l| json!({
            "provider": l.key.provider,
            "model": l.key.model,
            "requests_per_minute": l.declared.requests_per_minute,
            "tokens_per_minute": l.declared.tokens_per_minute,
            "concurrency": l.declared.concurrency,
            "shared": l.shared,
            "workers": l.workers,
            "calls": l.calls,
            "calls_last_minute": l.calls_last_minute,
            "tokens_last_minute": l.tokens_last_minute,
            "waiting": l.waiting,
            "binding": super::live::is_binding(l),
            "throttled": l.throttled,
            "waited_ms": l.waited_ms,
        })).collect::<Vec<_>>(),
    })
}

/// One event of `--json` following: `{"event": "run_failed", "at": …, …}`.
pub fn event_json(event: &proto::WatchEvent) -> serde_json::Value {
    use proto::WatchEventKind as Kind;
    let kind = Kind::try_from(event.kind).unwrap_or(Kind::Unspecified);
    let name = match kind {
        Kind::RunStarted => "run_started",
        Kind::RunSucceeded => "run_succeeded",
        Kind::RunFailed => "run_failed",
        Kind::RunRetried => "run_retried",
        Kind::RunCancelled => "run_cancelled",
        Kind::RunRequeued => "run_requeued",
        Kind::StateChanged => "state_changed",
        Kind::Budget => "budget",
        Kind::RateLimited => "rate_limited",
        Kind::Unspecified => "unknown",
    };
    let mut object = json!({
        "event": name,
        "at": flotilla_shared::clock::rfc3339(event.at_ms),
    });
    let fields = object.as_object_mut().expect("an object");
    if !event.experiment.is_empty() {
        fields.insert("experiment".into(), json!(event.experiment));
    }
    if event.variation > 0 {
        fields.insert(
            "run".into(),
            json!(flotilla_shared::naming::run_id(
                event.variation,
                event.repetition
            )),
        );
        fields.insert("variation".into(), json!(event.variation));
        fields.insert("repetition".into(), json!(event.repetition));
        fields.insert("attempt".into(), json!(event.attempt));
    }
    if !event.worker.is_empty() {
        fields.insert("worker".into(), json!(event.worker));
    }
    if !event.message.is_empty() {
        fields.insert("message".into(), json!(event.message));
    }
    if kind == Kind::StateChanged {
        let state = proto::ExperimentState::try_from(event.state)
            .ok()
            .and_then(|s| ExperimentState::try_from(s).ok());
        fields.insert("state".into(), json!(state));
    }
    if let Some(key) = &event.key {
        fields.insert("provider".into(), json!(key.provider));
        fields.insert("model".into(), json!(key.model));
        fields.insert("pause_ms".into(), json!(event.pause_ms));
    }
    object
}
