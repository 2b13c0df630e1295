//! The dashboard's handlers: pages from the status views and the store, and
//! the experiment page's event stream (server-sent events), pushed when the
//! coordinator's state changes, at most once a second.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use flotilla_report::analysis::{FailureMode, MetricInfo, VariationStatistics};
use flotilla_shared::clock::now_ms;
use flotilla_shared::Error;
use tokio_stream::wrappers::ReceiverStream;

use super::pages::{self, ExperimentPage, RunPage};
use super::{ApiError, Http, TOKEN_COOKIE};
use crate::views::ExperimentView;

/// An error on a page, as a page: a browser shows it rather than JSON.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = pages::layout(
            "Not available",
            &format!(
                "<h1>{}</h1><p id=\"error\">{}</p><p><a href=\"/\">Experiments</a></p>",
                status.canonical_reason().unwrap_or("Error"),
                pages::esc(&self.0 .0.to_string())
            ),
        );
        (status, Html(body)).into_response()
    }
}

/// Figures are computed from the store at most this often per experiment,
/// and at most a twentieth of the time: a large sweep's figures, which take
/// longer to compute, are refreshed less often so the dashboard does not slow it.
const FIGURES_FRESH: Duration = Duration::from_secs(2);
const FIGURES_DUTY: u32 = 20;
/// An experiment's status is read from the coordinator at most this often for the dashboard.
const VIEW_FRESH: Duration = Duration::from_millis(500);
/// The event stream sends at most this often.
const EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// How much of a run's stdout and stderr its page shows.
const TAIL_BYTES: u64 = 8 * 1024;

type Figures = (Vec<MetricInfo>, Vec<VariationStatistics>, Vec<FailureMode>);

/// Figures with when they were made, how long that took, and whether the
/// experiment had ended by then (such figures never go stale).
struct MadeFigures {
    at: Instant,
    took: Duration,
    of_final: bool,
    figures: Arc<Figures>,
}

/// Per-experiment figures and status, shared by pages and streams; each is
/// made by one request at a time while the others wait for it.
#[derive(Default)]
pub struct FiguresCache {
    /// When made, how long it took, the figures.
    by_name: Mutex<HashMap<String, MadeFigures>>,
    views: Mutex<HashMap<String, (Instant, Arc<ExperimentView>)>>,
    making: tokio::sync::Mutex<()>,
    reading: tokio::sync::Mutex<()>,
}

impl FiguresCache {
    /// Figures that may be shown for an experiment that is final or not:
    /// once it ended, only figures made after its end will do, so that the
    /// last results (a failure at the very end) show at once.
    fn fresh(&self, name: &str, ended: bool) -> Option<Arc<Figures>> {
        let by_name = self.by_name.lock().expect("not poisoned");
        let made = by_name.get(name)?;
        let fresh = if ended {
            made.of_final
        } else {
            made.of_final || made.at.elapsed() < FIGURES_FRESH.max(made.took * FIGURES_DUTY)
        };
        fresh.then(|| made.figures.clone())
    }

    /// The experiment's status, at most `VIEW_FRESH` old.
    async fn view(&self, http: &Http, name: &str) -> Result<Arc<ExperimentView>, ApiError> {
        let cached = |views: &HashMap<String, (Instant, Arc<ExperimentView>)>| {
            views
                .get(name)
                .filter(|(at, _)| at.elapsed() < VIEW_FRESH)
                .map(|(_, view)| view.clone())
        };
        if let Some(view) = cached(&self.views.lock().expect("not poisoned")) {
            return Ok(view);
        }
        let _reading = self.reading.lock().await;
        if let Some(view) = cached(&self.views.lock().expect("not poisoned")) {
            return Ok(view);
        }
        let view = Arc::new(one(http, name).await?);
        self.views
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), (Instant::now(), view.clone()));
        Ok(view)
    }

    /// The figures of `name` for `view` (the experiment's status as last read).
    async fn get(&self, root: &FsPath, view: &ExperimentView) -> Option<Arc<Figures>> {
        let (name, ended) = (view.name.as_str(), view.state.is_final());
        if let Some(figures) = self.fresh(name, ended) {
            return Some(figures);
        }
        let _making = self.making.lock().await;
        if let Some(figures) = self.fresh(name, ended) {
            return Some(figures);
        }
        let started = Instant::now();
        let (root, owned) = (root.to_path_buf(), name.to_string());
        let figures = tokio::task::spawn_blocking(move || {
            crate::store::read_experiment(&root, &owned)
                .map(|data| flotilla_report::live_figures(&data))
        })
        .await
        .ok()?
        .ok()?;
        let figures = Arc::new(figures);
        // The state turns final only once the final results are committed
        // (ARCHITECTURE.md, invariant 4): figures read after it are final too.
        self.by_name.lock().expect("not poisoned").insert(
            name.to_string(),
            MadeFigures {
                at: Instant::now(),
                took: started.elapsed(),
                of_final: ended,
                figures: figures.clone(),
            },
        );
        Some(figures)
    }
}

