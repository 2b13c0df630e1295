//! Adaptive sampling's decisions (ARCHITECTURE.md, "Adaptive sampling"): a
//! pure state machine fed one repetition at a time — the repetition's result
//! for every variation, in repetition order — that says which variations
//! still need runs.
//!
//! Each question keeps confidence sequences (`sequences.rs`) and spreads its
//! error rate over the family of decisions by a union bound, so that every
//! sequence of the family holds at every moment at once with probability
//! at least 1 − α, and no decision is then wrong:
//! - `best`: one sequence per pair of variations on their paired
//!   differences, each at α / (K(K−1)/2); a variation is eliminated once a
//!   pair shows another better (successive elimination);
//! - `baseline`: one per variation against the baseline, at α / (K−1);
//!   decided once it excludes 0 (or, with `min_effect` δ, lies beyond ±δ or
//!   within it);
//! - `precision`: one per variation's mean, at α / K; decided once its
//!   half-width is at most the target.
//!
//! Repetitions are paired (same seed in every variation), and values are
//! taken in repetition order, never in the order runs happened to finish:
//! a run's duration may depend on its value, its place in the order does not.

use super::sequences::{Boundary, Sequence, DIFFERENCE_SCALE, MEAN_SCALE};
use crate::stats::Interval;

/// What an adaptive experiment asks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Question {
    /// Which variation is best.
    Best,
    /// Each variation against the baseline (an index), and the smallest
    /// difference that matters, in the metric's units.
    Baseline {
        baseline: usize,
        min_effect: Option<f64>,
    },
    /// Every variation's mean to ± `width`.
    Precision { width: f64 },
}

/// How an adaptive experiment samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub question: Question,
    pub variations: usize,
    /// Error rate over the whole family of decisions.
    pub alpha: f64,
    /// Results per variation (or pair) before any decision.
    pub min_runs: u32,
    /// `runs_per_variation`: the most any variation gets.
    pub max_runs: u32,
    /// The metric's goal: higher values are better.
    pub maximize: bool,
    /// The metric's range, when known (booleans: [0, 1]): bounded sequences.
    pub range: Option<(f64, f64)>,
}

impl Plan {
    /// The plan of an experiment's `sampling:` on `metric`, over
    /// `variations` variations with the baseline at index `baseline`.
    pub fn of(
        sampling: &flotilla_shared::config::Sampling,
        metric: &flotilla_shared::config::MetricSpec,
        variations: usize,
        runs_per_variation: u32,
        baseline: Option<usize>,
    ) -> Plan {
        use flotilla_shared::config::{Goal, SamplingQuestion};
        Plan {
            question: match sampling.question {
                SamplingQuestion::Best => Question::Best,
                SamplingQuestion::Baseline { min_effect } => Question::Baseline {
                    baseline: baseline.unwrap_or(0),
                    min_effect,
                },
                SamplingQuestion::Precision { width } => Question::Precision { width },
            },
            variations,
            alpha: sampling.alpha,
            min_runs: sampling.min_runs,
            max_runs: runs_per_variation,
            maximize: metric.goal == Goal::Maximize,
            range: metric.range.map(|[low, high]| (low, high)),
        }
    }

    /// A boolean metric is a rate: bounded in [0, 1] unless a range was declared.
    pub fn with_flags(mut self, flags: bool) -> Plan {
        if flags && self.range.is_none() {
            self.range = Some((0.0, 1.0));
        }
        self
    }
}

/// One variation's result in a repetition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Value(f64),
    /// The run ended without the metric (failed, or did not report it).
    Missing,
    /// The run was never started: its variation was decided before.
    NotRun,
}

/// Where a variation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Still sampled.
    Live,
    /// `best`: shown worse than variation `by` after `at` paired runs.
    Eliminated {
        by: usize,
        at: u32,
    },
    /// `best`: the last variation standing.
    Best {
        at: u32,
    },
    /// `baseline`: shown better or worse than the baseline, or within
    /// `min_effect` of it, after `at` paired runs.
    Better {
        at: u32,
    },
    Worse {
        at: u32,
    },
    Equivalent {
        at: u32,
    },
    /// `precision`: its interval reached the width after `at` runs.
    Precise {
        at: u32,
    },
    /// `baseline`: the baseline itself, once every comparison is decided.
    Baseline,
}

