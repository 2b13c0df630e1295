//! `ROOT/cache.db`: the recorded answers (ARCHITECTURE.md, "Response
//! cache"). A table of its own database, so that the cache is read and
//! pruned without the experiments' store, and a lookup by key never waits on
//! the store's writes. One row per key; the request and the answer are
//! stored as sent and received, the answer in the API's whole shape.

use std::path::{Path, PathBuf};

use flotilla_shared::{Error, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub const CACHE_FILE: &str = "cache.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    -- The path after the provider's base URL; it says the API too.
    endpoint TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    occurrence INTEGER NOT NULL,
    request BLOB NOT NULL,
    answer BLOB NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    experiment TEXT NOT NULL,
    run TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL
);
";

/// The schema this build reads and writes (`PRAGMA user_version`).
const VERSION: i64 = 1;

/// One recorded answer, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRow {
    pub key: [u8; 32],
    pub endpoint: String,
    pub provider: String,
    pub model: String,
    pub seed: u64,
    pub occurrence: u32,
    pub request: Vec<u8>,
    pub answer: Vec<u8>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_nanos: u64,
    pub experiment: String,
    pub run: String,
    pub recorded_at_ms: i64,
    /// An answer already recorded under the key before this time (Unix ms)
    /// is replaced; 0: the first answer stays.
    pub replaces_before_ms: i64,
}

/// What a lookup reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub answer: Vec<u8>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_nanos: u64,
    pub experiment: String,
    pub run: String,
    pub recorded_at_ms: i64,
}

fn sql(context: impl std::fmt::Display) -> impl FnOnce(rusqlite::Error) -> Error {
    move |error| Error::Internal(format!("{context}: {error}"))
}

pub fn path(root: &Path) -> PathBuf {
    root.join(CACHE_FILE)
}

/// Opens (creating if needed) the cache of `root` for writing.
pub fn open(root: &Path) -> Result<Connection> {
    let path = path(root);
    let connection =
        Connection::open(&path).map_err(sql(format!("cannot open {}", path.display())))?;
    // Before the file is made (no effect after): pages of 16 KiB hold about
    // fifteen answers of a kilobyte where 4 KiB pages hold three and waste a
    // fifth of each; pruned pages go back to the file system.
    connection
        .execute_batch("PRAGMA page_size = 16384; PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(sql(format!("cannot configure {}", path.display())))?;
    configure(&connection, &path)?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql("cannot read the cache's version"))?;
    if version > VERSION {
        return Err(Error::InvalidInput(format!(
            "{} was written by a newer Flotilla (cache schema {version}, this build reads {VERSION})",
            path.display()
        )));
    }
    connection
        .execute_batch(&format!("{SCHEMA} PRAGMA user_version = {VERSION};"))
        .map_err(sql(format!(
            "cannot create the tables of {}",
            path.display()
        )))?;
    Ok(connection)
}

/// Opens the cache of `root` to read, beside whoever writes it.
pub fn open_read_only(root: &Path) -> Result<Connection> {
    let path = path(root);
    if !path.exists() {
        return Err(Error::NotFound(format!(
            "no response cache under {} (no {CACHE_FILE}); it is made when a coordinator first runs there",
            root.display()
        )));
    }
    let connection = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(format!("cannot open {}", path.display())))?;
    connection
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql("cannot configure the cache"))?;
    Ok(connection)
}

/// WAL, so that readers never wait on the writer; a committed answer
/// survives a kill -9 of the process.
fn configure(connection: &Connection, path: &Path) -> Result<()> {
    connection
        // The log is cut back to 4 MiB after each checkpoint, not left at its largest.
        .execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=4194304;",
        )
        .map_err(sql(format!("cannot configure {}", path.display())))?;
    connection
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql("cannot configure the cache"))
}

