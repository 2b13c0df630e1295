//! The files of an experiment directory (ARCHITECTURE.md, "Storage"), written atomically (a
//! new run's result.json in place, see `write_run_files`):
//! config.yaml, .meta/config.hash, runs/<run-id>/*, batch-summary.json, results.csv.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use flotilla_shared::atomic_file::write_atomic;
use flotilla_shared::calls::{CacheSavings, TierSpend};
use flotilla_shared::clock::rfc3339;
use flotilla_shared::config::ExperimentConfig;
use flotilla_shared::grid::run_seed;
use flotilla_shared::naming::{run_id, variation_name};
use flotilla_shared::{Error, Result};
use serde_json::{json, Map, Value};

use crate::state::{AttemptRecord, Counts, ExperimentState, RunStatus};

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |e| Error::io(context, e)
}

/// config.yaml (read-only, as submitted) and .meta/config.hash.
pub fn write_config_files(dir: &Path, config_yaml: &str, hash: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = dir.join(".meta");
    std::fs::create_dir_all(&meta).map_err(io(format!("cannot create {}", meta.display())))?;
    let config_path = dir.join("config.yaml");
    write_atomic(&config_path, config_yaml.as_bytes())
        .map_err(io(format!("cannot write {}", config_path.display())))?;
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o444)).map_err(io(
        format!("cannot make {} read-only", config_path.display()),
    ))?;
    let hash_path = meta.join("config.hash");
    write_atomic(&hash_path, format!("{hash}\n").as_bytes())
        .map_err(io(format!("cannot write {}", hash_path.display())))
}

/// Experiments with more runs than this group their run directories.
pub const FLAT_RUNS_LIMIT: usize = 10_000;
/// Repetitions per group of a variation's run directories.
const REPETITIONS_PER_GROUP: u32 = 10_000;

/// Where a run's directory goes (ARCHITECTURE.md, "Storage"):
/// `runs/<run-id>/` while the experiment has at most [`FLAT_RUNS_LIMIT`]
/// runs; beyond, `runs/<variation>/<group>/<run-id>/`, a group per 10,000
/// repetitions, so that no directory holds more than about 10,000 entries
/// (`runs/var-003/000/var-003-run-007/`). A run that already has a flat
/// directory (its experiment grew past the limit) keeps it.
pub fn run_dir_for(
    experiment_dir: &Path,
    variation: u32,
    repetition: u32,
    experiment_runs: usize,
) -> std::path::PathBuf {
    let flat = experiment_dir
        .join("runs")
        .join(run_id(variation, repetition));
    if experiment_runs <= FLAT_RUNS_LIMIT || flat.is_dir() {
        return flat;
    }
    grouped_run_dir(experiment_dir, variation, repetition)
}

fn grouped_run_dir(experiment_dir: &Path, variation: u32, repetition: u32) -> std::path::PathBuf {
    experiment_dir
        .join("runs")
        .join(variation_name(variation))
        .join(format!(
            "{:03}",
            (repetition.max(1) - 1) / REPETITIONS_PER_GROUP
        ))
        .join(run_id(variation, repetition))
}

/// The directory a run's files are in, for readers: its grouped place if
/// it has one, else the flat one.
pub fn find_run_dir(experiment_dir: &Path, variation: u32, repetition: u32) -> std::path::PathBuf {
    let grouped = grouped_run_dir(experiment_dir, variation, repetition);
    if grouped.is_dir() {
        grouped
    } else {
        experiment_dir
            .join("runs")
            .join(run_id(variation, repetition))
    }
}

