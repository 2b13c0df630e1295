//! The Store actor: owns the SQLite connection (WAL) on its own thread and
//! group-commits writes. A group is one transaction: its run files are
//! written before its rows, any failed write rolls the whole group back, and
//! a write's `on_commit` runs only once its group committed — which is when
//! results are acknowledged to workers (ARCHITECTURE.md, invariants 2 and 4).
//!
//! A group that cannot be written (a full disk, a root that is not writable)
//! is retried with backoff until it can; meanwhile [`StoreHealth`] says why,
//! the coordinator assigns no new runs, and workers keep their results.

mod audit;
mod columns;
mod health;
mod read;
mod schema;
mod tables;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_shared::clock::now_ms;
use flotilla_shared::dir_lock::{lock_dir, DirLock};
use flotilla_shared::{Error, Result};
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::oneshot;
use tracing::error;

use crate::outputs::Summary;
use crate::state::{AttemptRecord, ExperimentState, RunStatus, VariationEntry};
use columns::parse_column;

pub use audit::{ledger_audit, LeaseLedger, LedgerAudit, LedgerEntry};
pub use health::{Backlog, StoreHealth};
pub use read::{read_attempts, read_experiment, read_experiments, read_results, AttemptRow};
pub use tables::{
    read_calls, read_experiment_list, read_progress, read_runs_page, Distribution, RunsPage,
    RunsQuery, RunsSort, Table,
};
pub use writes::WriteError;

/// The database file under the experiments root.
pub const DATABASE_FILE: &str = "flotilla.db";

/// Requests taken into one transaction at most.
const MAX_GROUP: usize = 8192;
/// How long the store gathers requests before committing them together. Each
/// commit writes WAL pages and, every so often, a checkpoint; gathering for a
/// few milliseconds turns thousands of small commits per second into a few
/// hundred. Only acknowledgements wait for it: workers get new runs as soon as
/// their results arrive.
const GROUP_WINDOW: Duration = Duration::from_millis(2);
/// Backoff between attempts to commit a group that failed.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    /// How its recorded calls used the response cache (read, never written).
    pub cache: flotilla_shared::calls::CacheSavings,
    pub dir: PathBuf,
}

