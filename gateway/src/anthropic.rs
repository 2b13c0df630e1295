//! The Anthropic Messages API as the official client speaks it
//! (`ANTHROPIC_BASE_URL` = `http://127.0.0.1:PORT`): `/v1/messages`,
//! streamed as named server-sent events or not, and `/v1/messages/count_tokens`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::answers::{
    answer, content_text, conversation_of, count_input_tokens, pieces, read_body, route_call,
    without_retries, Call, Refusal, Routed,
};
use crate::calls::LlmApi;
use crate::calls::Usage;
use crate::openai::authenticate;
use crate::upstream::Endpoint;
use crate::GatewayState;

static MESSAGE_NUMBER: AtomicU64 = AtomicU64::new(1);

/// An error as Anthropic sends it: `{"type": "error", "error": {"type", "message"}}`.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body =
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": null});
    let response = (status, Json(body)).into_response();
    if status == StatusCode::PAYMENT_REQUIRED || status == StatusCode::UNAUTHORIZED {
        return without_retries(response);
    }
    response
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "this key is not the token of a run that is running on this worker; programs get theirs in ANTHROPIC_API_KEY",
    )
}

fn refusal(refusal: &Refusal) -> Response {
    match refusal {
        Refusal::UnknownModel(_) => error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            &refusal.to_string(),
        ),
        Refusal::OverBudget(_) => error(
            StatusCode::PAYMENT_REQUIRED,
            "billing_error",
            &refusal.to_string(),
        ),
        Refusal::Unservable(_) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &refusal.to_string(),
        ),
    }
}

/// A messages request: model, the system prompt first, then the messages.
struct MessagesRequest {
    body: Value,
    model: String,
    conversation: Vec<(String, String)>,
    stream: bool,
}

fn parse(body: &[u8], needs_max_tokens: bool) -> Result<MessagesRequest, String> {
    let (value, model) = read_body(body)?;
    if needs_max_tokens && value.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err("max_tokens: Field required (a whole number)".into());
    }
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required (a list)")?;
    let mut conversation = Vec::new();
    if let Some(system) = value.get("system") {
        conversation.push(("system".to_string(), content_text(system)));
    }
    conversation.extend(conversation_of(messages));
    Ok(MessagesRequest {
        body: value.clone(),
        model,
        conversation,
        stream: value
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

fn usage_json(usage: &Usage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.input_tokens - usage.cached_input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_input_tokens,
    })
}

pub async fn messages(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ledger) = authenticate(&gateway, &headers) else {
        return unauthorized();
    };
    let request = match parse(&body, true) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", &message),
    };
    let call = Call::new(
        LlmApi::Anthropic,
        request.model.clone(),
        request.conversation,
        request.stream,
    );
    let endpoint = Endpoint::AnthropicMessages;
    let (sim_model, name, cap) = match route_call(
        &gateway,
        &ledger,
        &call,
        endpoint,
        request.body,
        true,
        refusal,
    )
    .await
    {
        Routed::Sim(model, name, cap) => (model, name, cap),
        Routed::Done(response) => return response,
    };
    let answer = match answer(&ledger, &call, sim_model, name, cap).await {
        Ok(answer) => answer,
        Err(refused) => return refusal(&refused),
    };
    let id = format!("msg_{:024}", MESSAGE_NUMBER.fetch_add(1, Ordering::Relaxed));
    if !request.stream {
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": request.model,
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": usage_json(&answer.usage, answer.usage.output_tokens),
        }))
        .into_response();
    }
    // Input counts come with message_start; the output count, cumulative, with message_delta.
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": request.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage_json(&answer.usage, 1)}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    for piece in pieces(&answer.text) {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": answer.usage.output_tokens}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let events: Vec<Result<Event, std::convert::Infallible>> = events
        .into_iter()
        .map(|(name, data)| Ok(Event::default().event(name).data(data.to_string())))
        .collect();
    Sse::new(tokio_stream::iter(events)).into_response()
}

/// `{"input_tokens": N}`: counted as the call would be metered; free, so not recorded.
pub async fn count_tokens(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if authenticate(&gateway, &headers).is_none() {
        return unauthorized();
    }
    match parse(&body, false) {
        Ok(request) => match gateway.routing.route(&request.model) {
            Ok(_) => Json(json!({"input_tokens": count_input_tokens(&request.conversation)}))
                .into_response(),
            Err(unknown) => refusal(&Refusal::UnknownModel(unknown)),
        },
        Err(message) => error(StatusCode::BAD_REQUEST, "invalid_request_error", &message),
    }
}
