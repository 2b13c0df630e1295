//! The OpenAI API as the official clients speak it (`OPENAI_BASE_URL` =
//! `http://127.0.0.1:PORT/v1`): chat and text completions, streamed as
//! server-sent events or not (the usage chunk only when the client asked for
//! it), embeddings as floats or base64, and the model list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{conversation_of, pieces, refuse, sse, text_of, texts_of, ApiShape, Endpoint};
use crate::call::{Answer, Api, Call, Input, Operation, Refusal, Usage};
use crate::caller::Caller;
use crate::state::GatewayState;

static RESPONSE_NUMBER: AtomicU64 = AtomicU64::new(1);

pub struct OpenAi;

impl ApiShape for OpenAi {
    const API: Api = Api::Openai;
    const KEY_VARIABLE: &'static str = "OPENAI_API_KEY";

    /// `{"error": {"message", "type", "param", "code"}}`.
    fn error_body(refusal: &Refusal, message: &str) -> Value {
        let (kind, code) = match refusal {
            Refusal::Unauthorized => ("invalid_request_error", "invalid_api_key"),
            Refusal::BadRequest(_) | Refusal::Unservable(_) => {
                ("invalid_request_error", "invalid_request")
            }
            Refusal::UnknownModel(_) => ("invalid_request_error", "model_not_found"),
            Refusal::OverBudget(_) => ("insufficient_quota", "budget_exceeded"),
            Refusal::Unreachable(_) => ("api_error", "upstream_unreachable"),
            Refusal::RateLimited(_) => ("requests", "rate_limit_exceeded"),
            Refusal::ServerError(_) => ("api_error", "server_error"),
            Refusal::NoCapacity(_) => ("resource_unavailable", "resource_unavailable"),
            Refusal::NotRecorded(_) => ("invalid_request_error", "not_recorded"),
            Refusal::Fenced(_) => ("api_error", "coordinator_unreachable"),
        };
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
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

/// Server-sent events of `chunks`, then `[DONE]`.
fn chunk_stream(chunks: Vec<Value>) -> Response {
    let mut events: Vec<(Option<&'static str>, String)> =
        chunks.into_iter().map(|c| (None, c.to_string())).collect();
    events.push((None, "[DONE]".into()));
    sse(events)
}

/// `/v1/chat/completions`.
pub struct ChatCompletions;

impl Endpoint for ChatCompletions {
    type Shape = OpenAi;
    type Options = ();
    const OPERATION: Operation = Operation::OpenAiChat;

    fn read(body: &Value) -> Result<(Input, ()), String> {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("the request needs `messages`, a list")?;
        Ok((Input::Conversation(conversation_of(messages)), ()))
    }

    fn whole(call: &Call, _: &(), answer: &Answer) -> Value {
        let (text, usage) = text_of(answer);
        let id = format!(
            "chatcmpl-{}",
            RESPONSE_NUMBER.fetch_add(1, Ordering::Relaxed)
        );
        let mut whole = json!({
            "id": id, "object": "chat.completion", "created": call.started_at_ms / 1000,
            "model": call.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": usage_json(usage),
        });
        // Asked for a tier, the answer says which served it, as OpenAI's do.
        if let Some(asked) = call.body.get("service_tier").and_then(Value::as_str) {
            whole["service_tier"] = json!(if asked == "flex" { "flex" } else { "default" });
        }
        whole
    }

    /// Per choice: the role, the words, each tool call, the finish; then —
    /// only when the client asked for it — the usage chunk, then `[DONE]`.
    fn stream(call: &Call, whole: &Value) -> Response {
        let chunk = |index: &Value, delta: Value, finish: &Value| {
            let mut chunk = json!({
                "id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"],
                "model": whole["model"],
                "choices": [{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}],
            });
            for field in ["system_fingerprint", "service_tier"] {
                if let Some(value) = whole.get(field) {
                    chunk[field] = value.clone();
                }
            }
            chunk
        };
        let mut chunks = Vec::new();
        for choice in whole["choices"].as_array().into_iter().flatten() {
            let (index, message) = (&choice["index"], &choice["message"]);
            // A choice of tool calls or a refusal has no content: null, not "".
            let content = if message["content"].is_null() {
                Value::Null
            } else {
                json!("")
            };
            chunks.push(chunk(
                index,
                json!({"role": "assistant", "content": content}),
                &Value::Null,
            ));
            let text = message["content"].as_str().unwrap_or_default();
            chunks.extend(
                pieces(text).map(|piece| chunk(index, json!({"content": piece}), &Value::Null)),
            );
            if let Some(refusal) = message["refusal"].as_str() {
                chunks.push(chunk(index, json!({"refusal": refusal}), &Value::Null));
            }
            for (position, tool_call) in message["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let mut tool_call = tool_call.clone();
                tool_call["index"] = json!(position);
                chunks.push(chunk(
                    index,
                    json!({"tool_calls": [tool_call]}),
                    &Value::Null,
                ));
            }
            chunks.push(chunk(index, json!({}), &choice["finish_reason"]));
        }
        if call.wants_stream_usage {
            for chunk in &mut chunks {
                chunk["usage"] = Value::Null;
            }
            let mut last = chunk(&json!(0), json!({}), &Value::Null);
            last["choices"] = json!([]);
            last["usage"] = whole["usage"].clone();
            chunks.push(last);
        }
        chunk_stream(chunks)
    }

    /// Content, refusals and tool calls' arguments put together per choice.
    fn assemble(chunks: &[Value]) -> Option<Value> {
        let new_choice = |index: u64| {
            json!({
                "index": index,
                "message": {"role": "assistant", "content": null, "refusal": null},
                "logprobs": null, "finish_reason": null,
            })
        };
        gather(chunks, "chat.completion", new_choice, |choice, part| {
            let delta = &part["delta"];
            append_text(&mut choice["message"]["content"], &delta["content"]);
            append_text(&mut choice["message"]["refusal"], &delta["refusal"]);
            for tool_call in delta["tool_calls"].as_array().into_iter().flatten() {
                merge_tool_call(&mut choice["message"], tool_call);
            }
            if let Some(log) = part.pointer("/logprobs/content").and_then(Value::as_array) {
                if choice["logprobs"].is_null() {
                    choice["logprobs"] = json!({"content": []});
                }
                if let Some(content) = choice["logprobs"]["content"].as_array_mut() {
                    content.extend(log.iter().cloned());
                }
            }
        })
    }
}

/// A stream's chunks as the whole answer (`object`): the first chunk's id,
/// time, model and fingerprint, each choice begun by `new_choice` and
/// grown by `apply` with each of its parts, its finish reason, the usage.
fn gather(
    chunks: &[Value],
    object: &str,
    new_choice: impl Fn(u64) -> Value,
    apply: impl Fn(&mut Value, &Value),
) -> Option<Value> {
    let first = chunks.iter().find(|chunk| chunk.get("id").is_some())?;
    let mut choices: std::collections::BTreeMap<u64, Value> = Default::default();
    let mut usage = Value::Null;
    for chunk in chunks {
        if chunk.get("usage").is_some_and(|u| !u.is_null()) {
            usage = chunk["usage"].clone();
        }
        for part in chunk["choices"].as_array().into_iter().flatten() {
            let index = part["index"].as_u64().unwrap_or(0);
            let choice = choices.entry(index).or_insert_with(|| new_choice(index));
            apply(choice, part);
            if !part["finish_reason"].is_null() {
                choice["finish_reason"] = part["finish_reason"].clone();
            }
        }
    }
    let mut whole = json!({
        "id": first["id"], "object": object, "created": first["created"],
        "model": first["model"], "choices": choices.into_values().collect::<Vec<_>>(),
        "usage": usage,
    });
    for field in ["system_fingerprint", "service_tier"] {
        if let Some(value) = first.get(field) {
            whole[field] = value.clone();
        }
    }
    Some(whole)
}

/// Appends a delta's text to a field that may still be null.
fn append_text(field: &mut Value, piece: &Value) {
    let Some(piece) = piece.as_str() else { return };
    match field {
        Value::String(text) => text.push_str(piece),
        _ => *field = Value::from(piece),
    }
}

/// A streamed tool call's part: its id, type and name come once, its
/// arguments in pieces, all under the call's `index`.
fn merge_tool_call(message: &mut Value, part: &Value) {
    let index = part["index"].as_u64().unwrap_or(0) as usize;
    if !message["tool_calls"].is_array() {
        message["tool_calls"] = json!([]);
    }
    let calls = message["tool_calls"].as_array_mut().expect("made a list");
    while calls.len() <= index {
        calls.push(
            json!({"id": null, "type": "function", "function": {"name": null, "arguments": ""}}),
        );
    }
    let call = &mut calls[index];
    for field in ["id", "type"] {
        if part.get(field).is_some_and(|v| !v.is_null()) {
            call[field] = part[field].clone();
        }
    }
    if let Some(name) = part.pointer("/function/name").filter(|v| !v.is_null()) {
        call["function"]["name"] = name.clone();
    }
    append_text(
        &mut call["function"]["arguments"],
        &part["function"]["arguments"],
    );
}

/// `/v1/completions`: the legacy text completion of one prompt.
pub struct Completions;

impl Endpoint for Completions {
    type Shape = OpenAi;
    type Options = ();
    const OPERATION: Operation = Operation::OpenAiCompletions;

    fn read(body: &Value) -> Result<(Input, ()), String> {
        let prompt = match body.get("prompt") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(texts)) if texts.len() == 1 && texts[0].is_string() => {
                texts[0].as_str().unwrap_or_default().to_string()
            }
            _ => return Err("`prompt` must be a string (or a list of one string)".into()),
        };
        Ok((Input::Conversation(vec![("user".into(), prompt)]), ()))
    }

