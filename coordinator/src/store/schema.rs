//! flotilla.db's tables and how a root made by an earlier version is brought
//! up to date: numbered migrations, recorded in `PRAGMA user_version`, each
//! applied in a transaction of its own (ARCHITECTURE.md, "Storage").

use rusqlite::{Connection, Transaction};

/// A migration takes the schema from the version before it to its own.
struct Migration {
    version: u32,
    what: &'static str,
    apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what:
            "experiments, variations, runs, attempts and workdirs; runs and attempts carry a cost",
        apply: version_1,
    },
    Migration {
        version: 2,
        what: "calls: every LLM call of every attempt",
        apply: version_2,
    },
    Migration {
        version: 3,
        what: "ledger: every budget reservation, top-up, settlement and release",
        apply: version_3,
    },
    Migration {
        version: 4,
        what: "calls say how they used the response cache",
        apply: version_4,
    },
    Migration {
        version: 5,
        what: "calls say which service tier served them",
        apply: version_5,
    },
];

/// The schema version this build writes.
pub const LATEST_VERSION: u32 = 5;

/// The tables as of version 1. Roots made before versions were recorded
/// (user_version 0) may have them without the cost columns.
const TABLES_V1: &str = r#"
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

fn version_1(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(TABLES_V1)?;
    // Roots made before runs carried a cost have the tables without it.
    for table in ["runs", "attempts"] {
        let has_cost: bool = transaction.query_row(
            &format!(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = 'cost_usd'"
            ),
            [],
            |row| row.get(0),
        )?;
        if !has_cost {
            transaction.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN cost_usd REAL"))?;
        }
    }
    Ok(())
}

fn version_2(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "CREATE TABLE IF NOT EXISTS calls (
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            variation INTEGER NOT NULL,
            repetition INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            -- The call's place among its attempt's calls, from 1.
            call INTEGER NOT NULL,
            started_at_ms INTEGER NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            api TEXT NOT NULL,
            streamed INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cached_input_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            cost_is_worst_case INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            time_to_first_token_ms REAL NOT NULL,
            retries INTEGER NOT NULL,
            status TEXT NOT NULL,
            error TEXT,
            PRIMARY KEY (experiment_id, variation, repetition, attempt, call)
        ) WITHOUT ROWID;",
    )
}

fn version_3(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "CREATE TABLE IF NOT EXISTS ledger (
            -- Replayed in this order after a restart (ARCHITECTURE.md, invariant 1).
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            -- reserved | topped_up | settled | released
            kind TEXT NOT NULL,
            lease_id INTEGER NOT NULL,
            variation INTEGER,
            -- Whole nanodollars: reserved, added, or spent when settled.
            amount_nanos INTEGER NOT NULL,
            at_ms INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS ledger_by_experiment ON ledger (experiment_id, id);",
    )
}

fn version_4(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "-- hit | miss | off; calls made before the cache existed were off.
        ALTER TABLE calls ADD COLUMN cache TEXT NOT NULL DEFAULT 'off';
        -- What the call would have cost upstream (a hit: what the recorded call cost).
        ALTER TABLE calls ADD COLUMN would_cost_usd REAL;
        -- A hit's source: the run that recorded the answer, and when.
        ALTER TABLE calls ADD COLUMN cached_from_experiment TEXT;
        ALTER TABLE calls ADD COLUMN cached_from_run TEXT;
        ALTER TABLE calls ADD COLUMN cached_recorded_at_ms INTEGER;",
    )
}

fn version_5(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "-- standard | flex: the tier that served the call; calls before tiers were standard.
        ALTER TABLE calls ADD COLUMN tier TEXT NOT NULL DEFAULT 'standard';
        -- What the tier saved against the standard price of the same usage.
        ALTER TABLE calls ADD COLUMN tier_saved_usd REAL NOT NULL DEFAULT 0;
        -- Refusals of the flex tier for capacity before the call was served.
        ALTER TABLE calls ADD COLUMN tier_refusals INTEGER NOT NULL DEFAULT 0;",
    )
}

