//! `flotilla cache stats` and `flotilla cache prune`: what the cache of a
//! root holds, what it saved, and removing answers by age, experiment or
//! model. Both work beside a running coordinator (SQLite's locks keep them
//! apart; a pruned answer is simply a miss next time).

use std::path::Path;

use flotilla_shared::{Error, Result};
use rusqlite::{params_from_iter, Connection, OpenFlags};
use serde::Serialize;

use super::db;

/// What one experiment recorded for one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded {
    pub experiment: String,
    /// `provider/model`.
    pub model: String,
    pub entries: u64,
    /// Request and answer bytes.
    pub bytes: u64,
    pub oldest_ms: i64,
    pub newest_ms: i64,
}

/// What one experiment's calls to one model got from the cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Served {
    pub experiment: String,
    pub model: String,
    pub calls: u64,
    pub hits: u64,
    pub saved_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheStats {
    pub entries: u64,
    /// Request and answer bytes stored.
    pub stored_bytes: u64,
    /// The database's size on disk (with its write-ahead log).
    pub file_bytes: u64,
    pub recorded: Vec<Recorded>,
    pub served: Vec<Served>,
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |error| Error::Internal(format!("{context}: {error}"))
}

pub fn stats(root: &Path) -> Result<CacheStats> {
    let cache = db::open_read_only(root)?;
    let mut query = cache
        .prepare(
            "SELECT experiment, provider || '/' || model, COUNT(*), \
             SUM(LENGTH(request) + LENGTH(answer)), MIN(recorded_at_ms), MAX(recorded_at_ms) \
             FROM answers GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .map_err(sql("cannot read the cache"))?;
    let recorded = query
        .query_map([], |row| {
            Ok(Recorded {
                experiment: row.get(0)?,
                model: row.get(1)?,
                entries: row.get::<_, i64>(2)? as u64,
                bytes: row.get::<_, i64>(3)? as u64,
                oldest_ms: row.get(4)?,
                newest_ms: row.get(5)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql("cannot read the cache"))?;
    let file_bytes = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let mut name = db::path(root).into_os_string();
            name.push(suffix);
            std::fs::metadata(name).ok()
        })
        .map(|m| m.len())
        .sum();
    Ok(CacheStats {
        entries: recorded.iter().map(|r| r.entries).sum(),
        stored_bytes: recorded.iter().map(|r| r.bytes).sum(),
        file_bytes,
        recorded,
        served: served(root)?,
    })
}

/// Hits and savings by experiment and model, from the experiments' calls.
fn served(root: &Path) -> Result<Vec<Served>> {
    let path = root.join("flotilla.db");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let connection = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sql("cannot open flotilla.db"))?;
    let query = connection.prepare(
        "SELECT e.name, c.provider || '/' || c.model, COUNT(*), COALESCE(SUM(c.cache = 'hit'), 0), \
         COALESCE(SUM(CASE WHEN c.cache = 'hit' THEN COALESCE(c.would_cost_usd, 0) END), 0) \
         FROM calls c JOIN experiments e ON e.id = c.experiment_id GROUP BY 1, 2 ORDER BY 1, 2",
    );
    // A root no coordinator of this version opened has no cache columns.
    let Ok(mut query) = query else {
        return Ok(Vec::new());
    };
    let served = query
        .query_map([], |row| {
            Ok(Served {
                experiment: row.get(0)?,
                model: row.get(1)?,
                calls: row.get::<_, i64>(2)? as u64,
                hits: row.get::<_, i64>(3)? as u64,
                saved_usd: row.get(4)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql("cannot read the calls"))?;
    Ok(served)
}

/// Which answers to remove; each given condition must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prune {
    /// Recorded before this Unix time (ms).
    pub recorded_before_ms: Option<i64>,
    pub experiment: Option<String>,
    /// `provider/model`, or the model by its provider's name.
    pub model: Option<String>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pruned {
    pub entries: u64,
    pub bytes: u64,
}

pub fn prune(root: &Path, which: &Prune) -> Result<Pruned> {
    if which == &Prune::default() {
        return Err(Error::InvalidInput(
            "say what to prune: --older-than AGE, --experiment NAME and/or --model MODEL".into(),
        ));
    }
    if !db::path(root).exists() {
        return db::open_read_only(root).map(|_| Pruned {
            entries: 0,
            bytes: 0,
        });
    }
    let mut cache = db::open(root)?;
    let mut conditions = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(before) = which.recorded_before_ms {
        conditions.push("recorded_at_ms < ?");
        values.push(before.into());
    }
    if let Some(experiment) = &which.experiment {
        conditions.push("experiment = ?");
        values.push(experiment.clone().into());
    }
    if let Some(model) = &which.model {
        conditions.push("(provider || '/' || model = ? OR model = ?)");
        values.push(model.clone().into());
        values.push(model.clone().into());
    }
    let filter = conditions.join(" AND ");
    let transaction = cache.transaction().map_err(sql("cannot prune the cache"))?;
    let (entries, bytes): (i64, i64) = transaction
        .query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(request) + LENGTH(answer)), 0) FROM answers WHERE {filter}"
            ),
            params_from_iter(values.iter()),
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(sql("cannot prune the cache"))?;
    transaction
        .execute(
            &format!("DELETE FROM answers WHERE {filter}"),
            params_from_iter(values.iter()),
        )
        .map_err(sql("cannot prune the cache"))?;
    transaction
        .commit()
        .map_err(sql("cannot prune the cache"))?;
    // Gives the freed pages back to the file system.
    cache
        .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(sql("cannot shrink the cache"))?;
    Ok(Pruned {
        entries: entries as u64,
        bytes: bytes as u64,
    })
}
