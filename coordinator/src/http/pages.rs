//! The dashboard's pages, rendered on the server as plain HTML; the one
//! small script (`dashboard.js`, embedded) only swaps in the fragments the
//! experiment page's event stream sends.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use flotilla_report::analysis::{FailureMode, MetricInfo, VariationStatistics};
use flotilla_shared::clock::moment_words;
use flotilla_shared::duration::duration_words;
use flotilla_shared::money::dollars_words;
use flotilla_shared::naming::variation_name;

use crate::state::KeyUseView;
use crate::store::AttemptRow;
use crate::views::{ExperimentView, StatusView};

const SCRIPT: &str = include_str!("dashboard.js");

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f7f8fa}\
nav{background:#1d2430;padding:.6em 1.2em}nav a{color:#fff;margin-right:1.2em;text-decoration:none;font-weight:600}\
main{padding:1em 1.6em;max-width:1200px}table{border-collapse:collapse;background:#fff;margin:.6em 0 1.4em}\
td,th{border:1px solid #dde1e7;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#eef1f5}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.bar{width:220px;height:12px;background:#e3e6eb;display:inline-block}\
.bar span{display:block;height:100%;background:#2f8f5b}pre{background:#fff;border:1px solid #dde1e7;padding:.6em;overflow:auto;max-height:24em}\
.state{font-weight:600}.muted{color:#69707d}.figure{display:inline-block;margin-right:1.6em}.figure b{font-size:1.3em}";

/// Escapes text for HTML.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a path segment for a link.
pub fn url(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Flotilla</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body><nav><a href=\"/\">Experiments</a><a href=\"/workers\">Workers</a></nav><main>{body}</main>\
         <script>{SCRIPT}</script></body></html>",
        esc(title)
    )
}

pub fn login(failed: bool) -> String {
    let note = if failed {
        "<p class=\"state\">That token does not match the coordinator's.</p>"
    } else {
        ""
    };
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1>{note}<p>This coordinator listens beyond loopback: give its token \
             (the first line of its token file).</p><form method=\"post\" action=\"/login\">\
             <input type=\"password\" name=\"token\" id=\"token\" size=\"40\" autofocus> \
             <button type=\"submit\" id=\"sign-in\">Sign in</button></form>"
        ),
    )
}

fn progress_bar(view: &ExperimentView) -> String {
    let (ended, total) = (view.counts.ended(), view.counts.total());
    let share = if total == 0 {
        0.0
    } else {
        100.0 * ended as f64 / total as f64
    };
    format!("<span class=\"bar\"><span style=\"width:{share:.1}%\"></span></span>")
}

/// `$1.20 of $5.00, projected $4.10`, or what was spent.
pub fn spend_words(view: &ExperimentView) -> String {
    let spent = match &view.budget {
        Some(b) => {
            let projected = b
                .projected_usd
                .map(|p| format!(", projected {}", dollars_words(p)))
                .unwrap_or_default();
            format!(
                "{} of {}{projected}",
                dollars_words(b.spent_usd),
                dollars_words(b.total_usd)
            )
        }
        None if view.spent_usd > 0.0 => dollars_words(view.spent_usd),
        None if view.running_spend_usd > 0.0 => "$0.00".into(),
        None => "-".into(),
    };
    if view.running_spend_usd > 0.0 {
        format!(
            "{spent} (+{} in running runs)",
            dollars_words(view.running_spend_usd)
        )
    } else {
        spent
    }
}

/// `412 of 480 calls, $1.20 saved`: what the response cache answered.
pub fn cache_words(view: &ExperimentView) -> String {
    let cache = &view.cache;
    if cache.hits == 0 {
        return format!("0 of {} calls", cache.calls);
    }
    format!(
        "{} of {} calls, {} saved",
        cache.hits,
        cache.calls,
        dollars_words(cache.saved_usd)
    )
}

/// The ETA at the pace the coordinator keeps (the live display's too).
pub fn eta_words(view: &ExperimentView) -> String {
    if view.state.is_final() {
        return String::new();
    }
    view.pace.eta_words()
}

/// How long it ran, or has run so far.
fn elapsed_words(view: &ExperimentView, now_ms: i64) -> String {
    let end = view.finished_at_ms.unwrap_or(now_ms);
    duration_words(Duration::from_millis(
        end.saturating_sub(view.started_at_ms).max(0) as u64,
    ))
}

pub fn experiments(status: &StatusView) -> String {
    let mut rows = String::new();
    for e in &status.experiments {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/experiments/{}\">{}</a></td><td class=\"state\">{}</td><td>{} {}/{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td>{}</td></tr>",
            url(&e.name),
            esc(&e.name),
            e.state,
            progress_bar(e),
            e.counts.ended(),
            e.counts.total(),
            e.counts.succeeded,
            e.counts.failed,
            e.counts.running,
            e.counts.pending,
            esc(&spend_words(e)),
            esc(&eta_words(e)),
        );
    }
    let body = if status.experiments.is_empty() {
        "<p class=\"muted\">No experiments yet: <code>flotilla submit FILE</code>.</p>".to_string()
    } else {
        format!(
            "<table id=\"experiments\"><tr><th>experiment</th><th>state</th><th>progress</th><th>succeeded</th>\
             <th>failed</th><th>running</th><th>pending</th><th>spend</th><th>ETA</th></tr>{rows}</table>"
        )
    };
    layout(
        "Experiments",
        &format!("<h1>Experiments</h1><div data-refresh=\"5\">{body}</div>"),
    )
}

/// The figures that change as runs finish, by element id: what the event
/// stream sends and the page starts with.
pub fn live_fields(view: &ExperimentView, now_ms: i64) -> Vec<(&'static str, String)> {
    vec![
        ("state", view.state.to_string()),
        ("succeeded", view.counts.succeeded.to_string()),
        ("failed", view.counts.failed.to_string()),
        ("cancelled", view.counts.cancelled.to_string()),
        ("running", view.counts.running.to_string()),
        ("pending", view.counts.pending.to_string()),
        (
            "ended",
            format!("{}/{}", view.counts.ended(), view.counts.total()),
        ),
        ("spend", spend_words(view)),
        ("cache", cache_words(view)),
        ("started", moment_words(view.started_at_ms)),
        ("elapsed", elapsed_words(view, now_ms)),
        ("eta", eta_words(view)),
    ]
}

/// Per-variation counts and, for each metric, the mean with its 95% interval.
pub fn variations_table(
    view: &ExperimentView,
    figures: Option<&(Vec<MetricInfo>, Vec<VariationStatistics>, Vec<FailureMode>)>,
) -> String {
    let metrics: Vec<&MetricInfo> = figures.map(|f| f.0.iter().collect()).unwrap_or_default();
    let mut out = String::from("<table><tr><th>variation</th><th>parameters</th><th>succeeded</th><th>failed</th><th>running</th><th>pending</th>");
    for metric in &metrics {
        let _ = write!(out, "<th>{} (mean, 95% CI)</th>", esc(&metric.name));
    }
    out.push_str("</tr>");
    for variation in &view.variations {
        let c = variation.counts;
        let _ = write!(
            out,
            "<tr><td><a href=\"/experiments/{}/runs?variation={}\">{}</a>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            url(&view.name),
            variation.index,
            variation_name(variation.index),
            if variation.standing.is_empty() {
                String::new()
            } else {
                format!("<br><small class=\"standing\">{}</small>", esc(&variation.standing))
            },
            esc(&variation.axis_json),
            c.succeeded,
            c.failed,
            c.running,
            c.pending
        );
        let statistics = figures.and_then(|f| f.1.iter().find(|s| s.index == variation.index));
        for metric in &metrics {
            let cell = statistics
                .and_then(|s| s.metrics.get(&metric.name))
                .map(|m| match (m.rate, m.rate_ci95_wilson, m.ci95_t) {
                    (Some(rate), Some([low, high]), _) => {
                        format!(
                            "{:.1}% [{:.1}, {:.1}] (n={})",
                            rate * 100.0,
                            low * 100.0,
                            high * 100.0,
                            m.n
                        )
                    }
                    (_, _, Some([low, high])) => format!(
                        "{} [{}, {}] (n={})",
                        short(m.mean),
                        short(low),
                        short(high),
                        m.n
                    ),
                    _ => format!("{} (n={})", short(m.mean), m.n),
                })
                .unwrap_or_else(|| "-".into());
            let _ = write!(out, "<td class=\"n\">{}</td>", esc(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

fn short(value: f64) -> String {
    if value.abs() >= 1000.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

/// Failures grouped by signature, each with an example run and its stderr's end.
pub fn failures_table(
    experiment: &str,
    failures: &[FailureMode],
    example_stderr: impl Fn(&str) -> String,
) -> String {
    if failures.is_empty() {
        return "<p class=\"muted\">No failures.</p>".into();
    }
    let mut out = String::from("<table><tr><th>runs</th><th>signature</th><th>example</th></tr>");
    for failure in failures.iter().take(20) {
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td><a href=\"/experiments/{}/runs/{}\">{}</a><pre>{}</pre></td></tr>",
            failure.count,
            esc(&failure.signature),
            url(experiment),
            url(&failure.example_run),
            esc(&failure.example_run),
            esc(&example_stderr(&failure.example_run)),
        );
    }
    out.push_str("</table>");
    out
}

pub struct ExperimentPage<'a> {
    pub view: &'a ExperimentView,
    pub now_ms: i64,
    pub variations: String,
    pub failures: String,
    /// The report's plots, when the report was written.
    pub plots: Vec<String>,
    pub has_report: bool,
    /// config.yaml as submitted.
    pub config: String,
    /// Progress and spend over time (`progress_chart`).
    pub chart: String,
}

pub fn experiment(page: ExperimentPage) -> String {
    let view = page.view;
    let name = url(&view.name);
    let mut figures = String::new();
    for (id, value) in live_fields(view, page.now_ms) {
        let _ = write!(
            figures,
            "<span class=\"figure\">{id} <b id=\"{id}\">{}</b></span>",
            esc(&value)
        );
    }
    let notes: String = [&view.waiting, &view.end_reason]
        .into_iter()
        .flatten()
        .map(|note| format!("<p class=\"state\">{}</p>", esc(note)))
        .collect();
    let mut report = String::new();
    if page.has_report {
        let _ = write!(
            report,
            "<h2>Report</h2><p><a href=\"/experiments/{name}/report\">analysis-report.md</a></p>"
        );
        for plot in &page.plots {
            let _ = write!(
                report,
                "<img src=\"/experiments/{name}/plots/{}\" alt=\"{}\" style=\"max-width:560px;margin:.4em\">",
                url(plot),
                esc(plot)
            );
        }
    }
    let live = if view.state.is_final() {
        String::new()
    } else {
        format!(" data-events=\"/experiments/{name}/events\"")
    };
    let description = if view.description.is_empty() {
        String::new()
    } else {
        format!("<p id=\"description\">{}</p>", esc(&view.description))
    };
    // Buttons act on the coordinator; pages are only served to who holds the token.
    let actions = match view.state {
        flotilla_shared::status::ExperimentState::Running => format!(
            "<form id=\"cancel\" method=\"post\" action=\"/experiments/{name}/cancel\" style=\"display:inline\">\
             <button>Cancel</button> <label><input type=\"checkbox\" name=\"kill\"> and stop running runs</label></form>"
        ),
        flotilla_shared::status::ExperimentState::Cancelled
        | flotilla_shared::status::ExperimentState::BudgetExhausted => format!(
            "<form id=\"resume\" method=\"post\" action=\"/experiments/{name}/resume\" style=\"display:inline\">\
             <button>Resume</button></form>"
        ),
        _ => String::new(),
    };
    let config = if page.config.is_empty() {
        String::new()
    } else {
        format!(
            "<details id=\"config\"><summary>config.yaml</summary><pre>{}</pre></details>",
            esc(&page.config)
        )
    };
    let body = format!(
        "<h1>{}</h1>{description}<p id=\"actions\">{actions}</p>{}{config}<div id=\"live\"{live}><p>{figures}</p>{notes}\
         <p><a id=\"runs-link\" href=\"/experiments/{name}/runs\">every run</a> · \
         <a href=\"/experiments/{name}/results.csv\" download>results.csv</a> · \
         <span class=\"muted\">{}</span></p>\
         <h2>Variations</h2><div id=\"variations\">{}</div>\
         <h2>Failures</h2><div id=\"failures\">{}</div></div>{report}",
        esc(&view.name),
        page.chart,
        esc(&view.directory),
        page.variations,
        page.failures,
    );
    layout(&view.name, &body)
}

pub struct RunPage<'a> {
    pub experiment: &'a str,
    pub run: &'a str,
    pub params: String,
    pub result: Option<serde_json::Value>,
    pub attempts: &'a [AttemptRow],
    pub stdout: String,
    pub stderr: String,
    pub calls: Vec<serde_json::Value>,
}

pub fn run(page: RunPage) -> String {
    let mut body = format!(
        "<h1><a href=\"/experiments/{}\">{}</a> / {}</h1><h2>Parameters</h2><pre>{}</pre>",
        url(page.experiment),
        esc(page.experiment),
        esc(page.run),
        esc(&page.params)
    );
    if let Some(result) = &page.result {
        let _ = write!(
            body,
            "<h2>Result</h2><p>status <b id=\"status\">{}</b> · cost {}</p><pre id=\"metrics\">{}</pre>",
            esc(result["status"].as_str().unwrap_or("-")),
            esc(&result["cost_usd"].as_f64().map(|c| format!("${c:.6}")).unwrap_or_else(|| "-".into())),
            esc(&serde_json::to_string_pretty(&result["metrics"]).unwrap_or_default())
        );
    }
    body.push_str("<h2>Attempts</h2><table id=\"attempts\"><tr><th>attempt</th><th>worker</th><th>outcome</th><th>exit code</th><th>seconds</th><th>error</th></tr>");
    for a in page.attempts {
        let _ = write!(
            body,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            a.attempt,
            esc(&a.worker),
            esc(&a.outcome),
            a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            a.duration_s.map(|d| format!("{d:.2}")).unwrap_or_default(),
            esc(a.error.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</table>");
    let _ = write!(
        body,
        "<h2>stdout (end)</h2><pre id=\"stdout\">{}</pre><h2>stderr (end)</h2><pre id=\"stderr\">{}</pre>",
        esc(&page.stdout),
        esc(&page.stderr)
    );
    let _ = write!(body, "<h2>LLM calls ({})</h2>", page.calls.len());
    if !page.calls.is_empty() {
        body.push_str("<table id=\"calls\"><tr><th>provider</th><th>model</th><th>input tokens</th><th>output tokens</th><th>cost</th><th>latency ms</th><th>status</th></tr>");
        for call in &page.calls {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">${:.6}</td><td class=\"n\">{:.0}</td><td>{}</td></tr>",
                esc(call["provider"].as_str().unwrap_or("")),
                esc(call["model"].as_str().unwrap_or("")),
                call["input_tokens"].as_u64().unwrap_or(0),
                call["output_tokens"].as_u64().unwrap_or(0),
                call["cost_usd"].as_f64().unwrap_or(0.0),
                call["latency_ms"].as_f64().unwrap_or(0.0),
                esc(call["status"].as_str().unwrap_or(""))
            );
        }
        body.push_str("</table>");
    }
    layout(page.run, &body)
}

pub fn workers(status: &StatusView, limits: &[KeyUseView]) -> String {
    let mut body = String::from("<h1>Workers</h1><div data-refresh=\"5\"><table id=\"workers\"><tr><th>worker</th><th>state</th><th>slots</th><th>running</th><th>finished</th><th>serves</th><th>rate-limit shares (used in the last minute)</th></tr>");
    for w in &status.workers {
        let shares: Vec<String> = w
            .shares
            .iter()
            .map(|s| {
                let rpm = s
                    .share
                    .requests_per_minute
                    .map(|r| format!("{r} rpm"))
                    .unwrap_or_else(|| "unlimited rpm".into());
                format!(
                    "{}/{}: {rpm} ({} used{})",
                    s.key.provider,
                    s.key.model,
                    s.calls_last_minute,
                    if s.waiting > 0 {
                        format!(", {} waiting", s.waiting)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.name),
            if w.connected { "connected" } else { "disconnected" },
            w.slots,
            w.running,
            w.finished,
            esc(&w.serves.join(", ")),
            esc(&shares.join("; "))
        );
    }
    body.push_str("</table><h2>Provider limits</h2>");
    if limits.is_empty() {
        body.push_str("<p class=\"muted\">No limited provider has been called.</p>");
    } else {
        body.push_str("<table id=\"limits\"><tr><th>provider/model</th><th>limit</th><th>workers sharing</th><th>calls last minute</th><th>use of the limit</th><th>calls waiting</th><th>429s</th><th>time waited</th></tr>");
        for l in limits {
            let rpm = l.declared.requests_per_minute;
            let use_share = rpm
                .filter(|r| *r > 0)
                .map(|r| format!("{:.0}%", 100.0 * f64::from(l.calls_last_minute) / r as f64))
                .unwrap_or_else(|| "-".into());
            let _ = write!(
                body,
                "<tr><td>{}/{}</td><td>{}{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}s</td></tr>",
                esc(&l.key.provider),
                esc(&l.key.model),
                rpm.map(|r| format!("{r} rpm")).unwrap_or_else(|| "-".into()),
                if l.shared { " (shared)" } else { " per worker" },
                l.workers,
                l.calls_last_minute,
                use_share,
                l.waiting,
                l.throttled,
                l.waited_ms as f64 / 1000.0
            );
        }
        body.push_str("</table>");
    }
    body.push_str("</div>");
    layout("Workers", &body)
}

/// The runs explorer's page: filters, the page of runs and links to the
/// pages before and after (`dashboard::runs` reads them from the store).
pub struct RunsExplorerPage<'a> {
    pub experiment: &'a str,
    pub page: &'a crate::store::RunsPage,
    pub query: &'a crate::store::RunsQuery,
    /// The filters as query parameters, to keep them in sort and page links.
    pub filters: Vec<(String, String)>,
}

fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url(k), url(v)))
        .collect::<Vec<_>>()
        .join("&amp;")
}

/// The `sort` parameter's spelling of a column.
pub fn sort_name(sort: &crate::store::RunsSort) -> String {
    use crate::store::RunsSort::*;
    match sort {
        Run => "run".into(),
        Status => "status".into(),
        Attempts => "attempts".into(),
        Worker => "worker".into(),
        Duration => "duration".into(),
        Cost => "cost".into(),
        Param(name) => format!("param.{name}"),
        Metric(name) => format!("metric.{name}"),
    }
}

pub fn runs_explorer(page: RunsExplorerPage) -> String {
    use crate::store::RunsSort;
    let name = url(page.experiment);
    let base = format!("/experiments/{name}/runs");
    let data = page.page;
    let query = page.query;
    let param_names: BTreeSet<&String> =
        data.variations.iter().flat_map(|(_, p)| p.keys()).collect();

    // Filters: status, variation and each parameter's values.
    let mut form = format!("<form id=\"filters\" method=\"get\" action=\"{base}\"><label>status <select name=\"status\"><option value=\"\">any</option>");
    for status in flotilla_shared::status::RunStatus::ALL {
        let _ = write!(
            form,
            "<option{}>{status}</option>",
            if query.status == Some(*status) {
                " selected"
            } else {
                ""
            }
        );
    }
    form.push_str("</select></label> <label>variation <select name=\"variation\"><option value=\"\">any</option>");
    for (index, params) in &data.variations {
        let _ = write!(
            form,
            "<option value=\"{index}\"{}>{} {}</option>",
            if query.variation == Some(*index) {
                " selected"
            } else {
                ""
            },
            variation_name(*index),
            esc(&serde_json::Value::Object(params.clone()).to_string())
        );
    }
    form.push_str("</select></label>");
    for param in &param_names {
        let values: BTreeSet<String> = data
            .variations
            .iter()
            .filter_map(|(_, p)| p.get(*param))
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        if values.len() < 2 {
            continue;
        }
        let chosen = query
            .params
            .iter()
            .find(|(n, _)| n == *param)
            .map(|(_, v)| v);
        let _ = write!(
            form,
            " <label>{} <select name=\"p.{}\"><option value=\"\">any</option>",
            esc(param),
            esc(param)
        );
        for value in values {
            let _ = write!(
                form,
                "<option{}>{}</option>",
                if chosen == Some(&value) {
                    " selected"
                } else {
                    ""
                },
                esc(&value)
            );
        }
        form.push_str("</select></label>");
    }
    let _ = write!(
        form,
        "<input type=\"hidden\" name=\"sort\" value=\"{}\"><input type=\"hidden\" name=\"order\" value=\"{}\"> <button>Filter</button></form>",
        esc(&sort_name(&query.sort)),
        if query.descending { "desc" } else { "asc" }
    );

    // Column headers sort; a second click reverses.
    let header = |label: &str, sort: RunsSort| {
        let descending = query.sort == sort && !query.descending;
        let mut pairs = page.filters.clone();
        pairs.push(("sort".into(), sort_name(&sort)));
        pairs.push((
            "order".into(),
            if descending { "desc" } else { "asc" }.into(),
        ));
        let arrow = if query.sort == sort {
            if query.descending {
                " ▼"
            } else {
                " ▲"
            }
        } else {
            ""
        };
        format!(
            "<th><a href=\"{base}?{}\">{}{arrow}</a></th>",
            query_string(&pairs),
            esc(label)
        )
    };
    let mut table = String::from("<table id=\"runs\"><tr>");
    for (label, sort) in [
        ("run", RunsSort::Run),
        ("status", RunsSort::Status),
        ("attempts", RunsSort::Attempts),
        ("worker", RunsSort::Worker),
        ("duration (s)", RunsSort::Duration),
        ("cost", RunsSort::Cost),
    ] {
        table.push_str(&header(label, sort));
    }
    for param in &param_names {
        table.push_str(&header(param, RunsSort::Param((*param).clone())));
    }
    for metric in &data.metrics {
        table.push_str(&header(metric, RunsSort::Metric(metric.clone())));
    }
    table.push_str("</tr>");
    let cell = |value: Option<&serde_json::Value>| match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => esc(s),
        Some(serde_json::Value::Number(n)) => n.as_f64().map(short).unwrap_or_default(),
        Some(other) => esc(&other.to_string()),
    };
    for run in &data.runs {
        let id = flotilla_shared::naming::run_id(run.variation, run.repetition);
        let params = data
            .variations
            .iter()
            .find(|(i, _)| *i == run.variation)
            .map(|(_, p)| p);
        let _ = write!(
            table,
            "<tr><td><a href=\"/experiments/{name}/runs/{id}\">{id}</a></td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            esc(&run.status),
            run.attempts,
            esc(run.worker.as_deref().unwrap_or("")),
            run.duration_s.map(|d| format!("{d:.3}")).unwrap_or_default(),
            run.cost_usd.map(flotilla_shared::money::dollars_words).unwrap_or_default(),
        );
        for param in &param_names {
            let _ = write!(
                table,
                "<td>{}</td>",
                cell(params.and_then(|p| p.get(*param)))
            );
        }
        for metric in &data.metrics {
            let _ = write!(
                table,
                "<td class=\"n\">{}</td>",
                cell(run.metrics.get(metric))
            );
        }
        table.push_str("</tr>");
    }
    table.push_str("</table>");

    let per_page = query.per_page.max(1);
    let pages = data.matching.div_ceil(per_page).max(1);
    let link = |number: u64, label: &str| {
        let mut pairs = page.filters.clone();
        pairs.push(("sort".into(), sort_name(&query.sort)));
        pairs.push((
            "order".into(),
            if query.descending { "desc" } else { "asc" }.into(),
        ));
        pairs.push(("page".into(), (number + 1).to_string()));
        format!(
            "<a id=\"{}\" href=\"{base}?{}\">{label}</a>",
            label.to_lowercase(),
            query_string(&pairs)
        )
    };
    let mut pager = format!(
        "<p><span id=\"matching\">{} runs match</span> · page <span id=\"page\">{}</span> of {pages}",
        data.matching,
        query.page + 1
    );
    if query.page > 0 {
        let _ = write!(pager, " · {}", link(query.page - 1, "Previous"));
    }
    if query.page + 1 < pages {
        let _ = write!(pager, " · {}", link(query.page + 1, "Next"));
    }
    pager.push_str("</p>");
    let distributions: String = data.distributions.iter().map(distribution_figure).collect();
    let distributions = if distributions.is_empty() {
        String::new()
    } else {
        format!("<h2>Distributions over its succeeded runs</h2><div id=\"distributions\">{distributions}</div>")
    };
    let body = format!(
        "<h1><a href=\"/experiments/{name}\">{}</a>: runs</h1>{form}{distributions}{pager}{table}{pager}",
        esc(page.experiment)
    );
    layout(&format!("{} runs", page.experiment), &body)
}

/// Points per line of the progress chart.
pub const CHART_BUCKETS: i64 = 60;

/// Runs ended and dollars spent over time, cumulative, as a small SVG: one
/// line for each, each scaled to its own end (the legend gives both).
pub fn progress_chart(buckets: &[(i64, u64, f64)], total_runs: u64, elapsed_ms: i64) -> String {
    if buckets.is_empty() || total_runs == 0 {
        return String::new();
    }
    let (width, height) = (480.0, 90.0);
    let (mut runs, mut spent) = (0_u64, 0.0_f64);
    let mut points = vec![(0.0, 0_u64, 0.0)];
    for (bucket, ended, dollars) in buckets {
        runs += ended;
        spent += dollars;
        points.push(((*bucket + 1) as f64 / CHART_BUCKETS as f64, runs, spent));
    }
    let x = |share: f64| share.min(1.0) * width;
    let line = |value: &dyn Fn(&(f64, u64, f64)) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), height - value(p) * height))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let runs_line = line(&|p| p.1 as f64 / total_runs as f64);
    let spend_line = if spent > 0.0 {
        format!(
            "<polyline fill=\"none\" stroke=\"#c0792b\" stroke-width=\"2\" points=\"{}\"/>",
            line(&|p| p.2 / spent)
        )
    } else {
        String::new()
    };
    format!(
        "<figure id=\"progress-chart\" style=\"margin:.6em 0\"><svg width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" style=\"background:#fff;border:1px solid #dde1e7\" role=\"img\">\
         <polyline fill=\"none\" stroke=\"#2f8f5b\" stroke-width=\"2\" points=\"{runs_line}\"/>{spend_line}</svg>\
         <figcaption class=\"muted\"><span style=\"color:#2f8f5b\">■</span> runs ended: {runs} of {total_runs} \
         · <span style=\"color:#c0792b\">■</span> spent: {} · over {}</figcaption></figure>",
        dollars_words(spent),
        duration_words(Duration::from_millis(elapsed_ms.max(0) as u64)),
    )
}

