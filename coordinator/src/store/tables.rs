//! Tables for readers beyond Flotilla (`flotilla export --table calls`,
//! `flotilla ls --from-root`, the Python module): an experiment's LLM calls
//! and the experiments of a root, read with a read-only connection so that
//! they can be read while a coordinator writes (ARCHITECTURE.md, "Storage").

use std::path::Path;

use flotilla_shared::clock::rfc3339;
use flotilla_shared::naming::run_id;
use flotilla_shared::status::RunStatus;
use flotilla_shared::Result;
use rusqlite::types::ValueRef;
use serde_json::{json, Map, Value};

use super::read::{open_read_only, sql, stored_config};
use crate::outputs::{Column, ColumnKind};

/// A table as rows of JSON values under typed columns.
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

/// The columns of the calls table a reader gets, in order, after `run_id`:
/// what each holds. Integers that are flags read as booleans.
const CALL_COLUMNS: [(&str, ColumnKind); 27] = [
    ("variation", ColumnKind::Int),
    ("repetition", ColumnKind::Int),
    ("attempt", ColumnKind::Int),
    ("call", ColumnKind::Int),
    ("started_at_ms", ColumnKind::Int),
    ("provider", ColumnKind::Text),
    ("model", ColumnKind::Text),
    ("api", ColumnKind::Text),
    ("streamed", ColumnKind::Bool),
    ("input_tokens", ColumnKind::Int),
    ("output_tokens", ColumnKind::Int),
    ("cached_input_tokens", ColumnKind::Int),
    ("cost_usd", ColumnKind::Float),
    ("cost_is_worst_case", ColumnKind::Bool),
    ("latency_ms", ColumnKind::Float),
    ("time_to_first_token_ms", ColumnKind::Float),
    ("retries", ColumnKind::Int),
    ("status", ColumnKind::Text),
    ("error", ColumnKind::Text),
    ("cache", ColumnKind::Text),
    ("would_cost_usd", ColumnKind::Float),
    ("cached_from_experiment", ColumnKind::Text),
    ("cached_from_run", ColumnKind::Text),
    ("cached_recorded_at_ms", ColumnKind::Int),
    ("tier", ColumnKind::Text),
    ("tier_saved_usd", ColumnKind::Float),
    ("tier_refusals", ColumnKind::Int),
];

/// Every LLM call of experiment `name`, one row per call of every attempt,
/// in the order of runs, attempts and calls.
pub fn read_calls(root: &Path, name: &str) -> Result<Table> {
    let connection = open_read_only(root)?;
    let (id, _) = stored_config(&connection, root, name)?;
    let names: Vec<&str> = CALL_COLUMNS.iter().map(|(name, _)| *name).collect();
    let mut query = connection
        .prepare(&format!(
            "SELECT {} FROM calls WHERE experiment_id = ? \
             ORDER BY variation, repetition, attempt, call",
            names.join(", ")
        ))
        .map_err(sql)?;
    let rows = query
        .query_map([id], |row| {
            let mut values = Vec::with_capacity(CALL_COLUMNS.len() + 1);
            let variation: u32 = row.get(0)?;
            let repetition: u32 = row.get(1)?;
            values.push(Value::from(run_id(variation, repetition)));
            for (index, (_, kind)) in CALL_COLUMNS.iter().enumerate() {
                values.push(json_of(row.get_ref(index)?, *kind));
            }
            Ok(values)
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    let mut columns = vec![Column {
        name: "run_id".into(),
        kind: ColumnKind::Text,
        part: "run",
    }];
    columns.extend(CALL_COLUMNS.iter().map(|(name, kind)| Column {
        name: name.to_string(),
        kind: *kind,
        part: "call",
    }));
    Ok(Table { columns, rows })
}

fn json_of(value: ValueRef<'_>, kind: ColumnKind) -> Value {
    match (value, kind) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(flag), ColumnKind::Bool) => Value::Bool(flag != 0),
        (ValueRef::Integer(n), _) => Value::from(n),
        (ValueRef::Real(x), _) => Value::from(x),
        (ValueRef::Text(text), _) => Value::from(String::from_utf8_lossy(text).into_owned()),
        (ValueRef::Blob(_), _) => Value::Null,
    }
}

