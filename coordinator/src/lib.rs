//! Flotilla's coordinator: the registry of experiments, run manifests, worker
//! leases, the SQLite store and the gRPC services that workers and the command
//! line talk to. [`start`] is the one entry point, used by the binary and tests.

mod actor;
pub mod cache;
mod grpc;
pub mod http;
mod outputs;
pub mod reports;
mod restore;
pub mod state;
mod store;
mod views;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_shared::{Error, Result};
use flotilla_wire::proto::cache_service_server::CacheServiceServer;
use flotilla_wire::proto::control_service_server::ControlServiceServer;
use flotilla_wire::proto::worker_service_server::WorkerServiceServer;
use flotilla_wire::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use actor::CoordinatorHandle;

/// Default lease timeout: a worker silent this long loses its runs.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Experiments root: flotilla.db and one directory per experiment.
    pub root: PathBuf,
    /// Shared secret workers and clients must present.
    pub token: String,
    pub lease_timeout: Duration,
    /// Write each experiment's report (analysis/) when it ends.
    pub auto_report: bool,
    /// Serve gRPC and HTTP over TLS (ARCHITECTURE.md, "TLS and health").
    pub tls: Option<flotilla_wire::tls::ServerTls>,
}

impl CoordinatorConfig {
    pub fn validate(&self) -> Result<()> {
        if self.token.is_empty() {
            return Err(Error::InvalidInput(
                "the coordinator needs a non-empty token".into(),
            ));
        }
        if self.lease_timeout < Duration::from_millis(300) {
            return Err(Error::InvalidInput(format!(
                "--lease-timeout {:?} is too short; use at least 300ms (workers heartbeat at a third of it)",
                self.lease_timeout
            )));
        }
        Ok(())
    }
}

/// A running coordinator.
pub struct Coordinator {
    pub address: SocketAddr,
    pub handle: CoordinatorHandle,
    token: Arc<str>,
    root: PathBuf,
    http: Option<JoinHandle<()>>,
    /// The HTTP side's TLS, read once at start.
    http_tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    health: tonic_health::server::HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    store_thread: Option<std::thread::JoinHandle<()>>,
    /// Held while the coordinator lives: one process per root.
    _root_lock: flotilla_shared::dir_lock::DirLock,
}

impl Coordinator {
    /// Serves `/metrics` and the JSON API on `listener` too; returns its address.
    pub fn serve_http(&mut self, listener: TcpListener) -> Result<SocketAddr> {
        let (address, task) = http::serve(
            listener,
            self.handle.clone(),
            self.token.clone(),
            &self.root,
            self.http_tls.clone(),
        )?;
        self.http = Some(task);
        Ok(address)
    }

    /// Whether HTTP is served over TLS (the dashboard's URL says https).
    pub fn serves_tls(&self) -> bool {
        self.http_tls.is_some()
    }

    /// Stops serving; committed results are already durable.
    pub async fn shutdown(mut self) {
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        if let Some(http) = self.http.take() {
            http.abort();
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.server).await;
        drop(self.store_thread.take());
    }

    /// Waits until the server stops (it runs until shut down or failed).
    pub async fn serve_forever(mut self) -> Result<()> {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Internal(format!("server failed: {e}"))),
            Err(e) => Err(Error::Internal(format!("server task failed: {e}"))),
        }
    }
}

/// Opens the store under `config.root`, restores state and serves gRPC on `listener`.
pub async fn start(config: CoordinatorConfig, listener: TcpListener) -> Result<Coordinator> {
    config.validate()?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the listening address", e))?;
    let (handle, opened) = restore_and_spawn(&config).await?;
    let token: Arc<str> = config.token.as_str().into();
    // Both sides' TLS is read before anything is served, so bad files stop the start.
    let http_tls = match &config.tls {
        Some(tls) => Some(http::tls_config(tls)?),
        None => None,
    };
    let (health, shutdown, server) =
        serve_grpc(&config, &handle, &opened.cache, &token, listener).await?;
    Ok(Coordinator {
        address,
        handle,
        token,
        root: config.root.clone(),
        http: None,
        http_tls,
        health,
        shutdown: Some(shutdown),
        server,
        store_thread: Some(opened.thread),
        _root_lock: opened.root_lock,
    })
}

