//! Which metrics a report analyses, of what kind, towards which goal.

use std::collections::BTreeMap;

use flotilla_shared::config::Goal;
use flotilla_shared::status::RunStatus;
use serde::Serialize;

use crate::data::{ExperimentData, MetricValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Numeric,
    Boolean,
}

/// Which way a metric is better: as declared in the experiment file, or
/// undeclared (a metric the runs reported on their own; ranked high to low).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricGoal {
    Maximize,
    Minimize,
    Undeclared,
}

impl MetricGoal {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricGoal::Maximize => "maximize",
            MetricGoal::Minimize => "minimize",
            MetricGoal::Undeclared => "undeclared",
        }
    }
}

impl From<Goal> for MetricGoal {
    fn from(goal: Goal) -> Self {
        match goal {
            Goal::Maximize => MetricGoal::Maximize,
            Goal::Minimize => MetricGoal::Minimize,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricInfo {
    pub name: String,
    pub goal: MetricGoal,
    pub kind: MetricKind,
}

impl MetricInfo {
    pub fn higher_is_better(&self) -> bool {
        self.goal != MetricGoal::Minimize
    }
}

/// Which metrics to analyse: declared ones first, then every other key whose
/// values are numbers or booleans.
pub fn metric_infos(data: &ExperimentData) -> (Vec<MetricInfo>, Vec<String>) {
    let mut seen: BTreeMap<&str, (bool, bool, bool)> = BTreeMap::new(); // (any number, any bool, any other)
    for run in data
        .runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
    {
        for (key, value) in data.metrics_of(run) {
            let entry = seen
                .entry(data.metric_names[key as usize].as_str())
                .or_default();
            match value {
                MetricValue::Bool(_) => entry.1 = true,
                MetricValue::Number(_) => entry.0 = true,
                MetricValue::Other => entry.2 = true,
            }
        }
    }
    let kind_of = |name: &str| match seen.get(name) {
        Some((false, true, _)) => MetricKind::Boolean,
        _ => MetricKind::Numeric,
    };
    let mut metrics: Vec<MetricInfo> = data
        .design
        .metrics
        .iter()
        .map(|m| MetricInfo {
            name: m.name.clone(),
            goal: m.goal.into(),
            kind: kind_of(&m.name),
        })
        .collect();
    let mut skipped = Vec::new();
    for (name, (numbers, booleans, other)) in &seen {
        if metrics.iter().any(|m| m.name == *name) {
            continue;
        }
        if *numbers || *booleans {
            metrics.push(MetricInfo {
                name: name.to_string(),
                goal: MetricGoal::Undeclared,
                kind: kind_of(name),
            });
        } else if *other {
            skipped.push(name.to_string());
        }
    }
    (metrics, skipped)
}