impl ExperimentRow {
    /// The row of `experiment` as it stands.
    pub fn of(experiment: &crate::state::Experiment) -> Self {
        ExperimentRow {
            id: experiment.db_id,
            name: experiment.config.name.clone(),
            config_yaml: experiment.config_yaml.clone(),
            config_json: experiment.config.canonical_json(),
            config_hash: experiment.hash.clone(),
            state: experiment.state,
            workdir_path: experiment
                .workdir
                .as_ref()
                .map(|w| w.path.to_string_lossy().into_owned()),
            workdir_hash: experiment.workdir.as_ref().map(|w| w.hash.clone()),
            started_at_ms: experiment.started_at_ms,
            finished_at_ms: experiment.finished_at_ms,
            spent_usd: experiment.spent_usd,
            cache: experiment.cache,
            dir: experiment.dir.to_path_buf(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadedRun {
    pub variation: u32,
    pub repetition: u32,
    pub status: RunStatus,
    pub attempts: u32,
    /// Attempts handed back by draining workers: not counted against max_attempts.
    pub handed_back: u32,
    pub worker: Option<String>,
    /// The metrics of an ended run: adaptive sampling reads its decisions back from them.
    pub metrics_json: Option<String>,
}

/// Everything read back at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub experiments: Vec<(ExperimentRow, Vec<VariationEntry>, Vec<LoadedRun>)>,
    /// Budget ledger events by experiment id, in the order they were written.
    pub ledger: std::collections::HashMap<i64, Vec<crate::state::LedgerEvent>>,
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
    /// Every repetition 1..=`repetitions` of every variation stored for the
    /// experiment, pending: a new experiment's runs, made by the database in
    /// key order rather than sent to it one by one (ARCHITECTURE.md, "Scale").
    RunGrid {
        experiment_id: i64,
        repetitions: u32,
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
    /// Budget ledger events, by experiment, in order.
    Ledger(Vec<(i64, crate::state::LedgerEvent)>),
    /// A worker's setup.log or teardown.log.
    HookLog {
        path: PathBuf,
        content: Vec<u8>,
    },
    /// Writes results.csv and the final summary from committed rows, then marks
    /// the experiment final. The summary's finish time is stamped when this
    /// write commits, after every result before it is durable.
    Finalize {
        experiment_id: i64,
        dir: PathBuf,
        summary: Summary,
        config: Box<flotilla_shared::config::ExperimentConfig>,
    },
}

/// Runs on the store thread once its group committed, with the commit time.
pub type OnCommit = Box<dyn FnOnce(i64) + Send>;

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

impl Request {
    /// Results (attempts with a worker's report) this request carries, and their files' bytes.
    fn backlog(&self) -> Backlog {
        let Request::Writes { writes, .. } = self else {
            return Backlog::default();
        };
        let mut backlog = Backlog::default();
        for write in writes {
            if let Write::Attempt(record) = write {
                if let Some(result) = &record.result {
                    backlog.results += 1;
                    backlog.bytes += result
                        .files
                        .iter()
                        .map(|f| f.content.len() as u64)
                        .sum::<u64>();
                }
            }
        }
        backlog
    }
}

/// Cheap to clone; requests go to the store thread in order.
#[derive(Clone)]
pub struct StoreHandle {
    sender: mpsc::Sender<Request>,
    health: Arc<StoreHealth>,
}

impl StoreHandle {
    /// Queues writes; `on_commit` runs on the store thread once they are durable.
    pub fn write(&self, writes: Vec<Write>, on_commit: Option<OnCommit>) {
        if writes.is_empty() && on_commit.is_none() {
            return;
        }
        let request = Request::Writes { writes, on_commit };
        self.health.queued(request.backlog());
        if self.sender.send(request).is_err() {
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

    /// Whether results reach the disk, and how many wait.
    pub fn health(&self) -> &StoreHealth {
        &self.health
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

/// Opens (creating or migrating if needed) `root/flotilla.db`, loads what it
/// holds and starts the store thread. One process at a time owns a root.
pub fn open(root: &Path) -> Result<Opened> {
    let root_lock = lock_dir(root, "flotilla.lock", "a coordinator or `flotilla run`")?;
    let path = root.join(DATABASE_FILE);
    let mut connection =
        Connection::open(&path).map_err(|e| sql(&format!("cannot open {}", path.display()), e))?;
    // WAL with synchronous=NORMAL: a committed transaction survives a crash of
    // the process (kill -9); only a power loss could lose the last commits.
    connection
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .map_err(|e| sql("cannot configure the database", e))?;
    schema::migrate(&mut connection)
        .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    let loaded = load(&connection, root)?;
    let (sender, receiver) = mpsc::channel();
    let health = Arc::new(StoreHealth::new(root.to_path_buf()));
    let thread_health = health.clone();
    let thread = std::thread::Builder::new()
        .name("flotilla-store".into())
        .spawn(move || run(connection, receiver, &thread_health))
        .map_err(|e| Error::io("cannot start the store thread", e))?;
    Ok(Opened {
        store: StoreHandle { sender, health },
        loaded,
        thread,
        root_lock,
    })
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
                cache: Default::default(),
            })
        })
        .map_err(|e| sql("cannot read experiments", e))?;
    for row in rows {
        let mut row = row.map_err(|e| sql("cannot read an experiment", e))?;
        row.cache = writes::cache_savings(connection, row.id)
            .map_err(|e| sql("cannot read the calls' use of the cache", e))?;
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
                "SELECT r.variation, r.repetition, r.status, r.attempts, r.worker, \
                 (SELECT COUNT(*) FROM attempts a WHERE a.experiment_id = r.experiment_id AND a.variation = r.variation \
                  AND a.repetition = r.repetition AND a.outcome = 'handed_back'), r.metrics_json \
                 FROM runs r WHERE r.experiment_id = ? ORDER BY r.repetition, r.variation",
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
                    handed_back: r.get(5)?,
                    metrics_json: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| sql("cannot read runs", e))?;
        loaded.experiments.push((row, variations, runs));
    }
    loaded.ledger = load_ledger(connection)?;
    Ok(loaded)
}

/// A ledger event as a row: kind, lease, variation and amount.
pub(crate) fn ledger_row(
    event: &crate::state::LedgerEvent,
) -> (&'static str, u64, Option<u32>, flotilla_shared::money::Usd) {
    use crate::state::LedgerEvent;
    match *event {
        LedgerEvent::Reserved {
            lease_id,
            variation,
            amount,
        } => ("reserved", lease_id, Some(variation), amount),
        LedgerEvent::Granted { lease_id, amount } => ("granted", lease_id, None, amount),
        LedgerEvent::ToppedUp { lease_id, amount } => ("topped_up", lease_id, None, amount),
        LedgerEvent::Fenced { lease_id, freed } => ("fenced", lease_id, None, freed),
        LedgerEvent::Settled {
            lease_id,
            variation,
            cost,
        } => ("settled", lease_id, Some(variation), cost),
        LedgerEvent::Released { lease_id } => (
            "released",
            lease_id,
            None,
            flotilla_shared::money::Usd::ZERO,
        ),
    }
}

/// Every experiment's ledger events in the order they were written; an
/// unknown kind fails the open (ARCHITECTURE.md, invariant 7).
fn load_ledger(
    connection: &Connection,
) -> Result<std::collections::HashMap<i64, Vec<crate::state::LedgerEvent>>> {
    use crate::state::LedgerEvent;
    use flotilla_shared::money::Usd;
    let mut statement = connection
        .prepare(
            "SELECT experiment_id, kind, lease_id, variation, amount_nanos FROM ledger ORDER BY id",
        )
        .map_err(|e| sql("cannot read the budget ledger", e))?;
    let mut rows = statement
        .query([])
        .map_err(|e| sql("cannot read the budget ledger", e))?;
    let mut ledger: std::collections::HashMap<i64, Vec<LedgerEvent>> = Default::default();
    while let Some(row) = rows
        .next()
        .map_err(|e| sql("cannot read the budget ledger", e))?
    {
        let read = || -> rusqlite::Result<(i64, String, u64, u32, Usd)> {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get::<_, i64>(2)? as u64,
                row.get::<_, Option<u32>>(3)?.unwrap_or(0),
                Usd::from_nanos(row.get::<_, i64>(4)? as u64),
            ))
        };
        let (experiment_id, kind, lease_id, variation, amount) =
            read().map_err(|e| sql("cannot read the budget ledger", e))?;
        let event = match kind.as_str() {
            "reserved" => LedgerEvent::Reserved {
                lease_id,
                variation,
                amount,
            },
            "granted" => LedgerEvent::Granted { lease_id, amount },
            "topped_up" => LedgerEvent::ToppedUp { lease_id, amount },
            "fenced" => LedgerEvent::Fenced {
                lease_id,
                freed: amount,
            },
            "settled" => LedgerEvent::Settled {
                lease_id,
                variation,
                cost: amount,
            },
            "released" => LedgerEvent::Released { lease_id },
            other => {
                return Err(Error::Internal(format!(
                    "unknown ledger event kind '{other}'; expected one of: reserved, granted, topped_up, fenced, settled, released"
                )))
            }
        };
        ledger.entry(experiment_id).or_default().push(event);
    }
    Ok(ledger)
}

/// Takes the requests that arrive within one group window, then commits
/// them until they are durable; forever, until every handle is gone.
fn run(mut connection: Connection, receiver: mpsc::Receiver<Request>, health: &StoreHealth) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        let window_ends = Instant::now() + GROUP_WINDOW;
        while group.len() < MAX_GROUP {
            let left = window_ends.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        commit_until_durable(&mut connection, group, health);
    }
}

