//! How each kind of write is applied inside a group's transaction.

use flotilla_shared::Error;
use rusqlite::params;
use serde_json::{Map, Value};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use flotilla_shared::calls::{TierLine, TierSpend};
use flotilla_shared::config::ExperimentConfig;
use flotilla_shared::tier::Tier;

use super::columns::parse_column;
use super::{ExperimentRow, Write};
use crate::outputs::{self, ResultRow, Summary};
use crate::state::{AttemptRecord, RunStatus, VariationEntry};

/// Why a write failed: the database or a file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Files(#[from] Error),
}

impl WriteError {
    /// The cause alone, as people read it: "No space left on device (os error 28)".
    pub fn cause(&self) -> String {
        match self {
            WriteError::Files(Error::Io { cause, .. }) => cause.to_string(),
            WriteError::Files(other) => other.to_string(),
            WriteError::Sql(rusqlite::Error::SqliteFailure(failure, _)) => {
                rusqlite::ffi::Error::new(failure.extended_code).to_string()
            }
            WriteError::Sql(other) => other.to_string(),
        }
    }
}

type Transaction<'a> = rusqlite::Transaction<'a>;
type Applied = std::result::Result<(), WriteError>;

/// Applies one write inside the group's transaction; files first, so that a
/// row never commits before what it describes is on disk.
pub fn apply(transaction: &Transaction<'_>, write: &Write, committed_at_ms: i64) -> Applied {
    match write {
        Write::Experiment(row) => experiment(transaction, row),
        Write::Variations {
            experiment_id,
            variations,
        } => self::variations(transaction, *experiment_id, variations),
        Write::Runs {
            experiment_id,
            runs,
        } => new_runs(transaction, *experiment_id, runs),
        Write::RunGrid {
            experiment_id,
            repetitions,
        } => run_grid(transaction, *experiment_id, *repetitions),
        Write::Attempt(record) => apply_attempt(transaction, record),
        Write::RunStatus {
            experiment_id,
            runs,
            status,
        } => run_status(transaction, *experiment_id, runs, *status),
        Write::Workdir { hash, bundle } => {
            transaction
                .prepare_cached("INSERT OR IGNORE INTO workdirs (hash, bundle) VALUES (?, ?)")?
                .execute(params![hash, bundle])?;
            Ok(())
        }
        Write::Summary { dir, summary } => Ok(outputs::write_summary(dir, summary)?),
        Write::Ledger(events) => ledger(transaction, events, committed_at_ms),
        Write::HookLog { path, content } => Ok(outputs::write_hook_log(path, content)?),
        Write::ResultsCsv {
            experiment_id,
            dir,
            config,
            running,
        } => running_results(transaction, *experiment_id, dir, config, running),
        Write::Finalize {
            experiment_id,
            dir,
            summary,
            config,
        } => finalize(
            transaction,
            *experiment_id,
            dir,
            summary,
            config,
            committed_at_ms,
        ),
    }
}

/// Budget ledger events, in order (ARCHITECTURE.md, invariant 1).
fn ledger(
    transaction: &Transaction<'_>,
    events: &[(i64, crate::state::LedgerEvent)],
    at_ms: i64,
) -> Applied {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO ledger (experiment_id, kind, lease_id, variation, amount_nanos, at_ms) VALUES (?, ?, ?, ?, ?, ?)",
    )?;
    for (experiment_id, event) in events {
        let (kind, lease_id, variation, amount) = super::ledger_row(event);
        insert.execute(params![
            experiment_id,
            kind,
            lease_id as i64,
            variation,
            amount.nanos() as i64,
            at_ms
        ])?;
    }
    Ok(())
}

/// The experiment's row, after its config.yaml and .meta/config.hash.
fn experiment(transaction: &Transaction<'_>, row: &ExperimentRow) -> Applied {
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
    Ok(())
}

fn variations(
    transaction: &Transaction<'_>,
    experiment_id: i64,
    variations: &[VariationEntry],
) -> Applied {
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
    Ok(())
}

fn new_runs(transaction: &Transaction<'_>, experiment_id: i64, runs: &[(u32, u32)]) -> Applied {
    let mut insert = transaction.prepare_cached(
        "INSERT OR IGNORE INTO runs (experiment_id, variation, repetition, status) VALUES (?, ?, ?, 'pending')",
    )?;
    for (variation, repetition) in runs {
        insert.execute(params![experiment_id, variation, repetition])?;
    }
    Ok(())
}

