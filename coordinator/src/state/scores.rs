//! Each variation's primary metric as its runs succeed, so that every screen
//! can show a mean (or a rate) with its 95% interval while the sweep runs
//! (ARCHITECTURE.md, "Following an experiment"). Running sums only: a result
//! costs O(1), and a restart replays the ended runs' metrics.

use flotilla_shared::config::{ExperimentConfig, Goal};
use flotilla_shared::view::ScoreView;
use serde_json::Value;

/// Count, mean and sum of squared deviations (Welford), and how many of the
/// values were booleans.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Tally {
    n: u64,
    mean: f64,
    squares: f64,
    flags: u64,
}

impl Tally {
    fn add(&mut self, value: f64) {
        self.n += 1;
        let delta = value - self.mean;
        self.mean += delta / self.n as f64;
        self.squares += delta * (value - self.mean);
    }

    fn sd(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.squares.max(0.0) / (self.n - 1) as f64).sqrt()
        }
    }
}

/// The primary metric's tallies of an experiment's variations.
#[derive(Debug, Clone)]
pub struct Scores {
    metric: String,
    minimize: bool,
    tallies: Vec<Tally>,
}

impl Scores {
    /// The metric adaptive sampling samples, else the first declared one;
    /// `None` when the experiment declares none.
    pub fn new(config: &ExperimentConfig, variations: usize) -> Option<Scores> {
        let metric = match &config.sampling {
            Some(sampling) => config.metrics.iter().find(|m| m.name == sampling.metric),
            None => config.metrics.first(),
        }?;
        Some(Scores {
            metric: metric.name.clone(),
            minimize: metric.goal == Goal::Minimize,
            tallies: vec![Tally::default(); variations],
        })
    }

    /// A succeeded run of `variation` (1-based) reported `metrics_json`.
    pub fn record(&mut self, variation: u32, metrics_json: Option<&str>) {
        let Some(tally) = self.tallies.get_mut((variation as usize).wrapping_sub(1)) else {
            return;
        };
        let Some(text) = metrics_json else {
            return;
        };
        let Ok(all) = serde_json::from_str::<serde_json::Map<String, Value>>(text) else {
            return;
        };
        match all.get(&self.metric) {
            Some(Value::Bool(flag)) => {
                tally.flags += 1;
                tally.add(f64::from(u8::from(*flag)));
            }
            Some(value) => {
                if let Some(number) = value.as_f64().filter(|x| x.is_finite()) {
                    tally.add(number);
                }
            }
            None => {}
        }
    }

    /// Variation `variation`'s (1-based) score, once a run reported it.
    pub fn view(&self, variation: u32) -> Option<ScoreView> {
        let tally = self.tallies.get((variation as usize).wrapping_sub(1))?;
        (tally.n > 0).then(|| ScoreView {
            metric: self.metric.clone(),
            n: tally.n,
            mean: tally.mean,
            sd: tally.sd(),
            rate: tally.flags == tally.n,
            minimize: self.minimize,
        })
    }
}

impl super::Experiment {
    /// Adds the run in `slot`'s metric to its variation's score, if it succeeded.
    pub fn record_score(&mut self, slot: usize, metrics_json: Option<&str>) {
        let run = &self.runs[slot];
        if run.status != flotilla_shared::status::RunStatus::Succeeded {
            return;
        }
        let variation = run.variation;
        if let Some(scores) = &mut self.scores {
            scores.record(variation, metrics_json);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_shared::config::parse_experiment;

    fn config(metrics: &str) -> ExperimentConfig {
        parse_experiment(
            &format!("name: x\nrun: {{kind: noop}}\nvariations: [{{param: a, values: [1, 2]}}]\n{metrics}"),
            "x.yaml",
        )
        .unwrap()
    }

    #[test]
    fn means_and_deviations_match_the_two_pass_formulas() {
        let mut scores = Scores::new(
            &config("metrics: [{name: score, goal: minimize}, {name: other, goal: maximize}]\n"),
            2,
        )
        .unwrap();
        let values = [3.0, 4.5, 1.25, 8.0, 2.0];
        for value in values {
            scores.record(2, Some(&format!("{{\"score\": {value}, \"other\": 1}}")));
        }
        scores.record(2, Some("{\"other\": 1}"));
        scores.record(2, Some("not json"));
        scores.record(2, None);
        assert_eq!(scores.view(1), None);
        let view = scores.view(2).unwrap();
        let mean = values.iter().sum::<f64>() / 5.0;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        assert_eq!(view.n, 5);
        assert!((view.mean - mean).abs() < 1e-12);
        assert!((view.sd - variance.sqrt()).abs() < 1e-12);
        assert!(!view.rate);
        assert!(view.minimize);
        assert_eq!(view.metric, "score");
    }

    #[test]
    fn a_boolean_metric_is_a_rate_and_no_declared_metric_means_no_scores() {
        let mut scores =
            Scores::new(&config("metrics: [{name: won, goal: maximize}]\n"), 2).unwrap();
        for won in [true, false, true, true] {
            scores.record(1, Some(&format!("{{\"won\": {won}}}")));
        }
        let view = scores.view(1).unwrap();
        assert!(view.rate);
        assert_eq!(view.mean, 0.75);
        assert!(Scores::new(&config(""), 2).is_none());
    }
}