/// params.json of a run is a hard link to its variation's params file under
/// `.meta/params/`: parameters never change within a variation, and a link
/// costs no inode (inode allocation dominated the cost of short runs). The
/// link is tried first: one system call for every run but a variation's first.
fn link_params(experiment_dir: &Path, run_dir: &Path, record: &AttemptRecord) -> Result<()> {
    use std::io::ErrorKind;
    let target = run_dir.join("params.json");
    let shared = experiment_dir
        .join(".meta/params")
        .join(format!("{}.json", variation_name(record.variation)));
    let linked = match std::fs::hard_link(&shared, &target) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let dir = shared.parent().expect("params dir");
            std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
            write_atomic(&shared, record.params_json.as_bytes())
                .map_err(io(format!("cannot write {}", shared.display())))?;
            std::fs::hard_link(&shared, &target)
        }
        linked => linked,
    };
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        // File systems without hard links get a copy.
        Err(_) => write_atomic(&target, record.params_json.as_bytes())
            .map_err(io(format!("cannot write {}", target.display()))),
    }
}

/// Logs a worker ships only when the run wrote to them.
const LOGS: [&str; 2] = ["stdout.log", "stderr.log"];

/// The run directory of an attempt: params.json, result.json and what the
/// worker shipped (stdout.log and stderr.log when not empty, artifacts/ when
/// the run wrote any). Nothing else is created: every inode costs time on a
/// large sweep. The latest attempt's files replace an earlier attempt's.
pub fn write_run_files(experiment_dir: &Path, record: &AttemptRecord) -> Result<()> {
    let (Some(run_dir), Some(result)) = (&record.run_dir, &record.result) else {
        return Ok(());
    };
    let fresh = make_run_dir(run_dir)?;
    link_params(experiment_dir, run_dir, record)?;
    if record.attempt > 1 {
        remove_stale_logs(run_dir, &result.files)?;
    }
    for file in &result.files {
        let relative = Path::new(&file.path);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::Protocol(format!(
                "worker shipped a file with an unsafe path '{}'",
                file.path
            )));
        }
        let target = run_dir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        write_atomic(&target, &file.content)
            .map_err(io(format!("cannot write {}", target.display())))?;
    }
    let metrics: Value = result
        .metrics_json
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null);
    let document = json!({
        "run_id": run_id(record.variation, record.repetition),
        "experiment": record.experiment,
        "variation": record.variation,
        "repetition": record.repetition,
        "attempt": record.attempt,
        "status": record.run_status.as_str(),
        "attempt_outcome": record.outcome.as_str(),
        "worker": &*record.worker,
        "seed": record.seed,
        "started_at": rfc3339(result.started_at_ms),
        "finished_at": rfc3339(record.finished_at_ms),
        "duration_s": result.duration_s,
        "cost_usd": result.cost_usd,
        "exit_code": result.exit_code,
        "signal": result.signal,
        "timed_out": result.timed_out,
        "error": if result.error.is_empty() { Value::Null } else { Value::from(result.error.clone()) },
        "stderr_tail": result.stderr_tail,
        "metrics": metrics,
    });
    let path = run_dir.join("result.json");
    let content = pretty(&document);
    if fresh {
        // A directory this call made holds no earlier result.json that a
        // reader could see half replaced, and the run's row, committed after
        // this returns, is what says its files are complete (ARCHITECTURE.md,
        // invariant 4): no temp file and rename needed.
        std::fs::write(&path, content.as_bytes())
    } else {
        write_atomic(&path, content.as_bytes())
    }
    .map_err(io(format!("cannot write {}", path.display())))
}

/// Makes a run's directory (and its block's, the first time); true when it
/// did not exist before.
fn make_run_dir(run_dir: &Path) -> Result<bool> {
    match std::fs::create_dir(run_dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(run_dir)
                .map_err(io(format!("cannot create {}", run_dir.display())))?;
            Ok(true)
        }
        Err(e) => Err(Error::io(format!("cannot create {}", run_dir.display()), e)),
    }
}

/// An earlier attempt's log that this attempt did not write must not pass for its own.
fn remove_stale_logs(run_dir: &Path, shipped: &[flotilla_shared::run::ShippedFile]) -> Result<()> {
    for log in LOGS {
        if shipped.iter().any(|f| f.path == log) {
            continue;
        }
        let path = run_dir.join(log);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
    }
    Ok(())
}

