//! The OpenAI API as the official clients speak it (`OPENAI_BASE_URL` =
//! `http://127.0.0.1:PORT/v1`): chat completions, streamed as server-sent
//! events or not, and the model list. Every call is metered, priced and
//! recorded in its run's ledger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::calls::{CallRecord, CallStatus, Usage};
use crate::routing::{route, served, Route};
use crate::runs::RunLedger;
use crate::sim::{self, SIM_PRICES};
use crate::GatewayState;

static RESPONSE_NUMBER: AtomicU64 = AtomicU64::new(1);

/// An error as OpenAI sends it: `{"error": {"message", "type", "param", "code"}}`.
pub fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::PAYMENT_REQUIRED || status == StatusCode::UNAUTHORIZED {
        // Retrying cannot help: tell the official clients not to.
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        "this key is not the token of a run that is running on this worker; programs get theirs in OPENAI_API_KEY",
    )
}

fn bad_request(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
        message,
    )
}

/// The run whose token the request presents (`Authorization: Bearer` or `x-api-key`).
pub fn authenticate(gateway: &GatewayState, headers: &HeaderMap) -> Option<Arc<RunLedger>> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer
        .into_iter()
        .chain(api_key)
        .find_map(|token| gateway.runs.lookup(token.trim()))
}

/// The text of a message's `content`: a string, or the text parts of a list.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// What a chat request asks for, read from its body.
struct ChatRequest {
    model: String,
    conversation: Vec<(String, String)>,
    stream: bool,
    include_usage: bool,
}

fn parse_chat(body: &[u8]) -> Result<ChatRequest, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .ok_or("the request needs `model`, a string such as sim/echo")?
        .to_string();
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("the request needs `messages`, a list")?;
    let conversation = messages
        .iter()
        .map(|message| {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("user");
            let content = message.get("content").map(content_text).unwrap_or_default();
            (role.to_string(), content)
        })
        .collect();
    Ok(ChatRequest {
        model,
        conversation,
        stream: value
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        include_usage: value
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// An answer and what it used, from whichever provider served it.
struct Answer {
    text: String,
    usage: Usage,
    cost_usd: f64,
}

fn answer(route: Route, ledger: &RunLedger, request: &ChatRequest) -> Answer {
    match route {
        Route::Sim(model) => {
            let text = model.answer(ledger.seed, &request.conversation);
            let usage = Usage {
                input_tokens: request
                    .conversation
                    .iter()
                    .map(|(_, content)| sim::tokens(content))
                    .sum(),
                output_tokens: sim::tokens(&text),
                cached_input_tokens: 0,
            };
            Answer {
                cost_usd: SIM_PRICES.cost(&usage),
                text,
                usage,
            }
        }
    }
}

pub async fn chat_completions(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let started_at_ms = now_ms();
    let Some(ledger) = authenticate(&gateway, &headers) else {
        return unauthorized();
    };
    let request = match parse_chat(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let (route, model) = match route(&request.model) {
        Ok(found) => found,
        Err(unknown) => {
            return error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                &unknown.to_string(),
            )
        }
    };
    let answer = answer(route, &ledger, &request);
    if !ledger.spend.may_spend(answer.cost_usd) {
        return error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "budget_exceeded",
            &format!(
                "the run's budget does not allow this call (up to ${:.6})",
                answer.cost_usd
            ),
        );
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    ledger.record(CallRecord {
        started_at_ms,
        provider: route.provider().to_string(),
        model,
        api: "openai",
        streamed: request.stream,
        input_tokens: answer.usage.input_tokens,
        output_tokens: answer.usage.output_tokens,
        cached_input_tokens: answer.usage.cached_input_tokens,
        cost_usd: answer.cost_usd,
        cost_is_worst_case: false,
        latency_ms,
        time_to_first_token_ms: latency_ms,
        retries: 0,
        status: CallStatus::Succeeded,
        error: None,
    });
    let id = format!(
        "chatcmpl-{}",
        RESPONSE_NUMBER.fetch_add(1, Ordering::Relaxed)
    );
    let created = started_at_ms / 1000;
    if request.stream {
        stream_response(&id, created, &request, &answer)
    } else {
        Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": usage_json(&answer.usage),
        }))
        .into_response()
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    })
}

/// The answer as chunks: the role, the words, the finish, and — only when the
/// client asked for it — the usage chunk, then `[DONE]`.
fn stream_response(id: &str, created: i64, request: &ChatRequest, answer: &Answer) -> Response {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in answer.text.split_inclusive(' ') {
        chunks.push(chunk(json!({"content": piece}), Value::Null));
    }
    chunks.push(chunk(json!({}), json!("stop")));
    if request.include_usage {
        for chunk in &mut chunks {
            chunk["usage"] = Value::Null;
        }
        chunks.push(json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": request.model,
            "choices": [], "usage": usage_json(&answer.usage),
        }));
    }
    let events: Vec<Result<Event, std::convert::Infallible>> = chunks
        .into_iter()
        .map(|chunk| Ok(Event::default().data(chunk.to_string())))
        .chain([Ok(Event::default().data("[DONE]"))])
        .collect();
    Sse::new(tokio_stream::iter(events)).into_response()
}

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "flotilla"})
}

pub async fn list_models(State(gateway): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    if authenticate(&gateway, &headers).is_none() {
        return unauthorized();
    }
    let data: Vec<Value> = served().iter().map(|id| model_json(id)).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

pub async fn get_model(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Response {
    if authenticate(&gateway, &headers).is_none() {
        return unauthorized();
    }
    match route(&model) {
        Ok(_) => Json(model_json(&model)).into_response(),
        Err(unknown) => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            &unknown.to_string(),
        ),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