pub async fn login_form() -> Html<String> {
    Html(pages::login(false))
}

#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

pub async fn login(State(http): State<Http>, Form(login): Form<Login>) -> Response {
    if login.token.trim() != &*http.token {
        return (StatusCode::UNAUTHORIZED, Html(pages::login(true))).into_response();
    }
    (
        [(
            header::SET_COOKIE,
            format!(
                "{TOKEN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{}",
                login.token.trim(),
                if http.secure { "; Secure" } else { "" }
            ),
        )],
        Redirect::to("/"),
    )
        .into_response()
}

pub async fn experiments(State(http): State<Http>) -> Result<Html<String>, PageError> {
    let status = http.handle.status(None).await.map_err(ApiError)?;
    Ok(Html(pages::experiments(&status)))
}

pub async fn workers(State(http): State<Http>) -> Result<Html<String>, PageError> {
    let status = http.handle.status(None).await.map_err(ApiError)?;
    Ok(Html(pages::workers(&status, &status.limits)))
}

async fn one(http: &Http, name: &str) -> Result<ExperimentView, ApiError> {
    let status = http
        .handle
        .status(Some(name.to_string()))
        .await
        .map_err(ApiError)?;
    status
        .experiments
        .into_iter()
        .next()
        .ok_or_else(|| ApiError(Error::NotFound(format!("no experiment named '{name}'"))))
}

/// The end of a file, at most `TAIL_BYTES`.
fn tail(path: &FsPath) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn fragments(view: &ExperimentView, figures: Option<&Figures>) -> (String, String) {
    let directory = PathBuf::from(&view.directory);
    let variations = pages::variations_table(view, figures);
    let failures = pages::failures_table(
        &view.name,
        figures.map(|f| f.2.as_slice()).unwrap_or_default(),
        |run| match flotilla_shared::naming::parse_run_id(run) {
            Some((variation, repetition)) => tail(
                &crate::outputs::find_run_dir(&directory, variation, repetition).join("stderr.log"),
            ),
            None => String::new(),
        },
    );
    (variations, failures)
}

pub async fn experiment(
    State(http): State<Http>,
    Path(name): Path<String>,
) -> Result<Html<String>, PageError> {
    let view = one(&http, &name).await?;
    let figures = http.figures.get(&http.root, &view).await;
    let (variations, failures) = fragments(&view, figures.as_deref());
    let analysis = PathBuf::from(&view.directory).join("analysis");
    let mut plots: Vec<String> = std::fs::read_dir(analysis.join("plots"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".svg"))
                .collect()
        })
        .unwrap_or_default();
    plots.sort();
    let now = now_ms();
    let elapsed_ms = view.finished_at_ms.unwrap_or(now) - view.started_at_ms;
    let (root, owned, start) = (http.root.clone(), name.clone(), view.started_at_ms);
    let bucket_ms = (elapsed_ms / pages::CHART_BUCKETS).max(1);
    let progress = tokio::task::spawn_blocking(move || {
        crate::store::read_progress(&root, &owned, start, bucket_ms)
    })
    .await
    .map_err(|e| ApiError(Error::Internal(e.to_string())))?
    .map_err(ApiError)?;
    Ok(Html(pages::experiment(ExperimentPage {
        view: &view,
        now_ms: now,
        variations,
        failures,
        plots,
        has_report: analysis.join("analysis-report.md").exists(),
        config: std::fs::read_to_string(PathBuf::from(&view.directory).join("config.yaml"))
            .unwrap_or_default(),
        chart: pages::progress_chart(&progress, view.counts.total(), elapsed_ms),
    })))
}

