//! Reports of experiments under a root: the store's read interface feeds the
//! report crate. Used by the Report RPC, by the automatic report when an
//! experiment ends, and by `flotilla report --root` on the same machine.

use std::path::{Path, PathBuf};

use flotilla_report::{Analysis, ReportOptions};
use flotilla_shared::Result;

pub use crate::store::read_experiment;
pub use crate::store::{ledger_audit, LeaseLedger, LedgerAudit, LedgerEntry};

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

/// A report as the control service answers it: where it was written, its
/// markdown and every figure as JSON.
pub struct WrittenReport {
    pub directory: PathBuf,
    pub markdown: String,
    pub json: String,
}

/// Writes the report of `names[0]` (a comparison with more names) under
/// `root` and reads it back, on a blocking thread: the gRPC handler only
/// decodes and answers (ARCHITECTURE.md, "Actors").
pub async fn write_and_read(
    root: PathBuf,
    names: Vec<String>,
    options: ReportOptions,
) -> Result<WrittenReport> {
    let blocking = tokio::task::spawn_blocking(move || {
        let (directory, analysis) = match names.as_slice() {
            [name] => write_report(&root, name, &options)?,
            names => write_comparison(&root, names, &options)?,
        };
        let path = directory.join("analysis-report.md");
        let markdown = std::fs::read_to_string(&path).map_err(|e| {
            flotilla_shared::Error::io(format!("cannot read {}", path.display()), e)
        })?;
        let json = serde_json::to_string_pretty(&analysis)
            .map_err(|e| flotilla_shared::Error::Internal(e.to_string()))?;
        Ok(WrittenReport {
            directory,
            markdown,
            json,
        })
    });
    blocking
        .await
        .map_err(|e| flotilla_shared::Error::Internal(format!("report failed: {e}")))?
}

/// [`export`] on a blocking thread, for the control service.
pub async fn export_blocking(root: PathBuf, name: String, format: ExportFormat) -> Result<String> {
    tokio::task::spawn_blocking(move || export(&root, &name, format))
        .await
        .map_err(|e| flotilla_shared::Error::Internal(format!("export failed: {e}")))?
}