/// The figures of batch-summary.json.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub state: ExperimentState,
    pub counts: Counts,
    pub spent_usd: f64,
    pub budget_usd: Option<f64>,
    /// The ledger's figures, when the experiment has a budget.
    pub budget: Option<crate::views::BudgetView>,
    /// Why the experiment ended as it did, when that is not plain.
    pub reason: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub now_ms: i64,
    pub config_hash: String,
}

pub fn summary_json(summary: &Summary) -> String {
    let end = summary.finished_at_ms.unwrap_or(summary.now_ms);
    let counts = &summary.counts;
    pretty(&json!({
        "name": summary.name,
        "state": summary.state,
        "total_runs": counts.total(),
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "pending": counts.pending,
        "running": counts.running,
        "cost_usd": summary.spent_usd,
        "budget_usd": summary.budget_usd,
        "budget": summary.budget,
        "reason": summary.reason,
        "started_at": rfc3339(summary.started_at_ms),
        "finished_at": summary.finished_at_ms.map(rfc3339),
        "duration_s": (end - summary.started_at_ms).max(0) as f64 / 1000.0,
        "config_hash": summary.config_hash,
        "updated_at": rfc3339(summary.now_ms),
    }))
}

pub fn write_summary(dir: &Path, summary: &Summary) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let path = dir.join("batch-summary.json");
    write_atomic(&path, summary_json(summary).as_bytes())
        .map_err(io(format!("cannot write {}", path.display())))
}

/// A run's metrics in the order reported, their names shared among the rows
/// of an export: a million rows hold a few names, not a million maps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetrics(Vec<(std::sync::Arc<str>, Value)>);

impl RunMetrics {
    /// The metrics of a JSON object (anything else holds none); names are
    /// shared through `names`.
    pub fn parse(text: &str, names: &mut BTreeSet<std::sync::Arc<str>>) -> RunMetrics {
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            return RunMetrics::default();
        };
        RunMetrics(
            map.into_iter()
                .map(|(name, value)| {
                    let shared = match names.get(name.as_str()) {
                        Some(shared) => shared.clone(),
                        None => {
                            let shared: std::sync::Arc<str> = name.into();
                            names.insert(shared.clone());
                            shared
                        }
                    };
                    (shared, value)
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| &**n)
    }

    fn to_object(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }
}

impl FromIterator<(String, Value)> for RunMetrics {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(items: I) -> Self {
        RunMetrics(items.into_iter().map(|(n, v)| (n.into(), v)).collect())
    }
}

/// One row of results.csv, as read from the database.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub variation: u32,
    pub repetition: u32,
    pub attempt: u32,
    pub status: RunStatus,
    pub worker: Option<String>,
    pub duration_s: Option<f64>,
    /// Its variation's parameters, shared by the variation's rows.
    pub params: std::sync::Arc<Map<String, Value>>,
    pub metrics: RunMetrics,
    pub cost_usd: Option<f64>,
    /// Why its last attempt failed, if it did.
    pub error: Option<String>,
}

/// A worker's setup.log or teardown.log under the experiment.
pub fn write_hook_log(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    write_atomic(path, content).map_err(io(format!("cannot write {}", path.display())))
}

/// results.jsonl: one object per run, its parameters and metrics as objects
/// with their names as written (`actors.regulator.model` stays one key).
pub fn results_jsonl(config: &ExperimentConfig, rows: &[ResultRow]) -> String {
    let mut out = String::with_capacity(rows.len() * 160);
    for row in rows {
        push_jsonl_line(&mut out, config, row);
    }
    out
}

