//! Reports of experiments under a root: the store's read interface feeds the
//! report crate. Used by the Report RPC, by the automatic report when an
//! experiment ends, and by `flotilla report --root` on the same machine.

use std::path::{Path, PathBuf};

use flotilla_report::{Analysis, ReportOptions};
use flotilla_shared::Result;

pub use crate::store::read_experiment;

/// How `flotilla export` writes an experiment's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

/// Experiment `name`'s runs as results.csv or results.jsonl would hold them
/// now, read from the root's database (a coordinator may be writing it).
pub fn export(root: &Path, name: &str, format: ExportFormat) -> flotilla_shared::Result<String> {
    let (config, rows) = crate::store::read_results(root, name)?;
    Ok(match format {
        ExportFormat::Csv => crate::outputs::results_csv(&config, &rows),
        ExportFormat::Jsonl => crate::outputs::results_jsonl(&rows),
    })
}
use crate::store::read_experiments;

/// Analyses experiment `name` and writes `<root>/<name>/analysis/`; returns that directory.
pub fn write_report(
    root: &Path,
    name: &str,
    options: &ReportOptions,
) -> Result<(PathBuf, Analysis)> {
    let data = read_experiment(root, name)?;
    flotilla_report::write_report(root, &data, options)
}

/// Compares the named experiments (`flotilla compare`) and writes the
/// comparison under `<root>/comparisons/`; returns that directory.
pub fn write_comparison(
    root: &Path,
    names: &[String],
    options: &ReportOptions,
) -> Result<(PathBuf, Analysis)> {
    flotilla_report::check_comparison_names(names)?;
    let experiments = read_experiments(root, names)?;
    flotilla_report::write_comparison(root, experiments, options)
}
