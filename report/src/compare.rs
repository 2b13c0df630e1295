//! `flotilla compare A B …`: experiments side by side. The runs of all of them
//! become one data set whose variations are (experiment, parameters) and whose
//! first axis is the experiment; the analysis then compares only variations
//! with the same parameters in different experiments, and pools each pair of
//! experiments over the matched variations.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flotilla_shared::config::{Axis, Goal, MetricSpec};
use flotilla_shared::status::ExperimentState;
use flotilla_shared::{Error, Result};
use serde_json::Value;

use crate::data::{Design, ExperimentData, RunsWithMetrics, VariationData};

/// The axis that tells the experiments apart (renamed if an experiment has an
/// axis of that name).
const EXPERIMENT_AXIS: &str = "experiment";

/// Checks the names of a comparison: at least two, each once.
pub fn check_names(names: &[String]) -> Result<()> {
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
    Ok(())
}

/// Merges the experiments into one data set; also returns notes for the
/// report (what was matched, what was left out, whether runs pair up).
pub fn combine(experiments: Vec<ExperimentData>) -> Result<(ExperimentData, Vec<String>)> {
    let names: Vec<String> = experiments.iter().map(|e| e.name.clone()).collect();
    check_names(&names)?;
    let matching = Matching::of(&experiments)?;
    let mut notes = matching.notes(&experiments);
    notes.extend(pairing_notes(&experiments));
    let (metrics, metric_names) = shared_metrics(&experiments, &mut notes)?;
    let experiment_axis = if matching.shared_axes.contains(EXPERIMENT_AXIS) {
        "flotilla.experiment"
    } else {
        EXPERIMENT_AXIS
    };
    let (variations, merged) = merge_runs(&experiments, &matching, &metric_names, experiment_axis);
    let (runs, metric_entries) = merged.finish();
    let mut axes = vec![Axis {
        param: experiment_axis.to_string(),
        values: names.iter().map(|n| Value::from(n.clone())).collect(),
        cases: None,
    }];
    axes.extend(used_shared_axes(&experiments[0], &matching, &variations));
    let any_running = experiments
        .iter()
        .any(|e| e.state == ExperimentState::Running);
    let combined = ExperimentData {
        name: comparison_name(&names),
        design: Design {
            axes,
            metrics,
            baseline: None,
            seed: experiments[0].design.seed,
            compare_only_across: Some(experiment_axis.to_string()),
            sampling: None,
            runs_per_variation: 0,
        },
        constants: BTreeMap::new(),
        state: if any_running {
            ExperimentState::Running
        } else {
            ExperimentState::Completed
        },
        started_at_ms: experiments
            .iter()
            .map(|e| e.started_at_ms)
            .min()
            .unwrap_or(0),
        finished_at_ms: None,
        cache: experiments.iter().fold(Default::default(), |mut all, e| {
            all.calls += e.cache.calls;
            all.hits += e.cache.hits;
            all.saved_usd += e.cache.saved_usd;
            all.recorded_from_ms = [all.recorded_from_ms, e.cache.recorded_from_ms]
                .into_iter()
                .flatten()
                .min();
            all.recorded_to_ms = [all.recorded_to_ms, e.cache.recorded_to_ms]
                .into_iter()
                .flatten()
                .max();
            all
        }),
        tiers: experiments.iter().fold(Default::default(), |mut all, e| {
            all.merge(&e.tiers);
            all
        }),
        variations,
        runs,
        metric_entries,
        metric_names,
    };
    Ok((combined, notes))
}

/// How the experiments' variations match: on the axes every experiment has.
struct Matching {
    shared_axes: BTreeSet<String>,
    /// Per experiment: its variations by matching key.
    keyed: Vec<HashMap<String, u32>>,
    /// The keys every experiment ran, in the first experiment's order.
    matched: Vec<String>,
}

