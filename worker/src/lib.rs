//! Flotilla's worker: joins a coordinator, runs the runs it is assigned and
//! ships their results back. [`run`] is the one entry point, used by the
//! binary and tests.

pub mod answer_cache;
mod capabilities;
mod connection;
mod run_kinds;
mod session;
mod workdir_cache;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use flotilla_shared::{Error, Result};

pub use connection::{connect_error, CoordinatorLink};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator address, `HOST:PORT`.
    pub coordinator: String,
    pub token: String,
    /// Unique among the coordinator's workers.
    pub name: String,
    /// Runs this worker runs at once.
    pub slots: u32,
    /// Scratch run directories and the workdir cache live here.
    pub work_dir: PathBuf,
    /// LLM providers beyond `sim` and this worker's Ollama (the providers file).
    pub providers: Vec<flotilla_gateway::providers::Provider>,
    /// This worker's Ollama, the built-in `ollama/…` provider.
    pub ollama_url: String,
    /// When asked to drain, how long running runs may take to finish before
    /// they are handed back to the coordinator.
    pub drain_timeout: std::time::Duration,
    /// How the coordinator is reached over TLS (ARCHITECTURE.md, "TLS and health").
    pub tls: flotilla_wire::tls::ClientTls,
}

/// What the worker is asked to do from outside its coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// Take no more runs, let running ones finish within the drain timeout,
    /// hand back the rest, leave (SIGTERM).
    Drain,
    /// Stop running runs now and leave (a second signal).
    Now,
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.slots == 0 {
            return Err(Error::InvalidInput("--slots must be at least 1".into()));
        }
        if self.name.is_empty()
            || self.name.len() > 128
            || self.name.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(Error::InvalidInput(format!(
                "'{}' is not a valid worker name; use 1 to 128 printable characters without '/'",
                self.name
            )));
        }
        Ok(())
    }
}

/// How many calls this machine's Ollama answers at once: its `OLLAMA_NUM_PARALLEL`, else 1.
fn ollama_parallel() -> u64 {
    std::env::var("OLLAMA_NUM_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A default worker name: host name and process id.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// Joins the coordinator and serves until `shutdown` resolves (running runs are
/// then cancelled). Returns an error if the coordinator refuses the token.
pub async fn run(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (stop, stops) = tokio::sync::mpsc::unbounded_channel();
    let forward = async move {
        shutdown.await;
        let _ = stop.send(StopRequest::Now);
        std::future::pending::<()>().await
    };
    tokio::select! {
        served = run_until(config, stops) => served,
        _ = forward => unreachable!("pending forever"),
    }
}

/// Joins the coordinator and serves until it drains (asked by `stops`, or by
/// the coordinator) or is told to stop now.
pub async fn run_until(
    config: WorkerConfig,
    stops: tokio::sync::mpsc::UnboundedReceiver<StopRequest>,
) -> Result<()> {
    config.validate()?;
    // Output directories are reused between runs: two workers must not share them.
    let _work_dir_lock =
        flotilla_shared::dir_lock::lock_dir(&config.work_dir, ".lock", "a worker")?;
    let scratch = config.work_dir.join("runs");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| Error::io(format!("cannot create {}", scratch.display()), e))?;
    let link = connection::CoordinatorLink::new(&config.coordinator, &config.token, &config.tls)?;
    let workdirs = workdir_cache::WorkdirCache::new(config.work_dir.join("workdirs"), link.clone());
    let mut providers = config.providers.clone();
    providers.push(flotilla_gateway::providers::Provider::ollama(
        &config.ollama_url,
        ollama_parallel(),
    ));
    let cache = answer_cache::CoordinatorCache::new(&link, config.name.clone());
    let gateway = flotilla_gateway::Gateway::start(providers, Some(Arc::new(cache)))
        .await
        .map_err(|e| Error::io("cannot start the LLM gateway on 127.0.0.1", e))?;
    tracing::info!(address = %gateway.address, "gateway listening");
    let (capabilities, announced) =
        tokio::sync::watch::channel(capabilities::initial(&config.providers));
    // The first look at the Ollama comes before Hello, so that the coordinator
    // knows its models from the start.
    if let Some(models) = capabilities::ollama_models(&gateway.state.http, &config.ollama_url).await
    {
        capabilities.send_modify(|current| {
            current.providers.insert("ollama".into());
            current.models = models;
        });
    }
    let follower = tokio::spawn(capabilities::follow_ollama(
        gateway.state.http.clone(),
        config.ollama_url.clone(),
        capabilities,
    ));
    let (top_ups, top_up_requests) = tokio::sync::mpsc::unbounded_channel();
    let context = Arc::new(run_kinds::RunContext::new(
        scratch,
        workdirs,
        Arc::new(gateway),
        top_ups,
        config.name.clone(),
    ));
    let served = session::Session::new(config, link, context, announced, top_up_requests)
        .run(stops)
        .await;
    follower.abort();
    served
}