fn run_grid(transaction: &Transaction<'_>, experiment_id: i64, repetitions: u32) -> Applied {
    // CROSS JOIN keeps variations as the outer loop: rows arrive in the
    // primary key's order, so the table is appended to, never split.
    transaction
        .prepare_cached(
            "WITH RECURSIVE repetition(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM repetition WHERE n < ?2) \
             INSERT OR IGNORE INTO runs (experiment_id, variation, repetition, status) \
             SELECT ?1, v.variation, repetition.n, 'pending' FROM variations v CROSS JOIN repetition \
             WHERE v.experiment_id = ?1",
        )?
        .execute(params![experiment_id, repetitions])?;
    Ok(())
}

/// Runs cancelled, or reopened by a resubmission (pending again, attempts from zero).
fn run_status(
    transaction: &Transaction<'_>,
    experiment_id: i64,
    runs: &[(u32, u32)],
    status: RunStatus,
) -> Applied {
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
    Ok(())
}

/// results.csv and batch-costs.json of a running experiment, from committed
/// rows; the runs in `running` show as running (the database knows them as pending).
fn running_results(
    transaction: &Transaction<'_>,
    experiment_id: i64,
    dir: &Path,
    config: &ExperimentConfig,
    running: &[(u32, u32)],
) -> Applied {
    let running: std::collections::HashSet<&(u32, u32)> = running.iter().collect();
    let costs = write_results_streaming(transaction, experiment_id, dir, config, |row| {
        if running.contains(&(row.variation, row.repetition)) {
            row.status = RunStatus::Running;
        }
    })?;
    outputs::write_costs(
        dir,
        &costs.json(&call_spending(transaction, experiment_id)?),
    )?;
    Ok(())
}

/// results.csv and results.jsonl from the database, a row at a time
/// (ARCHITECTURE.md, "Scale"); `adjust` sees each row before it is written.
fn write_results_streaming(
    connection: &rusqlite::Connection,
    experiment_id: i64,
    dir: &Path,
    config: &ExperimentConfig,
    mut adjust: impl FnMut(&mut ResultRow),
) -> Result<outputs::CostTally, WriteError> {
    let header = results_header(connection, experiment_id, config)?;
    let mut writer = outputs::ResultsWriter::create(dir, config, header)?;
    let mut failed = None;
    for_each_result_row(connection, experiment_id, |mut row| {
        adjust(&mut row);
        if failed.is_none() {
            failed = writer.push(&row).err();
        }
    })?;
    match failed {
        Some(error) => Err(error.into()),
        None => Ok(writer.finish()?),
    }
}

/// The columns of results.csv: every variation's parameter names, and the
/// metric names any run reported (read without keeping the rows).
fn results_header(
    connection: &rusqlite::Connection,
    experiment_id: i64,
    config: &ExperimentConfig,
) -> rusqlite::Result<outputs::ResultsHeader> {
    use serde::de::IgnoredAny;
    let mut params = std::collections::BTreeSet::new();
    let mut query =
        connection.prepare_cached("SELECT params_json FROM variations WHERE experiment_id = ?")?;
    let mut rows = query.query([experiment_id])?;
    while let Some(row) = rows.next()? {
        if let Ok(keys) =
            serde_json::from_str::<HashMap<String, IgnoredAny>>(row.get_ref(0)?.as_str()?)
        {
            params.extend(keys.into_keys());
        }
    }
    let mut metrics = std::collections::BTreeSet::new();
    let mut query = connection.prepare_cached(
        "SELECT metrics_json FROM runs WHERE experiment_id = ? AND metrics_json IS NOT NULL",
    )?;
    let mut rows = query.query([experiment_id])?;
    while let Some(row) = rows.next()? {
        let rusqlite::types::ValueRef::Text(text) = row.get_ref(0)? else {
            continue;
        };
        // Only the names: the values are skipped, not built.
        if let Ok(keys) = serde_json::from_slice::<HashMap<&str, IgnoredAny>>(text) {
            for key in keys.into_keys() {
                if !metrics.contains(key) {
                    metrics.insert(key.to_string());
                }
            }
        } else if let Ok(keys) = serde_json::from_slice::<HashMap<String, IgnoredAny>>(text) {
            metrics.extend(keys.into_keys());
        }
    }
    Ok(outputs::ResultsHeader::new(config, params, metrics))
}

/// The final files, then the final state. Finished when the last result is
/// durable: now, in the transaction that commits after every earlier result.
fn finalize(
    transaction: &Transaction<'_>,
    experiment_id: i64,
    dir: &Path,
    summary: &Summary,
    config: &ExperimentConfig,
    committed_at_ms: i64,
) -> Applied {
    let summary = Summary {
        finished_at_ms: Some(committed_at_ms),
        now_ms: committed_at_ms,
        ..summary.clone()
    };
    let costs = write_results_streaming(transaction, experiment_id, dir, config, |_| {})?;
    outputs::write_costs(
        dir,
        &costs.json(&call_spending(transaction, experiment_id)?),
    )?;
    outputs::write_summary(dir, &summary)?;
    transaction
        .prepare_cached("UPDATE experiments SET state = ?, finished_at_ms = ? WHERE id = ?")?
        .execute(params![
            summary.state.as_str(),
            summary.finished_at_ms,
            experiment_id
        ])?;
    Ok(())
}

