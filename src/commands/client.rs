//! Commands that talk to a coordinator over the control API: submit, status, ls, cancel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_shared::auth::TOKEN_METADATA_KEY;
use flotilla_shared::error::exit_code;
use flotilla_shared::proto;
use flotilla_shared::proto::control_service_client::ControlServiceClient;
use flotilla_shared::wire::MAX_MESSAGE_BYTES;
use flotilla_shared::{Error, Result};
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::progress;

pub struct Target {
    pub address: String,
    pub token_file: Option<PathBuf>,
    pub root: PathBuf,
}

#[derive(Clone)]
pub struct AddToken {
    token: MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for AddToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, self.token.clone());
        Ok(request)
    }
}

pub type Client = ControlServiceClient<InterceptedService<Channel, AddToken>>;

pub async fn connect(address: &str, token: &str) -> Result<Client> {
    let url = flotilla_worker::endpoint_url(address);
    let channel = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::InvalidInput(format!("'{address}' is not a coordinator address (HOST:PORT): {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach the coordinator at {address}: {e}; is `flotilla coordinator start` running there?")))?;
    let token = MetadataValue::try_from(token)
        .map_err(|_| Error::InvalidInput("the token must be printable ASCII".into()))?;
    Ok(
        ControlServiceClient::with_interceptor(channel, AddToken { token })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

pub async fn connect_target(target: &Target) -> Result<Client> {
    let token = super::client_token(target.token_file.as_deref(), &target.root)?;
    connect(&target.address, &token).await
}

pub async fn submit(
    target: &Target,
    file: &Path,
    wait: bool,
    retry_failed: bool,
) -> anyhow::Result<i32> {
    let (_, request) = super::submission::prepare(file, &[], retry_failed)?;
    let mut client = connect_target(target).await?;
    let reply = client
        .submit(request)
        .await
        .map_err(Error::from)?
        .into_inner();
    println!(
        "{}: {} ({} runs, {} to run) in {}",
        reply.name, reply.outcome, reply.total_runs, reply.runs_to_do, reply.directory
    );
    if !wait {
        return Ok(exit_code::OK);
    }
    let ending = progress::follow(&mut client, &reply.name, None).await?;
    progress::print_final(&ending.status);
    Ok(progress::exit_code_for(&ending))
}

pub async fn status(target: &Target, name: Option<String>, as_json: bool) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .status(proto::StatusRequest {
            name: name.clone().unwrap_or_default(),
        })
        .await
        .map_err(Error::from)?
        .into_inner();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status_json(&reply))?);
        return Ok(exit_code::OK);
    }
    if reply.experiments.is_empty() {
        println!("no experiments");
    }
    for experiment in &reply.experiments {
        println!("{}", progress::one_line(experiment));
        if !experiment.variations.is_empty() {
            println!(
                "  {:<9} {:>9} {:>6} {:>9} {:>7} {:>7}  parameters",
                "variation", "succeeded", "failed", "cancelled", "running", "pending"
            );
            for variation in &experiment.variations {
                let c = variation.counts.unwrap_or_default();
                println!(
                    "  var-{:03}   {:>9} {:>6} {:>9} {:>7} {:>7}  {}",
                    variation.index,
                    c.succeeded,
                    c.failed,
                    c.cancelled,
                    c.running,
                    c.pending,
                    variation.params_json
                );
            }
        }
    }
    if !reply.workers.is_empty() {
        println!("workers:");
        for worker in &reply.workers {
            println!(
                "  {:<24} {:<12} slots {:>3}  running {:>3}  finished {:>6}",
                worker.name,
                if worker.connected {
                    "connected"
                } else {
                    "disconnected"
                },
                worker.slots,
                worker.running,
                worker.finished
            );
        }
    }
    Ok(exit_code::OK)
}

fn counts_json(counts: Option<proto::StateCounts>) -> serde_json::Value {
    let c = counts.unwrap_or_default();
    json!({"pending": c.pending, "running": c.running, "succeeded": c.succeeded, "failed": c.failed, "cancelled": c.cancelled})
}

fn experiment_json(e: &proto::ExperimentStatus) -> serde_json::Value {
    json!({
        "name": e.name,
        "state": e.state,
        "total_runs": e.total_runs,
        "counts": counts_json(e.counts),
        "directory": e.directory,
        "cost_usd": e.spent_usd,
        "started_at": flotilla_shared::clock::rfc3339(e.started_at_ms),
        "finished_at": (e.finished_at_ms > 0).then(|| flotilla_shared::clock::rfc3339(e.finished_at_ms)),
        "variations": e.variations.iter().map(|v| json!({
            "index": v.index,
            "axis_values": serde_json::from_str::<serde_json::Value>(&v.params_json).unwrap_or_default(),
            "counts": counts_json(v.counts),
        })).collect::<Vec<_>>(),
    })
}

fn status_json(reply: &proto::StatusReply) -> serde_json::Value {
    json!({
        "experiments": reply.experiments.iter().map(experiment_json).collect::<Vec<_>>(),
        "workers": reply.workers.iter().map(|w| json!({
            "name": w.name, "connected": w.connected, "slots": w.slots, "running": w.running, "finished": w.finished,
        })).collect::<Vec<_>>(),
    })
}

pub async fn list(target: &Target, as_json: bool) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .list(proto::ListRequest {})
        .await
        .map_err(Error::from)?
        .into_inner();
    if as_json {
        let experiments: Vec<_> = reply.experiments.iter().map(experiment_json).collect();
        println!("{}", serde_json::to_string_pretty(&experiments)?);
        return Ok(exit_code::OK);
    }
    if reply.experiments.is_empty() {
        println!("no experiments");
    }
    for experiment in &reply.experiments {
        println!("{}", progress::one_line(experiment));
    }
    Ok(exit_code::OK)
}

pub async fn cancel(target: &Target, name: String, kill: bool) -> anyhow::Result<i32> {
    let mut client = connect_target(target).await?;
    let reply = client
        .cancel(proto::CancelRequest {
            name: name.clone(),
            kill_running: kill,
        })
        .await
        .map_err(Error::from)?
        .into_inner();
    println!(
        "{name}: cancelled {} run(s){}",
        reply.cancelled,
        if kill { "" } else { "; running runs finish" }
    );
    Ok(exit_code::OK)
}