/// The experiment page's live updates: figures by element id and the two tables.
pub async fn events(
    State(http): State<Http>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    one(&http, &name).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut changes = http.handle.changes();
        loop {
            let Ok(view) = http.figures.view(&http, &name).await else {
                return;
            };
            let figures = http.figures.get(&http.root, &view).await;
            let (variations, failures) = fragments(&view, figures.as_deref());
            let fields: serde_json::Map<String, serde_json::Value> =
                pages::live_fields(&view, now_ms())
                    .into_iter()
                    .map(|(id, value)| (id.to_string(), value.into()))
                    .collect();
            let finished = view.state.is_final();
            let update = serde_json::json!({
                "fields": fields, "variations": variations, "failures": failures, "final": finished,
            });
            if sender
                .send(Ok(Event::default().data(update.to_string())))
                .await
                .is_err()
                || finished
            {
                return;
            }
            tokio::time::sleep(EVENT_INTERVAL).await;
            // Waits for a change, or sends again within a while so the ETA moves.
            let _ = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
        }
    });
    let stream: ReceiverStream<Result<Event, Infallible>> = ReceiverStream::new(receiver);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub async fn results_csv(
    State(http): State<Http>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = one(&http, &name).await?;
    let path = PathBuf::from(&view.directory).join("results.csv");
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError(Error::NotFound(format!(
            "{} is not written yet: {e}",
            path.display()
        )))
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}-results.csv\"",
                    name.replace('"', "")
                ),
            ),
        ],
        bytes,
    )
        .into_response())
}

pub async fn report(
    State(http): State<Http>,
    Path(name): Path<String>,
) -> Result<Html<String>, PageError> {
    let view = one(&http, &name).await?;
    let path = PathBuf::from(&view.directory).join("analysis/analysis-report.md");
    let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
        ApiError(Error::NotFound(format!(
            "no report yet at {}: {e}",
            path.display()
        )))
    })?;
    Ok(Html(pages::layout(
        &name,
        &format!(
            "<h1><a href=\"/experiments/{}\">{}</a> / report</h1><pre id=\"report\">{}</pre>",
            pages::url(&name),
            pages::esc(&name),
            pages::esc(&text)
        ),
    )))
}

pub async fn plot(
    State(http): State<Http>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if file.contains('/') || file.contains("..") || !file.ends_with(".svg") {
        return Err(ApiError(Error::InvalidInput(format!(
            "'{file}' is not a plot"
        ))));
    }
    let view = one(&http, &name).await?;
    let path = PathBuf::from(&view.directory)
        .join("analysis/plots")
        .join(&file);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError(Error::NotFound(format!("no plot {}: {e}", path.display()))))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], bytes).into_response())
}

/// `var-003-run-002` → (3, 2).
fn run_numbers(run: &str) -> Option<(u32, u32)> {
    let rest = run.strip_prefix("var-")?;
    let (variation, repetition) = rest.split_once("-run-")?;
    Some((variation.parse().ok()?, repetition.parse().ok()?))
}

/// A run's details as its page and `/api/v1/experiments/NAME/runs/RUN` show them.
#[derive(serde::Serialize)]
pub struct RunDetails {
    experiment: String,
    run: String,
    params: String,
    result: Option<serde_json::Value>,
    attempts: Vec<crate::store::AttemptRow>,
    stdout_tail: String,
    stderr_tail: String,
    calls: Vec<serde_json::Value>,
}