/// An attempt's files, its row, and its run's row.
fn apply_attempt(transaction: &Transaction<'_>, record: &AttemptRecord) -> Applied {
    // Files before the row: once the row is committed and acknowledged, the
    // run's directory is complete (ARCHITECTURE.md, invariant 4).
    outputs::write_run_files(&record.experiment_dir, record)?;
    insert_calls(transaction, record)?;
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

/// The attempt's LLM calls, numbered in order; rows of an earlier write of
/// the same attempt (a retried group) are replaced.
fn insert_calls(transaction: &Transaction<'_>, record: &AttemptRecord) -> Applied {
    let Some(result) = &record.result else {
        return Ok(());
    };
    let mut insert = transaction.prepare_cached(
        "INSERT OR REPLACE INTO calls (experiment_id, variation, repetition, attempt, call, started_at_ms, provider, \
         model, api, streamed, input_tokens, output_tokens, cached_input_tokens, cost_usd, cost_is_worst_case, \
         latency_ms, time_to_first_token_ms, retries, status, error, cache, would_cost_usd, \
         cached_from_experiment, cached_from_run, cached_recorded_at_ms, tier, tier_saved_usd, tier_refusals) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for (number, call) in result.calls.iter().enumerate() {
        insert.execute(params![
            record.experiment_db_id,
            record.variation,
            record.repetition,
            record.attempt,
            number as i64 + 1,
            call.started_at_ms,
            call.provider,
            call.model,
            call.api.as_str(),
            call.streamed,
            call.input_tokens as i64,
            call.output_tokens as i64,
            call.cached_input_tokens as i64,
            call.cost_usd,
            call.cost_is_worst_case,
            call.latency_ms,
            call.time_to_first_token_ms,
            call.retries,
            match call.status {
                flotilla_shared::calls::CallStatus::Succeeded => "succeeded",
                flotilla_shared::calls::CallStatus::Failed => "failed",
            },
            call.error,
            call.cache.as_str(),
            call.would_cost_usd,
            call.cached_from.as_ref().map(|from| &from.experiment),
            call.cached_from.as_ref().map(|from| &from.run),
            call.cached_from.as_ref().map(|from| from.recorded_at_ms),
            call.tier.as_str(),
            call.tier_saved_usd,
            call.tier_refusals,
        ])?;
    }
    Ok(())
}

/// How an experiment's calls used the response cache.
pub(crate) fn cache_savings(
    connection: &rusqlite::Connection,
    experiment_id: i64,
) -> rusqlite::Result<flotilla_shared::calls::CacheSavings> {
    connection.query_row(
        "SELECT COUNT(*), COALESCE(SUM(cache = 'hit'), 0), \
         COALESCE(SUM(CASE WHEN cache = 'hit' THEN COALESCE(would_cost_usd, 0) END), 0), \
         MIN(CASE WHEN cache = 'hit' THEN cached_recorded_at_ms END), \
         MAX(CASE WHEN cache = 'hit' THEN cached_recorded_at_ms END) \
         FROM calls WHERE experiment_id = ?",
        [experiment_id],
        |row| {
            Ok(flotilla_shared::calls::CacheSavings {
                calls: row.get::<_, i64>(0)? as u64,
                hits: row.get::<_, i64>(1)? as u64,
                saved_usd: row.get(2)?,
                recorded_from_ms: row.get(3)?,
                recorded_to_ms: row.get(4)?,
            })
        },
    )
}

/// What an experiment's calls spent at each service tier, and what the flex
/// tier saved; cache hits were served by no tier.
pub(crate) fn tier_spend(
    connection: &rusqlite::Connection,
    experiment_id: i64,
) -> rusqlite::Result<TierSpend> {
    let mut query = connection.prepare_cached(
        "SELECT tier, COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tier_saved_usd), 0), \
         COALESCE(SUM(tier_refusals), 0), COALESCE(SUM(tier = 'standard' AND tier_refusals > 0), 0) \
         FROM calls WHERE experiment_id = ? AND cache != 'hit' GROUP BY tier",
    )?;
    let mut spend = TierSpend::default();
    let rows = query.query_map([experiment_id], |row| {
        let tier: String = row.get(0)?;
        Ok((
            TierLine {
                tier: Tier::parse(&tier).unwrap_or_default(),
                calls: row.get::<_, i64>(1)? as u64,
                cost_usd: row.get(2)?,
                saved_usd: row.get(3)?,
            },
            row.get::<_, i64>(4)? as u64,
            row.get::<_, i64>(5)? as u64,
        ))
    })?;
    for row in rows {
        let (line, refusals, fell_back) = row?;
        spend.tiers.push(line);
        spend.refusals += refusals;
        spend.fell_back += fell_back;
    }
    spend.tiers.sort_by_key(|line| line.tier);
    Ok(spend)
}

/// What an experiment's calls cost, by model, through the cache and by tier.
fn call_spending(
    transaction: &Transaction<'_>,
    experiment_id: i64,
) -> rusqlite::Result<outputs::CallSpending> {
    Ok(outputs::CallSpending {
        by_model: call_costs(transaction, experiment_id)?,
        cache: cache_savings(transaction, experiment_id)?,
        tiers: tier_spend(transaction, experiment_id)?,
    })
}

/// What an experiment's calls cost by provider and model.
fn call_costs(
    transaction: &Transaction<'_>,
    experiment_id: i64,
) -> rusqlite::Result<Vec<outputs::CallCost>> {
    let mut query = transaction.prepare_cached(
        "SELECT provider, model, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd), \
         SUM(cost_is_worst_case), COALESCE(SUM(cache = 'hit'), 0), \
         COALESCE(SUM(CASE WHEN cache = 'hit' THEN COALESCE(would_cost_usd, 0) END), 0) \
         FROM calls WHERE experiment_id = ? GROUP BY provider, model ORDER BY provider, model",
    )?;
    let rows = query.query_map([experiment_id], |row| {
        Ok(outputs::CallCost {
            provider: row.get(0)?,
            model: row.get(1)?,
            calls: row.get::<_, i64>(2)? as u64,
            input_tokens: row.get::<_, i64>(3)? as u64,
            output_tokens: row.get::<_, i64>(4)? as u64,
            cost_usd: row.get(5)?,
            worst_case_calls: row.get::<_, i64>(6)? as u64,
            cache_hits: row.get::<_, i64>(7)? as u64,
            saved_usd: row.get(8)?,
        })
    })?;
    rows.collect()
}

/// Every run of an experiment as results.csv and results.jsonl show it
/// (also read by `flotilla export`).
pub(crate) fn result_rows(
    connection: &rusqlite::Connection,
    experiment_id: i64,
) -> rusqlite::Result<Vec<ResultRow>> {
    let mut rows = Vec::new();
    for_each_result_row(connection, experiment_id, |row| rows.push(row))?;
    Ok(rows)
}

/// Every run of an experiment, in run order, handed to `each` one at a time.
fn for_each_result_row(
    connection: &rusqlite::Connection,
    experiment_id: i64,
    mut each: impl FnMut(ResultRow),
) -> rusqlite::Result<()> {
    let mut query = connection.prepare_cached(
        "SELECT r.variation, r.repetition, r.attempts, r.status, r.worker, r.duration_s, v.params_json, r.metrics_json, r.cost_usd, \
         (SELECT a.error FROM attempts a WHERE a.experiment_id = r.experiment_id AND a.variation = r.variation \
          AND a.repetition = r.repetition ORDER BY a.attempt DESC LIMIT 1) \
         FROM runs r JOIN variations v ON v.experiment_id = r.experiment_id AND v.variation = r.variation \
         WHERE r.experiment_id = ? ORDER BY r.variation, r.repetition",
    )?;
    // A variation's parameters are read once and shared by its rows.
    let mut variation_params: HashMap<u32, Arc<Map<String, Value>>> = HashMap::new();
    let mut metric_names = std::collections::BTreeSet::new();
    let rows = query.query_map([experiment_id], |row| {
        let variation: u32 = row.get(0)?;
        let params = match variation_params.get(&variation) {
            Some(params) => params.clone(),
            None => {
                let params = Arc::new(object(row.get_ref(6)?.as_str()?));
                variation_params.insert(variation, params.clone());
                params
            }
        };
        let metrics = match row.get_ref(7)? {
            rusqlite::types::ValueRef::Text(text) => {
                outputs::RunMetrics::parse(&String::from_utf8_lossy(text), &mut metric_names)
            }
            _ => outputs::RunMetrics::default(),
        };
        Ok(ResultRow {
            variation: row.get(0)?,
            repetition: row.get(1)?,
            attempt: row.get(2)?,
            status: parse_column(row, 3)?,
            worker: row.get(4)?,
            duration_s: row.get(5)?,
            params,
            metrics,
            cost_usd: row.get(8)?,
            error: row.get(9)?,
        })
    })?;
    for row in rows {
        each(row?);
    }
    Ok(())
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}
