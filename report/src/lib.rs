//! Flotilla's reports (ARCHITECTURE.md, "Reports"): `<experiment>/analysis/`
//! with analysis-report.md, variation-statistics.json, comparisons.json,
//! patterns.json and plots/*.svg, and `flotilla compare` across experiments.
//!
//! The crate reads no database: callers hand it [`ExperimentData`], which the
//! coordinator's store fills through its read interface.

pub mod analysis;
mod compare;
pub mod data;
pub mod forecast;
pub mod format;
mod plots;
mod render;
pub mod sequential;
pub mod stats;

use std::path::{Path, PathBuf};

use flotilla_shared::atomic_file::write_atomic;
use flotilla_shared::status::RunStatus;
use flotilla_shared::{Error, Result};
use serde_json::json;

use analysis::MetricKind;
pub use analysis::{analyse, live_figures, normalise_error, Analysis};
pub use data::{ExperimentData, ExperimentDataBuilder, RunRecord};

#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// A difference (in standard deviations) the power analysis sizes runs for.
    pub min_effect: Option<f64>,
}

/// Analyses an experiment and writes its analysis directory under `root`; returns it.
pub fn write_report(
    root: &Path,
    data: &ExperimentData,
    options: &ReportOptions,
) -> Result<(PathBuf, Analysis)> {
    let analysis = analysis::analyse(data, options.min_effect);
    let dir = root.join(&data.name).join("analysis");
    write_analysis(&dir, data, &analysis)?;
    Ok((dir, analysis))
}

/// Checks the names of a comparison before their experiments are read.
pub use compare::check_names as check_comparison_names;

/// Puts experiments side by side (`flotilla compare`) and writes the
/// comparison under `root/comparisons/`; returns the directory.
pub fn write_comparison(
    root: &Path,
    experiments: Vec<ExperimentData>,
    options: &ReportOptions,
) -> Result<(PathBuf, Analysis)> {
    let names: Vec<String> = experiments.iter().map(|e| e.name.clone()).collect();
    let (data, notes) = compare::combine(experiments)?;
    let mut analysis = analysis::analyse(&data, options.min_effect);
    analysis.compared_experiments = names;
    analysis.notes = notes;
    let dir = root
        .join(flotilla_shared::naming::COMPARISONS_DIR)
        .join(&data.name);
    write_analysis(&dir, &data, &analysis)?;
    Ok((dir, analysis))
}

fn write_analysis(dir: &Path, data: &data::ExperimentData, analysis: &Analysis) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let write = |file: &str, content: String| {
        let path = dir.join(file);
        write_atomic(&path, content.as_bytes())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    };
    let pretty = |value: serde_json::Value| {
        serde_json::to_string_pretty(&value).expect("json serialises") + "\n"
    };
    let plots = write_plots(data, analysis, dir)?;
    write("analysis-report.md", render::markdown(analysis, &plots))?;
    write(
        "variation-statistics.json",
        pretty(json!({
            "experiment": analysis.experiment,
            "compared_experiments": analysis.compared_experiments,
            "state": analysis.state,
            "partial": analysis.partial,
            "metrics": analysis.metrics,
            "skipped_metrics": analysis.skipped_metrics,
            "baseline": analysis.baseline,
            "has_cost": analysis.has_cost,
            "variations": analysis.variations,
        })),
    )?;
    write(
        "comparisons.json",
        pretty(json!({
            "experiment": analysis.experiment,
            "partial": analysis.partial,
            "min_effect": analysis.min_effect,
            "runs_needed_for_min_effect": analysis.runs_needed_for_min_effect.map(|(two_sample, paired)| json!({"two_sample_t": two_sample, "paired_t": paired})),
            "comparisons": analysis.comparisons,
            "pooled_comparisons": analysis.pooled_comparisons,
        })),
    )?;
    write(
        "patterns.json",
        pretty(json!({
            "experiment": analysis.experiment,
            "partial": analysis.partial,
            "main_effects": analysis.main_effects,
            "interaction": analysis.interaction,
            "failure_modes": analysis.failure_modes,
            "cost_frontiers": analysis.cost_frontiers,
        })),
    )?;
    Ok(())
}

/// Writes plots/*.svg for the declared metrics; returns (title, path relative to analysis/).
fn write_plots(
    data: &data::ExperimentData,
    analysis: &Analysis,
    dir: &Path,
) -> Result<Vec<(String, String)>> {
    let plots_dir = dir.join("plots");
    std::fs::create_dir_all(&plots_dir)
        .map_err(|e| Error::io(format!("cannot create {}", plots_dir.display()), e))?;
    let mut written = Vec::new();
    let mut save = |title: String, file: String, svg: String| -> Result<()> {
        let path = plots_dir.join(&file);
        write_atomic(&path, svg.as_bytes())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        written.push((title, format!("plots/{file}")));
        Ok(())
    };
    for declared in &data.design.metrics {
        let info = analysis.metrics.iter().find(|m| m.name == declared.name);
        let goal = info.map(|m| m.goal.as_str()).unwrap_or("");
        let by_variation = if info.is_some_and(|m| m.kind == MetricKind::Boolean) {
            plots::rates_by_variation(analysis, &declared.name, goal)
        } else {
            let values = sorted_values_by_variation(data, analysis, &declared.name);
            plots::by_variation(analysis, &declared.name, goal, &values)
        };
        if let Some(svg) = by_variation {
            save(
                format!("{} by variation", declared.name),
                plots::file_name(&[&declared.name, "by-variation"]),
                svg,
            )?;
        }
        if let Some(svg) = plots::cost_vs_quality(analysis, &declared.name, goal) {
            save(
                format!("{} vs cost", declared.name),
                plots::file_name(&[&declared.name, "vs-cost"]),
                svg,
            )?;
        }
        for effect in analysis
            .main_effects
            .iter()
            .filter(|e| e.metric == declared.name)
        {
            if let Some(svg) = plots::main_effect(effect, goal) {
                save(
                    format!("main effect of {} on {}", effect.axis, effect.metric),
                    plots::file_name(&["main-effect", &effect.axis, &effect.metric]),
                    svg,
                )?;
            }
        }
    }
    Ok(written)
}

/// Each variation's values of `metric` in succeeded runs, sorted, in the
/// order of `analysis.variations`.
fn sorted_values_by_variation(
    data: &ExperimentData,
    analysis: &Analysis,
    metric: &str,
) -> Vec<Vec<f64>> {
    let index = data.metric_index(metric);
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); analysis.variations.len()];
    let position: std::collections::HashMap<u32, usize> = analysis
        .variations
        .iter()
        .enumerate()
        .map(|(i, v)| (v.index, i))
        .collect();
    for run in data
        .runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
    {
        let value = data.metric_of(run, index).and_then(|v| v.as_number());
        if let (Some(value), Some(&slot)) = (value, position.get(&run.variation)) {
            values[slot].push(value);
        }
    }
    values
        .iter_mut()
        .for_each(|list| list.sort_by(f64::total_cmp));
    values
}