fn push_jsonl_line(out: &mut String, config: &ExperimentConfig, row: &ResultRow) {
    {
        let line = json!({
            "run_id": run_id(row.variation, row.repetition),
            "variation": row.variation,
            "repetition": row.repetition,
            "seed": run_seed(config.seed, row.repetition),
            "attempt": row.attempt,
            "status": row.status,
            "worker": row.worker,
            "duration_s": row.duration_s,
            "cost_usd": row.cost_usd,
            "error": row.error.as_deref().filter(|e| !e.is_empty()),
            "params": *row.params,
            "metrics": row.metrics.to_object(),
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
}

/// The run's own columns of results.csv, before its parameters and metrics,
/// with what each holds.
const RUN_COLUMNS: [(&str, ColumnKind); 9] = [
    ("run_id", ColumnKind::Text),
    ("variation", ColumnKind::Int),
    ("repetition", ColumnKind::Int),
    ("seed", ColumnKind::Int),
    ("attempt", ColumnKind::Int),
    ("status", ColumnKind::Text),
    ("worker", ColumnKind::Text),
    ("duration_s", ColumnKind::Float),
    ("cost_usd", ColumnKind::Float),
];

/// What a column of an export holds, for readers that want types rather
/// than text (`flotilla export --schema`, the Python module's DataFrame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    Int,
    Float,
    Bool,
    /// Strings, and values that are not all of one kind (JSON text).
    Text,
}

impl ColumnKind {
    /// The kind of one JSON value; None for a missing one.
    fn of(value: &Value) -> Option<ColumnKind> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(ColumnKind::Bool),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(ColumnKind::Int),
            Value::Number(_) => Some(ColumnKind::Float),
            _ => Some(ColumnKind::Text),
        }
    }

    /// The kind of a column holding values of both kinds: integers among
    /// decimals are decimals; anything else mixed is text.
    fn join(self, other: ColumnKind) -> ColumnKind {
        use ColumnKind::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Int, Float) | (Float, Int) => Float,
            _ => Text,
        }
    }

    /// The kind of a column of these values; decimal when none is there yet
    /// (a declared metric no run has reported).
    fn of_values<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> ColumnKind {
        values
            .flatten()
            .filter_map(ColumnKind::of)
            .reduce(ColumnKind::join)
            .unwrap_or(ColumnKind::Float)
    }
}

/// One column of an export: its name as in the header, what it holds and
/// which part of the run it comes from (`run`, `param` or `metric`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
    pub part: &'static str,
}

/// The columns of results.csv for rows held in memory: the names
/// [`ResultsHeader`] gives them, with what each column holds.
struct ResultColumns {
    header: ResultsHeader,
    columns: Vec<Column>,
}

impl ResultColumns {
    fn of(config: &ExperimentConfig, rows: &[ResultRow]) -> ResultColumns {
        // Inserted one by one: a million rows name the same few keys, and
        // collecting them all first would sort millions of duplicates.
        let mut params: BTreeSet<String> = BTreeSet::new();
        let mut previous: Option<&std::sync::Arc<Map<String, Value>>> = None;
        for row in rows {
            // Rows of one variation share their map: look at each map once.
            if previous.is_some_and(|p| std::sync::Arc::ptr_eq(p, &row.params)) {
                continue;
            }
            previous = Some(&row.params);
            for key in row.params.keys() {
                if !params.contains(key) {
                    params.insert(key.clone());
                }
            }
        }
        let mut metrics: BTreeSet<String> = BTreeSet::new();
        for key in rows.iter().flat_map(|r| r.metrics.names()) {
            if !metrics.contains(key) {
                metrics.insert(key.to_string());
            }
        }
        let header = ResultsHeader::new(config, params, metrics);
        let kinds = RUN_COLUMNS
            .iter()
            .map(|(_, kind)| (*kind, "run"))
            .chain(header.params.iter().map(|p| {
                let kind = ColumnKind::of_values(rows.iter().map(|r| r.params.get(p)));
                (kind, "param")
            }))
            .chain(header.metrics.iter().map(|m| {
                let kind = ColumnKind::of_values(rows.iter().map(|r| r.metrics.get(m)));
                (kind, "metric")
            }));
        let columns = header
            .names
            .iter()
            .zip(kinds)
            .map(|(name, (kind, part))| Column {
                name: name.clone(),
                kind,
                part,
            })
            .collect();
        ResultColumns { header, columns }
    }
}