impl Standing {
    /// In words for reports and screens, naming variations with `name`;
    /// `capped` when a live one reached `runs_per_variation` (`max_runs`).
    pub fn words(self, name: impl Fn(usize) -> String, capped: Option<u32>) -> String {
        match self {
            Standing::Live => match capped {
                Some(max) => format!("open: reached runs_per_variation ({max}) undecided"),
                None => "live".to_string(),
            },
            Standing::Eliminated { by, at } => {
                format!("eliminated by {} after {at} paired runs", name(by))
            }
            Standing::Best { at } => format!("best, the last standing after {at} runs"),
            Standing::Better { at } => format!("better than the baseline after {at} paired runs"),
            Standing::Worse { at } => format!("worse than the baseline after {at} paired runs"),
            Standing::Equivalent { at } => {
                format!("within min_effect of the baseline after {at} paired runs")
            }
            Standing::Precise { at } => format!("to the width after {at} runs"),
            Standing::Baseline => "the baseline".to_string(),
        }
    }

    pub fn is_live(self) -> bool {
        self == Standing::Live
    }

    /// The number of runs at which it was decided, if it was.
    pub fn decided_at(self) -> Option<u32> {
        match self {
            Standing::Live | Standing::Baseline => None,
            Standing::Eliminated { at, .. }
            | Standing::Best { at }
            | Standing::Better { at }
            | Standing::Worse { at }
            | Standing::Equivalent { at }
            | Standing::Precise { at } => Some(at),
        }
    }
}

/// A pair's sequence on `first − second`.
#[derive(Debug, Clone)]
struct Pair {
    first: usize,
    second: usize,
    sequence: Sequence,
}

/// The decisions so far: feed it repetitions with [`SequentialAnalysis::add`].
#[derive(Debug, Clone)]
pub struct SequentialAnalysis {
    plan: Plan,
    repetitions: u32,
    /// Runs each variation was given (values and missing ones).
    runs: Vec<u32>,
    means: Vec<Sequence>,
    pairs: Vec<Pair>,
    standings: Vec<Standing>,
}

