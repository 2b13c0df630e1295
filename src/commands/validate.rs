//! `flotilla validate`: check a file and show the grid it expands to.

use std::path::Path;

use flotilla_shared::config::RunConfig;
use flotilla_shared::duration::format_duration;
use flotilla_shared::grid::{expand, value_as_argument};
use flotilla_shared::naming::run_id;
use serde_json::json;

use super::submission::load_config;

pub fn validate(file: &Path, as_json: bool) -> anyhow::Result<i32> {
    let (config, _) = load_config(file)?;
    let grid = expand(&config);
    if as_json {
        let variations: Vec<_> = grid
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"index": i + 1, "axis_values": v.axis_values, "params": v.params}))
            .collect();
        let document = json!({
            "name": config.name,
            "hash": config.hash(),
            "variations": variations,
            "runs_per_variation": config.runs_per_variation,
            "total_runs": config.total_runs(),
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(0);
    }
    println!("{}: valid", file.display());
    println!("experiment: {}", config.name);
    if !config.description.is_empty() {
        println!("description: {}", config.description);
    }
    match &config.run {
        RunConfig::Command {
            command,
            workdir,
            timeout_ms,
        } => println!(
            "run: {} (workdir {}, timeout {})",
            command.join(" "),
            workdir,
            format_duration(std::time::Duration::from_millis(*timeout_ms))
        ),
        RunConfig::Noop { .. } => println!("run: noop"),
    }
    for axis in &config.variations {
        let values: Vec<String> = axis.values.iter().map(value_as_argument).collect();
        println!("axis {}: {}", axis.param, values.join(", "));
    }
    println!(
        "{} variation(s) x {} run(s) = {} runs, {} attempt(s) at most each",
        grid.len(),
        config.runs_per_variation,
        config.total_runs(),
        config.retries.max_attempts
    );
    for (index, variation) in grid.iter().enumerate() {
        let cells: Vec<String> = variation
            .axis_values
            .iter()
            .map(|(k, v)| format!("{k}={}", value_as_argument(v)))
            .collect();
        let label = run_id(index as u32 + 1, 1);
        let label = label.split("-run").next().unwrap_or(&label);
        println!(
            "  {label}  {}",
            if cells.is_empty() {
                "(base parameters)".to_string()
            } else {
                cells.join("  ")
            }
        );
    }
    if config.budget.is_some() {
        println!("note: the budget is validated and stored but not enforced yet: enforcement comes with the LLM gateway");
    }
    Ok(0)
}