    fn whole(call: &Call, _: &(), answer: &Answer) -> Value {
        let (text, usage) = text_of(answer);
        let id = format!("cmpl-{}", RESPONSE_NUMBER.fetch_add(1, Ordering::Relaxed));
        json!({
            "id": id, "object": "text_completion", "created": call.started_at_ms / 1000,
            "model": call.model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage_json(usage),
        })
    }

    fn stream(call: &Call, whole: &Value) -> Response {
        let object = |choices: Value| json!({"id": whole["id"], "object": "text_completion", "created": whole["created"], "model": whole["model"], "choices": choices});
        let mut chunks = Vec::new();
        for choice in whole["choices"].as_array().into_iter().flatten() {
            let index = &choice["index"];
            let text = choice["text"].as_str().unwrap_or_default();
            chunks.extend(pieces(text).map(|piece| {
                object(json!([{"text": piece, "index": index, "logprobs": null, "finish_reason": null}]))
            }));
            chunks.push(object(json!([{"text": "", "index": index, "logprobs": null, "finish_reason": choice["finish_reason"]}])));
        }
        if call.wants_stream_usage {
            let mut last = object(json!([]));
            last["usage"] = whole["usage"].clone();
            chunks.push(last);
        }
        chunk_stream(chunks)
    }

    fn assemble(chunks: &[Value]) -> Option<Value> {
        let new_choice = |index: u64| json!({"text": "", "index": index, "logprobs": null, "finish_reason": null});
        gather(chunks, "text_completion", new_choice, |choice, part| {
            append_text(&mut choice["text"], &part["text"]);
        })
    }
}

