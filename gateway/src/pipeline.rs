//! The one call pipeline every endpoint that answers calls goes through:
//! the caller's token (the extractor), the body read into a [`Call`] by the
//! endpoint, the model routed, then answered here by a sim model (rendered
//! by the endpoint) or relayed to its provider (whose answer goes back as it
//! came); the run's budget holds the call's worst case first and its ledger
//! records it either way. Refusals come back in the endpoint's API shape.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;

use crate::apis::{read_body, refuse, ApiShape, Endpoint};
use crate::call::{Call, Refusal};
use crate::caller::Caller;
use crate::metering::runs::RunLedger;
use crate::providers::relay::relay;
use crate::providers::routing::Route;
use crate::sim::answers::answer;
use crate::state::GatewayState;

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
    let (body, model) = read_body(body).map_err(Refusal::BadRequest)?;
    let (input, options) = E::read(&body).map_err(Refusal::BadRequest)?;
    let call = Call::new(E::OPERATION, model, input, body);
    let (route, name) = gateway
        .routing
        .route(&call.model)
        .map_err(Refusal::UnknownModel)?;
    match route {
        Route::Sim(sim) => {
            let answer = answer(ledger, &call, sim, name).await?;
            Ok(E::render(&call, &options, &answer))
        }
        Route::Upstream(provider) => relay(gateway, ledger, provider, name, call).await,
    }
}
