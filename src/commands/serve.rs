//! Long-lived roles: `coordinator start` and `worker join`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_coordinator::CoordinatorConfig;
use flotilla_shared::atomic_file::write_atomic;
use flotilla_shared::auth::read_token_file;
use flotilla_shared::error::exit_code;
use flotilla_shared::Error;
use flotilla_worker::WorkerConfig;
use tracing::{info, warn};

use clap::Args;

use super::args::{duration_arg, ClientTlsArgs, LlmArgs, RootArg, ServerTlsArgs, TokenArg};

/// Resolves when the process receives Ctrl+C or SIGTERM.
pub async fn stop_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[derive(Args)]
pub struct CoordinatorStartArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one, printed at start).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub root: RootArg,
    #[command(flatten)]
    pub token: TokenArg,
    /// A worker silent for this long loses its runs, which are requeued (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub lease_timeout: Duration,
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Also serve HTTP here (HOST:PORT): /metrics (Prometheus) and the JSON API under
    /// /api/v1/. Beyond loopback every request needs the token (Authorization: Bearer TOKEN).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Threads serving workers and clients. One is enough for a thousand workers (about
    /// 75,000 noop runs/s on one core) and sleeps best when they idle: a second thread costs
    /// wake-ups between the two on every heartbeat. The store, reports and exports have
    /// threads of their own. Raise it for many workers over TLS on a host with cores to spare.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
}

pub async fn coordinator(args: CoordinatorStartArgs) -> anyhow::Result<i32> {
    let CoordinatorStartArgs {
        listen,
        root,
        token,
        lease_timeout,
        tls,
        http,
        threads: _,
    } = args;
    let (root, token_file, tls) = (root.root, token.token_file, tls.settings());
    let token = match token_file {
        Some(path) => read_token_file(&path)?,
        None => {
            let path = super::default_token_path(&root);
            if path.exists() {
                read_token_file(&path)?
            } else {
                std::fs::create_dir_all(&root)
                    .map_err(|e| Error::io(format!("cannot create {}", root.display()), e))?;
                let token = super::random_token()?;
                write_atomic(&path, format!("{token}\n").as_bytes())
                    .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(format!("cannot restrict {}", path.display()), e))?;
                info!(token_file = %path.display(), "generated a token; workers and clients need --token-file with this file");
                token
            }
        }
    };
    raise_open_file_limit();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {listen}"), e))?;
    warn_if_in_the_clear(listen, http, tls.is_some());
    let config = CoordinatorConfig {
        root: root.clone(),
        token,
        lease_timeout,
        auto_report: true,
        tls,
    };
    let mut coordinator = flotilla_coordinator::start(config, listener).await?;
    if let Some(http) = http {
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .map_err(|e| Error::io(format!("cannot listen on {http} for HTTP"), e))?;
        let address = coordinator.serve_http(listener)?;
        let scheme = if coordinator.serves_tls() {
            "https"
        } else {
            "http"
        };
        // Tests and scripts wait for this line too: the real port when --http used port 0.
        info!(url = %format!("{scheme}://{address}/"), "HTTP listening: the dashboard, /metrics and /api/v1/");
    }
    // Tests and scripts wait for this line: it carries the real port when --listen used port 0.
    // The runtime's own count, which `--threads` set (src/main.rs).
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    info!(address = %coordinator.address, root = %root.display(), threads, "coordinator listening");
    tokio::select! {
        outcome = coordinator.serve_forever() => { outcome?; }
        _ = stop_signal() => { info!("stopping"); }
    }
    Ok(exit_code::OK)
}

/// Beyond loopback without TLS, the token, prompts and results cross the
/// network in the clear: said once, at start.
/// Every worker holds a connection open, so the coordinator needs a file
/// descriptor per worker: the soft limit many systems start a process with
/// (1,024) would refuse the thousandth. Raised to the hard limit, as the
/// system allows any process to do (ARCHITECTURE.md, "Scale").
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        // Linux refuses "unlimited" for this one; 2^20 is its usual ceiling.
        let target = limit.rlim_max.min(1 << 20);
        if limit.rlim_cur >= target {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = target;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            warn!(
                soft,
                "cannot raise the open-file limit; the coordinator may refuse workers beyond it"
            );
        }
    }
}

fn warn_if_in_the_clear(listen: SocketAddr, http: Option<SocketAddr>, tls: bool) {
    if tls {
        return;
    }
    let exposed: Vec<String> = std::iter::once(listen)
        .chain(http)
        .filter(|address| !address.ip().is_loopback())
        .map(|address| address.to_string())
        .collect();
    if !exposed.is_empty() {
        warn!(
            listening = %exposed.join(", "),
            "listening beyond loopback without TLS: the token, prompts and results cross the network in the clear; \
             give --tls-cert and --tls-key (workers and clients then pass --tls-ca)"
        );
    }
}

#[derive(Args)]
pub struct WorkerJoinArgs {
    /// Coordinator address, HOST:PORT.
    #[arg(env = "FLOTILLA_COORDINATOR")]
    pub coordinator: String,
    /// Runs to run at once; default: the number of cores.
    #[arg(long)]
    pub slots: Option<u32>,
    /// Name unique among the coordinator's workers; default: HOSTNAME-PID.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// Scratch space for run directories and cached workdirs; default: a directory of this
    /// process's own under the system temp dir, removed when the worker leaves.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub root: RootArg,
    #[command(flatten)]
    pub llm: LlmArgs,
    /// When drained, how long running runs may take to finish before they are handed back
    /// (e.g. 30s, 5m).
    #[arg(long, default_value = "5m", value_parser = duration_arg)]
    pub drain_timeout: Duration,
}

pub async fn worker(args: WorkerJoinArgs) -> anyhow::Result<i32> {
    let providers = args.llm.providers()?;
    let options = args;
    let token = super::client_token(options.token.token_file.as_deref(), &options.root.root)?;
    let name = options.name.unwrap_or_else(flotilla_worker::default_name);
    // By default a directory of this process's own: two workers of one name
    // (under different coordinators) on one machine must not share it. It
    // goes when the worker leaves; one given with --work-dir stays.
    let default_work_dir = options.work_dir.is_none().then(|| {
        std::env::temp_dir().join(format!(
            "flotilla-worker-{}-{}",
            name.replace(['/', ' '], "_"),
            std::process::id()
        ))
    });
    let work_dir = options
        .work_dir
        .or_else(|| default_work_dir.clone())
        .expect("a work dir, given or by default");
    let config = WorkerConfig {
        coordinator: options.coordinator,
        token,
        name,
        slots: options.slots.unwrap_or_else(cores),
        work_dir,
        providers,
        ollama_url: options.llm.ollama_url,
        drain_timeout: options.drain_timeout,
        tls: options.tls.settings(),
    };
    // The first SIGTERM or Ctrl+C drains the worker; a second stops it now.
    let (stop, stops) = tokio::sync::mpsc::unbounded_channel();
    let signals = tokio::spawn(async move {
        stop_signal().await;
        info!("draining: no new runs; running runs finish or are handed back (signal again to stop now)");
        let _ = stop.send(flotilla_worker::StopRequest::Drain);
        stop_signal().await;
        let _ = stop.send(flotilla_worker::StopRequest::Now);
    });
    let served = flotilla_worker::run_until(config, stops).await;
    signals.abort();
    if let Some(dir) = default_work_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    served?;
    Ok(exit_code::OK)
}

pub fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}
