//! The Store actor: owns the SQLite connection (WAL) on its own thread and
//! group-commits writes. A write's `on_commit` runs only after its transaction
//! committed, which is when results are acknowledged to workers (DESIGN §2, §7.2).

use std::path::{Path, PathBuf};

use flotilla_shared::dir_lock::{lock_dir, DirLock};
use flotilla_shared::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::outputs::{self, ResultRow, Summary};

mod columns;
mod read;

pub use read::{read_experiment, read_experiments};

/// The database file under the experiments root.
pub const DATABASE_FILE: &str = "flotilla.db";
use crate::state::{AttemptRecord, ExperimentState, RunStatus, VariationEntry};
use columns::parse_column;

/// Requests taken into one transaction at most.
const MAX_GROUP: usize = 8192;
/// How long the store gathers requests before committing them together. Each
/// commit writes WAL pages and, every so often, a checkpoint; gathering for a
/// few milliseconds turns thousands of small commits per second into a few
/// hundred. Only acknowledgements wait for it: workers get new runs as soon as
/// their results arrive.
const GROUP_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    config_yaml TEXT NOT NULL,
    config_json TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    workdir_path TEXT,
    workdir_hash TEXT,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS variations (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    variation INTEGER NOT NULL,
    params_json TEXT NOT NULL,
    axis_json TEXT NOT NULL,
    PRIMARY KEY (experiment_id, variation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    variation INTEGER NOT NULL,
    repetition INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    duration_s REAL,
    metrics_json TEXT,
    error TEXT,
    finished_at_ms INTEGER,
    -- Dollars spent by all of the run's attempts; NULL when none reported a cost.
    cost_usd REAL,
    PRIMARY KEY (experiment_id, variation, repetition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    variation INTEGER NOT NULL,
    repetition INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT NOT NULL,
    lease_id INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    stderr_tail TEXT,
    duration_s REAL,
    started_at_ms INTEGER,
    finished_at_ms INTEGER NOT NULL,
    metrics_json TEXT,
    cost_usd REAL,
    PRIMARY KEY (experiment_id, variation, repetition, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workdirs (
    hash TEXT PRIMARY KEY,
    bundle BLOB NOT NULL
);
"#;

/// The experiment row as persisted.
#[derive(Debug, Clone)]
pub struct ExperimentRow {
    pub id: i64,
    pub name: String,
    pub config_yaml: String,
    pub config_json: String,
    pub config_hash: String,
    pub state: ExperimentState,
    pub workdir_path: Option<String>,
    pub workdir_hash: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// Dollars spent by the experiment's recorded attempts (read, never written).
    pub spent_usd: f64,
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub variation: u32,
    pub repetition: u32,
    pub status: RunStatus,
    pub attempts: u32,
    pub worker: Option<String>,
}

/// Everything read back at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub experiments: Vec<(ExperimentRow, Vec<VariationEntry>, Vec<LoadedRun>)>,
}

#[derive(Debug)]
pub enum Write {
    /// Insert or replace the row; also (re)writes config.yaml and .meta/config.hash.
    Experiment(Box<ExperimentRow>),
    Variations {
        experiment_id: i64,
        variations: Vec<VariationEntry>,
    },
    Runs {
        experiment_id: i64,
        runs: Vec<(u32, u32)>,
    },
    Attempt(Box<AttemptRecord>),
    RunStatus {
        experiment_id: i64,
        runs: Vec<(u32, u32)>,
        status: RunStatus,
    },
    Workdir {
        hash: String,
        bundle: Vec<u8>,
    },
    Summary {
        dir: PathBuf,
        summary: Summary,
    },
    /// results.csv of an experiment still running, from committed rows; the runs
    /// listed in `running` show as running (the database only knows them as pending).
    ResultsCsv {
        experiment_id: i64,
        dir: PathBuf,
        config: Box<flotilla_shared::config::ExperimentConfig>,
        running: Vec<(u32, u32)>,
    },
    /// Writes results.csv and the final summary from committed rows, then marks
    /// the experiment final.
    Finalize {
        experiment_id: i64,
        dir: PathBuf,
        summary: Summary,
        config: Box<flotilla_shared::config::ExperimentConfig>,
    },
}

pub type OnCommit = Box<dyn FnOnce() + Send>;

enum Request {
    Writes {
        writes: Vec<Write>,
        on_commit: Option<OnCommit>,
    },
    LoadWorkdir {
        hash: String,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
}

/// Cheap to clone; requests go to the store thread in order.
#[derive(Clone)]
pub struct StoreHandle {
    sender: mpsc::Sender<Request>,
}

impl StoreHandle {
    /// Queues writes; `on_commit` runs on the store thread once they are durable.
    pub fn write(&self, writes: Vec<Write>, on_commit: Option<OnCommit>) {
        if writes.is_empty() && on_commit.is_none() {
            return;
        }
        if self
            .sender
            .send(Request::Writes { writes, on_commit })
            .is_err()
        {
            error!("store is gone; a write was lost and will not be acknowledged");
        }
    }

    pub async fn load_workdir(&self, hash: String) -> Result<Option<Vec<u8>>> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request::LoadWorkdir { hash, reply })
            .map_err(|_| Error::Internal("store is gone".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("store is gone".into()))
    }
}

/// What `open` hands back: the handle, the loaded state, the store thread and
/// the lock that keeps other Flotilla processes off this root.
pub struct Opened {
    pub store: StoreHandle,
    pub loaded: Loaded,
    pub thread: std::thread::JoinHandle<()>,
    pub root_lock: DirLock,
}

/// Opens (creating if needed) `root/flotilla.db`, loads what it holds and
/// starts the store thread. One process at a time owns a root.
pub fn open(root: &Path) -> Result<Opened> {
    let root_lock = lock_dir(root, "flotilla.lock", "a coordinator or `flotilla run`")?;
    let path = root.join(DATABASE_FILE);
    let connection =
        Connection::open(&path).map_err(|e| sql(&format!("cannot open {}", path.display()), e))?;
    // WAL with synchronous=NORMAL: a committed transaction survives a crash of
    // the process (kill -9); only a power loss could lose the last commits.
    connection
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .map_err(|e| sql("cannot configure the database", e))?;
    connection
        .execute_batch(SCHEMA)
        .map_err(|e| sql("cannot create the schema", e))?;
    add_cost_columns(&connection).map_err(|e| sql("cannot upgrade the schema", e))?;
    let loaded = load(&connection, root)?;
    let (sender, receiver) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("flotilla-store".into())
        .spawn(move || run(connection, receiver))
        .map_err(|e| Error::io("cannot start the store thread", e))?;
    Ok(Opened {
        store: StoreHandle { sender },
        loaded,
        thread,
        root_lock,
    })
}

/// Roots made before runs carried a cost lack the cost columns.
fn add_cost_columns(connection: &Connection) -> rusqlite::Result<()> {
    for table in ["runs", "attempts"] {
        let has_cost: bool = connection.query_row(
            &format!(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = 'cost_usd'"
            ),
            [],
            |row| row.get(0),
        )?;
        if !has_cost {
            connection.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN cost_usd REAL"))?;
        }
    }
    Ok(())
}

fn sql(context: &str, error: rusqlite::Error) -> Error {
    Error::Internal(format!("{context}: {error}"))
}

fn load(connection: &Connection, root: &Path) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut statement = connection
        .prepare(
            "SELECT id, name, config_yaml, config_json, config_hash, state, workdir_path, workdir_hash, \
             started_at_ms, finished_at_ms, \
             (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a WHERE a.experiment_id = experiments.id) \
             FROM experiments ORDER BY id",
        )
        .map_err(|e| sql("cannot read experiments", e))?;
    let rows = statement
        .query_map([], |row| {
            let name: String = row.get(1)?;
            Ok(ExperimentRow {
                id: row.get(0)?,
                dir: root.join(&name),
                name,
                config_yaml: row.get(2)?,
                config_json: row.get(3)?,
                config_hash: row.get(4)?,
                state: parse_column(row, 5)?,
                workdir_path: row.get(6)?,
                workdir_hash: row.get(7)?,
                started_at_ms: row.get(8)?,
                finished_at_ms: row.get(9)?,
                spent_usd: row.get(10)?,
            })
        })
        .map_err(|e| sql("cannot read experiments", e))?;
    for row in rows {
        let row = row.map_err(|e| sql("cannot read an experiment", e))?;
        let mut variations_query = connection
            .prepare("SELECT variation, params_json, axis_json FROM variations WHERE experiment_id = ? ORDER BY variation")
            .map_err(|e| sql("cannot read variations", e))?;
        let variations = variations_query
            .query_map([row.id], |r| {
                Ok(VariationEntry {
                    index: r.get(0)?,
                    params_json: r.get::<_, String>(1)?.into(),
                    axis_json: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| sql("cannot read variations", e))?;
        let mut runs_query = connection
            .prepare(
                "SELECT variation, repetition, status, attempts, worker FROM runs WHERE experiment_id = ? \
                 ORDER BY repetition, variation",
            )
            .map_err(|e| sql("cannot read runs", e))?;
        let runs = runs_query
            .query_map([row.id], |r| {
                Ok(LoadedRun {
                    variation: r.get(0)?,
                    repetition: r.get(1)?,
                    status: parse_column(r, 2)?,
                    attempts: r.get(3)?,
                    worker: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| sql("cannot read runs", e))?;
        loaded.experiments.push((row, variations, runs));
    }
    Ok(loaded)
}

fn run(mut connection: Connection, receiver: mpsc::Receiver<Request>) {
    let mut group = Vec::new();
    while let Ok(first) = receiver.recv() {
        group.push(first);
        let window_ends = Instant::now() + GROUP_WINDOW;
        while group.len() < MAX_GROUP {
            let left = window_ends.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let mut callbacks = Vec::new();
        let outcome = (|| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            for request in group.drain(..) {
                match request {
                    Request::Writes { writes, on_commit } => {
                        for write in writes {
                            if let Err(e) = apply(&transaction, write) {
                                error!(error = %e, "store write failed");
                            }
                        }
                        callbacks.extend(on_commit);
                    }
                    Request::LoadWorkdir { hash, reply } => {
                        let bundle = transaction
                            .query_row("SELECT bundle FROM workdirs WHERE hash = ?", [&hash], |r| {
                                r.get(0)
                            })
                            .optional()?;
                        let _ = reply.send(bundle);
                    }
                }
            }
            transaction.commit()
        })();
        match outcome {
            // Acknowledge only what is durable (DESIGN §7.2).
            Ok(()) => callbacks.into_iter().for_each(|callback| callback()),
            Err(e) => {
                error!(error = %e, "store transaction failed; its writes are not acknowledged")
            }
        }
    }
}

/// Errors of one write: database or file.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Files(#[from] Error),
}

fn apply(
    transaction: &rusqlite::Transaction<'_>,
    write: Write,
) -> std::result::Result<(), WriteError> {
    match write {
        Write::Experiment(row) => {
            outputs::write_config_files(&row.dir, &row.config_yaml, &row.config_hash)?;
            transaction.prepare_cached(
                "INSERT INTO experiments (id, name, config_yaml, config_json, config_hash, state, workdir_path, workdir_hash, started_at_ms, finished_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT(id) DO UPDATE SET config_yaml = ?3, config_json = ?4, config_hash = ?5, state = ?6, \
                 workdir_path = ?7, workdir_hash = ?8, finished_at_ms = ?10",
            )?
            .execute(params![
                row.id, row.name, row.config_yaml, row.config_json, row.config_hash, row.state.as_str(),
                row.workdir_path, row.workdir_hash, row.started_at_ms, row.finished_at_ms
            ])?;
        }
        Write::Variations {
            experiment_id,
            variations,
        } => {
            let mut insert = transaction.prepare_cached(
                "INSERT OR REPLACE INTO variations (experiment_id, variation, params_json, axis_json) VALUES (?, ?, ?, ?)",
            )?;
            for variation in variations {
                insert.execute(params![
                    experiment_id,
                    variation.index,
                    &*variation.params_json,
                    variation.axis_json
                ])?;
            }
        }
        Write::Runs {
            experiment_id,
            runs,
        } => {
            let mut insert = transaction.prepare_cached(
                "INSERT OR IGNORE INTO runs (experiment_id, variation, repetition, status) VALUES (?, ?, ?, 'pending')",
            )?;
            for (variation, repetition) in runs {
                insert.execute(params![experiment_id, variation, repetition])?;
            }
        }
        Write::Attempt(record) => apply_attempt(transaction, &record)?,
        Write::RunStatus {
            experiment_id,
            runs,
            status,
        } => {
            let mut update = transaction.prepare_cached(
                "UPDATE runs SET status = ?, attempts = CASE WHEN ? = 'pending' THEN 0 ELSE attempts END \
                 WHERE experiment_id = ? AND variation = ? AND repetition = ?",
            )?;
            for (variation, repetition) in runs {
                update.execute(params![
                    status.as_str(),
                    status.as_str(),
                    experiment_id,
                    variation,
                    repetition
                ])?;
            }
        }
        Write::Workdir { hash, bundle } => {
            transaction
                .prepare_cached("INSERT OR IGNORE INTO workdirs (hash, bundle) VALUES (?, ?)")?
                .execute(params![hash, bundle])?;
        }
        Write::Summary { dir, summary } => outputs::write_summary(&dir, &summary)?,
        Write::ResultsCsv {
            experiment_id,
            dir,
            config,
            running,
        } => {
            let mut rows = result_rows(transaction, experiment_id)?;
            let running: std::collections::HashSet<(u32, u32)> = running.into_iter().collect();
            for row in rows
                .iter_mut()
                .filter(|r| running.contains(&(r.variation, r.repetition)))
            {
                row.status = RunStatus::Running;
            }
            outputs::write_results_csv(&dir, &outputs::results_csv(&config, &rows))?;
            outputs::write_costs(&dir, &outputs::costs_json(&rows))?;
        }
        Write::Finalize {
            experiment_id,
            dir,
            summary,
            config,
        } => {
            let rows = result_rows(transaction, experiment_id)?;
            outputs::write_results_csv(&dir, &outputs::results_csv(&config, &rows))?;
            outputs::write_costs(&dir, &outputs::costs_json(&rows))?;
            outputs::write_summary(&dir, &summary)?;
            transaction
                .prepare_cached(
                    "UPDATE experiments SET state = ?, finished_at_ms = ? WHERE id = ?",
                )?
                .execute(params![
                    summary.state.as_str(),
                    summary.finished_at_ms,
                    experiment_id
                ])?;
        }
    }
    Ok(())
}

fn apply_attempt(
    transaction: &rusqlite::Transaction<'_>,
    record: &AttemptRecord,
) -> std::result::Result<(), WriteError> {
    // Files before the row: once the row is committed and acknowledged, the
    // run's directory is complete.
    if let Err(e) = outputs::write_run_files(record) {
        warn!(error = %e, experiment = record.experiment, variation = record.variation, repetition = record.repetition, "cannot write run files");
    }
    let result = record.result.as_ref();
    let metrics = result.and_then(|r| r.metrics_json.clone());
    transaction
        .prepare_cached(
            "INSERT OR REPLACE INTO attempts (experiment_id, variation, repetition, attempt, worker, lease_id, outcome, \
             exit_code, signal, timed_out, error, stderr_tail, duration_s, started_at_ms, finished_at_ms, metrics_json, cost_usd) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            record.experiment_db_id,
            record.variation,
            record.repetition,
            record.attempt,
            &*record.worker,
            record.lease_id as i64,
            record.outcome.as_str(),
            result.and_then(|r| r.exit_code),
            result.and_then(|r| r.signal),
            result.is_some_and(|r| r.timed_out),
            (!record.error.is_empty()).then_some(&record.error),
            result.map(|r| r.stderr_tail.as_str()).filter(|t| !t.is_empty()),
            result.map(|r| r.duration_s),
            result.map(|r| r.started_at_ms),
            record.finished_at_ms,
            metrics,
            result.and_then(|r| r.cost_usd),
        ])?;
    transaction
        .prepare_cached(
            "UPDATE runs SET status = ?, attempts = MAX(attempts, ?), worker = ?, duration_s = ?, metrics_json = ?, \
             error = ?, finished_at_ms = ?, \
             cost_usd = CASE WHEN ? IS NULL THEN cost_usd ELSE (SELECT SUM(a.cost_usd) FROM attempts a \
             WHERE a.experiment_id = runs.experiment_id AND a.variation = runs.variation \
             AND a.repetition = runs.repetition) END \
             WHERE experiment_id = ? AND variation = ? AND repetition = ?",
        )?
        .execute(params![
            record.run_status.as_str(),
            record.attempt,
            &*record.worker,
            result.map(|r| r.duration_s),
            metrics,
            (!record.error.is_empty()).then_some(&record.error),
            record.run_status.is_final().then_some(record.finished_at_ms),
            // The sum of the attempts' costs, recomputed only when this one has a cost.
            result.and_then(|r| r.cost_usd),
            record.experiment_db_id,
            record.variation,
            record.repetition,
        ])?;
    Ok(())
}

fn result_rows(
    transaction: &rusqlite::Transaction<'_>,
    experiment_id: i64,
) -> rusqlite::Result<Vec<ResultRow>> {
    let mut query = transaction.prepare_cached(
        "SELECT r.variation, r.repetition, r.attempts, r.status, r.worker, r.duration_s, v.params_json, r.metrics_json, r.cost_usd \
         FROM runs r JOIN variations v ON v.experiment_id = r.experiment_id AND v.variation = r.variation \
         WHERE r.experiment_id = ? ORDER BY r.variation, r.repetition",
    )?;
    let rows = query.query_map([experiment_id], |row| {
        let params: String = row.get(6)?;
        let metrics: Option<String> = row.get(7)?;
        Ok(ResultRow {
            variation: row.get(0)?,
            repetition: row.get(1)?,
            attempt: row.get(2)?,
            status: parse_column(row, 3)?,
            worker: row.get(4)?,
            duration_s: row.get(5)?,
            params: object(&params),
            metrics: metrics.as_deref().map(object).unwrap_or_default(),
            cost_usd: row.get(8)?,
        })
    })?;
    rows.collect()
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}
