//! Reports of experiments under a root: the store's read interface feeds the
//! report crate. Used by the Report RPC, by the automatic report when an
//! experiment ends, and by `flotilla report --root` on the same machine.

use std::path::{Path, PathBuf};

use flotilla_report::{Analysis, ReportOptions};
use flotilla_shared::Result;

pub use crate::store::{ledger_audit, LeaseLedger, LedgerAudit, LedgerEntry};
pub use crate::store::{read_experiment, read_experiment_list};

/// How `flotilla export` writes a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

/// Which of an experiment's tables `flotilla export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportTable {
    /// One row per run, as results.csv holds them.
    Runs,
    /// One row per LLM call of every attempt.
    Calls,
}

/// An exported table: its content and what each column holds.
pub struct Exported {
    pub content: String,
    pub columns: Vec<crate::outputs::Column>,
}

/// Experiment `name`'s runs (as results.csv or results.jsonl would hold
/// them now) or calls, read from the root's database (a coordinator may be
/// writing it).
pub fn export(
    root: &Path,
    name: &str,
    table: ExportTable,
    format: ExportFormat,
) -> flotilla_shared::Result<Exported> {
    match table {
        ExportTable::Runs => {
            let (config, rows) = crate::store::read_results(root, name)?;
            Ok(Exported {
                content: match format {
                    ExportFormat::Csv => crate::outputs::results_csv(&config, &rows),
                    ExportFormat::Jsonl => crate::outputs::results_jsonl(&config, &rows),
                },
                columns: crate::outputs::results_columns(&config, &rows),
            })
        }
        ExportTable::Calls => {
            let table = crate::store::read_calls(root, name)?;
            Ok(Exported {
                content: match format {
                    ExportFormat::Csv => table_csv(&table),
                    ExportFormat::Jsonl => table_jsonl(&table),
                },
                columns: table.columns,
            })
        }
    }
}

fn table_csv(table: &crate::store::Table) -> String {
    use crate::outputs::{cell, push_row};
    let mut out = String::with_capacity(table.rows.len() * 160);
    push_row(&mut out, table.columns.iter().map(|c| c.name.as_str()));
    for row in &table.rows {
        let cells: Vec<String> = row.iter().map(|value| cell(Some(value))).collect();
        push_row(&mut out, cells.iter().map(String::as_str));
    }
    out
}

fn table_jsonl(table: &crate::store::Table) -> String {
    let mut out = String::with_capacity(table.rows.len() * 320);
    for row in &table.rows {
        let object: serde_json::Map<String, serde_json::Value> = table
            .columns
            .iter()
            .zip(row)
            .map(|(column, value)| (column.name.clone(), value.clone()))
            .collect();
        out.push_str(&serde_json::Value::Object(object).to_string());
        out.push('\n');
    }
    out
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
pub async fn export_blocking(
    root: PathBuf,
    name: String,
    table: ExportTable,
    format: ExportFormat,
) -> Result<Exported> {
    tokio::task::spawn_blocking(move || export(&root, &name, table, format))
        .await
        .map_err(|e| flotilla_shared::Error::Internal(format!("export failed: {e}")))?
}
