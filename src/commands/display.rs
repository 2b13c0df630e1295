//! How experiments and workers read on a terminal and in `--json`: status
//! lines, the status table and the JSON documents. States arrive as protobuf
//! numbers and are read as enums here; an unknown one is an error.

use flotilla_shared::proto;
use flotilla_shared::status::ExperimentState;
use flotilla_shared::wire::experiment_state;
use flotilla_shared::Result;
use serde_json::json;

/// One line per experiment: state, counts, time and spending.
pub fn one_line(e: &proto::ExperimentStatus) -> String {
    let state = experiment_state(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|error| error.to_string());
    let c = e.counts.unwrap_or_default();
    let end = if e.finished_at_ms > 0 {
        e.finished_at_ms
    } else {
        flotilla_shared::clock::now_ms()
    };
    let spent = if let Some(budget) = &e.budget {
        format!(", {}", budget_words(budget))
    } else if e.spent_usd > 0.0 {
        let dollars = format!("{:.4}", e.spent_usd);
        format!(
            ", ${} spent",
            dollars.trim_end_matches('0').trim_end_matches('.')
        )
    } else {
        String::new()
    };
    let waiting = if e.waiting.is_empty() {
        String::new()
    } else {
        format!("  [{}]", e.waiting)
    };
    let waiting = if e.end_reason.is_empty() {
        waiting
    } else {
        format!("{waiting}\n  {}", e.end_reason)
    };
    let waiting = e.setup_failures.iter().fold(waiting, |line, failure| {
        format!("{line}\n  setup failed on {failure}; that worker takes no runs of it")
    });
    format!(
        "{}  {state}  {} runs: {} succeeded, {} failed, {} cancelled, {} running, {} pending  ({:.1}s{spent}){waiting}",
        e.name,
        e.total_runs,
        c.succeeded,
        c.failed,
        c.cancelled,
        c.running,
        c.pending,
        (end - e.started_at_ms).max(0) as f64 / 1000.0
    )
}

/// `$1.20 spent, $0.40 reserved, $3.40 left of $5.00, projected $4.10`.
pub fn budget_words(budget: &proto::BudgetStatus) -> String {
    let projected = budget
        .projected_usd
        .map(|p| format!(", projected {}", dollars(p)))
        .unwrap_or_default();
    format!(
        "{} spent, {} reserved, {} left of {}{projected}",
        dollars(budget.spent_usd),
        dollars(budget.reserved_usd),
        dollars(budget.left_usd),
        dollars(budget.total_usd)
    )
}

/// Cents, or four decimals under a cent.
fn dollars(amount: f64) -> String {
    if amount != 0.0 && amount.abs() < 0.01 {
        format!("${amount:.4}")
    } else {
        format!("${amount:.2}")
    }
}

/// Whether the experiment of a status message has ended.
pub fn is_final(e: &proto::ExperimentStatus) -> Result<bool> {
    Ok(experiment_state(e)? != ExperimentState::Running)
}

/// `flotilla status`: experiments, their variations, workers, and a line on
/// what keeps results from disk.
pub fn print_status(reply: &proto::StatusReply) {
    if reply.experiments.is_empty() {
        println!("no experiments");
    }
    for experiment in &reply.experiments {
        println!("{}", one_line(experiment));
        if !experiment.variations.is_empty() {
            println!(
                "  {:<9} {:>9} {:>6} {:>9} {:>7} {:>7}  parameters",
                "variation", "succeeded", "failed", "cancelled", "running", "pending"
            );
            for variation in &experiment.variations {
                let c = variation.counts.unwrap_or_default();
                println!(
                    "  {:<9} {:>9} {:>6} {:>9} {:>7} {:>7}  {}",
                    flotilla_shared::naming::variation_name(variation.index),
                    c.succeeded,
                    c.failed,
                    c.cancelled,
                    c.running,
                    c.pending,
                    variation.params_json
                );
            }
        }
    }
    if !reply.workers.is_empty() {
        println!("workers:");
        for worker in &reply.workers {
            println!(
                "  {:<24} {:<12} slots {:>3}  running {:>3}  finished {:>6}",
                worker.name,
                if worker.connected {
                    "connected"
                } else {
                    "disconnected"
                },
                worker.slots,
                worker.running,
                worker.finished
            );
        }
    }
    if !reply.limits.is_empty() {
        println!("provider limits:");
        for limit in &reply.limits {
            println!("  {}", super::live::limit_words(limit));
        }
    }
    if !reply.store_problem.is_empty() {
        println!("{}", reply.store_problem);
    }
}

fn counts_json(counts: Option<proto::StateCounts>) -> serde_json::Value {
    let c = counts.unwrap_or_default();
    json!({"pending": c.pending, "running": c.running, "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled})
}

pub fn experiment_json(e: &proto::ExperimentStatus) -> Result<serde_json::Value> {
    Ok(json!({
        "name": e.name,
        "state": experiment_state(e)?,
        "total_runs": e.total_runs,
        "counts": counts_json(e.counts),
        "directory": e.directory,
        "cost_usd": e.spent_usd,
        "waiting": (!e.waiting.is_empty()).then_some(&e.waiting),
        "end_reason": (!e.end_reason.is_empty()).then_some(&e.end_reason),
        "setup_failures": e.setup_failures,
        "budget": e.budget.as_ref().map(|b| json!({
            "total_usd": b.total_usd,
            "spent_usd": b.spent_usd,
            "reserved_usd": b.reserved_usd,
            "left_usd": b.left_usd,
            "projected_usd": b.projected_usd,
        })),
        "started_at": flotilla_shared::clock::rfc3339(e.started_at_ms),
        "finished_at": (e.finished_at_ms > 0).then(|| flotilla_shared::clock::rfc3339(e.finished_at_ms)),
        "variations": e.variations.iter().map(|v| json!({
            "index": v.index,
            "axis_values": serde_json::from_str::<serde_json::Value>(&v.params_json).unwrap_or_default(),
            "counts": counts_json(v.counts),
        })).collect::<Vec<_>>(),
    }))
}

pub fn status_json(reply: &proto::StatusReply) -> Result<serde_json::Value> {
    Ok(json!({
        "experiments": reply.experiments.iter().map(experiment_json).collect::<Result<Vec<_>>>()?,
        "workers": reply.workers.iter().map(|w| json!({
            "name": w.name, "connected": w.connected, "slots": w.slots, "running": w.running, "finished": w.finished,
        })).collect::<Vec<_>>(),
        "store_problem": (!reply.store_problem.is_empty()).then_some(&reply.store_problem),
        "limits": reply.limits.iter().map(|l| {
            let key = l.key.clone().unwrap_or_default();
            let declared = l.declared.unwrap_or_default();
            json!({
                "provider": key.provider,
                "model": key.model,
                "requests_per_minute": declared.requests_per_minute,
                "tokens_per_minute": declared.tokens_per_minute,
                "concurrency": declared.concurrency,
                "shared": l.shared,
                "workers": l.workers,
                "calls": l.calls,
                "calls_last_minute": l.calls_last_minute,
                "tokens_last_minute": l.tokens_last_minute,
                "waiting": l.waiting,
                "binding": super::live::is_binding(l),
                "throttled": l.throttled,
                "waited_ms": l.waited_ms,
            })
        }).collect::<Vec<_>>(),
    }))
}
