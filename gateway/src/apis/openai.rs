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

    fn render(call: &Call, _: &(), answer: &Answer) -> Response {
        let (text, usage) = text_of(answer);
        let id = format!(
            "chatcmpl-{}",
            RESPONSE_NUMBER.fetch_add(1, Ordering::Relaxed)
        );
        let (created, model) = (call.started_at_ms / 1000, &call.model);
        if !call.streamed {
            return Json(json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": usage_json(usage),
            }))
            .into_response();
        }
        // The role, the words, the finish, and — only when the client asked
        // for it — the usage chunk, then `[DONE]`.
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        };
        let mut chunks = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        chunks.extend(pieces(text).map(|piece| chunk(json!({"content": piece}), Value::Null)));
        chunks.push(chunk(json!({}), json!("stop")));
        if call.wants_stream_usage {
            for chunk in &mut chunks {
                chunk["usage"] = Value::Null;
            }
            chunks.push(json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage_json(usage),
            }));
        }
        chunk_stream(chunks)
    }
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

    fn render(call: &Call, _: &(), answer: &Answer) -> Response {
        let (text, usage) = text_of(answer);
        let id = format!("cmpl-{}", RESPONSE_NUMBER.fetch_add(1, Ordering::Relaxed));
        let created = call.started_at_ms / 1000;
        let object = |choices: Value| json!({"id": id, "object": "text_completion", "created": created, "model": call.model, "choices": choices});
        let choice = |text: &str, finish: Value| json!([{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]);
        if !call.streamed {
            let mut response = object(choice(text, json!("stop")));
            response["usage"] = usage_json(usage);
            return Json(response).into_response();
        }
        let mut chunks: Vec<Value> = pieces(text)
            .map(|piece| object(choice(piece, Value::Null)))
            .collect();
        chunks.push(object(choice("", json!("stop"))));
        if call.wants_stream_usage {
            let mut last = object(json!([]));
            last["usage"] = usage_json(usage);
            chunks.push(last);
        }
        chunk_stream(chunks)
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

    fn render(call: &Call, base64: &bool, answer: &Answer) -> Response {
        let Answer::Vectors { vectors, usage } = answer else {
            return refuse::<OpenAi>(&Refusal::ServerError("no vectors were made".into()));
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
        Json(json!({
            "object": "list", "data": data, "model": call.model,
            "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
        }))
        .into_response()
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