async fn run_details(http: &Http, name: String, run: String) -> Result<RunDetails, ApiError> {
    let (variation, repetition) = run_numbers(&run).ok_or_else(|| {
        ApiError(Error::InvalidInput(format!(
            "'{run}' is not a run id; run ids read var-NNN-run-NNN"
        )))
    })?;
    let view = one(http, &name).await?;
    let directory =
        crate::outputs::find_run_dir(FsPath::new(&view.directory), variation, repetition);
    let (root, owned) = (http.root.clone(), name.clone());
    let attempts = tokio::task::spawn_blocking(move || {
        crate::store::read_attempts(&root, &owned, variation, repetition)
    })
    .await
    .map_err(|e| ApiError(Error::Internal(e.to_string())))?
    .map_err(ApiError)?;
    let read = |file: &str| std::fs::read_to_string(directory.join(file)).unwrap_or_default();
    let params = view
        .variations
        .iter()
        .find(|v| v.index == variation)
        .map(|v| v.axis_json.clone())
        .unwrap_or_else(|| read("params.json"));
    Ok(RunDetails {
        params,
        result: serde_json::from_str(&read("result.json")).ok(),
        attempts,
        stdout_tail: tail(&directory.join("stdout.log")),
        stderr_tail: tail(&directory.join("stderr.log")),
        calls: read("calls.jsonl")
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect(),
        experiment: name,
        run,
    })
}

pub async fn run(
    State(http): State<Http>,
    Path((name, run)): Path<(String, String)>,
) -> Result<Html<String>, PageError> {
    let details = run_details(&http, name, run).await?;
    Ok(Html(pages::run(RunPage {
        experiment: &details.experiment,
        run: &details.run,
        params: details.params.clone(),
        result: details.result.clone(),
        attempts: &details.attempts,
        stdout: details.stdout_tail.clone(),
        stderr: details.stderr_tail.clone(),
        calls: details.calls.clone(),
    })))
}

/// The experiment page's cancel form.
#[derive(serde::Deserialize)]
pub struct CancelForm {
    /// Present when running runs are to be stopped too.
    kill: Option<String>,
}

/// Refuses a form posted from another site's page: browsers name the page's
/// origin on a POST, and it must be this dashboard's. (Beyond loopback the
/// login cookie is SameSite=Strict as well.)
fn same_origin(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => Ok(()),
        Some(origin) if host.is_some_and(|host| origin.split("://").nth(1) == Some(host)) => Ok(()),
        Some(origin) => Err(ApiError(Error::InvalidInput(format!(
            "a form from {origin} cannot act on this dashboard"
        )))),
    }
}

/// The cancel button: pending runs are cancelled (with `kill`, running ones
/// are stopped too); back to the experiment page.
pub async fn cancel(
    State(http): State<Http>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<CancelForm>,
) -> Result<Redirect, PageError> {
    same_origin(&headers)?;
    http.handle
        .cancel(name.clone(), form.kill.is_some())
        .await
        .map_err(ApiError)?;
    Ok(Redirect::to(&format!("/experiments/{}", pages::url(&name))))
}

