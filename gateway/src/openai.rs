//! The OpenAI API as the official clients speak it (`OPENAI_BASE_URL` =
//! `http://127.0.0.1:PORT/v1`): chat completions, streamed as server-sent
//! events or not, and the model list. Every call is metered, priced and
//! recorded in its run's ledger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::answers::{
    answer, conversation_of, embed, pieces, read_body, route_call, without_retries, Answer, Call,
    Refusal, Routed,
};
use crate::calls::LlmApi;
use crate::calls::Usage;
use crate::runs::RunLedger;
use crate::spend::SpendGate;
use crate::upstream::Endpoint;
use crate::GatewayState;

static RESPONSE_NUMBER: AtomicU64 = AtomicU64::new(1);

/// An error as OpenAI sends it: `{"error": {"message", "type", "param", "code"}}`.
pub fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let response = (status, Json(body)).into_response();
    if status == StatusCode::PAYMENT_REQUIRED || status == StatusCode::UNAUTHORIZED {
        return without_retries(response);
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

/// The run whose token the request presents (`Authorization: Bearer` or
/// `x-api-key`). A sim-server serves anyone: a ledger of its own per call,
/// seeded from `x-flotilla-seed` when the caller sends one.
pub fn authenticate(gateway: &GatewayState, headers: &HeaderMap) -> Option<Arc<RunLedger>> {
    if gateway.sim_server.is_some() {
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
        .find_map(|token| gateway.runs.lookup(token.trim()))
}

/// What a chat request asks for, read from its body.
struct ChatRequest {
    body: Value,
    model: String,
    conversation: Vec<(String, String)>,
    stream: bool,
    include_usage: bool,
}

fn parse_chat(body: &[u8]) -> Result<ChatRequest, String> {
    let (value, model) = read_body(body)?;
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("the request needs `messages`, a list")?;
    Ok(ChatRequest {
        body: value.clone(),
        model,
        conversation: conversation_of(messages),
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

/// A refusal in OpenAI's shape.
fn refusal(refusal: &Refusal) -> Response {
    match refusal {
        Refusal::UnknownModel(_) => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            &refusal.to_string(),
        ),
        Refusal::OverBudget(_) => error(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "budget_exceeded",
            &refusal.to_string(),
        ),
        Refusal::Unservable(_) => bad_request(&refusal.to_string()),
    }
}

pub async fn chat_completions(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ledger) = authenticate(&gateway, &headers) else {
        return unauthorized();
    };
    let request = match parse_chat(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let call = Call::new(
        LlmApi::Openai,
        request.model.clone(),
        request.conversation.clone(),
        request.stream,
    );
    let started_at_ms = call.started_at_ms;
    let endpoint = Endpoint::OpenAiChat;
    let (sim_model, name, cap) = match route_call(
        &gateway,
        &ledger,
        &call,
        endpoint,
        request.body.clone(),
        request.include_usage,
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
    for piece in pieces(&answer.text) {
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
    sse(chunks)
}

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "flotilla"})
}

pub async fn list_models(State(gateway): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    if authenticate(&gateway, &headers).is_none() {
        return unauthorized();
    }
    let data: Vec<Value> = gateway
        .routing
        .served()
        .iter()
        .map(|id| model_json(id))
        .collect();
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
    match gateway.routing.route(&model) {
        Ok(_) => Json(model_json(&model)).into_response(),
        Err(unknown) => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            &unknown.to_string(),
        ),
    }
}

/// `/v1/completions`: the legacy text completion of one prompt.
pub async fn completions(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ledger) = authenticate(&gateway, &headers) else {
        return unauthorized();
    };
    let (value, model) = match read_body(&body) {
        Ok(read) => read,
        Err(message) => return bad_request(&message),
    };
    let prompt = match value.get("prompt") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(texts)) if texts.len() == 1 && texts[0].is_string() => {
            texts[0].as_str().unwrap_or_default().to_string()
        }
        _ => return bad_request("`prompt` must be a string (or a list of one string)"),
    };
    let stream = value
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = value
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let call = Call::new(
        LlmApi::Openai,
        model.clone(),
        vec![("user".to_string(), prompt)],
        stream,
    );
    let (sim_model, name, cap) = match route_call(
        &gateway,
        &ledger,
        &call,
        Endpoint::OpenAiCompletions,
        value.clone(),
        include_usage,
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
    let id = format!("cmpl-{}", RESPONSE_NUMBER.fetch_add(1, Ordering::Relaxed));
    let created = call.started_at_ms / 1000;
    let object = |choices: Value| json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices});
    if !stream {
        let mut response = object(
            json!([{"text": answer.text, "index": 0, "logprobs": null, "finish_reason": "stop"}]),
        );
        response["usage"] = usage_json(&answer.usage);
        return Json(response).into_response();
    }
    let mut chunks: Vec<Value> = pieces(&answer.text)
        .map(|piece| {
            object(json!([{"text": piece, "index": 0, "logprobs": null, "finish_reason": null}]))
        })
        .collect();
    chunks.push(object(
        json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]),
    ));
    if include_usage {
        let mut usage = object(json!([]));
        usage["usage"] = usage_json(&answer.usage);
        chunks.push(usage);
    }
    sse(chunks)
}

/// Server-sent events of `chunks`, then `[DONE]`.
fn sse(chunks: Vec<Value>) -> Response {
    let events: Vec<Result<Event, std::convert::Infallible>> = chunks
        .into_iter()
        .map(|chunk| Ok(Event::default().data(chunk.to_string())))
        .chain([Ok(Event::default().data("[DONE]"))])
        .collect();
    Sse::new(tokio_stream::iter(events)).into_response()
}

/// `/v1/embeddings`, as floats or — openai-python's default — base64 of
/// little-endian float32.
pub async fn embeddings(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ledger) = authenticate(&gateway, &headers) else {
        return unauthorized();
    };
    let (value, model) = match read_body(&body) {
        Ok(read) => read,
        Err(message) => return bad_request(&message),
    };
    let inputs: Vec<String> = match value.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(texts)) if texts.iter().all(Value::is_string) => texts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => return bad_request("`input` must be a string or a list of strings"),
    };
    let base64 = match value.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad_request(&format!(
                "unknown encoding_format '{other}'; valid: float, base64"
            ))
        }
    };
    let call = Call::new(LlmApi::Openai, model.clone(), Vec::new(), false);
    let (sim, name) = match route_call(
        &gateway,
        &ledger,
        &call,
        Endpoint::OpenAiEmbeddings,
        value.clone(),
        false,
        refusal,
    )
    .await
    {
        // Embeddings produce no output: the cap does not apply.
        Routed::Sim(sim, name, _) => (sim, name),
        Routed::Done(response) => return response,
    };
    let (vectors, usage) = match embed(&ledger, &call, sim, name, &inputs).await {
        Ok(embedded) => embedded,
        Err(refused) => return refusal(&refused),
    };
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
    }))
    .into_response()
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = u32::from(chunk[0]) << 16
            | u32::from(*chunk.get(1).unwrap_or(&0)) << 8
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for (position, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if position <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64_encode;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0x00, 0x80]), "//4AgA==");
    }
}