/// The columns `results_csv` writes for these rows, with their kinds.
pub fn results_columns(config: &ExperimentConfig, rows: &[ResultRow]) -> Vec<Column> {
    ResultColumns::of(config, rows).columns
}

/// results.csv: one row per run under the header `ResultColumns` describes;
/// a missing value is an empty cell.
pub fn results_csv(config: &ExperimentConfig, rows: &[ResultRow]) -> String {
    let layout = ResultColumns::of(config, rows);
    let mut out = String::with_capacity(rows.len() * 96);
    push_row(&mut out, layout.columns.iter().map(|c| c.name.as_str()));
    for row in rows {
        push_csv_line(
            &mut out,
            config,
            &layout.header.params,
            &layout.header.metrics,
            row,
        );
    }
    out
}

/// One run's line of results.csv, its cells written straight into `out`: no
/// text per cell but for values that may need quoting.
fn push_csv_line(
    out: &mut String,
    config: &ExperimentConfig,
    params: &[impl AsRef<str>],
    metrics: &[impl AsRef<str>],
    row: &ResultRow,
) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{},{},{},{},{},{},",
        run_id(row.variation, row.repetition),
        row.variation,
        row.repetition,
        run_seed(config.seed, row.repetition),
        row.attempt,
        row.status,
    );
    push_cell(out, row.worker.as_deref().unwrap_or_default());
    out.push(',');
    if let Some(duration) = row.duration_s {
        let _ = write!(out, "{duration:.3}");
    }
    out.push(',');
    if let Some(cost) = row.cost_usd {
        let _ = write!(out, "{cost}");
    }
    let values = params
        .iter()
        .map(|p| row.params.get(p.as_ref()))
        .chain(metrics.iter().map(|m| row.metrics.get(m.as_ref())));
    for value in values {
        out.push(',');
        match value {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => push_cell(out, text),
            Some(other) => push_cell(out, &other.to_string()),
        }
    }
    out.push('\n');
}

/// The header of results.csv: the run's own columns (`run_id, variation,
/// repetition, seed, attempt, status, worker, duration_s, cost_usd`), then
/// one per parameter and one per metric (declared metrics first, then the
/// others alphabetically). Names stay unique: a parameter named like a run
/// column gets a `param.` prefix, a metric named like either a `metric.` one.
pub struct ResultsHeader {
    params: Vec<String>,
    metrics: Vec<String>,
    names: Vec<String>,
}

impl ResultsHeader {
    pub fn new(
        config: &ExperimentConfig,
        params: BTreeSet<String>,
        reported_metrics: BTreeSet<String>,
    ) -> ResultsHeader {
        let mut metrics: Vec<String> = config.metrics.iter().map(|m| m.name.clone()).collect();
        let others: Vec<String> = reported_metrics
            .into_iter()
            .filter(|m| !metrics.contains(m))
            .collect();
        metrics.extend(others);
        let is_run_column = |name: &str| RUN_COLUMNS.iter().any(|(run, _)| *run == name);
        let names = RUN_COLUMNS
            .iter()
            .map(|(name, _)| name.to_string())
            .chain(params.iter().map(|p| {
                if is_run_column(p) {
                    format!("param.{p}")
                } else {
                    p.clone()
                }
            }))
            .chain(metrics.iter().map(|m| {
                if params.contains(m) || is_run_column(m) {
                    format!("metric.{m}")
                } else {
                    m.clone()
                }
            }))
            .collect();
        ResultsHeader {
            params: params.into_iter().collect(),
            metrics,
            names,
        }
    }
}

/// Writes results.csv, results.jsonl and the figures of batch-costs.json one
/// run at a time, so that a sweep of ten million runs is never in memory
/// (ARCHITECTURE.md, "Scale"). Each file is written beside its final name
/// and renamed over it by [`ResultsWriter::finish`]: a reader sees the old
/// file or the new one, never a torn one.
pub struct ResultsWriter<'a> {
    config: &'a ExperimentConfig,
    header: ResultsHeader,
    csv: TempFile,
    jsonl: TempFile,
    line: String,
    costs: CostTally,
}

