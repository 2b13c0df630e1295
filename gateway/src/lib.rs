//! Flotilla's LLM gateway (ARCHITECTURE.md, "Gateway"): one per worker, on
//! 127.0.0.1 at an ephemeral port. Programs reach it through the official
//! clients' environment variables with their run's token as API key; every
//! call is routed by its `provider/model` name, metered, priced and recorded
//! in the run's ledger, which the worker collects when the run ends.

//!
//! The parts: `apis/` (the OpenAI, Anthropic and Ollama shapes and
//! endpoints), `pipeline` (the one path every call takes), `call` and
//! `state` (the leaves they share), `caller` (the token extractor),
//! `metering/` (call records, runs' ledgers, spend), `providers/` (the
//! providers file, routing, rate limits, the relay to providers) and `sim/`
//! (the sim models, answering with them, and `flotilla sim-server`).

mod apis;
pub mod cache;
pub mod call;
mod caller;
pub mod metering;
mod pipeline;
/// Prices live in `flotilla_shared::pricing`: submission checks them too.
pub use flotilla_shared::pricing;
pub mod providers;
pub mod sim;
pub mod spend_lease;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use metering::calls::{calls_jsonl, CallRecord};
pub use metering::runs::RunRegistry;
pub use metering::spend::{RunBudget, SpendGate, TopUpRequest, TopUps};
pub use providers::limits;
pub use state::GatewayState;

use apis::{anthropic, ollama, openai};
use pipeline::serve;

/// A running gateway.
pub struct Gateway {
    pub address: SocketAddr,
    pub state: Arc<GatewayState>,
    server: JoinHandle<()>,
}

impl Gateway {
    /// Serves on 127.0.0.1 at an ephemeral port: only programs on this
    /// machine can reach it (ARCHITECTURE.md, invariant 5).
    pub async fn start(
        providers: Vec<providers::Provider>,
        cache: Option<Arc<dyn cache::AnswerStore>>,
    ) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(GatewayState::new(providers, None, cache));
        let app = api_routes().with_state(state.clone());
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
    settings: sim::server::SimServerSettings,
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

/// The sim-server's routes and state (whose counters benchmarks read): the
/// gateway's API routes behind the limits a provider enforces.
pub fn sim_app(settings: sim::server::SimServerSettings) -> (Router, Arc<GatewayState>) {
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
    let server = Arc::new(sim::server::SimServer::new(settings));
    let mut state = GatewayState::new(Vec::new(), Some(server.clone()), None);
    state.routing = providers::routing::Routing::sim_server(own_names);
    let state = Arc::new(state);
    let counters = server.clone();
    let app = api_routes()
        .layer(axum::middleware::from_fn_with_state(
            server,
            sim::server::enforce,
        ))
        // What it served and refused, for tests and benchmarks that count
        // the calls that reached a provider.
        .route(
            "/stats",
            get(move || {
                let counters = counters.clone();
                async move { axum::Json(counters.stats()) }
            }),
        )
        .with_state(state.clone());
    (app, state)
}

/// Every endpoint of the three APIs; those that answer calls go through the
/// one pipeline (`pipeline::serve`).
fn api_routes() -> Router<Arc<GatewayState>> {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(serve::<openai::ChatCompletions>),
        )
        .route("/v1/completions", post(serve::<openai::Completions>))
        .route("/v1/embeddings", post(serve::<openai::Embeddings>))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*model}", get(openai::get_model))
        .route("/v1/messages", post(serve::<anthropic::Messages>))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/chat", post(serve::<ollama::Chat>))
        .route("/api/generate", post(serve::<ollama::Generate>))
        .route("/api/embed", post(serve::<ollama::Embed>))
        .route("/api/tags", get(ollama::tags))
}
