//! `flotilla export`: an experiment's runs on stdout, as results.csv or
//! results.jsonl hold them, from a root here or from a coordinator.

use flotilla_wire::status::error_of;
use std::path::Path;

use flotilla_coordinator::reports::{self, ExportFormat};
use flotilla_wire::proto;

use clap::Args;

use super::args::{remote, ClientTlsArgs, RootArg, TokenArg};
use super::client::{connect_target, Target};

#[derive(Args)]
pub struct ExportArgs {
    /// Experiment name.
    pub name: String,
    /// csv (as results.csv) or jsonl (as results.jsonl: parameters and metrics as objects).
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    #[command(flatten)]
    pub root: RootArg,
    /// Ask this coordinator (HOST:PORT) instead of reading --root here.
    #[arg(long)]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// `flotilla export`.
pub async fn main(args: ExportArgs) -> anyhow::Result<i32> {
    let root = args.root.root;
    let target = args
        .coordinator
        .map(|address| remote(address, args.token, args.tls, root.clone()));
    export(&args.name, args.format, &root, target.as_ref()).await
}

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
                .map_err(error_of)?
                .into_inner()
                .content
        }
    };
    print!("{content}");
    Ok(0)
}
