//! `flotilla report`: write an experiment's analysis/ and print it, from the
//! root on this machine or through a coordinator.

use flotilla_wire::status::error_of;
use std::path::Path;

use flotilla_coordinator::reports::{write_comparison, write_report};
use flotilla_report::{Analysis, ReportOptions};
use flotilla_shared::error::exit_code;
use flotilla_shared::Error;
use flotilla_wire::proto;

use clap::Args;

use super::args::{self, ClientTlsArgs, RootArg, TokenArg};
use super::client::{connect_target, Target};

#[derive(Args)]
pub struct ReportArgs {
    /// Experiment name.
    pub name: String,
    #[command(flatten)]
    pub options: AnalysisArgs,
}

/// What `report` and `compare` share.
#[derive(Args)]
pub struct AnalysisArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// What to print: the markdown report or every figure as JSON.
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Also size runs to detect this difference, in standard deviations (e.g. 0.5).
    #[arg(long)]
    pub min_effect: Option<f64>,
    /// Ask this coordinator (HOST:PORT) to write it on its root, instead of reading --root here.
    #[arg(long)]
    pub coordinator: Option<String>,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Two or more experiment names.
    #[arg(required = true, num_args = 2.., value_name = "EXPERIMENT")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub options: AnalysisArgs,
}

/// `flotilla report NAME`.
pub async fn report(args: ReportArgs) -> anyhow::Result<i32> {
    analyse(vec![args.name], args.options).await
}

/// `flotilla compare A B …`.
pub async fn compare(args: CompareArgs) -> anyhow::Result<i32> {
    analyse(args.names, args.options).await
}

/// A report (one name) or comparison (several): written here from --root, or
/// by the coordinator on its root.
async fn analyse(names: Vec<String>, options: AnalysisArgs) -> anyhow::Result<i32> {
    let request = Request {
        names,
        format: options.format,
        min_effect: options.min_effect,
    };
    match options.coordinator {
        Some(address) => {
            let target = args::remote(address, options.token, options.tls, options.root.root);
            remote(&target, request).await
        }
        None => local(&options.root.root, request),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The markdown report.
    Md,
    /// Every figure as one JSON document.
    Json,
}

pub struct Request {
    /// One experiment for a report; two or more for a comparison.
    pub names: Vec<String>,
    pub format: Format,
    pub min_effect: Option<f64>,
}

fn check(request: &Request) -> Result<(), Error> {
    match request.min_effect {
        Some(effect) if !(effect.is_finite() && effect > 0.0) => Err(Error::InvalidInput(format!(
            "--min-effect {effect} is not a positive number of standard deviations (e.g. 0.5)"
        ))),
        _ => Ok(()),
    }
}

/// Reads flotilla.db under `root` directly (read-only: a coordinator may be
/// running); writes the report, or the comparison under root/comparisons/.
pub fn local(root: &Path, request: Request) -> anyhow::Result<i32> {
    check(&request)?;
    let options = ReportOptions {
        min_effect: request.min_effect,
    };
    let (dir, analysis) = match request.names.as_slice() {
        [name] => write_report(root, name, &options)?,
        names => write_comparison(root, names, &options)?,
    };
    print_written(&dir, &analysis, request.format)
}

fn print_written(dir: &Path, analysis: &Analysis, format: Format) -> anyhow::Result<i32> {
    match format {
        Format::Md => {
            let path = dir.join("analysis-report.md");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            print!("{text}");
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(analysis)?),
    }
    eprintln!("report written to {}", dir.display());
    Ok(exit_code::OK)
}

/// Has the coordinator write the report on its root and prints what it returns.
pub async fn remote(target: &Target, request: Request) -> anyhow::Result<i32> {
    check(&request)?;
    let mut client = connect_target(target).await?;
    let reply = client
        .report(proto::ReportRequest {
            name: request.names[0].clone(),
            compare_with: request.names[1..].to_vec(),
            min_effect: request.min_effect.unwrap_or(0.0),
        })
        .await
        .map_err(error_of)?
        .into_inner();
    match request.format {
        Format::Md => print!("{}", reply.markdown),
        Format::Json => println!("{}", reply.json),
    }
    eprintln!("report written on the coordinator to {}", reply.directory);
    Ok(exit_code::OK)
}
