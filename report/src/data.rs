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

/// A metric value as analysis sees it.
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

/// One metric of one run in 12 bytes (a `(u16, MetricValue)` takes 24): a
/// ten-million-run report holds thirty million of them (ARCHITECTURE.md, "Scale").
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub struct MetricEntry {
    number: f64,
    id: u16,
    kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum EntryKind {
    Number,
    Bool,
    Other,
}

impl MetricEntry {
    pub fn new(id: u16, value: MetricValue) -> Self {
        let (number, kind) = match value {
            MetricValue::Number(number) => (number, EntryKind::Number),
            MetricValue::Bool(flag) => (f64::from(u8::from(flag)), EntryKind::Bool),
            MetricValue::Other => (0.0, EntryKind::Other),
        };
        MetricEntry { number, id, kind }
    }

    /// Index into `ExperimentData::metric_names`.
    pub fn id(self) -> u16 {
        self.id
    }

    pub fn value(self) -> MetricValue {
        match self.kind {
            EntryKind::Number => MetricValue::Number(self.number),
            EntryKind::Bool => MetricValue::Bool(self.number != 0.0),
            EntryKind::Other => MetricValue::Other,
        }
    }
}

/// Why a run failed, as its last attempt recorded it; boxed because most runs succeed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailureDetails {
    pub error: Option<Box<str>>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// One run in 48 bytes: its metrics live in `ExperimentData`'s shared list,
/// failure details behind a box, absent figures as NaN (ARCHITECTURE.md, "Scale").
#[derive(Debug, Clone)]
pub struct RunData {
    pub variation: u32,
    pub repetition: u32,
    /// Runs with equal seeds pair up (ARCHITECTURE.md, "Experiments and runs").
    pub seed: u64,
    pub status: RunStatus,
    pub timed_out: bool,
    /// Where its metrics start in `ExperimentData::metric_entries`, and how many.
    metrics_start: u32,
    metrics_len: u16,
    failure: Option<Box<FailureDetails>>,
    duration_s: f64,
    cost_usd: f64,
}

impl RunData {
    pub fn duration_s(&self) -> Option<f64> {
        Some(self.duration_s).filter(|d| !d.is_nan())
    }

    /// Dollars the run's attempts spent, when reported.
    pub fn cost_usd(&self) -> Option<f64> {
        Some(self.cost_usd).filter(|c| !c.is_nan())
    }

    pub fn error(&self) -> Option<&str> {
        self.failure.as_ref()?.error.as_deref()
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.failure.as_ref()?.exit_code
    }

    pub fn signal(&self) -> Option<i32> {
        self.failure.as_ref()?.signal
    }
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
    /// In order of variation: `runs_of` relies on it.
    pub runs: Vec<RunData>,
    /// Every run's metrics, run after run.
    pub(crate) metric_entries: Vec<MetricEntry>,
    /// Every metric name seen, indexed by `MetricEntry::id`.
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

    /// A run's metrics, each as (index into `metric_names`, value).
    pub fn metrics_of(&self, run: &RunData) -> impl Iterator<Item = (u16, MetricValue)> + '_ {
        let start = run.metrics_start as usize;
        self.metric_entries[start..start + usize::from(run.metrics_len)]
            .iter()
            .map(|entry| (entry.id(), entry.value()))
    }

    /// The value of metric number `metric` in a run.
    pub fn metric_of(&self, run: &RunData, metric: Option<u16>) -> Option<MetricValue> {
        let metric = metric?;
        self.metrics_of(run)
            .find(|(id, _)| *id == metric)
            .map(|(_, value)| value)
    }

    /// The runs of one variation: a slice, as runs are kept in order of variation.
    pub fn runs_of(&self, variation: u32) -> &[RunData] {
        let start = self.runs.partition_point(|r| r.variation < variation);
        let end = start + self.runs[start..].partition_point(|r| r.variation == variation);
        &self.runs[start..end]
    }
}

/// Appends runs to a shared metric list; `compare` builds one the same way.
#[derive(Debug, Default)]
pub(crate) struct RunsWithMetrics {
    pub runs: Vec<RunData>,
    pub metric_entries: Vec<MetricEntry>,
}

impl RunsWithMetrics {
    /// Adds `run` (its own metric fields are replaced) with these metrics;
    /// past 65,535 metrics in one run the rest are not analysed.
    pub fn push(&mut self, mut run: RunData, metrics: impl Iterator<Item = (u16, MetricValue)>) {
        let start = self.metric_entries.len();
        self.metric_entries.extend(
            metrics
                .take(usize::from(u16::MAX))
                .map(|(id, value)| MetricEntry::new(id, value)),
        );
        run.metrics_start = u32::try_from(start)
            .expect("a report holds fewer than 2^32 metric values (48 GB of them)");
        run.metrics_len = (self.metric_entries.len() - start) as u16;
        self.runs.push(run);
    }

    /// Puts runs in order of variation (stable: repetitions keep theirs) and
    /// gives back unused room.
    pub fn finish(mut self) -> (Vec<RunData>, Vec<MetricEntry>) {
        if !self.runs.is_sorted_by_key(|r| r.variation) {
            self.runs.sort_by_key(|r| r.variation);
        }
        self.runs.shrink_to_fit();
        self.metric_entries.shrink_to_fit();
        (self.runs, self.metric_entries)
    }
}