/// One metric's distribution: a histogram of 12 bins with n, mean and
/// median, or a rate for a boolean metric.
fn distribution_figure(distribution: &crate::store::Distribution) -> String {
    let values = &distribution.values;
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    if distribution.boolean {
        return format!(
            "<figure class=\"distribution\" data-metric=\"{}\"><figcaption>{}: {} true of {n} ({:.1}%)</figcaption></figure>",
            esc(&distribution.metric),
            esc(&distribution.metric),
            values.iter().filter(|v| **v > 0.5).count(),
            mean * 100.0
        );
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    let (low, high) = (values[0], values[n - 1]);
    const BINS: usize = 12;
    let mut counts = [0_usize; BINS];
    for value in values {
        let share = if high > low {
            (value - low) / (high - low)
        } else {
            0.0
        };
        counts[((share * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    let tallest = *counts.iter().max().unwrap_or(&1) as f64;
    let (width, height) = (240.0, 60.0);
    let bar = width / BINS as f64;
    let bars: String = counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let h = *count as f64 / tallest * height;
            format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#2f8f5b\"><title>{count}</title></rect>",
                i as f64 * bar + 1.0,
                height - h,
                bar - 2.0
            )
        })
        .collect();
    format!(
        "<figure class=\"distribution\" data-metric=\"{}\" style=\"display:inline-block;margin:.4em 1.2em .4em 0\">\
         <svg width=\"{width}\" height=\"{height}\" style=\"background:#fff;border:1px solid #dde1e7\">{bars}</svg>\
         <figcaption>{}: n={n}, mean {}, median {}, from {} to {}</figcaption></figure>",
        esc(&distribution.metric),
        esc(&distribution.metric),
        flotilla_report::format::number(mean),
        flotilla_report::format::number(median),
        flotilla_report::format::number(low),
        flotilla_report::format::number(high)
    )
}
