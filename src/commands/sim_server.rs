//! `flotilla sim-server`: the sim models as an LLM provider on the network.

use std::net::SocketAddr;

use flotilla_gateway::sim::server::SimServerSettings;
use flotilla_shared::error::exit_code;
use flotilla_shared::Error;
use tracing::info;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::args::duration_arg;

#[derive(Args)]
pub struct SimServerArgs {
    /// Address to listen on; port 0 picks a free port (the log line says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Requests per minute per model; over it, 429.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens per minute per model (a token per four bytes of request); over it, 429.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Calls answered at once; more get 429.
    #[arg(long)]
    pub concurrency: Option<u64>,
    /// Time each answer takes, e.g. 20ms.
    #[arg(long, value_parser = duration_arg, default_value = "0s")]
    pub latency: Duration,
    /// Models served under names of their own, as a provider or an Ollama host would
    /// (YAML: models: [{name: llama3.2, answers: tit-for-tat, latency: 20ms, latency_max: 40ms,
    /// error_rate: 0.01, rate_limit_rate: 0.02, bytes_per_token: 4}]); `flex: {latency: 400ms,
    /// latency_max: 800ms, refusal_rate: 0.1}` offers a model at the flex tier (`service_tier`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `flotilla sim-server`.
pub async fn main(args: SimServerArgs) -> anyhow::Result<i32> {
    let settings = SimServerSettings {
        limits: flotilla_gateway::limits::Limits {
            requests_per_minute: args.rpm,
            tokens_per_minute: args.tpm,
            concurrency: args.concurrency,
        },
        latency: args.latency,
        models: Vec::new(),
    };
    serve(args.listen, args.config.as_deref(), settings).await
}

pub async fn serve(
    listen: SocketAddr,
    config: Option<&std::path::Path>,
    mut settings: SimServerSettings,
) -> anyhow::Result<i32> {
    if let Some(path) = config {
        let yaml = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        settings.models =
            flotilla_gateway::sim::server::parse_config(&yaml, &path.display().to_string())
                .map_err(Error::InvalidInput)?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {listen}"), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    info!(%address, rpm = ?settings.limits.requests_per_minute, tpm = ?settings.limits.tokens_per_minute,
        concurrency = ?settings.limits.concurrency, latency = ?settings.latency, "sim-server listening");
    tokio::select! {
        served = flotilla_gateway::serve_sim(listener, settings) => {
            served.map_err(|e| Error::io("the sim-server stopped", e))?;
        }
        _ = super::serve::stop_signal() => {}
    }
    Ok(exit_code::OK)
}
