//! `/metrics`: the coordinator's state in Prometheus text format, rendered
//! here from the [`MetricsView`] the actor reads at one moment.

use crate::state::telemetry::LlmTotals;
use crate::state::KeyUseView;
use crate::views::MetricsView;

use super::exposition::Exposition;

pub fn render(view: &MetricsView) -> String {
    let mut out = Exposition::default();
    experiments(&mut out, view);
    llm_calls(&mut out, view);
    limits(&mut out, &view.limits);
    out.gauges(
        "flotilla_workers_connected",
        "Workers connected now.",
        [(vec![], view.workers_connected as f64)],
    );
    out.gauges(
        "flotilla_worker_slots",
        "Slots of the connected workers.",
        [(vec![], view.slots_connected as f64)],
    );
    out.histogram(
        "flotilla_store_commit_seconds",
        "How long each group commit to SQLite took.",
        &view.commit_latency,
    );
    out.gauges(
        "flotilla_store_uncommitted_results",
        "Results received and not yet durable.",
        [(vec![], view.uncommitted_results as f64)],
    );
    out.finish()
}

/// Runs by state, spend and budgets, per experiment, and run durations.
fn experiments(out: &mut Exposition, view: &MetricsView) {
    let states = [
        "pending",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "decided",
    ];
    let runs: Vec<(Vec<(&str, &str)>, f64)> = view
        .experiments
        .iter()
        .flat_map(|e| {
            let c = e.counts;
            let values = [
                c.pending,
                c.running,
                c.succeeded,
                c.failed,
                c.cancelled,
                c.decided,
            ];
            states.iter().zip(values).map(move |(state, value)| {
                (
                    vec![("experiment", e.name.as_str()), ("state", *state)],
                    value as f64,
                )
            })
        })
        .collect();
    out.gauges("flotilla_runs", "Runs of each experiment by state.", runs);
    out.gauges(
        "flotilla_experiment_running",
        "1 while the experiment is running, 0 once it ended.",
        view.experiments.iter().map(|e| {
            (
                vec![("experiment", e.name.as_str())],
                f64::from(u8::from(e.running)),
            )
        }),
    );
    out.histogram(
        "flotilla_run_duration_seconds",
        "How long attempts ran, as their workers measured.",
        &view.run_durations,
    );
    out.gauges(
        "flotilla_spent_usd",
        "Dollars each experiment has spent.",
        view.experiments
            .iter()
            .map(|e| (vec![("experiment", e.name.as_str())], e.spent_usd)),
    );
    out.gauges(
        "flotilla_running_spend_usd",
        "Dollars each experiment's running runs have spent so far (ended calls and calls in flight), beyond flotilla_spent_usd.",
        view.experiments
            .iter()
            .map(|e| (vec![("experiment", e.name.as_str())], e.running_spend_usd)),
    );
    let budgets: Vec<_> = view
        .experiments
        .iter()
        .filter_map(|e| Some((e.name.as_str(), e.budget?)))
        .collect();
    out.gauges(
        "flotilla_budget_usd",
        "Each experiment's budget.total_usd.",
        budgets
            .iter()
            .map(|(name, (total, _))| (vec![("experiment", *name)], *total)),
    );
    out.gauges(
        "flotilla_budget_reserved_usd",
        "Dollars reserved for running runs and not yet spent.",
        budgets
            .iter()
            .map(|(name, (_, reserved))| (vec![("experiment", *name)], *reserved)),
    );
}

/// LLM calls, errors, tokens and cost per provider model.
fn llm_calls(out: &mut Exposition, view: &MetricsView) {
    let llm = &view.llm;
    let by_model = |value: fn(&LlmTotals) -> f64| {
        llm.iter()
            .map(move |((provider, model), totals)| {
                (
                    vec![("provider", provider.as_str()), ("model", model.as_str())],
                    value(totals),
                )
            })
            .collect::<Vec<_>>()
    };
    out.counters(
        "flotilla_llm_calls_total",
        "LLM calls through the workers' gateways, from finished attempts.",
        by_model(|t| t.calls as f64),
    );
    out.counters(
        "flotilla_llm_call_errors_total",
        "LLM calls that ended in an error.",
        by_model(|t| t.failed as f64),
    );
    out.counters(
        "flotilla_llm_input_tokens_total",
        "Input tokens of LLM calls.",
        by_model(|t| t.input_tokens as f64),
    );
    out.counters(
        "flotilla_llm_output_tokens_total",
        "Output tokens of LLM calls.",
        by_model(|t| t.output_tokens as f64),
    );
    out.counters(
        "flotilla_llm_cost_usd_total",
        "Dollars LLM calls cost.",
        by_model(|t| t.cost_usd),
    );
}

/// Each limited model's 429s, waits, last minute's calls, declared rate and calls waiting.
fn limits(out: &mut Exposition, limits: &[KeyUseView]) {
    let by_key = |value: fn(&KeyUseView) -> f64| {
        limits
            .iter()
            .map(move |l| {
                (
                    vec![
                        ("provider", l.key.provider.as_str()),
                        ("model", l.key.model.as_str()),
                    ],
                    value(l),
                )
            })
            .collect::<Vec<_>>()
    };
    out.counters(
        "flotilla_rate_limited_total",
        "Calls providers refused with 429, on limited models.",
        by_key(|l| l.throttled as f64),
    );
    out.counters(
        "flotilla_rate_limit_wait_seconds_total",
        "Time calls waited for their turn under a limit, summed over calls.",
        by_key(|l| l.waited_ms as f64 / 1000.0),
    );
    out.gauges(
        "flotilla_rate_limit_calls_last_minute",
        "Calls sent in the last minute to each limited model, all workers together.",
        by_key(|l| f64::from(l.calls_last_minute)),
    );
    out.gauges(
        "flotilla_rate_limit_requests_per_minute",
        "Each limited model's declared requests per minute.",
        by_key(|l| l.declared.requests_per_minute.unwrap_or(0) as f64),
    );
    out.gauges(
        "flotilla_rate_limit_waiting_calls",
        "Calls waiting for their turn now: the limit binds while above 0.",
        by_key(|l| f64::from(l.waiting)),
    );
}
