//! What every request handler shares (a leaf: it imports no handler).

use std::sync::Arc;

use axum::http::HeaderMap;

use crate::cache::{AnswerStore, RunCache};
use crate::metering::runs::{RunLedger, RunRegistry};
use crate::metering::spend::SpendGate;
use crate::providers::limits::RateLimitManager;
use crate::providers::routing::Routing;
use crate::providers::Provider;
use crate::sim::server::SimServer;
use crate::spend_lease::SpendLease;

pub struct GatewayState {
    pub runs: RunRegistry,
    pub routing: Routing,
    /// Paces calls to upstream providers for every run of the worker.
    pub limits: RateLimitManager,
    /// Connections to upstream providers, pooled.
    pub http: reqwest::Client,
    /// Set when serving as `flotilla sim-server`: anyone may call, within its limits.
    pub sim_server: Option<Arc<SimServer>>,
    /// The cluster's recorded answers; `None` where the cache is off.
    pub cache: Option<Arc<dyn AnswerStore>>,
    /// The worker's right to spend, renewed by its coordinator (ARCHITECTURE.md, invariant 8).
    pub spend_lease: SpendLease,
}

impl GatewayState {
    pub fn new(
        providers: Vec<Provider>,
        sim_server: Option<Arc<SimServer>>,
        cache: Option<Arc<dyn AnswerStore>>,
    ) -> Self {
        GatewayState {
            runs: RunRegistry::default(),
            routing: Routing::new(providers),
            limits: RateLimitManager::default(),
            http: reqwest::Client::builder()
                // As long as the longest call may last: each call is cut
                // off at its own bound (ARCHITECTURE.md, invariant 8).
                .read_timeout(crate::spend_lease::FLEX_CALL_BOUND)
                .build()
                .expect("an HTTP client builds"),
            sim_server,
            cache,
            spend_lease: SpendLease::default(),
        }
    }

    /// The run whose token the request presents (`Authorization: Bearer` or
    /// `x-api-key`; ARCHITECTURE.md, invariant 5). A sim-server serves
    /// anyone: a ledger of its own per call, seeded from `x-flotilla-seed`.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Arc<RunLedger>> {
        if self.sim_server.is_some() {
            let seed = headers
                .get("x-flotilla-seed")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Some(Arc::new(RunLedger::new(
                "sim-server".into(),
                seed,
                SpendGate::Unbounded,
                Default::default(),
                RunCache::default(),
                Default::default(),
            )));
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        bearer
            .into_iter()
            .chain(api_key)
            .find_map(|token| self.runs.lookup(token.trim()))
    }
}
