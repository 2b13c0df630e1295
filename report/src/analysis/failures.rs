//! Failure modes: failed runs grouped by a signature of how they failed.

use std::collections::BTreeMap;

use flotilla_shared::status::RunStatus;
use serde::Serialize;

use crate::data::{ExperimentData, VariationData};

#[derive(Debug, Clone, Serialize)]
pub struct FailureMode {
    pub signature: String,
    pub count: u64,
    /// Failed runs by variation name.
    pub per_variation: BTreeMap<String, u64>,
    pub example_run: String,
}

/// An error with numbers and paths masked, so that runs failing the same way group together.
pub fn normalise_error(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut chars = error.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '/'
            && out
                .chars()
                .last()
                .is_none_or(|p| p.is_whitespace() || p == '\'' || p == '"' || p == '(')
        {
            while chars.peek().is_some_and(|n| {
                !n.is_whitespace() && *n != '\'' && *n != '"' && *n != ')' && *n != ':'
            }) {
                chars.next();
            }
            out.push_str("<path>");
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_digit() || *n == '.')
            {
                chars.next();
            }
            out.push('N');
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

pub fn failure_modes(data: &ExperimentData) -> Vec<FailureMode> {
    let mut modes: BTreeMap<String, FailureMode> = BTreeMap::new();
    let variations: BTreeMap<u32, &VariationData> =
        data.variations.iter().map(|v| (v.index, v)).collect();
    for run in data.runs.iter().filter(|r| r.status == RunStatus::Failed) {
        let Some(variation) = variations.get(&run.variation) else {
            continue;
        };
        let mut parts = Vec::new();
        if run.timed_out {
            parts.push("timeout".to_string());
        } else if let Some(signal) = run.signal() {
            parts.push(format!("signal {signal}"));
        } else if let Some(code) = run.exit_code() {
            parts.push(format!("exit {code}"));
        }
        parts.push(normalise_error(run.error().unwrap_or("no error recorded")));
        let signature = parts.join(": ");
        let mode = modes
            .entry(signature.clone())
            .or_insert_with(|| FailureMode {
                signature,
                count: 0,
                per_variation: BTreeMap::new(),
                example_run: variation.run_name(run.repetition),
            });
        mode.count += 1;
        *mode.per_variation.entry(variation.name()).or_default() += 1;
    }
    let mut modes: Vec<FailureMode> = modes.into_values().collect();
    modes.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.signature.cmp(&b.signature))
    });
    modes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_signatures_mask_numbers_and_paths() {
        assert_eq!(normalise_error("exited with code 3"), "exited with code N");
        assert_eq!(
            normalise_error("cannot open /tmp/run-17/data.csv: missing"),
            normalise_error("cannot open /var/x/y.csv: missing")
        );
        assert_eq!(
            normalise_error("timed out after 1.5s"),
            "timed out after Ns"
        );
    }
}
