//! `flotilla sim-server`: the sim models as an LLM provider on the network.

use std::net::SocketAddr;

use flotilla_gateway::sim::server::SimServerSettings;
use flotilla_shared::error::exit_code;
use flotilla_shared::Error;
use tracing::info;

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
