//! `flotilla health ADDR`: asks a coordinator's standard `grpc.health.v1`
//! service whether it is serving, for scripts and container healthchecks.

use std::time::Duration;

use flotilla_shared::error::exit_code;
use flotilla_wire::tls::ClientTls;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use clap::Args;

use super::args::{duration_arg, ClientTlsArgs};

#[derive(Args)]
pub struct HealthArgs {
    /// Coordinator address, HOST:PORT (or https://HOST:PORT).
    #[arg(env = "FLOTILLA_COORDINATOR", default_value = "127.0.0.1:7700")]
    pub address: String,
    /// The service to ask about; empty (the default) means the coordinator as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up, and exit 1, after this long (e.g. 3s).
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// `flotilla health`.
pub async fn main(args: HealthArgs) -> anyhow::Result<i32> {
    health(
        &args.address,
        &args.service,
        &args.tls.settings(),
        args.timeout,
    )
    .await
}

/// Exit 0 when the coordinator answers SERVING; 1 for anything else
/// (unreachable, refused TLS, not serving, no answer within `timeout`), with
/// the reason on stderr.
pub async fn health(
    address: &str,
    service: &str,
    tls: &ClientTls,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let asked = async {
        let channel = super::client::channel(address, tls).await?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?;
        anyhow::Ok(answer.into_inner().status())
    };
    let what = if service.is_empty() {
        String::new()
    } else {
        format!(" ({service})")
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("{address}{what}: serving");
            Ok(exit_code::OK)
        }
        Ok(Ok(status)) => {
            println!("{address}{what}: {}", status.as_str_name().to_lowercase());
            Ok(exit_code::FAILURE)
        }
        Ok(Err(error)) => {
            eprintln!("{address}{what}: not serving: {error:#}");
            Ok(exit_code::FAILURE)
        }
        Err(_) => {
            eprintln!("{address}{what}: not serving: no answer within {timeout:?}");
            Ok(exit_code::FAILURE)
        }
    }
}
