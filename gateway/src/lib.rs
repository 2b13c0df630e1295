//! Flotilla's LLM gateway (ARCHITECTURE.md, "Gateway"): one per worker, on
//! 127.0.0.1 at an ephemeral port. Programs reach it through the official
//! clients' environment variables with their run's token as API key; every
//! call is routed by its `provider/model` name, metered, priced and recorded
//! in the run's ledger, which the worker collects when the run ends.

mod answers;
mod anthropic;
pub mod calls;
pub mod limits;
mod ollama;
mod openai;
mod recent;
/// Prices live in `flotilla_shared::pricing`: submission checks them too.
pub use flotilla_shared::pricing;
pub mod providers;
pub mod routing;
pub mod runs;
pub mod sim;
pub mod sim_server;
pub mod spend;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use calls::{calls_jsonl, CallRecord};
pub use runs::RunRegistry;
pub use spend::{RunBudget, SpendGate, TopUpRequest, TopUps};

/// What every request handler shares.
pub struct GatewayState {
    pub runs: RunRegistry,
    pub routing: routing::Routing,
    /// Paces calls to upstream providers for every run of the worker.
    pub limits: limits::RateLimitManager,
    /// Connections to upstream providers, pooled.
    pub http: reqwest::Client,
    /// Set when serving as `flotilla sim-server`: anyone may call, within its limits.
    pub sim_server: Option<sim_server::SimServer>,
}

impl GatewayState {
    fn new(providers: Vec<providers::Provider>, sim_server: Option<sim_server::SimServer>) -> Self {
        GatewayState {
            runs: RunRegistry::default(),
            routing: routing::Routing::new(providers),
            limits: limits::RateLimitManager::default(),
            http: reqwest::Client::builder()
                // As long as the official clients wait for an answer.
                .read_timeout(std::time::Duration::from_secs(600))
                .build()
                .expect("an HTTP client builds"),
            sim_server,
        }
    }
}

/// A running gateway.
pub struct Gateway {
    pub address: SocketAddr,
    pub state: Arc<GatewayState>,
    server: JoinHandle<()>,
}

impl Gateway {
    /// Serves on 127.0.0.1 at an ephemeral port: only programs on this
    /// machine can reach it (ARCHITECTURE.md, invariant 5).
    pub async fn start(providers: Vec<providers::Provider>) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(GatewayState::new(providers, None));
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(without_nagle(listener), app).await {
                tracing::error!(%error, "the gateway stopped");
            }
        });
        Ok(Gateway {
            address,
            state,
            server,
        })
    }

    /// The environment a run's programs get, so that the official clients
    /// reach this gateway with the run's token.
    pub fn environment(&self, token: &str) -> Vec<(&'static str, String)> {
        let base = format!("http://{}", self.address);
        vec![
            ("OPENAI_BASE_URL", format!("{base}/v1")),
            ("OPENAI_API_KEY", token.to_string()),
            ("ANTHROPIC_BASE_URL", base.clone()),
            ("ANTHROPIC_API_KEY", token.to_string()),
            ("OLLAMA_HOST", base.clone()),
            // ollama-python sends it as `Authorization: Bearer`.
            ("OLLAMA_API_KEY", token.to_string()),
            ("FLOTILLA_GATEWAY", base),
        ]
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves the sim models on `listener` until the process ends (`flotilla sim-server`).
pub async fn serve_sim(
    listener: TcpListener,
    settings: sim_server::SimServerSettings,
) -> std::io::Result<()> {
    let (app, _) = sim_app(settings);
    axum::serve(without_nagle(listener), app).await
}

/// Streams are written in small pieces: with Nagle's algorithm on, each
/// would wait for the reader's delayed ACK (40 ms on Linux).
pub fn without_nagle(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot turn Nagle's algorithm off");
        }
    })
}

/// The sim-server's routes and state (whose counters benchmarks read).
pub fn sim_app(settings: sim_server::SimServerSettings) -> (Router, Arc<GatewayState>) {
    let own_names = settings
        .models
        .iter()
        .map(|model| {
            (
                model.name.clone(),
                sim::Sim {
                    model: model.answers,
                    bytes_per_token: model.bytes_per_token,
                },
            )
        })
        .collect();
    let mut state = GatewayState::new(Vec::new(), Some(sim_server::SimServer::new(settings)));
    state.routing = routing::Routing::sim_server(own_names);
    let state = Arc::new(state);
    (router(state.clone()), state)
}

fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*model}", get(openai::get_model))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed_texts))
        .route("/api/tags", get(ollama::tags))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            sim_server::enforce,
        ))
        .with_state(state)
}