/// `/v1/embeddings`, as floats or — openai-python's default — base64 of
/// little-endian float32.
pub struct Embeddings;

impl Endpoint for Embeddings {
    type Shape = OpenAi;
    /// Whether vectors go back as base64.
    type Options = bool;
    const OPERATION: Operation = Operation::OpenAiEmbeddings;

    fn read(body: &Value) -> Result<(Input, bool), String> {
        let texts =
            texts_of(body.get("input")).ok_or("`input` must be a string or a list of strings")?;
        let base64 = match body.get("encoding_format").and_then(Value::as_str) {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(format!(
                    "unknown encoding_format '{other}'; valid: float, base64"
                ))
            }
        };
        Ok((Input::Texts(texts), base64))
    }

    fn whole(call: &Call, base64: &bool, answer: &Answer) -> Value {
        let (vectors, usage) = match answer {
            Answer::Vectors { vectors, usage } => (vectors.as_slice(), usage),
            Answer::Text { usage, .. } => (&[][..], usage),
        };
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(index, vector)| {
                let embedding = if *base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                    json!(base64_encode(&bytes))
                } else {
                    json!(vector)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        json!({
            "object": "list", "data": data, "model": call.model,
            "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
        })
    }
}

fn model_json(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "flotilla"})
}

/// `/v1/models`: what this worker serves.
pub async fn list_models(State(gateway): State<Arc<GatewayState>>, _: Caller<OpenAi>) -> Response {
    let data: Vec<Value> = gateway
        .routing
        .served()
        .iter()
        .map(|id| model_json(id))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `/v1/models/{model}`.
pub async fn get_model(
    State(gateway): State<Arc<GatewayState>>,
    _: Caller<OpenAi>,
    Path(model): Path<String>,
) -> Response {
    match gateway.routing.route(&model) {
        Ok(_) => Json(model_json(&model)).into_response(),
        Err(unknown) => refuse::<OpenAi>(&Refusal::UnknownModel(unknown)),
    }
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