/// What `start` keeps of the opened store: its thread and the root's lock.
struct OpenedRoot {
    thread: std::thread::JoinHandle<()>,
    root_lock: flotilla_shared::dir_lock::DirLock,
    cache: Arc<cache::ResponseCache>,
}

/// Opens the store, rebuilds the state from it (ARCHITECTURE.md, invariant 3)
/// and starts the actor over it.
async fn restore_and_spawn(config: &CoordinatorConfig) -> Result<(CoordinatorHandle, OpenedRoot)> {
    let root = config.root.clone();
    let (opened, cache) = tokio::task::spawn_blocking(move || {
        let opened = store::open(&root)?;
        // Under the root's lock, beside the results (ARCHITECTURE.md, "Response cache").
        let cache = cache::ResponseCache::open(&root)?;
        Ok::<_, Error>((opened, cache))
    })
    .await
    .map_err(|e| Error::Internal(format!("store start failed: {e}")))??;
    let mut initial = state::Outbox::at(flotilla_shared::clock::now_ms());
    // Lease ids start at the current time in microseconds, above any id handed
    // out before a restart, so a late result can never match a newer lease.
    let first_lease_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    let state = restore::restore(
        config.root.clone(),
        opened.loaded,
        config.lease_timeout,
        first_lease_id,
        &mut initial,
    )?;
    let handle = actor::spawn(
        state,
        opened.store,
        initial,
        config.auto_report.then(|| config.root.clone()),
    );
    let kept = OpenedRoot {
        thread: opened.thread,
        root_lock: opened.root_lock,
        cache,
    };
    Ok((handle, kept))
}

/// Serves the worker and control services, and grpc.health.v1, on `listener`
/// until the returned sender fires.
async fn serve_grpc(
    config: &CoordinatorConfig,
    handle: &CoordinatorHandle,
    cache: &Arc<cache::ResponseCache>,
    token: &Arc<str>,
    listener: TcpListener,
) -> Result<(
    tonic_health::server::HealthReporter,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
)> {
    let worker_api = grpc::WorkerApi {
        handle: handle.clone(),
        token: token.clone(),
        heartbeat_interval: config.lease_timeout / 3,
        lease_timeout: config.lease_timeout,
        cache: cache.clone(),
    };
    let cache_api = cache::service::CacheApi {
        cache: cache.clone(),
    };
    let control_api = grpc::ControlApi {
        handle: handle.clone(),
        snapshots: Default::default(),
        root: config.root.clone(),
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        server = server.tls_config(tls.tonic()?).map_err(|e| {
            Error::InvalidInput(format!("the TLS certificate or key was refused: {e}"))
        })?;
    }
    // grpc.health.v1 answers probes without the token: it tells nothing but "serving".
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<WorkerServiceServer<grpc::WorkerApi>>()
        .await;
    health
        .set_serving::<ControlServiceServer<grpc::ControlApi>>()
        .await;
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    let router = server
        .add_service(health_service)
        .add_service(
            WorkerServiceServer::new(worker_api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ControlServiceServer::new(control_api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            grpc::TokenCheck {
                token: token.clone(),
            },
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            CacheServiceServer::new(cache_api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            grpc::TokenCheck {
                token: token.clone(),
            },
        ));
    // Nagle off on accepted connections: small Assign/Ack messages must not wait
    // for delayed ACKs (40 ms each on Linux). The builder's tcp_nodelay only
    // applies to listeners it binds itself.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = shutdown_signal.await;
    }));
    Ok((health, shutdown, server))
}
