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