/// The root's experiments as `flotilla ls --json` shows a coordinator's:
/// name, description, state, runs by status, directory, spend and times.
pub fn read_experiment_list(root: &Path) -> Result<Vec<Value>> {
    let connection = open_read_only(root)?;
    let mut query = connection
        .prepare(
            "SELECT e.id, e.name, e.state, e.config_json, e.started_at_ms, e.finished_at_ms, \
             (SELECT SUM(cost_usd) FROM runs r WHERE r.experiment_id = e.id) \
             FROM experiments e ORDER BY e.started_at_ms, e.name",
        )
        .map_err(sql)?;
    let experiments = query
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<i64>>(5)?,
                row.get::<_, Option<f64>>(6)?,
            ))
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    let mut counted = connection
        .prepare("SELECT status, COUNT(*) FROM runs WHERE experiment_id = ? GROUP BY status")
        .map_err(sql)?;
    let mut list = Vec::with_capacity(experiments.len());
    for (id, name, state, config_json, started_at_ms, finished_at_ms, cost) in experiments {
        let mut counts: Map<String, Value> = RunStatus::ALL
            .iter()
            .map(|status| (status.to_string(), Value::from(0)))
            .collect();
        let mut total = 0_i64;
        for count in counted
            .query_map([id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(sql)?
        {
            let (status, count) = count.map_err(sql)?;
            total += count;
            counts.insert(status, Value::from(count));
        }
        let description = serde_json::from_str::<Value>(&config_json)
            .ok()
            .and_then(|config| config.get("description").cloned())
            .filter(|d| d.as_str().is_some_and(|d| !d.is_empty()));
        list.push(json!({
            "name": name,
            "description": description,
            "state": state,
            "total_runs": total,
            "counts": counts,
            "directory": root.join(&name).display().to_string(),
            "cost_usd": cost.unwrap_or(0.0),
            "started_at": rfc3339(started_at_ms),
            "finished_at": finished_at_ms.map(rfc3339),
        }));
    }
    Ok(list)
}

/// What the runs explorer asks for: a page of an experiment's runs, filtered
/// and sorted in SQL so that a million runs cost one indexed range and a
/// sort, never a million rows sent.
#[derive(Debug, Clone, Default)]
pub struct RunsQuery {
    pub status: Option<RunStatus>,
    pub variation: Option<u32>,
    /// Parameter name and value as written in a cell (`0.1`, `grim`).
    pub params: Vec<(String, String)>,
    pub sort: RunsSort,
    pub descending: bool,
    /// From 0.
    pub page: u64,
    pub per_page: u64,
}

/// A column the explorer sorts by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RunsSort {
    #[default]
    Run,
    Status,
    Attempts,
    Worker,
    Duration,
    Cost,
    Param(String),
    Metric(String),
}

/// One run on a page of the explorer.
#[derive(Debug, Clone)]
pub struct RunLine {
    pub variation: u32,
    pub repetition: u32,
    pub status: String,
    pub attempts: u32,
    pub worker: Option<String>,
    pub duration_s: Option<f64>,
    pub cost_usd: Option<f64>,
    pub metrics: Map<String, Value>,
}

/// A page of runs, how many match in all, and each variation's parameters.
#[derive(Debug, Clone)]
pub struct RunsPage {
    pub matching: u64,
    pub runs: Vec<RunLine>,
    pub variations: Vec<(u32, Map<String, Value>)>,
    /// Declared metrics first, then the others the page's runs report.
    pub metrics: Vec<String>,
    /// With one variation asked for: each metric's values over its
    /// succeeded runs (all of them, not only the page's), sorted.
    pub distributions: Vec<Distribution>,
}

/// One metric's values over a variation's succeeded runs.
#[derive(Debug, Clone)]
pub struct Distribution {
    pub metric: String,
    /// Numbers (booleans as 0 and 1), sorted.
    pub values: Vec<f64>,
    pub boolean: bool,
}

fn distributions(
    connection: &rusqlite::Connection,
    id: i64,
    variation: u32,
    metrics: &[String],
) -> Result<Vec<Distribution>> {
    let mut by_metric: Vec<Distribution> = metrics
        .iter()
        .map(|metric| Distribution {
            metric: metric.clone(),
            values: Vec::new(),
            boolean: true,
        })
        .collect();
    let mut statement = connection
        .prepare(
            "SELECT metrics_json FROM runs WHERE experiment_id = ? AND variation = ? \
             AND status = 'succeeded' AND metrics_json IS NOT NULL",
        )
        .map_err(sql)?;
    let mut rows = statement
        .query(rusqlite::params![id, variation])
        .map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let text: String = row.get(0).map_err(sql)?;
        let Ok(Value::Object(reported)) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for distribution in &mut by_metric {
            match reported.get(&distribution.metric) {
                Some(Value::Bool(flag)) => distribution.values.push(f64::from(u8::from(*flag))),
                Some(value) => {
                    if let Some(number) = value.as_f64().filter(|x| x.is_finite()) {
                        distribution.boolean = false;
                        distribution.values.push(number);
                    }
                }
                None => {}
            }
        }
    }
    for distribution in &mut by_metric {
        distribution.values.sort_by(f64::total_cmp);
    }
    by_metric.retain(|d| !d.values.is_empty());
    Ok(by_metric)
}

/// A JSON path naming one key, for json_extract: `$."name"`.
fn json_path(key: &str) -> String {
    format!("$.\"{}\"", key.replace('"', "\\\""))
}

