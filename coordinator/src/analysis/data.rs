//! Reading an experiment's runs back from flotilla.db for analysis, with a
//! read-only connection: a report can be made while the coordinator runs.

use std::collections::BTreeMap;
use std::path::Path;

use flotilla_shared::config::{Axis, ExperimentConfig, MetricSpec};
use flotilla_shared::grid::run_seed;
use flotilla_shared::naming::run_id;
use flotilla_shared::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// What the analysis needs to know of the experiment file (or, for
/// `flotilla compare`, of the experiments put side by side).
#[derive(Debug, Clone)]
pub struct Design {
    pub axes: Vec<Axis>,
    pub metrics: Vec<MetricSpec>,
    pub baseline: Option<BTreeMap<String, Value>>,
    /// Seeds the bootstrap.
    pub seed: u64,
    /// When set, only variations that differ on this axis alone are compared
    /// (the same parameters in different experiments).
    pub compare_only_across: Option<String>,
}

impl Design {
    pub fn of(config: &ExperimentConfig) -> Self {
        Design {
            axes: config.variations.clone(),
            metrics: config.metrics.clone(),
            baseline: config.baseline.clone(),
            seed: config.seed,
            compare_only_across: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct VariationData {
    pub index: u32,
    pub axis_values: BTreeMap<String, Value>,
    /// Where the variation comes from when experiments are compared:
    /// (experiment, its index there).
    pub origin: Option<(String, u32)>,
}

impl VariationData {
    /// How reports name it: `var-003`, or `other-experiment/var-003` in a comparison.
    pub fn name(&self) -> String {
        match &self.origin {
            Some((experiment, index)) => format!("{experiment}/var-{index:03}"),
            None => format!("var-{:03}", self.index),
        }
    }

    /// The id of one of its runs, as reports show it.
    pub fn run_name(&self, repetition: u32) -> String {
        match &self.origin {
            Some((experiment, index)) => format!("{experiment}/{}", run_id(*index, repetition)),
            None => run_id(self.index, repetition),
        }
    }
}

/// A metric value as analysis sees it; kept small because a report may hold a million runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue {
    Number(f64),
    Bool(bool),
    /// A string, list or object: stored, not analysed.
    Other,
}

impl MetricValue {
    /// Numbers as they are, booleans as 0 and 1.
    pub fn as_number(self) -> Option<f64> {
        match self {
            MetricValue::Number(value) => Some(value).filter(|v| v.is_finite()),
            MetricValue::Bool(flag) => Some(f64::from(u8::from(flag))),
            MetricValue::Other => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunData {
    pub variation: u32,
    pub repetition: u32,
    /// Runs with equal seeds pair up (DESIGN §4).
    pub seed: u64,
    pub status: String,
    /// (index into `ExperimentData::metric_names`, value).
    pub metrics: Vec<(u16, MetricValue)>,
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub timed_out: bool,
    pub duration_s: Option<f64>,
    /// Dollars the run's attempts spent, when reported.
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct ExperimentData {
    pub name: String,
    pub design: Design,
    /// Constant parameters of the experiment file (`params:`).
    pub constants: BTreeMap<String, Value>,
    pub state: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub variations: Vec<VariationData>,
    pub runs: Vec<RunData>,
    /// Every metric name seen, indexed by `RunData::metrics`.
    pub metric_names: Vec<String>,
}

impl ExperimentData {
    pub fn metric_index(&self, name: &str) -> Option<u16> {
        self.metric_names
            .iter()
            .position(|n| n == name)
            .map(|i| i as u16)
    }
}

/// Parses a run's metrics object, interning its keys.
fn compact_metrics(
    text: Option<&str>,
    names: &mut Vec<String>,
    index: &mut std::collections::HashMap<String, u16>,
) -> Vec<(u16, MetricValue)> {
    let Some(Ok(Value::Object(map))) = text.map(serde_json::from_str::<Value>) else {
        return Vec::new();
    };
    map.into_iter()
        .filter(|(_, value)| !value.is_null())
        .filter_map(|(key, value)| {
            let id = match index.get(&key) {
                Some(id) => *id,
                None => {
                    let id = u16::try_from(names.len()).ok()?;
                    names.push(key.clone());
                    index.insert(key, id);
                    id
                }
            };
            let value = match value {
                Value::Bool(flag) => MetricValue::Bool(flag),
                Value::Number(number) => number
                    .as_f64()
                    .map(MetricValue::Number)
                    .unwrap_or(MetricValue::Other),
                _ => MetricValue::Other,
            };
            Some((id, value))
        })
        .collect()
}

fn sql(error: rusqlite::Error) -> Error {
    Error::Internal(format!("cannot read flotilla.db: {error}"))
}

pub fn load(root: &Path, name: &str) -> Result<ExperimentData> {
    let path = root.join("flotilla.db");
    if !path.exists() {
        return Err(Error::NotFound(format!(
            "no flotilla.db under {}; pass --root with the experiments root",
            root.display()
        )));
    }
    let connection = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    let row = connection.query_row(
        "SELECT id, config_json, state, started_at_ms, finished_at_ms FROM experiments WHERE name = ?",
        [name],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, Option<i64>>(4)?)),
    );
    let (id, config_json, state, started_at_ms, finished_at_ms) = match row {
        Ok(row) => row,
        Err(rusqlite::Error::QueryReturnedNoRows) => {
            return Err(Error::NotFound(format!(
                "no experiment named '{name}' in {}",
                path.display()
            )))
        }
        Err(e) => return Err(sql(e)),
    };
    let config = ExperimentConfig::from_canonical_json(&config_json)
        .map_err(|e| Error::Internal(format!("stored config of '{name}' cannot be read: {e}")))?;

    let mut statement = connection.prepare("SELECT variation, axis_json FROM variations WHERE experiment_id = ? ORDER BY variation").map_err(sql)?;
    let variations = statement
        .query_map([id], |r| {
            let axis: String = r.get(1)?;
            Ok(VariationData {
                index: r.get(0)?,
                origin: None,
                axis_values: serde_json::from_str(&axis).unwrap_or_default(),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql)?;

    let mut statement = connection
        .prepare(
            "SELECT r.variation, r.repetition, r.status, r.metrics_json, r.error, a.exit_code, a.signal, a.timed_out, r.duration_s, r.cost_usd \
             FROM runs r LEFT JOIN attempts a ON a.experiment_id = r.experiment_id AND a.variation = r.variation \
             AND a.repetition = r.repetition AND a.attempt = r.attempts \
             WHERE r.experiment_id = ? ORDER BY r.variation, r.repetition",
        )
        .map_err(sql)?;
    let mut metric_names = Vec::new();
    let mut metric_ids = std::collections::HashMap::new();
    let runs = statement
        .query_map([id], |r| {
            let metrics: Option<String> = r.get(3)?;
            let repetition = r.get(1)?;
            Ok(RunData {
                variation: r.get(0)?,
                repetition,
                seed: run_seed(config.seed, repetition),
                status: r.get(2)?,
                metrics: compact_metrics(metrics.as_deref(), &mut metric_names, &mut metric_ids),
                error: r.get(4)?,
                exit_code: r.get(5)?,
                signal: r.get(6)?,
                timed_out: r.get::<_, Option<bool>>(7)?.unwrap_or(false),
                duration_s: r.get(8)?,
                cost_usd: r.get(9)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql)?;
    Ok(ExperimentData {
        name: name.to_string(),
        design: Design::of(&config),
        constants: config.params.clone(),
        state,
        started_at_ms,
        finished_at_ms,
        variations,
        runs,
        metric_names,
    })
}
