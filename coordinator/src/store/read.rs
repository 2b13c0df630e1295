//! The store's read interface for reports: an experiment's design, variations
//! and runs, read with a read-only connection so that a report can be made
//! while a coordinator writes. It lives beside the schema it reads
//! (ARCHITECTURE.md, "Storage"); the report crate never sees SQL.

use std::path::Path;

use flotilla_report::{ExperimentData, ExperimentDataBuilder, RunRecord};
use flotilla_shared::config::ExperimentConfig;
use flotilla_shared::grid::run_seed;
use flotilla_shared::status::{ExperimentState, RunStatus};
use flotilla_shared::{Error, Result};
use rusqlite::{Connection, OpenFlags};

use super::columns::parse_column;
use super::DATABASE_FILE;

pub(super) fn sql(error: rusqlite::Error) -> Error {
    Error::Internal(format!("cannot read {DATABASE_FILE}: {error}"))
}

/// Reads experiment `name` from the root's database.
pub fn read_experiment(root: &Path, name: &str) -> Result<ExperimentData> {
    let connection = open_read_only(root)?;
    read_with(&connection, root, name)
}

/// Reads several experiments through one connection (for `flotilla compare`).
pub fn read_experiments(root: &Path, names: &[String]) -> Result<Vec<ExperimentData>> {
    let connection = open_read_only(root)?;
    names
        .iter()
        .map(|name| read_with(&connection, root, name))
        .collect()
}

/// Experiment `name`'s config and every run as results.csv shows it, for `flotilla export`.
pub fn read_results(
    root: &Path,
    name: &str,
) -> Result<(ExperimentConfig, Vec<crate::outputs::ResultRow>)> {
    let connection = open_read_only(root)?;
    let (id, config) = stored_config(&connection, root, name)?;
    let rows = super::writes::result_rows(&connection, id).map_err(sql)?;
    Ok((config, rows))
}

/// Experiment `name`'s row id and its stored config.
pub(super) fn stored_config(
    connection: &Connection,
    root: &Path,
    name: &str,
) -> Result<(i64, ExperimentConfig)> {
    let (id, config_json) = connection
        .query_row(
            "SELECT id, config_json FROM experiments WHERE name = ?",
            [name],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NotFound(format!(
                "no experiment named '{name}' under {}",
                root.display()
            )),
            other => sql(other),
        })?;
    let config = ExperimentConfig::from_canonical_json(&config_json)
        .map_err(|e| Error::Internal(format!("stored config of '{name}' cannot be read: {e}")))?;
    Ok((id, config))
}

/// One attempt of a run, for the dashboard's run page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    pub attempt: u32,
    pub worker: String,
    pub outcome: String,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub duration_s: Option<f64>,
    pub finished_at_ms: i64,
}

/// The attempts of one run, oldest first.
pub fn read_attempts(
    root: &Path,
    name: &str,
    variation: u32,
    repetition: u32,
) -> Result<Vec<AttemptRow>> {
    let connection = open_read_only(root)?;
    let mut statement = connection
        .prepare(
            "SELECT a.attempt, a.worker, a.outcome, a.exit_code, a.error, a.duration_s, a.finished_at_ms \
             FROM attempts a JOIN experiments e ON e.id = a.experiment_id \
             WHERE e.name = ? AND a.variation = ? AND a.repetition = ? ORDER BY a.attempt",
        )
        .map_err(sql)?;
    let rows = statement
        .query_map(rusqlite::params![name, variation, repetition], |r| {
            Ok(AttemptRow {
                attempt: r.get(0)?,
                worker: r.get(1)?,
                outcome: r.get(2)?,
                exit_code: r.get(3)?,
                error: r.get(4)?,
                duration_s: r.get(5)?,
                finished_at_ms: r.get(6)?,
            })
        })
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
}

pub(super) fn open_read_only(root: &Path) -> Result<Connection> {
    let path = root.join(DATABASE_FILE);
    if !path.exists() {
        return Err(Error::NotFound(format!(
            "no {DATABASE_FILE} under {}; pass --root with the experiments root",
            root.display()
        )));
    }
    Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)
}