/// The text a filter compares with: strings bare, the rest as JSON.
fn cell_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A page of experiment `name`'s runs as `query` asks.
pub fn read_runs_page(root: &Path, name: &str, query: &RunsQuery) -> Result<RunsPage> {
    let connection = open_read_only(root)?;
    let (id, config) = stored_config(&connection, root, name)?;
    let variations: Vec<(u32, Map<String, Value>)> = connection
        .prepare("SELECT variation, params_json FROM variations WHERE experiment_id = ? ORDER BY variation")
        .map_err(sql)?
        .query_map([id], |row| {
            let params: String = row.get(1)?;
            Ok((row.get::<_, u32>(0)?, serde_json::from_str(&params).unwrap_or_default()))
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    // Parameter filters pick variations: their parameters are the variations'.
    let chosen: Vec<u32> = variations
        .iter()
        .filter(|(index, params)| {
            query.variation.is_none_or(|v| v == *index)
                && query
                    .params
                    .iter()
                    .all(|(name, value)| params.get(name).is_some_and(|p| &cell_text(p) == value))
        })
        .map(|(index, _)| *index)
        .collect();
    let mut conditions = format!(
        "r.experiment_id = ?1 AND r.variation IN ({})",
        if chosen.is_empty() {
            "NULL".to_string()
        } else {
            chosen
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    );
    let mut arguments: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(id)];
    if let Some(status) = query.status {
        arguments.push(Box::new(status.to_string()));
        conditions.push_str(&format!(" AND r.status = ?{}", arguments.len()));
    }
    let matching = connection
        .query_row(
            &format!("SELECT COUNT(*) FROM runs r WHERE {conditions}"),
            rusqlite::params_from_iter(arguments.iter()),
            |row| row.get::<_, i64>(0),
        )
        .map_err(sql)? as u64;
    let key = match &query.sort {
        RunsSort::Run => "r.variation".to_string(),
        RunsSort::Status => "r.status".to_string(),
        RunsSort::Attempts => "r.attempts".to_string(),
        RunsSort::Worker => "r.worker".to_string(),
        RunsSort::Duration => "r.duration_s".to_string(),
        RunsSort::Cost => "r.cost_usd".to_string(),
        RunsSort::Param(name) => {
            arguments.push(Box::new(json_path(name)));
            format!("json_extract(v.params_json, ?{})", arguments.len())
        }
        RunsSort::Metric(name) => {
            arguments.push(Box::new(json_path(name)));
            format!("json_extract(r.metrics_json, ?{})", arguments.len())
        }
    };
    let direction = if query.descending { "DESC" } else { "ASC" };
    // Missing values last either way; ties in run order.
    let order = if query.sort == RunsSort::Run {
        format!("r.variation {direction}, r.repetition {direction}")
    } else {
        format!("({key}) IS NULL, {key} {direction}, r.variation, r.repetition")
    };
    let per_page = query.per_page.clamp(1, 1000);
    let offset = query.page.saturating_mul(per_page);
    let mut statement = connection
        .prepare(&format!(
            "SELECT r.variation, r.repetition, r.status, r.attempts, r.worker, r.duration_s, r.cost_usd, r.metrics_json \
             FROM runs r JOIN variations v ON v.experiment_id = r.experiment_id AND v.variation = r.variation \
             WHERE {conditions} ORDER BY {order} LIMIT {per_page} OFFSET {offset}"
        ))
        .map_err(sql)?;
    let runs = statement
        .query_map(rusqlite::params_from_iter(arguments.iter()), |row| {
            let metrics: Option<String> = row.get(7)?;
            Ok(RunLine {
                variation: row.get(0)?,
                repetition: row.get(1)?,
                status: row.get(2)?,
                attempts: row.get(3)?,
                worker: row.get(4)?,
                duration_s: row.get(5)?,
                cost_usd: row.get(6)?,
                metrics: metrics
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_default(),
            })
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    let mut metrics: Vec<String> = config.metrics.iter().map(|m| m.name.clone()).collect();
    for run in &runs {
        for name in run.metrics.keys() {
            if !metrics.contains(name) {
                metrics.push(name.clone());
            }
        }
    }
    let distributions = match query.variation {
        Some(variation) => distributions(&connection, id, variation, &metrics)?,
        None => Vec::new(),
    };
    Ok(RunsPage {
        matching,
        runs,
        variations,
        metrics,
        distributions,
    })
}

/// Runs that ended and what they cost, per `bucket_ms` since `start_ms`:
/// `(bucket, runs, dollars)`, for the experiment page's chart. Grouped in
/// SQL, so a million runs give at most a few dozen rows.
pub fn read_progress(
    root: &Path,
    name: &str,
    start_ms: i64,
    bucket_ms: i64,
) -> Result<Vec<(i64, u64, f64)>> {
    let connection = open_read_only(root)?;
    let (id, _) = stored_config(&connection, root, name)?;
    let mut statement = connection
        .prepare(
            "SELECT MAX(0, (finished_at_ms - ?2) / ?3) AS bucket, COUNT(*), TOTAL(cost_usd) FROM runs \
             WHERE experiment_id = ?1 AND finished_at_ms IS NOT NULL GROUP BY bucket ORDER BY bucket",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map(rusqlite::params![id, start_ms, bucket_ms.max(1)], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)? as u64,
                row.get::<_, f64>(2)?,
            ))
        })
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sql)?;
    Ok(rows)
}
