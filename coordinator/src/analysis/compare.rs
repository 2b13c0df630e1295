//! `flotilla compare A B …`: experiments side by side. The runs of all of them
//! become one data set whose variations are (experiment, parameters) and whose
//! first axis is the experiment; the analysis then compares only variations
//! with the same parameters in different experiments, and pools each pair of
//! experiments over the matched variations.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use flotilla_shared::config::{Axis, Goal, MetricSpec};
use flotilla_shared::{Error, Result};
use serde_json::Value;

use super::data::{self, Design, ExperimentData, RunData, VariationData};

/// The axis that tells the experiments apart (renamed if an experiment has an
/// axis of that name).
const EXPERIMENT_AXIS: &str = "experiment";

/// Loads the experiments and merges them; also returns notes for the report
/// (what was matched, what was left out, whether runs pair up).
pub fn combine(root: &Path, names: &[String]) -> Result<(ExperimentData, Vec<String>)> {
    if names.len() < 2 {
        return Err(Error::InvalidInput(
            "compare needs at least two experiment names (e.g. `flotilla compare prompts-v1 prompts-v2`)".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(duplicate) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(Error::InvalidInput(format!(
            "'{duplicate}' is named twice; name each experiment once"
        )));
    }
    let experiments = names
        .iter()
        .map(|name| data::load(root, name))
        .collect::<Result<Vec<_>>>()?;
    let mut notes = Vec::new();

    // Variations match on the axes every experiment has.
    let axis_sets: Vec<BTreeSet<&str>> = experiments
        .iter()
        .map(|e| e.design.axes.iter().map(|a| a.param.as_str()).collect())
        .collect();
    let shared_axes: Vec<&Axis> = experiments[0]
        .design
        .axes
        .iter()
        .filter(|a| axis_sets.iter().all(|set| set.contains(a.param.as_str())))
        .collect();
    let shared_names: BTreeSet<&str> = shared_axes.iter().map(|a| a.param.as_str()).collect();
    let key_of = |variation: &VariationData| -> String {
        let key: BTreeMap<&String, &Value> = variation
            .axis_values
            .iter()
            .filter(|(k, _)| shared_names.contains(k.as_str()))
            .collect();
        serde_json::to_string(&key).expect("json")
    };
    let mut keyed: Vec<HashMap<String, &VariationData>> = Vec::new();
    for experiment in &experiments {
        let mut by_key = HashMap::new();
        for variation in &experiment.variations {
            if let Some(other) = by_key.insert(key_of(variation), variation) {
                let own: Vec<&str> = experiment
                    .design
                    .axes
                    .iter()
                    .map(|a| a.param.as_str())
                    .filter(|a| !shared_names.contains(a))
                    .collect();
                return Err(Error::InvalidInput(format!(
                    "variations of '{}' cannot be matched: {} and {} differ only on {}, which the other experiments do not vary; compare experiments whose grids share those axes",
                    experiment.name,
                    other.name(),
                    variation.name(),
                    own.join(", ")
                )));
            }
        }
        keyed.push(by_key);
    }
    // Matched: the parameter sets every experiment ran, in the first one's order.
    let matched: Vec<String> = experiments[0]
        .variations
        .iter()
        .map(key_of)
        .filter(|key| keyed.iter().all(|by_key| by_key.contains_key(key)))
        .collect();
    if matched.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no variation of {} has the same parameters in every experiment (shared axes: {}); nothing to compare",
            names.join(", "),
            if shared_names.is_empty() {
                "none".to_string()
            } else {
                shared_names.iter().copied().collect::<Vec<_>>().join(", ")
            }
        )));
    }
    let matched_set: BTreeSet<&String> = matched.iter().collect();
    for (experiment, by_key) in experiments.iter().zip(&keyed) {
        let left_out = by_key.keys().filter(|k| !matched_set.contains(k)).count();
        if left_out > 0 {
            notes.push(format!(
                "{left_out} variation(s) of `{}` have no counterpart in every other experiment and are left out.",
                experiment.name
            ));
        }
    }
    notes.insert(
        0,
        format!(
            "{} matched variation(s) per experiment, matched on {}.",
            matched.len(),
            if shared_names.is_empty() {
                "nothing (single-variation experiments)".to_string()
            } else {
                shared_names.iter().copied().collect::<Vec<_>>().join(", ")
            }
        ),
    );
    let seeds: BTreeSet<u64> = experiments.iter().map(|e| e.design.seed).collect();
    notes.push(if seeds.len() == 1 {
        "The experiments share their seed: runs with the same parameters and repetition pair up, and paired tests are used.".to_string()
    } else {
        "The experiments have different seeds: runs do not pair up, so comparisons use tests for independent runs.".to_string()
    });
    for (parameter, values) in differing_constants(&experiments) {
        notes.push(format!("Constant `{parameter}` differs: {values}."));
    }

    let (metrics, metric_names) = shared_metrics(&experiments, &mut notes)?;
    let experiment_axis = if shared_names.contains(EXPERIMENT_AXIS) {
        "flotilla.experiment"
    } else {
        EXPERIMENT_AXIS
    };

    // The merged data set: variation k*E + e + 1 is matched variation k of experiment e.
    let mut variations = Vec::new();
    let mut runs = Vec::new();
    for key in &matched {
        for (experiment, by_key) in experiments.iter().zip(&keyed) {
            let source = by_key[key];
            let index = variations.len() as u32 + 1;
            let mut axis_values: BTreeMap<String, Value> = source
                .axis_values
                .iter()
                .filter(|(k, _)| shared_names.contains(k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            axis_values.insert(
                experiment_axis.to_string(),
                Value::from(experiment.name.clone()),
            );
            variations.push(VariationData {
                index,
                axis_values,
                origin: Some((experiment.name.clone(), source.index)),
            });
            // Metric ids are renumbered into the shared list.
            let renumber: HashMap<u16, u16> = metric_names
                .iter()
                .enumerate()
                .filter_map(|(new, name)| Some((experiment.metric_index(name)?, new as u16)))
                .collect();
            runs.extend(
                experiment
                    .runs
                    .iter()
                    .filter(|r| r.variation == source.index)
                    .map(|r| RunData {
                        variation: index,
                        metrics: r
                            .metrics
                            .iter()
                            .filter_map(|(id, value)| Some((*renumber.get(id)?, *value)))
                            .collect(),
                        ..r.clone()
                    }),
            );
        }
    }
    let mut axes = vec![Axis {
        param: experiment_axis.to_string(),
        values: names.iter().map(|n| Value::from(n.clone())).collect(),
    }];
    for axis in shared_axes {
        let used: BTreeSet<String> = variations
            .iter()
            .filter_map(|v| v.axis_values.get(&axis.param))
            .map(|v| v.to_string())
            .collect();
        axes.push(Axis {
            param: axis.param.clone(),
            values: axis
                .values
                .iter()
                .filter(|v| used.contains(&v.to_string()))
                .cloned()
                .collect(),
        });
    }
    let all_final = experiments
        .iter()
        .all(|e| e.state != "running" && e.state != "pending");
    let combined = ExperimentData {
        name: comparison_name(names),
        design: Design {
            axes,
            metrics,
            baseline: None,
            seed: experiments[0].design.seed,
            compare_only_across: Some(experiment_axis.to_string()),
        },
        constants: BTreeMap::new(),
        state: if all_final {
            "finished".to_string()
        } else {
            "running".to_string()
        },
        started_at_ms: experiments
            .iter()
            .map(|e| e.started_at_ms)
            .min()
            .unwrap_or(0),
        finished_at_ms: None,
        variations,
        runs,
        metric_names,
    };
    Ok((combined, notes))
}

/// The metrics every experiment has (declared or reported): the declared
/// ones with their goals, and every shared name. A metric declared with
/// opposite goals is an error.
fn shared_metrics(
    experiments: &[ExperimentData],
    notes: &mut Vec<String>,
) -> Result<(Vec<MetricSpec>, Vec<String>)> {
    let has = |experiment: &ExperimentData, name: &str| {
        experiment.metric_index(name).is_some()
            || experiment.design.metrics.iter().any(|m| m.name == name)
    };
    let mut goals: BTreeMap<&str, (Goal, &str)> = BTreeMap::new();
    for experiment in experiments {
        for metric in &experiment.design.metrics {
            match goals.get(metric.name.as_str()) {
                Some((goal, other)) if *goal != metric.goal => {
                    return Err(Error::InvalidInput(format!(
                        "metric '{}' is to be maximized in one experiment and minimized in the other ('{}' and '{}'); the comparison cannot say which is better",
                        metric.name, other, experiment.name
                    )))
                }
                Some(_) => {}
                None => {
                    goals.insert(&metric.name, (metric.goal, &experiment.name));
                }
            }
        }
    }
    let mut candidates: Vec<String> = Vec::new();
    for experiment in experiments {
        for name in experiment
            .design
            .metrics
            .iter()
            .map(|m| &m.name)
            .chain(&experiment.metric_names)
        {
            if !candidates.contains(name) {
                candidates.push(name.clone());
            }
        }
    }
    let (shared, missing): (Vec<String>, Vec<String>) = candidates
        .into_iter()
        .partition(|name| experiments.iter().all(|e| has(e, name)));
    if !missing.is_empty() {
        notes.push(format!(
            "Metrics not in every experiment, left out: {}.",
            missing.join(", ")
        ));
    }
    // Declared metrics keep their goal; the analysis finds the undeclared
    // ones in the runs (only shared names are kept there).
    let metrics: Vec<MetricSpec> = shared
        .iter()
        .filter_map(|name| {
            goals.get(name.as_str()).map(|(goal, _)| MetricSpec {
                name: name.clone(),
                goal: *goal,
            })
        })
        .collect();
    Ok((metrics, shared))
}

/// Constant parameters whose values differ between the experiments.
fn differing_constants(experiments: &[ExperimentData]) -> Vec<(String, String)> {
    let keys: BTreeSet<&String> = experiments
        .iter()
        .flat_map(|e| e.constants.keys())
        .collect();
    keys.into_iter()
        .filter_map(|key| {
            let values: Vec<Option<&Value>> =
                experiments.iter().map(|e| e.constants.get(key)).collect();
            if values.windows(2).all(|w| w[0] == w[1]) {
                return None;
            }
            let described: Vec<String> = experiments
                .iter()
                .zip(&values)
                .map(|(e, v)| {
                    format!(
                        "{} in `{}`",
                        v.map(|v| v.to_string()).unwrap_or_else(|| "unset".into()),
                        e.name
                    )
                })
                .collect();
            Some((key.clone(), described.join(", ")))
        })
        .collect()
}

/// The folder name under `comparisons/`: the names joined by `-vs-`, cut
/// with a hash when that would be too long for a file name.
fn comparison_name(names: &[String]) -> String {
    let joined = names.join("-vs-");
    if joined.len() <= 120 {
        return joined;
    }
    let digest = flotilla_shared::workdir::content_hash(joined.as_bytes());
    format!("{}-{}", &joined[..100], &digest[..12])
}
