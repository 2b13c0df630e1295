//! Reading an experiment file into a submission: the config, validated
//! locally first, and the workdir bundle for workers that lack it.

use std::path::{Path, PathBuf};

use flotilla_shared::config::{parse_experiment, ExperimentConfig, RunConfig};
use flotilla_shared::workdir::read_bundle;
use flotilla_shared::{Error, Result};
use flotilla_wire::proto;

/// A hosted model with no known price could run up any bill: refused before
/// anything runs, naming the model and where its price can go.
fn check_prices(
    file: &Path,
    config: &ExperimentConfig,
    providers: &[flotilla_gateway::providers::Provider],
) -> Result<()> {
    let priced_by_provider = |model: &str| {
        let (provider, name) = model.split_once('/').unwrap_or(("", model));
        providers
            .iter()
            .any(|p| p.name == provider && p.prices.contains_key(name))
    };
    let unpriced = config.unpriced_models(priced_by_provider);
    if unpriced.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "{}: no price is known for {} (Flotilla's table of hosted prices is as of {}); give it under prices: in the experiment file, e.g. prices: {{\"{}\": {{input: 0.15, output: 0.6}}}} (dollars per million tokens), or in the providers file",
        file.display(),
        unpriced.join(", "),
        flotilla_gateway::pricing::HOSTED_PRICES_AS_OF,
        unpriced[0]
    )))
}

pub fn load_config(file: &Path) -> Result<(ExperimentConfig, String)> {
    let yaml = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    let config = parse_experiment(&yaml, &file.display().to_string())?;
    Ok((config, yaml))
}

/// The content of the cases files `config` names, by the name written in `file`.
fn case_files(
    file: &Path,
    config: &ExperimentConfig,
) -> Result<std::collections::HashMap<String, String>> {
    let base = file.parent().unwrap_or(Path::new(""));
    config
        .variations
        .iter()
        .filter_map(|axis| axis.cases.as_ref())
        .filter(|source| *source != "inline")
        .map(|name| {
            std::fs::read_to_string(base.join(name))
                .map(|content| (name.clone(), content))
                .map_err(|e| Error::io(format!("cannot read {}", base.join(name).display()), e))
        })
        .collect()
}

/// Builds the submit request for `file`. `exclude` lists directories never to
/// ship (the experiments root, when it sits inside the workdir).
pub fn prepare(
    file: &Path,
    exclude: &[PathBuf],
    retry_failed: bool,
    providers: &[flotilla_gateway::providers::Provider],
) -> Result<(ExperimentConfig, proto::SubmitRequest)> {
    let (config, yaml) = load_config(file)?;
    check_prices(file, &config, providers)?;
    let mut request = proto::SubmitRequest {
        config_yaml: yaml,
        config_path: file.display().to_string(),
        workdir: None,
        workdir_path: String::new(),
        retry_failed,
        case_files: case_files(file, &config)?,
    };
    if let RunConfig::Command { workdir, .. } = &config.run {
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let path = base.join(workdir);
        let absolute = path.canonicalize().map_err(|e| {
            Error::InvalidInput(format!(
                "{}: run.workdir: directory {} cannot be used ({e}); it is relative to the experiment file",
                file.display(),
                path.display()
            ))
        })?;
        if !absolute.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{}: run.workdir: {} is not a directory",
                file.display(),
                absolute.display()
            )));
        }
        let (hash, files) = read_bundle(&absolute, exclude)?;
        request.workdir = Some(proto::WorkdirBundle {
            hash,
            files: files.into_iter().map(Into::into).collect(),
        });
        request.workdir_path = absolute.to_string_lossy().into_owned();
    }
    Ok((config, request))
}