/// The resume button: a cancelled or budget-exhausted experiment runs its
/// cancelled runs; back to the experiment page.
pub async fn resume(
    State(http): State<Http>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Redirect, PageError> {
    same_origin(&headers)?;
    http.handle
        .resume(name.clone(), false)
        .await
        .map_err(ApiError)?;
    Ok(Redirect::to(&format!("/experiments/{}", pages::url(&name))))
}

/// Runs per page of the explorer unless `per_page` says otherwise.
const RUNS_PER_PAGE: u64 = 50;

/// Reads the explorer's query: `status`, `variation`, `p.NAME=value`,
/// `sort` (run, status, attempts, worker, duration, cost, param.NAME,
/// metric.NAME), `order` (asc, desc), `page` (from 1), `per_page`.
fn runs_query(
    pairs: &[(String, String)],
) -> Result<(crate::store::RunsQuery, Vec<(String, String)>), ApiError> {
    use crate::store::{RunsQuery, RunsSort};
    let invalid = |what: String| ApiError(Error::InvalidInput(what));
    let mut query = RunsQuery {
        per_page: RUNS_PER_PAGE,
        ..RunsQuery::default()
    };
    let mut filters = Vec::new();
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        match key.as_str() {
            "status" => {
                query.status = Some(value.parse().map_err(|_| {
                    invalid(format!(
                        "status '{value}' is not a run status; expected one of {}",
                        flotilla_shared::status::RunStatus::ALL
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?);
                filters.push((key.clone(), value.clone()));
            }
            "variation" => {
                let index = value.trim_start_matches("var-").parse::<u32>().map_err(|_| {
                    invalid(format!("variation '{value}' is not a variation number such as 3 or var-003"))
                })?;
                query.variation = Some(index);
                filters.push((key.clone(), index.to_string()));
            }
            "sort" => {
                query.sort = match value.as_str() {
                    "run" => RunsSort::Run,
                    "status" => RunsSort::Status,
                    "attempts" => RunsSort::Attempts,
                    "worker" => RunsSort::Worker,
                    "duration" => RunsSort::Duration,
                    "cost" => RunsSort::Cost,
                    other => match (other.strip_prefix("param."), other.strip_prefix("metric.")) {
                        (Some(name), _) => RunsSort::Param(name.to_string()),
                        (_, Some(name)) => RunsSort::Metric(name.to_string()),
                        _ => {
                            return Err(invalid(format!(
                                "sort '{other}' is not a column; expected run, status, attempts, worker, \
                                 duration, cost, param.NAME or metric.NAME"
                            )))
                        }
                    },
                }
            }
            "order" => {
                query.descending = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    other => return Err(invalid(format!("order '{other}': expected asc or desc"))),
                }
            }
            "page" => {
                let page = value.parse::<u64>().ok().filter(|p| *p >= 1).ok_or_else(|| {
                    invalid(format!("page '{value}' is not a page number (from 1)"))
                })?;
                query.page = page - 1;
            }
            "per_page" => {
                query.per_page = value.parse::<u64>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                    invalid(format!("per_page '{value}': expected a number from 1 to 1000"))
                })?;
                filters.push((key.clone(), value.clone()));
            }
            other => match other.strip_prefix("p.") {
                Some(param) => {
                    query.params.push((param.to_string(), value.clone()));
                    filters.push((key.clone(), value.clone()));
                }
                None => {
                    return Err(invalid(format!(
                        "unknown query parameter '{other}'; expected status, variation, p.NAME, sort, order, page or per_page"
                    )))
                }
            },
        }
    }
    Ok((query, filters))
}

/// The runs explorer: a page of runs, filtered and sorted by the store.
pub async fn runs(
    State(http): State<Http>,
    Path(name): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Html<String>, PageError> {
    let (query, filters) = runs_query(&pairs)?;
    let (root, owned, asked) = (http.root.clone(), name.clone(), query.clone());
    let page =
        tokio::task::spawn_blocking(move || crate::store::read_runs_page(&root, &owned, &asked))
            .await
            .map_err(|e| ApiError(Error::Internal(e.to_string())))?
            .map_err(ApiError)?;
    Ok(Html(pages::runs_explorer(pages::RunsExplorerPage {
        experiment: &name,
        page: &page,
        query: &query,
        filters,
    })))
}

pub async fn run_json(
    State(http): State<Http>,
    Path((name, run)): Path<(String, String)>,
) -> Result<axum::Json<RunDetails>, ApiError> {
    Ok(axum::Json(run_details(&http, name, run).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(of_final: bool) -> FiguresCache {
        let cache = FiguresCache::default();
        cache.by_name.lock().unwrap().insert(
            "e".into(),
            MadeFigures {
                at: Instant::now(),
                took: Duration::from_millis(1),
                of_final,
                figures: Arc::new((Vec::new(), Vec::new(), Vec::new())),
            },
        );
        cache
    }

    #[test]
    fn figures_from_before_the_end_are_not_shown_once_it_ended() {
        let before_the_end = cache_with(false);
        assert!(
            before_the_end.fresh("e", false).is_some(),
            "fresh while it runs"
        );
        assert!(
            before_the_end.fresh("e", true).is_none(),
            "the end's results must be read again"
        );
        let after_the_end = cache_with(true);
        assert!(after_the_end.fresh("e", true).is_some());
        assert!(after_the_end.fresh("e", false).is_some());
        assert!(after_the_end.fresh("other", true).is_none());
    }
}
