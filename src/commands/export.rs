//! `flotilla export`: an experiment's runs on stdout, as results.csv or
//! results.jsonl hold them, from a root here or from a coordinator.

use std::path::Path;

use flotilla_coordinator::reports::{self, ExportFormat};
use flotilla_shared::proto;

use super::client::{connect_target, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

pub async fn export(
    name: &str,
    format: Format,
    root: &Path,
    coordinator: Option<&Target>,
) -> anyhow::Result<i32> {
    let content = match coordinator {
        None => reports::export(
            root,
            name,
            match format {
                Format::Csv => ExportFormat::Csv,
                Format::Jsonl => ExportFormat::Jsonl,
            },
        )?,
        Some(target) => {
            let mut client = connect_target(target).await?;
            let format = match format {
                Format::Csv => proto::ExportFormat::Csv,
                Format::Jsonl => proto::ExportFormat::Jsonl,
            };
            client
                .export(proto::ExportRequest {
                    name: name.to_string(),
                    format: format.into(),
                })
                .await
                .map_err(flotilla_shared::Error::from)?
                .into_inner()
                .content
        }
    };
    print!("{content}");
    Ok(0)
}