/// A file being written under a temporary name beside `path`.
struct TempFile {
    path: std::path::PathBuf,
    temp: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl TempFile {
    fn create(path: std::path::PathBuf) -> Result<TempFile> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let temp = path.with_file_name(format!(".{name}.writing"));
        let file =
            std::fs::File::create(&temp).map_err(io(format!("cannot write {}", temp.display())))?;
        Ok(TempFile {
            path,
            temp,
            out: std::io::BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn write(&mut self, text: &str) -> Result<()> {
        use std::io::Write;
        self.out
            .write_all(text.as_bytes())
            .map_err(io(format!("cannot write {}", self.temp.display())))
    }

    fn finish(mut self) -> Result<()> {
        use std::io::Write;
        self.out
            .flush()
            .map_err(io(format!("cannot write {}", self.temp.display())))?;
        std::fs::rename(&self.temp, &self.path)
            .map_err(io(format!("cannot write {}", self.path.display())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Renamed away when finished; a writer dropped half way leaves nothing.
        let _ = std::fs::remove_file(&self.temp);
    }
}

impl<'a> ResultsWriter<'a> {
    pub fn create(
        dir: &Path,
        config: &'a ExperimentConfig,
        header: ResultsHeader,
    ) -> Result<ResultsWriter<'a>> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut writer = ResultsWriter {
            config,
            csv: TempFile::create(dir.join("results.csv"))?,
            jsonl: TempFile::create(dir.join("results.jsonl"))?,
            header,
            line: String::with_capacity(1024),
            costs: CostTally::default(),
        };
        writer.line.clear();
        push_row(
            &mut writer.line,
            writer.header.names.iter().map(String::as_str),
        );
        writer.csv.write(&writer.line)?;
        Ok(writer)
    }

    pub fn push(&mut self, row: &ResultRow) -> Result<()> {
        self.line.clear();
        push_csv_line(
            &mut self.line,
            self.config,
            &self.header.params,
            &self.header.metrics,
            row,
        );
        self.csv.write(&self.line)?;
        self.line.clear();
        push_jsonl_line(&mut self.line, self.config, row);
        self.jsonl.write(&self.line)?;
        self.costs.add(row);
        Ok(())
    }

    /// Puts both files in place; what batch-costs.json needs of the rows.
    pub fn finish(self) -> Result<CostTally> {
        let ResultsWriter {
            csv, jsonl, costs, ..
        } = self;
        csv.finish()?;
        jsonl.finish()?;
        Ok(costs)
    }
}

pub(crate) fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// One CSV cell, quoted when it holds a separator, a quote or a line break.
fn push_cell(out: &mut String, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

pub(crate) fn push_row<'a>(out: &mut String, cells: impl Iterator<Item = &'a str>) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(out, cell);
    }
    out.push('\n');
}

/// What an experiment's calls of one provider's model cost.
#[derive(Debug, Clone, PartialEq)]
pub struct CallCost {
    pub provider: String,
    pub model: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Calls priced at their worst case because their usage could not be read.
    pub worst_case_calls: u64,
    /// Calls answered from the response cache, and what they would have cost.
    pub cache_hits: u64,
    pub saved_usd: f64,
}

/// What an experiment's metered LLM calls cost: by model, what the response
/// cache saved, and what each service tier spent and saved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallSpending {
    pub by_model: Vec<CallCost>,
    pub cache: CacheSavings,
    pub tiers: TierSpend,
}

/// batch-costs.json: dollars spent in total, by variation, by run (runs with
/// no cost are left out), the metered LLM calls by model, by provider and by
/// service tier, and what the response cache and the flex tier saved.
/// What batch-costs.json needs of the rows, gathered one row at a time: 16
/// bytes a run that reported a cost, nothing for the others.
#[derive(Debug, Default)]
pub struct CostTally {
    /// (dollars, runs with a cost, runs that succeeded) by variation.
    by_variation: BTreeMap<u32, (f64, u64, u64)>,
    per_run: Vec<(u32, u32, f64)>,
}

