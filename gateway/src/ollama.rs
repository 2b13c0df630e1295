//! The Ollama API as the official client speaks it (`OLLAMA_HOST` =
//! `http://127.0.0.1:PORT`, the run's token in `OLLAMA_API_KEY`):
//! `/api/chat` and `/api/generate`, streamed as NDJSON unless the request
//! says `"stream": false` (Ollama's default is to stream), `/api/embed` and
//! `/api/tags`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::answers::{
    answer, conversation_of, embed, now_ms, pieces, read_body, route_call, Answer, Call, Refusal,
    Routed,
};
use crate::calls::LlmApi;
use crate::openai::authenticate;
use crate::upstream::Endpoint;
use crate::GatewayState;

/// An error as Ollama sends it: `{"error": "<message>"}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized: this key is not the token of a run that is running on this worker; programs get theirs in OLLAMA_API_KEY",
    )
}

fn refusal(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::UnknownModel(_) => StatusCode::NOT_FOUND,
        Refusal::OverBudget(_) => StatusCode::PAYMENT_REQUIRED,
        Refusal::Unservable(_) => StatusCode::BAD_REQUEST,
    };
    error(status, &refusal.to_string())
}

fn created_at() -> String {
    flotilla_shared::clock::rfc3339(now_ms())
}

/// The metrics of a final object; durations in nanoseconds.
fn final_fields(answer: &Answer, started: Instant) -> Value {
    let total = started.elapsed().as_nanos() as u64;
    json!({
        "done": true, "done_reason": "stop", "total_duration": total, "load_duration": 0,
        "prompt_eval_count": answer.usage.input_tokens, "prompt_eval_duration": total / 2,
        "eval_count": answer.usage.output_tokens, "eval_duration": total / 2,
    })
}

/// One response object, or NDJSON lines ending with the final object.
fn respond(model: &str, answer: &Answer, started: Instant, stream: bool, chat: bool) -> Response {
    let piece_object = |text: &str| {
        if chat {
            json!({"model": model, "created_at": created_at(), "message": {"role": "assistant", "content": text}})
        } else {
            json!({"model": model, "created_at": created_at(), "response": text})
        }
    };
    let merge = |mut object: Value, extra: Value| {
        if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
            object.extend(extra);
        }
        object
    };
    if !stream {
        return Json(merge(
            piece_object(&answer.text),
            final_fields(answer, started),
        ))
        .into_response();
    }
    // Every line is one JSON object: ollama-python parses each, so no blank lines.
    let mut lines: Vec<String> = pieces(&answer.text)
        .map(|piece| merge(piece_object(piece), json!({"done": false})).to_string() + "\n")
        .collect();
    lines.push(merge(piece_object(""), final_fields(answer, started)).to_string() + "\n");
    let body = Body::from_stream(tokio_stream::iter(
        lines.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn generation(
    gateway: Arc<GatewayState>,
    headers: HeaderMap,
    body: Bytes,
    chat: bool,
) -> Response {
    let Some(ledger) = authenticate(&gateway, &headers) else {
        return unauthorized();
    };
    let (value, model) = match read_body(&body) {
        Ok(read) => read,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let conversation = if chat {
        let messages = value
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conversation_of(&messages)
    } else {
        let mut conversation = Vec::new();
        if let Some(system) = value.get("system").and_then(Value::as_str) {
            conversation.push(("system".to_string(), system.to_string()));
        }
        let prompt = value
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default();
        conversation.push(("user".to_string(), prompt.to_string()));
        conversation
    };
    let stream = value.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let call = Call::new(LlmApi::Ollama, model.clone(), conversation, stream);
    let endpoint = if chat {
        Endpoint::OllamaChat
    } else {
        Endpoint::OllamaGenerate
    };
    let (sim_model, name, cap) =
        match route_call(&gateway, &ledger, &call, endpoint, value, true, refusal).await {
            Routed::Sim(model, name, cap) => (model, name, cap),
            Routed::Done(response) => return response,
        };
    match answer(&ledger, &call, sim_model, name, cap).await {
        Ok(answer) => respond(&model, &answer, call.started, stream, chat),
        Err(refused) => refusal(&refused),
    }
}

pub async fn chat(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generation(gateway, headers, body, true).await
}

pub async fn generate(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generation(gateway, headers, body, false).await
}

pub async fn embed_texts(
    State(gateway): State<Arc<GatewayState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ledger) = authenticate(&gateway, &headers) else {
        return unauthorized();
    };
    let (value, model) = match read_body(&body) {
        Ok(read) => read,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let inputs: Vec<String> = match value.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(texts)) => texts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "input is required: a string or a list of strings",
            )
        }
    };
    let call = Call::new(LlmApi::Ollama, model.clone(), Vec::new(), false);
    let (sim, name) = match route_call(
        &gateway,
        &ledger,
        &call,
        Endpoint::OllamaEmbed,
        value,
        false,
        refusal,
    )
    .await
    {
        // Embeddings produce no output: the cap does not apply.
        Routed::Sim(sim, name, _) => (sim, name),
        Routed::Done(response) => return response,
    };
    match embed(&ledger, &call, sim, name, &inputs).await {
        Ok((embeddings, usage)) => Json(json!({
            "model": model, "embeddings": embeddings,
            "total_duration": call.started.elapsed().as_nanos() as u64, "load_duration": 0,
            "prompt_eval_count": usage.input_tokens,
        }))
        .into_response(),
        Err(refused) => refusal(&refused),
    }
}

/// The models this worker serves, as Ollama lists them.
pub async fn tags(State(gateway): State<Arc<GatewayState>>, headers: HeaderMap) -> Response {
    if authenticate(&gateway, &headers).is_none() {
        return unauthorized();
    }
    let models: Vec<Value> = gateway
        .routing
        .served()
        .iter()
        .map(|name| {
            json!({"name": name, "model": name, "modified_at": "1970-01-01T00:00:00Z", "size": 0,
                   "digest": "", "details": {"parent_model": "", "format": "", "family": "flotilla",
                   "families": ["flotilla"], "parameter_size": "", "quantization_level": ""}})
        })
        .collect();
    Json(json!({"models": models})).into_response()
}