/// Commits a group, retrying with backoff while a write fails. Nothing of a
/// failed attempt is acknowledged: its transaction rolls back whole, and
/// the same writes (files first, then rows) are tried again.
fn commit_until_durable(
    connection: &mut Connection,
    mut group: Vec<Request>,
    health: &StoreHealth,
) {
    let backlog = group
        .iter()
        .map(Request::backlog)
        .fold(Backlog::default(), |sum, b| Backlog {
            results: sum.results + b.results,
            bytes: sum.bytes + b.bytes,
        });
    let mut delay = RETRY_FIRST;
    loop {
        let committed_at_ms = now_ms();
        let started = std::time::Instant::now();
        match commit_group(connection, &mut group, committed_at_ms) {
            Ok(()) => {
                health.commit_took(started.elapsed());
                health.committed(backlog);
                for request in group {
                    if let Request::Writes {
                        on_commit: Some(on_commit),
                        ..
                    } = request
                    {
                        on_commit(committed_at_ms);
                    }
                }
                return;
            }
            Err(failure) => {
                health.failing(&failure);
                std::thread::sleep(delay);
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One attempt at a group: a transaction that commits only if every write
/// in it succeeded. Workdir reads are answered as they come, once.
fn commit_group(
    connection: &mut Connection,
    group: &mut [Request],
    committed_at_ms: i64,
) -> std::result::Result<(), WriteError> {
    let transaction = connection.transaction()?;
    for request in group.iter_mut() {
        match request {
            Request::Writes { writes, .. } => {
                for write in writes.iter() {
                    writes::apply(&transaction, write, committed_at_ms)?;
                }
            }
            Request::LoadWorkdir { hash, reply } => {
                let bundle = transaction
                    .query_row(
                        "SELECT bundle FROM workdirs WHERE hash = ?",
                        [&*hash],
                        |r| r.get(0),
                    )
                    .optional()?;
                // A reply already sent on an earlier attempt is closed: nothing to send again.
                let (closed, _) = oneshot::channel();
                let _ = std::mem::replace(reply, closed).send(bundle);
            }
        }
    }
    // Dropping an uncommitted transaction rolls it back.
    transaction.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
