//! Expansion of an experiment's axes into its grid of variations, and run seeds.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::ExperimentConfig;

/// One cell of the grid: base params overlaid with one value per axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Variation {
    /// Full parameters of the runs of this variation.
    pub params: BTreeMap<String, Value>,
    /// Just the axis values; the variation's identity across extensions.
    pub axis_values: BTreeMap<String, Value>,
}

impl Variation {
    /// Stable identity of a variation, independent of its index: extensions add
    /// axis values, which renumbers the Cartesian product but not these keys.
    pub fn key(&self) -> String {
        serde_json::to_string(&self.axis_values).expect("json values serialise")
    }

    pub fn params_json(&self) -> String {
        serde_json::to_string(&self.params).expect("json values serialise")
    }
}

/// The Cartesian product of the axes, first axis slowest. With no axes the grid
/// is one variation holding the base params.
pub fn expand(config: &ExperimentConfig) -> Vec<Variation> {
    let mut grid = vec![Variation {
        params: config.params.clone(),
        axis_values: BTreeMap::new(),
    }];
    for axis in &config.variations {
        let mut next = Vec::with_capacity(grid.len() * axis.values.len());
        for cell in &grid {
            for (index, value) in axis.values.iter().enumerate() {
                let mut extended = cell.clone();
                // A case sets each of its fields; its label names it.
                extended.params.extend(axis.params_of(value));
                extended
                    .axis_values
                    .insert(axis.param.clone(), axis.label_of(index));
                next.push(extended);
            }
        }
        grid = next;
    }
    grid
}

/// The seed of repetition `repetition` (1-based): the same in every variation,
/// so that repetitions pair up across variations (ARCHITECTURE.md, "Experiments and runs"). SplitMix64 of the
/// experiment seed and the repetition.
pub fn run_seed(experiment_seed: u64, repetition: u32) -> u64 {
    let mut z = experiment_seed ^ (u64::from(repetition)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    // Keep seeds within i64 so that every language (and SQLite) reads them exactly.
    (z ^ (z >> 31)) >> 1
}

/// Renders a parameter value for a command line: strings bare, the rest as JSON.
pub fn value_as_argument(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_experiment;

    fn config(yaml: &str) -> ExperimentConfig {
        parse_experiment(yaml, "test.yaml").unwrap()
    }

    #[test]
    fn product_of_axes_first_axis_slowest() {
        let config = config(
            "name: g\nrun: {kind: noop}\nparams: {rounds: 10}\nvariations:\n  - {param: a, values: [1, 2]}\n  - {param: b, values: [p, q, r]}\n",
        );
        let grid = expand(&config);
        assert_eq!(grid.len(), 6);
        let cells: Vec<(i64, String)> = grid
            .iter()
            .map(|v| {
                (
                    v.params["a"].as_i64().unwrap(),
                    v.params["b"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(cells[0], (1, "p".into()));
        assert_eq!(cells[2], (1, "r".into()));
        assert_eq!(cells[3], (2, "p".into()));
        assert!(grid.iter().all(|v| v.params["rounds"] == 10));
        assert_eq!(config.total_runs(), 6);
    }

    #[test]
    fn no_axes_is_one_variation() {
        let grid = expand(&config(
            "name: g\nrun: {kind: noop}\nruns_per_variation: 4\n",
        ));
        assert_eq!(grid.len(), 1);
        assert!(grid[0].axis_values.is_empty());
    }

    #[test]
    fn variation_keys_survive_extension() {
        let small = expand(&config("name: g\nrun: {kind: noop}\nvariations:\n  - {param: a, values: [1, 2]}\n  - {param: b, values: [x]}\n"));
        let large = expand(&config("name: g\nrun: {kind: noop}\nvariations:\n  - {param: a, values: [1, 2]}\n  - {param: b, values: [x, y]}\n"));
        for variation in &small {
            assert!(large.iter().any(|v| v.key() == variation.key()));
        }
    }

    #[test]
    fn seeds_pair_repetitions_and_differ_between_them() {
        assert_eq!(run_seed(42, 3), run_seed(42, 3));
        assert_ne!(run_seed(42, 3), run_seed(42, 4));
        assert_ne!(run_seed(42, 3), run_seed(43, 3));
        assert!(run_seed(u64::MAX, u32::MAX) <= i64::MAX as u64);
    }
}
