//! Reports (DESIGN §9): `<experiment>/analysis/` with analysis-report.md,
//! variation-statistics.json, comparisons.json and patterns.json.

mod compute;
mod data;
mod render;

use std::path::{Path, PathBuf};

use flotilla_shared::atomic_file::write_atomic;
use flotilla_shared::{Error, Result};
use serde_json::json;

pub use compute::{analyse, normalise_error, Analysis};

#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// A difference (in standard deviations) the power analysis sizes runs for.
    pub min_effect: Option<f64>,
}

/// Analyses experiment `name` under `root` and writes its analysis directory; returns it.
pub fn write_report(
    root: &Path,
    name: &str,
    options: &ReportOptions,
) -> Result<(PathBuf, Analysis)> {
    let data = data::load(root, name)?;
    let analysis = compute::analyse(&data, options.min_effect);
    let dir = root.join(name).join("analysis");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let write = |file: &str, content: String| {
        let path = dir.join(file);
        write_atomic(&path, content.as_bytes())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    };
    let pretty = |value: serde_json::Value| {
        serde_json::to_string_pretty(&value).expect("json serialises") + "\n"
    };
    write("analysis-report.md", render::markdown(&analysis))?;
    write(
        "variation-statistics.json",
        pretty(json!({
            "experiment": analysis.experiment,
            "state": analysis.state,
            "partial": analysis.partial,
            "metrics": analysis.metrics,
            "skipped_metrics": analysis.skipped_metrics,
            "baseline": analysis.baseline,
            "variations": analysis.variations,
        })),
    )?;
    write(
        "comparisons.json",
        pretty(
            json!({"experiment": analysis.experiment, "partial": analysis.partial, "comparisons": analysis.comparisons}),
        ),
    )?;
    write(
        "patterns.json",
        pretty(json!({
            "experiment": analysis.experiment,
            "partial": analysis.partial,
            "main_effects": analysis.main_effects,
            "failure_modes": analysis.failure_modes,
        })),
    )?;
    Ok((dir, analysis))
}