/// Builds an experiment's data one run at a time, interning metric names so
/// that a run's metrics take a few bytes each.
#[derive(Debug)]
pub struct ExperimentDataBuilder {
    data: ExperimentData,
    runs: RunsWithMetrics,
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
                metric_entries: Vec::new(),
                metric_names: Vec::new(),
                cache: CacheSavings::default(),
                tiers: TierSpend::default(),
            },
            runs: RunsWithMetrics::default(),
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
        self.runs.runs.reserve_exact(runs);
    }

    pub fn run(&mut self, record: RunRecord<'_>) {
        let metrics = self.compact_metrics(record.metrics_json);
        let failure = FailureDetails {
            error: record.error.map(String::into_boxed_str),
            exit_code: record.exit_code.and_then(|code| i32::try_from(code).ok()),
            signal: record.signal.and_then(|signal| i32::try_from(signal).ok()),
        };
        let run = RunData {
            variation: record.variation,
            repetition: record.repetition,
            seed: record.seed,
            status: record.status,
            timed_out: record.timed_out,
            metrics_start: 0,
            metrics_len: 0,
            failure: (failure != FailureDetails::default()).then(|| Box::new(failure)),
            duration_s: record.duration_s.unwrap_or(f64::NAN),
            cost_usd: record.cost_usd.unwrap_or(f64::NAN),
        };
        self.runs.push(run, metrics.into_iter());
    }

    pub fn tiers(&mut self, tiers: TierSpend) {
        self.data.tiers = tiers;
    }

    pub fn cache(&mut self, cache: CacheSavings) {
        self.data.cache = cache;
    }

    pub fn finish(mut self) -> ExperimentData {
        (self.data.runs, self.data.metric_entries) = self.runs.finish();
        self.data
    }

    /// Parses a run's metrics object, interning its keys. Null values are
    /// left out; more than 65,536 distinct names are not analysed.
    fn compact_metrics(&mut self, text: Option<&str>) -> Vec<(u16, MetricValue)> {
        let Some(Ok(Value::Object(map))) = text.map(serde_json::from_str::<Value>) else {
            return Vec::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(variation: u32, repetition: u32) -> RunData {
        RunData {
            variation,
            repetition,
            seed: u64::from(repetition),
            status: RunStatus::Succeeded,
            timed_out: false,
            metrics_start: 0,
            metrics_len: 0,
            failure: None,
            duration_s: f64::NAN,
            cost_usd: 0.5,
        }
    }

    /// What ten million runs cost in memory rests on these sizes (ARCHITECTURE.md, "Scale").
    #[test]
    fn a_run_takes_48_bytes_and_a_metric_12() {
        assert_eq!(std::mem::size_of::<RunData>(), 48);
        assert_eq!(std::mem::size_of::<MetricEntry>(), 12);
    }

    #[test]
    fn metric_entries_give_back_their_values() {
        for value in [
            MetricValue::Number(-2.5),
            MetricValue::Bool(true),
            MetricValue::Bool(false),
            MetricValue::Other,
        ] {
            let entry = MetricEntry::new(7, value);
            assert_eq!((entry.id(), entry.value()), (7, value));
        }
    }

    #[test]
    fn runs_are_put_in_order_of_variation_with_their_own_metrics() {
        let mut runs = RunsWithMetrics::default();
        runs.push(run(2, 1), [(0, MetricValue::Number(1.0))].into_iter());
        runs.push(run(1, 1), std::iter::empty());
        runs.push(
            run(2, 2),
            [(1, MetricValue::Bool(true)), (0, MetricValue::Number(2.0))].into_iter(),
        );
        runs.push(run(1, 2), [(0, MetricValue::Number(3.0))].into_iter());
        let (runs, metric_entries) = runs.finish();
        let config =
            flotilla_shared::config::parse_experiment("name: t\nrun: {kind: noop}\n", "t.yaml")
                .expect("a minimal experiment");
        let mut data =
            ExperimentDataBuilder::new(&config, ExperimentState::Completed, 0, None).finish();
        (data.runs, data.metric_entries) = (runs, metric_entries);
        let order: Vec<(u32, u32)> = data
            .runs
            .iter()
            .map(|r| (r.variation, r.repetition))
            .collect();
        assert_eq!(order, [(1, 1), (1, 2), (2, 1), (2, 2)]);
        assert_eq!(data.runs_of(2).len(), 2);
        assert!(data.runs_of(3).is_empty());
        let second = &data.runs_of(2)[1];
        assert_eq!(
            data.metrics_of(second).collect::<Vec<_>>(),
            [(1, MetricValue::Bool(true)), (0, MetricValue::Number(2.0))]
        );
        assert_eq!(
            data.metric_of(&data.runs[1], Some(0)),
            Some(MetricValue::Number(3.0))
        );
        assert_eq!(data.metric_of(&data.runs[0], Some(0)), None);
        assert_eq!((second.cost_usd(), second.duration_s()), (Some(0.5), None));
    }
}
