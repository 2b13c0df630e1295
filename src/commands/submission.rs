//! Reading an experiment file into a submission: the config, validated
//! locally first, and the workdir bundle for workers that lack it.

use std::path::{Path, PathBuf};

use flotilla_shared::config::{parse_experiment, ExperimentConfig, RunConfig};
use flotilla_shared::proto;
use flotilla_shared::workdir::read_bundle;
use flotilla_shared::{Error, Result};

pub fn load_config(file: &Path) -> Result<(ExperimentConfig, String)> {
    let yaml = std::fs::read_to_string(file)
        .map_err(|e| Error::io(format!("cannot read {}", file.display()), e))?;
    let config = parse_experiment(&yaml, &file.display().to_string())?;
    Ok((config, yaml))
}

/// Builds the submit request for `file`. `exclude` lists directories never to
/// ship (the experiments root, when it sits inside the workdir).
pub fn prepare(
    file: &Path,
    exclude: &[PathBuf],
    retry_failed: bool,
) -> Result<(ExperimentConfig, proto::SubmitRequest)> {
    let (config, yaml) = load_config(file)?;
    let mut request = proto::SubmitRequest {
        config_yaml: yaml,
        config_path: file.display().to_string(),
        workdir: None,
        workdir_path: String::new(),
        retry_failed,
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