impl Matching {
    fn of(experiments: &[ExperimentData]) -> Result<Self> {
        let axis_sets: Vec<BTreeSet<&str>> = experiments
            .iter()
            .map(|e| e.design.axes.iter().map(|a| a.param.as_str()).collect())
            .collect();
        let shared_axes: BTreeSet<String> = experiments[0]
            .design
            .axes
            .iter()
            .filter(|a| axis_sets.iter().all(|set| set.contains(a.param.as_str())))
            .map(|a| a.param.clone())
            .collect();
        let key_of = |variation: &VariationData| -> String {
            let key: BTreeMap<&String, &Value> = variation
                .axis_values
                .iter()
                .filter(|(k, _)| shared_axes.contains(*k))
                .collect();
            serde_json::to_string(&key).expect("json")
        };
        let mut keyed = Vec::new();
        for experiment in experiments {
            let mut by_key: HashMap<String, &VariationData> = HashMap::new();
            for variation in &experiment.variations {
                if let Some(other) = by_key.insert(key_of(variation), variation) {
                    return Err(unmatchable(experiment, &shared_axes, other, variation));
                }
            }
            keyed.push(
                by_key
                    .into_iter()
                    .map(|(k, v)| (k, v.index))
                    .collect::<HashMap<_, _>>(),
            );
        }
        let matched: Vec<String> = experiments[0]
            .variations
            .iter()
            .map(key_of)
            .filter(|key| keyed.iter().all(|by_key| by_key.contains_key(key)))
            .collect();
        let matching = Matching {
            shared_axes,
            keyed,
            matched,
        };
        if matching.matched.is_empty() {
            return Err(Error::InvalidInput(format!(
                "no variation of {} has the same parameters in every experiment (shared axes: {}); nothing to compare",
                experiments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", "),
                matching.shared_axes_text("none")
            )));
        }
        Ok(matching)
    }

    fn shared_axes_text(&self, when_none: &str) -> String {
        if self.shared_axes.is_empty() {
            when_none.to_string()
        } else {
            self.shared_axes
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// What was matched and what was left out.
    fn notes(&self, experiments: &[ExperimentData]) -> Vec<String> {
        let mut notes = vec![format!(
            "{} matched variation(s) per experiment, matched on {}.",
            self.matched.len(),
            self.shared_axes_text("nothing (single-variation experiments)")
        )];
        let matched: BTreeSet<&String> = self.matched.iter().collect();
        for (experiment, by_key) in experiments.iter().zip(&self.keyed) {
            let left_out = by_key.keys().filter(|k| !matched.contains(k)).count();
            if left_out > 0 {
                notes.push(format!(
                    "{left_out} variation(s) of `{}` have no counterpart in every other experiment and are left out.",
                    experiment.name
                ));
            }
        }
        notes
    }
}

fn unmatchable(
    experiment: &ExperimentData,
    shared_axes: &BTreeSet<String>,
    first: &VariationData,
    second: &VariationData,
) -> Error {
    let own: Vec<&str> = experiment
        .design
        .axes
        .iter()
        .map(|a| a.param.as_str())
        .filter(|a| !shared_axes.contains(*a))
        .collect();
    Error::InvalidInput(format!(
        "variations of '{}' cannot be matched: {} and {} differ only on {}, which the other experiments do not vary; compare experiments whose grids share those axes",
        experiment.name,
        first.name(),
        second.name(),
        own.join(", ")
    ))
}

/// Whether runs pair up across experiments, and which constants differ.
fn pairing_notes(experiments: &[ExperimentData]) -> Vec<String> {
    let seeds: BTreeSet<u64> = experiments.iter().map(|e| e.design.seed).collect();
    let mut notes = vec![if seeds.len() == 1 {
        "The experiments share their seed: runs with the same parameters and repetition pair up, and paired tests are used.".to_string()
    } else {
        "The experiments have different seeds: runs do not pair up, so comparisons use tests for independent runs.".to_string()
    }];
    for (parameter, values) in differing_constants(experiments) {
        notes.push(format!("Constant `{parameter}` differs: {values}."));
    }
    notes
}

/// The merged variations and runs: variation k*E + e + 1 is matched variation
/// k of experiment e, with the experiment as its first axis value.
fn merge_runs(
    experiments: &[ExperimentData],
    matching: &Matching,
    metric_names: &[String],
    experiment_axis: &str,
) -> (Vec<VariationData>, RunsWithMetrics) {
    let mut variations = Vec::new();
    let mut runs = RunsWithMetrics::default();
    for key in &matching.matched {
        for (experiment, by_key) in experiments.iter().zip(&matching.keyed) {
            let source_index = by_key[key];
            let source = experiment
                .variations
                .iter()
                .find(|v| v.index == source_index)
                .expect("matched variations exist");
            let index = variations.len() as u32 + 1;
            let mut axis_values: BTreeMap<String, Value> = source
                .axis_values
                .iter()
                .filter(|(k, _)| matching.shared_axes.contains(*k))
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
            for run in experiment.runs_of(source.index) {
                let metrics = experiment
                    .metrics_of(run)
                    .filter_map(|(id, value)| Some((*renumber.get(&id)?, value)));
                let mut run = run.clone();
                run.variation = index;
                runs.push(run, metrics);
            }
        }
    }
    (variations, runs)
}

/// The shared axes with only the values some matched variation has.
fn used_shared_axes(
    first: &ExperimentData,
    matching: &Matching,
    variations: &[VariationData],
) -> Vec<Axis> {
    first
        .design
        .axes
        .iter()
        .filter(|a| matching.shared_axes.contains(&a.param))
        .map(|axis| {
            let used: BTreeSet<String> = variations
                .iter()
                .filter_map(|v| v.axis_values.get(&axis.param))
                .map(|v| v.to_string())
                .collect();
            Axis {
                param: axis.param.clone(),
                values: axis
                    .values
                    .iter()
                    .filter(|v| used.contains(&v.to_string()))
                    .cloned()
                    .collect(),
                cases: None,
            }
        })
        .collect()
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
                range: None,
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
