//! What changed between a stored config and a resubmitted one (ARCHITECTURE.md, "Experiments and runs"):
//! identical, an extension (more repetitions, new axis values), or a conflict.

use serde_json::Value;

use super::ExperimentConfig;

#[derive(Debug, Clone, PartialEq)]
pub enum ConfigChange {
    Identical,
    /// Only `runs_per_variation` grew and/or axes gained values; only new runs run.
    Extension,
    /// Anything else: the dotted paths of the fields that differ.
    Conflict(Vec<String>),
}

pub fn compare_configs(stored: &ExperimentConfig, submitted: &ExperimentConfig) -> ConfigChange {
    if stored == submitted {
        return ConfigChange::Identical;
    }
    let mut changed = Vec::new();
    let stored_json = serde_json::to_value(stored).expect("config serialises");
    let submitted_json = serde_json::to_value(submitted).expect("config serialises");
    diff_paths("", &stored_json, &submitted_json, &mut changed);

    let repetitions_shrank = submitted.runs_per_variation < stored.runs_per_variation;
    let axes_compatible = stored.variations.len() == submitted.variations.len()
        && stored
            .variations
            .iter()
            .zip(&submitted.variations)
            .all(|(old, new)| {
                old.param == new.param && old.values.iter().all(|value| new.values.contains(value))
            });
    let budget_grew = match (&stored.budget, &submitted.budget) {
        (Some(old), Some(new)) => new.total_usd > old.total_usd,
        _ => false,
    };
    let only_growth = changed.iter().all(|path| {
        path == "runs_per_variation"
            || (path.starts_with("variations[") && path.contains("].values"))
            || (path == "budget.total_usd" && budget_grew)
    });
    if only_growth && axes_compatible && !repetitions_shrank {
        return ConfigChange::Extension;
    }
    // Reorderings and removals count as conflicts: they would change what existing runs mean.
    if !axes_compatible && !changed.iter().any(|p| p.starts_with("variations")) {
        changed.push("variations".to_string());
    }
    if let Some(path) = changed.iter_mut().find(|p| *p == "budget.total_usd") {
        if !budget_grew {
            *path = "budget.total_usd (can only grow)".to_string();
        }
    }
    if repetitions_shrank {
        changed.retain(|p| p != "runs_per_variation");
        changed.push("runs_per_variation (can only grow)".to_string());
    }
    ConfigChange::Conflict(changed)
}

fn diff_paths(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(old_map), Value::Object(new_map)) => {
            let keys: std::collections::BTreeSet<&String> =
                old_map.keys().chain(new_map.keys()).collect();
            for key in keys {
                let null = Value::Null;
                diff_paths(
                    &join(key),
                    old_map.get(key).unwrap_or(&null),
                    new_map.get(key).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(old_items), Value::Array(new_items))
            if old_items.len() == new_items.len() && old_items.iter().all(Value::is_object) =>
        {
            for (index, (o, n)) in old_items.iter().zip(new_items).enumerate() {
                diff_paths(&format!("{path}[{index}]"), o, n, out);
            }
        }
        _ => out.push(path.to_string()),
    }
}
