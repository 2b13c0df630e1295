//! The one call pipeline every endpoint that answers calls goes through:
//! the caller's token (the extractor), the body read into a [`Call`] by the
//! endpoint, the model routed, the response cache consulted (a hit is
//! served from it), then answered here by a sim model or relayed to its
//! provider (whose answer goes back as it came); the run's budget holds the
//! call's worst case first and its ledger records it either way. Refusals
//! come back in the endpoint's API shape.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::apis::{deliver, read_body, refuse, ApiShape, Endpoint};
use crate::cache::{cache_use, consult, Addressee, Consulted, Recorded};
use crate::call::{Call, Refusal};
use crate::caller::Caller;
use crate::metering::calls::{CallRecord, CallStatus};
use crate::metering::runs::RunLedger;
use crate::providers::relay::relay;
use crate::providers::routing::Route;
use crate::sim::answers::answer;
use crate::state::GatewayState;
use flotilla_shared::calls::CacheUse;
use flotilla_shared::tier::Tier;

/// The handler of endpoint `E`.
pub async fn serve<E: Endpoint>(
    State(gateway): State<Arc<GatewayState>>,
    caller: Caller<E::Shape>,
    body: Bytes,
) -> Response {
    match call::<E>(&gateway, &caller.ledger, &body).await {
        Ok(response) => response,
        Err(refusal) => refuse::<E::Shape>(&refusal),
    }
}

async fn call<E: Endpoint>(
    gateway: &Arc<GatewayState>,
    ledger: &Arc<RunLedger>,
    body: &[u8],
) -> Result<Response, Refusal> {
    debug_assert_eq!(E::OPERATION.api(), <E::Shape as ApiShape>::API);
    // A worker out of touch with its coordinator starts no call (ARCHITECTURE.md, invariant 8).
    gateway.spend_lease.check().map_err(Refusal::Fenced)?;
    let (body, model) = read_body(body).map_err(Refusal::BadRequest)?;
    let (input, options) = E::read(&body).map_err(Refusal::BadRequest)?;
    let call = Call::new(E::OPERATION, model, input, body);
    let (route, name) = gateway
        .routing
        .route(&call.model)
        .map_err(Refusal::UnknownModel)?;
    let to = Addressee {
        operation: E::OPERATION,
        provider: route.provider(),
        model: &name,
    };
    let ticket = match consult(gateway.cache.as_ref(), ledger, &call, to).await {
        Consulted::Hit(recorded) => {
            record_hit(ledger, &call, to, &recorded);
            return Ok(deliver::<E>(&call, recorded.answer.clone()));
        }
        Consulted::NotRecorded(message) => {
            record_not_recorded(ledger, &call, to, &message);
            return Err(Refusal::NotRecorded(message));
        }
        Consulted::Answer(ticket) => ticket,
    };
    match route {
        Route::Sim(sim) => {
            let (answer, cost_usd) = answer(ledger, &call, sim, name, cache_use(&ticket)).await?;
            let whole = E::whole(&call, &options, &answer);
            if let Some(ticket) = ticket {
                let bytes = Bytes::from(serde_json::to_vec(&whole).expect("JSON serialises"));
                ticket.answered(bytes, *answer.usage(), cost_usd);
            }
            Ok(if call.streamed {
                E::stream(&call, &whole)
            } else {
                Json(whole).into_response()
            })
        }
        Route::Upstream(provider) => {
            relay(gateway, ledger, provider, name, call, ticket, E::assemble).await
        }
    }
}

/// A hit: free, nothing held (ARCHITECTURE.md, "Response cache"), recorded
/// with what the answer cost when it was made and where it came from.
fn record_hit(ledger: &RunLedger, call: &Call, to: Addressee<'_>, recorded: &Recorded) {
    let latency_ms = call.started.elapsed().as_secs_f64() * 1000.0;
    ledger.record(CallRecord {
        input_tokens: recorded.usage.input_tokens,
        output_tokens: recorded.usage.output_tokens,
        cached_input_tokens: recorded.usage.cached_input_tokens,
        latency_ms,
        time_to_first_token_ms: latency_ms,
        cache: CacheUse::Hit,
        would_cost_usd: recorded.cost_usd,
        cached_from: Some(recorded.from.clone()),
        ..unanswered(call, to, None)
    });
}

/// `cache: replay` with nothing recorded: failed, and free.
fn record_not_recorded(ledger: &RunLedger, call: &Call, to: Addressee<'_>, message: &str) {
    ledger.record(CallRecord {
        cache: CacheUse::Miss,
        status: CallStatus::Failed,
        ..unanswered(call, to, Some(message.to_string()))
    });
}

/// A record of `call` that used nothing and cost nothing.
fn unanswered(call: &Call, to: Addressee<'_>, error: Option<String>) -> CallRecord {
    let latency_ms = call.started.elapsed().as_secs_f64() * 1000.0;
    CallRecord {
        started_at_ms: call.started_at_ms,
        provider: to.provider.to_string(),
        model: to.model.to_string(),
        api: call.api(),
        streamed: call.streamed,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        cost_usd: 0.0,
        cost_is_worst_case: false,
        latency_ms,
        time_to_first_token_ms: latency_ms,
        retries: 0,
        status: CallStatus::Succeeded,
        cache: CacheUse::Off,
        would_cost_usd: 0.0,
        cached_from: None,
        tier: Tier::Standard,
        tier_saved_usd: 0.0,
        tier_refusals: 0,
        error,
    }
}
