//! What a report is made from: an experiment's design, variations and runs,
//! kept compact because a report may hold a million runs. The coordinator's
//! store fills it through its read interface (ARCHITECTURE.md, "Storage"); this
//! crate never reads the database itself.

use std::collections::{BTreeMap, HashMap};

use flotilla_shared::calls::{CacheSavings, TierSpend};
use flotilla_shared::config::{Axis, ExperimentConfig, MetricSpec};
use flotilla_shared::naming::{run_id, variation_name};
use flotilla_shared::status::{ExperimentState, RunStatus};
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
    /// Adaptive sampling, and the most runs a variation could get.
    pub sampling: Option<flotilla_shared::config::Sampling>,
    pub runs_per_variation: u32,
}

impl Design {
    pub fn of(config: &ExperimentConfig) -> Self {
        Design {
            // An axis of cases is analysed by its cases' labels, as variations name them.
            axes: config
                .variations
                .iter()
                .map(|axis| Axis {
                    param: axis.param.clone(),
                    values: (0..axis.values.len()).map(|i| axis.label_of(i)).collect(),
                    cases: axis.cases.clone(),
                })
                .collect(),
            metrics: config.metrics.clone(),
            baseline: config.baseline.clone(),
            seed: config.seed,
            compare_only_across: None,
            sampling: config.sampling.clone(),
            runs_per_variation: config.runs_per_variation,
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
            Some((experiment, index)) => format!("{experiment}/{}", variation_name(*index)),
            None => variation_name(self.index),
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
    /// Runs with equal seeds pair up (ARCHITECTURE.md, "Experiments and runs").
    pub seed: u64,
    pub status: RunStatus,
    /// (index into `ExperimentData::metric_names`, value). Boxed slices
    /// rather than vectors and strings: ten million runs are read into one
    /// report (ARCHITECTURE.md, "Scale").
    pub metrics: Box<[(u16, MetricValue)]>,
    pub error: Option<Box<str>>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
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
    pub state: ExperimentState,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub variations: Vec<VariationData>,
    pub runs: Vec<RunData>,
    /// Every metric name seen, indexed by `RunData::metrics`.
    pub metric_names: Vec<String>,
    /// How its calls used the response cache: a replay is not fresh samples.
    pub cache: CacheSavings,
    /// What its calls spent at each service tier, and what flex saved.
    pub tiers: TierSpend,
}

impl ExperimentData {
    pub fn metric_index(&self, name: &str) -> Option<u16> {
        self.metric_names
            .iter()
            .position(|n| n == name)
            .map(|i| i as u16)
    }
}

/// Builds an experiment's data one run at a time, interning metric names so
/// that a run's metrics take a few bytes each.
#[derive(Debug)]
pub struct ExperimentDataBuilder {
    data: ExperimentData,
    metric_ids: HashMap<String, u16>,
}

/// One run as the store reads it; `metrics_json` is the run's metrics object.
#[derive(Debug, Clone)]
pub struct RunRecord<'a> {
    pub variation: u32,
    pub repetition: u32,
    pub seed: u64,
    pub status: RunStatus,
    pub metrics_json: Option<&'a str>,
    pub error: Option<String>,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub timed_out: bool,
    pub duration_s: Option<f64>,
    pub cost_usd: Option<f64>,
}

impl ExperimentDataBuilder {
    pub fn new(
        config: &ExperimentConfig,
        state: ExperimentState,
        started_at_ms: i64,
        finished_at_ms: Option<i64>,
    ) -> Self {
        ExperimentDataBuilder {
            data: ExperimentData {
                name: config.name.clone(),
                design: Design::of(config),
                constants: config.params.clone(),
                state,
                started_at_ms,
                finished_at_ms,
                variations: Vec::new(),
                runs: Vec::new(),
                metric_names: Vec::new(),
                cache: CacheSavings::default(),
                tiers: TierSpend::default(),
            },
            metric_ids: HashMap::new(),
        }
    }

    pub fn variation(&mut self, index: u32, axis_values: BTreeMap<String, Value>) {
        self.data.variations.push(VariationData {
            index,
            axis_values,
            origin: None,
        });
    }

    /// Room for `runs` more runs, taken exactly.
    pub fn reserve_runs(&mut self, runs: usize) {
        self.data.runs.reserve_exact(runs);
    }

    pub fn run(&mut self, record: RunRecord<'_>) {
        let metrics = self.compact_metrics(record.metrics_json);
        self.data.runs.push(RunData {
            variation: record.variation,
            repetition: record.repetition,
            seed: record.seed,
            status: record.status,
            metrics,
            error: record.error.map(String::into_boxed_str),
            exit_code: record.exit_code.and_then(|code| i32::try_from(code).ok()),
            signal: record.signal.and_then(|signal| i32::try_from(signal).ok()),
            timed_out: record.timed_out,
            duration_s: record.duration_s,
            cost_usd: record.cost_usd,
        });
    }

    pub fn tiers(&mut self, tiers: TierSpend) {
        self.data.tiers = tiers;
    }

    pub fn cache(&mut self, cache: CacheSavings) {
        self.data.cache = cache;
    }

    pub fn finish(self) -> ExperimentData {
        self.data
    }

    /// Parses a run's metrics object, interning its keys. Null values are
    /// left out; more than 65,536 distinct names are not analysed.
    fn compact_metrics(&mut self, text: Option<&str>) -> Box<[(u16, MetricValue)]> {
        let Some(Ok(Value::Object(map))) = text.map(serde_json::from_str::<Value>) else {
            return Box::default();
        };
        map.into_iter()
            .filter(|(_, value)| !value.is_null())
            .filter_map(|(key, value)| {
                let id = match self.metric_ids.get(&key) {
                    Some(id) => *id,
                    None => {
                        let id = u16::try_from(self.data.metric_names.len()).ok()?;
                        self.data.metric_names.push(key.clone());
                        self.metric_ids.insert(key, id);
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
}
