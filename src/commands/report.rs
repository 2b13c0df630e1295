//! `flotilla report`: write an experiment's analysis/ and print it.

use std::path::Path;

use flotilla_coordinator::analysis::{write_report, ReportOptions};
use flotilla_shared::error::exit_code;
use flotilla_shared::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The markdown report.
    Md,
    /// Every figure as one JSON document.
    Json,
}

pub fn report(
    root: &Path,
    name: &str,
    format: Format,
    min_effect: Option<f64>,
) -> anyhow::Result<i32> {
    if let Some(effect) = min_effect {
        if !(effect.is_finite() && effect > 0.0) {
            return Err(Error::InvalidInput(format!(
                "--min-effect {effect} is not a positive number of standard deviations (e.g. 0.5)"
            ))
            .into());
        }
    }
    let (dir, analysis) = write_report(root, name, &ReportOptions { min_effect })?;
    match format {
        Format::Md => {
            let path = dir.join("analysis-report.md");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            print!("{text}");
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&analysis)?),
    }
    eprintln!("report written to {}", dir.display());
    Ok(exit_code::OK)
}
