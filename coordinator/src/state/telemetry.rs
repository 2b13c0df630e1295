//! Counts kept for `/metrics` as results arrive: run durations and each
//! provider model's LLM calls, tokens and cost. Totals since the
//! coordinator started, as Prometheus counters are.

use std::collections::BTreeMap;

use flotilla_shared::calls::CallStatus;
use flotilla_shared::run::{Outcome, RunResult};

/// Cumulative buckets with upper bounds, their sum and count.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub(crate) bounds: &'static [f64],
    pub(crate) counts: Vec<u64>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        if let Some(index) = self.bounds.iter().position(|bound| value <= *bound) {
            self.counts[index] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Run durations, seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Store commit latency, seconds.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One provider model's calls as the attempts' results reported them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmTotals {
    pub calls: u64,
    pub failed: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug)]
pub struct Telemetry {
    /// Attempts that ended with a result (handed-back ones aside).
    pub run_durations: Histogram,
    /// By (provider, model).
    pub llm: BTreeMap<(String, String), LlmTotals>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            run_durations: Histogram::new(DURATION_BUCKETS),
            llm: BTreeMap::new(),
        }
    }
}

impl Telemetry {
    pub fn record(&mut self, result: &RunResult) {
        if result.outcome != Outcome::HandedBack {
            self.run_durations.observe(result.duration_s.max(0.0));
        }
        for call in &result.calls {
            let totals = self
                .llm
                .entry((call.provider.clone(), call.model.clone()))
                .or_default();
            totals.calls += 1;
            totals.failed += u64::from(call.status == CallStatus::Failed);
            totals.input_tokens += call.input_tokens;
            totals.output_tokens += call.output_tokens;
            totals.cost_usd += call.cost_usd;
        }
    }
}
