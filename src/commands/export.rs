//! `flotilla export`: an experiment's runs (as results.csv or results.jsonl
//! hold them) or its LLM calls on stdout, from a root here or from a
//! coordinator; with `--schema`, what each column holds, for readers that
//! want types (the Python module's DataFrames).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use flotilla_coordinator::reports::{self, ExportFormat, ExportTable};
use flotilla_shared::atomic_file::write_atomic;
use flotilla_wire::proto;
use flotilla_wire::status::error_of;

use super::args::{remote, ClientTlsArgs, RootArg, TokenArg};
use super::client::{connect_target, Target};

#[derive(Args)]
pub struct ExportArgs {
    /// Experiment name.
    pub name: String,
    /// runs (one row per run: ids, seed, status, attempts, worker, duration, cost, parameters,
    /// metrics) or calls (one row per LLM call of every attempt: model, tokens, cost, latency,
    /// cache, tier).
    #[arg(long, value_enum, default_value = "runs")]
    pub table: Table,
    /// csv (for runs, as results.csv) or jsonl (one object per row; for runs as results.jsonl,
    /// parameters and metrics as objects).
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Also write the columns, in order, with what each holds as JSON to this file:
    /// [{"name", "kind": int|float|bool|text, "part": run|param|metric|call}].
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
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
    let (content, columns_json) =
        export(&args.name, args.table, args.format, &root, target.as_ref()).await?;
    if let Some(path) = &args.schema {
        write_atomic(path, columns_json.as_bytes())
            .map_err(|e| anyhow::anyhow!("cannot write --schema {}: {e}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(content.as_bytes())?;
    stdout.flush()?;
    Ok(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    Runs,
    Calls,
}

/// The table's content and its columns as JSON.
pub async fn export(
    name: &str,
    table: Table,
    format: Format,
    root: &Path,
    coordinator: Option<&Target>,
) -> anyhow::Result<(String, String)> {
    match coordinator {
        None => {
            let exported = reports::export(
                root,
                name,
                match table {
                    Table::Runs => ExportTable::Runs,
                    Table::Calls => ExportTable::Calls,
                },
                match format {
                    Format::Csv => ExportFormat::Csv,
                    Format::Jsonl => ExportFormat::Jsonl,
                },
            )?;
            Ok((exported.content, serde_json::to_string(&exported.columns)?))
        }
        Some(target) => {
            let mut client = connect_target(target).await?;
            let reply = client
                .export(proto::ExportRequest {
                    name: name.to_string(),
                    format: match format {
                        Format::Csv => proto::ExportFormat::Csv,
                        Format::Jsonl => proto::ExportFormat::Jsonl,
                    }
                    .into(),
                    table: match table {
                        Table::Runs => proto::ExportTable::Runs,
                        Table::Calls => proto::ExportTable::Calls,
                    }
                    .into(),
                })
                .await
                .map_err(error_of)?
                .into_inner();
            Ok((reply.content, reply.columns_json))
        }
    }
}