impl CostTally {
    pub fn add(&mut self, row: &ResultRow) {
        let entry = self.by_variation.entry(row.variation).or_default();
        if row.status == RunStatus::Succeeded {
            entry.2 += 1;
        }
        if let Some(cost) = row.cost_usd {
            entry.0 += cost;
            entry.1 += 1;
            self.per_run.push((row.variation, row.repetition, cost));
        }
    }

    /// batch-costs.json of the rows added.
    pub fn json(&self, spending: &CallSpending) -> String {
        costs_document(self, spending)
    }
}

fn costs_document(tally: &CostTally, spending: &CallSpending) -> String {
    let (calls, cache, tiers) = (&spending.by_model, &spending.cache, &spending.tiers);
    let by_variation = &tally.by_variation;
    let per_run: Map<String, Value> = tally
        .per_run
        .iter()
        .map(|(variation, repetition, cost)| (run_id(*variation, *repetition), json!(cost)))
        .collect();
    let total: f64 = by_variation.values().map(|(usd, _, _)| usd).sum();
    let variations: Vec<Value> = by_variation
        .iter()
        .map(|(variation, (usd, runs, succeeded))| {
            json!({
                "variation": variation,
                "cost_usd": usd,
                "runs_with_cost": runs,
                "cost_per_run_usd": (*runs > 0).then(|| usd / *runs as f64),
                "cost_per_success_usd": (*succeeded > 0 && *runs > 0).then(|| usd / *succeeded as f64),
            })
        })
        .collect();
    let by_model: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "provider": c.provider, "model": c.model, "calls": c.calls,
                "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                "cost_usd": c.cost_usd, "worst_case_calls": c.worst_case_calls,
                "cache_hits": c.cache_hits, "saved_usd": c.saved_usd,
            })
        })
        .collect();
    let mut by_provider: BTreeMap<&str, (u64, u64, u64, f64)> = BTreeMap::new();
    for c in calls {
        let entry = by_provider.entry(&c.provider).or_default();
        entry.0 += c.calls;
        entry.1 += c.input_tokens;
        entry.2 += c.output_tokens;
        entry.3 += c.cost_usd;
    }
    let by_provider: Vec<Value> = by_provider
        .iter()
        .map(|(provider, (count, input, output, usd))| {
            json!({"provider": provider, "calls": count, "input_tokens": input, "output_tokens": output, "cost_usd": usd})
        })
        .collect();
    pretty(&json!({
        "cost_usd": total,
        "runs_with_cost": per_run.len(),
        "by_variation": variations,
        "by_model": by_model,
        "by_provider": by_provider,
        "cache": {
            "calls": cache.calls, "hits": cache.hits, "saved_usd": cache.saved_usd,
            "recorded_from": cache.recorded_from_ms.map(flotilla_shared::clock::rfc3339),
            "recorded_to": cache.recorded_to_ms.map(flotilla_shared::clock::rfc3339),
        },
        "by_tier": tiers.tiers.iter().map(|line| json!({
            "tier": line.tier.as_str(), "calls": line.calls,
            "cost_usd": line.cost_usd, "saved_usd": line.saved_usd,
        })).collect::<Vec<_>>(),
        "tiers": {
            "saved_usd": tiers.saved_usd(), "flex_refusals": tiers.refusals,
            "fell_back_to_standard": tiers.fell_back,
        },
        "per_run": per_run,
    }))
}