fn read_with(connection: &Connection, root: &Path, name: &str) -> Result<ExperimentData> {
    let row = connection.query_row(
        "SELECT id, config_json, state, started_at_ms, finished_at_ms FROM experiments WHERE name = ?",
        [name],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                parse_column::<ExperimentState>(r, 2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        },
    );
    let (id, config_json, state, started_at_ms, finished_at_ms) = match row {
        Ok(row) => row,
        Err(rusqlite::Error::QueryReturnedNoRows) => {
            return Err(Error::NotFound(format!(
                "no experiment named '{name}' in {}",
                root.join(DATABASE_FILE).display()
            )))
        }
        Err(e) => return Err(sql(e)),
    };
    let config = ExperimentConfig::from_canonical_json(&config_json)
        .map_err(|e| Error::Internal(format!("stored config of '{name}' cannot be read: {e}")))?;
    let mut builder = ExperimentDataBuilder::new(&config, state, started_at_ms, finished_at_ms);
    read_variations(connection, id, &mut builder)?;
    read_runs(connection, id, config.seed, &mut builder)?;
    // A root no coordinator of this version opened has no cache columns: its
    // calls never used the cache.
    builder.cache(super::writes::cache_savings(connection, id).unwrap_or_default());
    builder.tiers(super::writes::tier_spend(connection, id).unwrap_or_default());
    Ok(builder.finish())
}

fn read_variations(
    connection: &Connection,
    experiment_id: i64,
    builder: &mut ExperimentDataBuilder,
) -> Result<()> {
    let mut statement = connection
        .prepare("SELECT variation, axis_json FROM variations WHERE experiment_id = ? ORDER BY variation")
        .map_err(sql)?;
    let mut rows = statement.query([experiment_id]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let axis: String = row.get(1).map_err(sql)?;
        let axis_values = serde_json::from_str(&axis).map_err(|e| {
            Error::Internal(format!("a variation's axis values cannot be read: {e}"))
        })?;
        builder.variation(row.get(0).map_err(sql)?, axis_values);
    }
    Ok(())
}

/// Runs with their latest attempt's exit code, signal and timeout, streamed
/// into the builder: a million runs are never held as rows.
fn read_runs(
    connection: &Connection,
    experiment_id: i64,
    seed: u64,
    builder: &mut ExperimentDataBuilder,
) -> Result<()> {
    let count: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE experiment_id = ?",
            [experiment_id],
            |row| row.get(0),
        )
        .map_err(sql)?;
    builder.reserve_runs(count.max(0) as usize);
    let mut statement = connection
        .prepare(
            "SELECT r.variation, r.repetition, r.status, r.metrics_json, r.error, a.exit_code, a.signal, a.timed_out, r.duration_s, r.cost_usd \
             FROM runs r LEFT JOIN attempts a ON a.experiment_id = r.experiment_id AND a.variation = r.variation \
             AND a.repetition = r.repetition AND a.attempt = r.attempts \
             WHERE r.experiment_id = ? ORDER BY r.variation, r.repetition",
        )
        .map_err(sql)?;
    let mut rows = statement.query([experiment_id]).map_err(sql)?;
    while let Some(row) = rows.next().map_err(sql)? {
        let repetition = row.get(1).map_err(sql)?;
        let metrics: Option<String> = row.get(3).map_err(sql)?;
        builder.run(RunRecord {
            variation: row.get(0).map_err(sql)?,
            repetition,
            seed: run_seed(seed, repetition),
            status: parse_column::<RunStatus>(row, 2).map_err(sql)?,
            metrics_json: metrics.as_deref(),
            error: row.get(4).map_err(sql)?,
            exit_code: row.get(5).map_err(sql)?,
            signal: row.get(6).map_err(sql)?,
            timed_out: row.get::<_, Option<bool>>(7).map_err(sql)?.unwrap_or(false),
            duration_s: row.get(8).map_err(sql)?,
            cost_usd: row.get(9).map_err(sql)?,
        });
    }
    Ok(())
}