/// Why a root's schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("this root's database has schema version {found}, newer than the {LATEST_VERSION} this Flotilla knows; use the Flotilla that wrote it, or a newer one")]
    Newer { found: u32 },
    #[error("cannot bring the database to schema version {version} ({what}): {source}")]
    Failed {
        version: u32,
        what: &'static str,
        source: rusqlite::Error,
    },
}

/// Applies every migration above the database's version, in order.
pub fn migrate(connection: &mut Connection) -> Result<(), MigrationError> {
    let found: u32 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| MigrationError::Failed {
            version: 0,
            what: "reading the schema version",
            source,
        })?;
    if found > LATEST_VERSION {
        return Err(MigrationError::Newer { found });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let failed = |source| MigrationError::Failed {
            version: migration.version,
            what: migration.what,
            source,
        };
        let transaction = connection.transaction().map_err(failed)?;
        (migration.apply)(&transaction).map_err(failed)?;
        transaction
            .pragma_update(None, "user_version", migration.version)
            .map_err(failed)?;
        transaction.commit().map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables as a root of the version before cost had them.
    const TABLES_BEFORE_COST: &str = "
        CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, config_yaml TEXT NOT NULL,
            config_json TEXT NOT NULL, config_hash TEXT NOT NULL, state TEXT NOT NULL, workdir_path TEXT,
            workdir_hash TEXT, started_at_ms INTEGER NOT NULL, finished_at_ms INTEGER);
        CREATE TABLE variations (experiment_id INTEGER NOT NULL, variation INTEGER NOT NULL, params_json TEXT NOT NULL,
            axis_json TEXT NOT NULL, PRIMARY KEY (experiment_id, variation)) WITHOUT ROWID;
        CREATE TABLE runs (experiment_id INTEGER NOT NULL, variation INTEGER NOT NULL, repetition INTEGER NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, duration_s REAL, metrics_json TEXT,
            error TEXT, finished_at_ms INTEGER, PRIMARY KEY (experiment_id, variation, repetition)) WITHOUT ROWID;
        CREATE TABLE attempts (experiment_id INTEGER NOT NULL, variation INTEGER NOT NULL, repetition INTEGER NOT NULL,
            attempt INTEGER NOT NULL, worker TEXT NOT NULL, lease_id INTEGER NOT NULL, outcome TEXT NOT NULL,
            exit_code INTEGER, signal INTEGER, timed_out INTEGER NOT NULL DEFAULT 0, error TEXT, stderr_tail TEXT,
            duration_s REAL, started_at_ms INTEGER, finished_at_ms INTEGER NOT NULL, metrics_json TEXT,
            PRIMARY KEY (experiment_id, variation, repetition, attempt)) WITHOUT ROWID;
        CREATE TABLE workdirs (hash TEXT PRIMARY KEY, bundle BLOB NOT NULL);
        INSERT INTO runs (experiment_id, variation, repetition, status, attempts) VALUES (1, 1, 1, 'succeeded', 1);
    ";

    fn version(connection: &Connection) -> u32 {
        connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_root_of_the_previous_version_is_migrated_and_keeps_its_rows() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(TABLES_BEFORE_COST).unwrap();
        migrate(&mut connection).unwrap();
        assert_eq!(version(&connection), LATEST_VERSION);
        let (status, cost): (String, Option<f64>) = connection
            .query_row("SELECT status, cost_usd FROM runs", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((status.as_str(), cost), ("succeeded", None));
        connection
            .execute("UPDATE attempts SET cost_usd = 1.5", [])
            .unwrap();
        // Migrating again changes nothing.
        migrate(&mut connection).unwrap();
        assert_eq!(version(&connection), LATEST_VERSION);
    }

    #[test]
    fn a_new_root_gets_every_table() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        let tables: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 7);
    }

    #[test]
    fn a_root_of_a_newer_version_is_refused() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection
            .pragma_update(None, "user_version", LATEST_VERSION + 1)
            .unwrap();
        let error = migrate(&mut connection).unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "newer than the {LATEST_VERSION} this Flotilla knows"
            )),
            "{error}"
        );
    }
}