impl SequentialAnalysis {
    pub fn new(plan: Plan) -> Self {
        let k = plan.variations;
        let pairs: Vec<(usize, usize)> = match plan.question {
            Question::Best => (0..k)
                .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
                .collect(),
            Question::Baseline { baseline, .. } => (0..k)
                .filter(|&i| i != baseline)
                .map(|i| (i, baseline))
                .collect(),
            Question::Precision { .. } => Vec::new(),
        };
        let pair_alpha = plan.alpha / pairs.len().max(1) as f64;
        let pair_boundary = Boundary::new(pair_alpha, DIFFERENCE_SCALE, plan.max_runs);
        let mean_boundary = Boundary::new(plan.alpha / k.max(1) as f64, MEAN_SCALE, plan.max_runs);
        let difference_range = plan.range.map(|(low, high)| (low - high, high - low));
        SequentialAnalysis {
            repetitions: 0,
            runs: vec![0; k],
            means: (0..k)
                .map(|_| Sequence::sharing(&mean_boundary, plan.range))
                .collect(),
            pairs: pairs
                .into_iter()
                .map(|(first, second)| Pair {
                    first,
                    second,
                    sequence: Sequence::sharing(&pair_boundary, difference_range),
                })
                .collect(),
            standings: vec![Standing::Live; k],
            plan,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Repetitions added so far.
    pub fn repetitions(&self) -> u32 {
        self.repetitions
    }

    /// Adds the next repetition: one slot per variation. Then decides what it can.
    pub fn add(&mut self, slots: &[Slot]) {
        assert_eq!(slots.len(), self.plan.variations, "a slot per variation");
        self.repetitions += 1;
        for (variation, slot) in slots.iter().enumerate() {
            if *slot != Slot::NotRun {
                self.runs[variation] += 1;
            }
            if let Slot::Value(value) = slot {
                self.means[variation].push(*value);
            }
        }
        for pair in &mut self.pairs {
            if let (Slot::Value(a), Slot::Value(b)) = (slots[pair.first], slots[pair.second]) {
                pair.sequence.push(a - b);
            }
        }
        self.decide();
    }

    fn decide(&mut self) {
        match self.plan.question {
            Question::Best => self.eliminate(),
            Question::Baseline {
                baseline,
                min_effect,
            } => self.compare_with_baseline(baseline, min_effect.unwrap_or(0.0)),
            Question::Precision { width } => self.check_widths(width),
        }
    }

    /// Whether `difference` (first − second) shows the first better.
    fn first_better(&self, difference: Interval, margin: f64) -> bool {
        if self.plan.maximize {
            difference.low > margin
        } else {
            difference.high < -margin
        }
    }

    fn decidable(&self, sequence: &Sequence) -> Option<Interval> {
        (sequence.n() >= self.plan.min_runs)
            .then(|| sequence.interval())
            .flatten()
    }

    /// Successive elimination: a variation any pair shows worse than another is out.
    fn eliminate(&mut self) {
        for index in 0..self.pairs.len() {
            let pair = &self.pairs[index];
            let Some(difference) = self.decidable(&pair.sequence) else {
                continue;
            };
            let flipped = negated(difference);
            let at = pair.sequence.n();
            let (first, second) = (pair.first, pair.second);
            if self.first_better(difference, 0.0) && self.standings[second].is_live() {
                self.standings[second] = Standing::Eliminated { by: first, at };
            } else if self.first_better(flipped, 0.0) && self.standings[first].is_live() {
                self.standings[first] = Standing::Eliminated { by: second, at };
            }
        }
        let live: Vec<usize> = (0..self.plan.variations)
            .filter(|&v| self.standings[v].is_live())
            .collect();
        if let [last] = live[..] {
            self.standings[last] = Standing::Best {
                at: self.means[last].n(),
            };
        }
    }

    fn compare_with_baseline(&mut self, baseline: usize, band: f64) {
        for index in 0..self.pairs.len() {
            let pair = &self.pairs[index];
            let variation = pair.first;
            if !self.standings[variation].is_live() {
                continue;
            }
            let Some(difference) = self.decidable(&pair.sequence) else {
                continue;
            };
            let flipped = negated(difference);
            let at = pair.sequence.n();
            self.standings[variation] = if self.first_better(difference, band) {
                Standing::Better { at }
            } else if self.first_better(flipped, band) {
                Standing::Worse { at }
            } else if band > 0.0 && difference.low > -band && difference.high < band {
                Standing::Equivalent { at }
            } else {
                Standing::Live
            };
        }
        let open = (0..self.plan.variations).any(|v| v != baseline && self.standings[v].is_live());
        if !open {
            self.standings[baseline] = Standing::Baseline;
        }
    }

    fn check_widths(&mut self, width: f64) {
        for variation in 0..self.plan.variations {
            if !self.standings[variation].is_live() {
                continue;
            }
            if let Some(interval) = self.decidable(&self.means[variation]) {
                if (interval.high - interval.low) / 2.0 <= width {
                    self.standings[variation] = Standing::Precise {
                        at: self.means[variation].n(),
                    };
                }
            }
        }
    }

    pub fn standings(&self) -> &[Standing] {
        &self.standings
    }

    /// Whether `variation` should get more runs: it is live and below the cap.
    pub fn wants_runs(&self, variation: usize) -> bool {
        self.standings[variation].is_live() && self.runs[variation] < self.plan.max_runs
    }

    /// No variation wants more runs: every question is decided, or what is
    /// open reached `runs_per_variation`.
    pub fn finished(&self) -> bool {
        (0..self.plan.variations).all(|v| !self.wants_runs(v))
    }

    /// Runs each variation was given.
    pub fn runs(&self) -> &[u32] {
        &self.runs
    }

    /// A variation's mean and its confidence sequence's interval (at α/K).
    pub fn mean(&self, variation: usize) -> (Option<f64>, Option<Interval>) {
        let sequence = &self.means[variation];
        (sequence.mean(), sequence.interval())
    }

    /// The interval of `first − second`, where the question compares them.
    pub fn difference(&self, first: usize, second: usize) -> Option<(Interval, u32)> {
        self.pairs.iter().find_map(|pair| {
            let interval = |i: Interval| (i, pair.sequence.n());
            if (pair.first, pair.second) == (first, second) {
                pair.sequence.interval().map(interval)
            } else if (pair.first, pair.second) == (second, first) {
                pair.sequence.interval().map(|i| interval(negated(i)))
            } else {
                None
            }
        })
    }

    /// `best`: the last one standing, else the live variation with the best
    /// mean so far (the leader of those still tied).
    pub fn leader(&self) -> Option<usize> {
        if let Some(best) = self
            .standings
            .iter()
            .position(|s| matches!(s, Standing::Best { .. }))
        {
            return Some(best);
        }
        let sign = if self.plan.maximize { 1.0 } else { -1.0 };
        (0..self.plan.variations)
            .filter(|&v| self.standings[v].is_live())
            .filter_map(|v| self.means[v].mean().map(|m| (v, sign * m)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(v, _)| v)
    }
}

/// The interval of `second − first` from that of `first − second`.
fn negated(interval: Interval) -> Interval {
    Interval {
        low: -interval.high,
        high: -interval.low,
    }
}