pub fn write_costs(dir: &Path, content: &str) -> Result<()> {
    let path = dir.join("batch-costs.json");
    write_atomic(&path, content.as_bytes()).map_err(io(format!("cannot write {}", path.display())))
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("json serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_directories_are_flat_up_to_the_limit_and_grouped_beyond_keeping_flat_ones() {
        let dir = tempfile::tempdir().unwrap();
        let experiment = dir.path();
        assert_eq!(
            run_dir_for(experiment, 3, 7, FLAT_RUNS_LIMIT),
            experiment.join("runs/var-003-run-007")
        );
        assert_eq!(
            run_dir_for(experiment, 3, 7, FLAT_RUNS_LIMIT + 1),
            experiment.join("runs/var-003/000/var-003-run-007")
        );
        assert_eq!(
            run_dir_for(experiment, 3, 10_001, 1_000_000),
            experiment.join("runs/var-003/001/var-003-run-10001")
        );
        // A run written flat before its experiment grew stays where it is.
        std::fs::create_dir_all(experiment.join("runs/var-001-run-002")).unwrap();
        assert_eq!(
            run_dir_for(experiment, 1, 2, 1_000_000),
            experiment.join("runs/var-001-run-002")
        );
        assert_eq!(
            find_run_dir(experiment, 1, 2),
            experiment.join("runs/var-001-run-002")
        );
        std::fs::create_dir_all(experiment.join("runs/var-003/001/var-003-run-10001")).unwrap();
        assert_eq!(
            find_run_dir(experiment, 3, 10_001),
            experiment.join("runs/var-003/001/var-003-run-10001")
        );
    }
    use flotilla_shared::config::parse_experiment;

    #[test]
    fn csv_has_params_and_metrics_columns_and_quotes() {
        let config = parse_experiment(
            "name: x\nrun: {kind: noop}\nmetrics: [{name: score, goal: maximize}]\n",
            "x.yaml",
        )
        .unwrap();
        let mut params = Map::new();
        params.insert("strategy".into(), Value::from("tit, for tat"));
        let mut metrics = Map::new();
        metrics.insert("score".into(), Value::from(3.5));
        metrics.insert("extra".into(), Value::from(true));
        let rows = vec![ResultRow {
            variation: 1,
            repetition: 2,
            attempt: 1,
            status: RunStatus::Succeeded,
            worker: Some("w1".into()),
            duration_s: Some(0.25),
            params: std::sync::Arc::new(params),
            metrics: metrics.into_iter().collect(),
            cost_usd: Some(0.0125),
            error: None,
        }];
        let csv = results_csv(&config, &rows);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "run_id,variation,repetition,seed,attempt,status,worker,duration_s,cost_usd,strategy,score,extra"
        );
        let seed = run_seed(config.seed, 2);
        assert_eq!(
            lines[1],
            format!(
                "var-001-run-002,1,2,{seed},1,succeeded,w1,0.250,0.0125,\"tit, for tat\",3.5,true"
            )
        );
        let kinds: Vec<(String, ColumnKind, &str)> = results_columns(&config, &rows)
            .into_iter()
            .map(|c| (c.name, c.kind, c.part))
            .collect();
        assert_eq!(kinds[3], ("seed".into(), ColumnKind::Int, "run"));
        assert_eq!(
            kinds[9..],
            [
                ("strategy".into(), ColumnKind::Text, "param"),
                ("score".into(), ColumnKind::Float, "metric"),
                ("extra".into(), ColumnKind::Bool, "metric"),
            ]
        );
    }

    #[test]
    fn column_kinds_join_integers_into_decimals_and_mixtures_into_text() {
        let kind = |values: &[Value]| ColumnKind::of_values(values.iter().map(Some));
        assert_eq!(kind(&[json!(1), json!(2)]), ColumnKind::Int);
        assert_eq!(
            kind(&[json!(1), Value::Null, json!(2.5)]),
            ColumnKind::Float
        );
        assert_eq!(kind(&[json!(true), Value::Null]), ColumnKind::Bool);
        assert_eq!(kind(&[json!(true), json!(1)]), ColumnKind::Text);
        assert_eq!(kind(&[json!([1, 2])]), ColumnKind::Text);
        assert_eq!(kind(&[Value::Null]), ColumnKind::Float);
    }
}