/// The answer recorded under `key` no earlier than `oldest_ms`.
pub fn lookup(connection: &Connection, key: &[u8; 32], oldest_ms: i64) -> Result<Option<Hit>> {
    let mut statement = connection
        .prepare_cached(
            "SELECT answer, input_tokens, output_tokens, cached_input_tokens, cost_nanos, \
             experiment, run, recorded_at_ms FROM answers WHERE key = ?1 AND recorded_at_ms >= ?2",
        )
        .map_err(sql("cannot read the cache"))?;
    statement
        .query_row(params![&key[..], oldest_ms], |row| {
            Ok(Hit {
                answer: row.get(0)?,
                input_tokens: row.get::<_, i64>(1)? as u64,
                output_tokens: row.get::<_, i64>(2)? as u64,
                cached_input_tokens: row.get::<_, i64>(3)? as u64,
                cost_nanos: row.get::<_, i64>(4)? as u64,
                experiment: row.get(5)?,
                run: row.get(6)?,
                recorded_at_ms: row.get(7)?,
            })
        })
        .optional()
        .map_err(sql("cannot read the cache"))
}

/// How many of `keys` have an answer recorded no earlier than `oldest_ms`.
pub fn count(connection: &Connection, keys: &[[u8; 32]], oldest_ms: i64) -> Result<u64> {
    let mut statement = connection
        .prepare_cached("SELECT 1 FROM answers WHERE key = ?1 AND recorded_at_ms >= ?2")
        .map_err(sql("cannot read the cache"))?;
    let mut found = 0;
    for key in keys {
        if statement
            .exists(params![&key[..], oldest_ms])
            .map_err(sql("cannot read the cache"))?
        {
            found += 1;
        }
    }
    Ok(found)
}

/// Answers recorded no earlier than `oldest_ms` under each of `seeds`
/// (by any experiment): their sum, and how many seeds have any.
pub fn under_seeds(connection: &Connection, seeds: &[u64], oldest_ms: i64) -> Result<(u64, u64)> {
    let mut statement = connection
        .prepare_cached("SELECT COUNT(*) FROM answers WHERE seed = ?1 AND recorded_at_ms >= ?2")
        .map_err(sql("cannot read the cache"))?;
    let (mut answers, mut seeds_with_answers) = (0, 0);
    for seed in seeds {
        let found: i64 = statement
            .query_row(params![*seed as i64, oldest_ms], |row| row.get(0))
            .map_err(sql("cannot read the cache"))?;
        answers += found as u64;
        seeds_with_answers += u64::from(found > 0);
    }
    Ok((answers, seeds_with_answers))
}

/// Records `rows` in one transaction; a key already recorded keeps its
/// first answer (two calls answered at once: the first to land stays),
/// unless it was recorded before the row's `replaces_before_ms` (too old
/// for the `max_age` of the run that asked again).
pub fn insert(connection: &mut Connection, rows: &[AnswerRow]) -> Result<()> {
    let transaction = connection
        .transaction()
        .map_err(sql("cannot write the cache"))?;
    {
        let mut statement = transaction
            .prepare_cached(
                "INSERT INTO answers (key, endpoint, provider, model, seed, occurrence, \
                 request, answer, input_tokens, output_tokens, cached_input_tokens, cost_nanos, \
                 experiment, run, recorded_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                 ON CONFLICT (key) DO UPDATE SET request = excluded.request, answer = excluded.answer, \
                 input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, \
                 cached_input_tokens = excluded.cached_input_tokens, cost_nanos = excluded.cost_nanos, \
                 experiment = excluded.experiment, run = excluded.run, recorded_at_ms = excluded.recorded_at_ms \
                 WHERE answers.recorded_at_ms < ?16",
            )
            .map_err(sql("cannot write the cache"))?;
        for row in rows {
            statement
                .execute(params![
                    &row.key[..],
                    row.endpoint,
                    row.provider,
                    row.model,
                    row.seed as i64,
                    row.occurrence,
                    row.request,
                    row.answer,
                    row.input_tokens as i64,
                    row.output_tokens as i64,
                    row.cached_input_tokens as i64,
                    row.cost_nanos as i64,
                    row.experiment,
                    row.run,
                    row.recorded_at_ms,
                    row.replaces_before_ms,
                ])
                .map_err(sql("cannot write the cache"))?;
        }
    }
    transaction.commit().map_err(sql("cannot write the cache"))
}
