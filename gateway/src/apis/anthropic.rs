//! The Anthropic Messages API as the official client speaks it
//! (`ANTHROPIC_BASE_URL` = `http://127.0.0.1:PORT`): `/v1/messages`,
//! streamed as named server-sent events or not, and `/v1/messages/count_tokens`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{content_text, conversation_of, pieces, read_body, refuse, sse, text_of};
use super::{ApiShape, Endpoint};
use crate::call::{Answer, Api, Call, Input, Operation, Refusal, Usage};
use crate::caller::Caller;
use crate::sim::tokens;
use crate::state::GatewayState;

static MESSAGE_NUMBER: AtomicU64 = AtomicU64::new(1);

pub struct Anthropic;

impl ApiShape for Anthropic {
    const API: Api = Api::Anthropic;
    const KEY_VARIABLE: &'static str = "ANTHROPIC_API_KEY";

    /// `{"type": "error", "error": {"type", "message"}}`.
    fn error_body(refusal: &Refusal, message: &str) -> Value {
        let kind = match refusal {
            Refusal::Unauthorized => "authentication_error",
            Refusal::BadRequest(_) | Refusal::Unservable(_) | Refusal::NotRecorded(_) => {
                "invalid_request_error"
            }
            Refusal::UnknownModel(_) => "not_found_error",
            Refusal::OverBudget(_) => "billing_error",
            Refusal::RateLimited(_) => "rate_limit_error",
            Refusal::NoCapacity(_) => "overloaded_error",
            Refusal::Unreachable(_) | Refusal::ServerError(_) | Refusal::Fenced(_) => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": null})
    }
}

/// The system prompt first, then the messages.
fn conversation(body: &Value) -> Result<Vec<(String, String)>, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required (a list)")?;
    let mut conversation = Vec::new();
    if let Some(system) = body.get("system") {
        conversation.push(("system".to_string(), content_text(system)));
    }
    conversation.extend(conversation_of(messages));
    Ok(conversation)
}

fn usage_json(usage: &Usage, output_tokens: u64) -> Value {
    json!({
        "input_tokens": usage.input_tokens - usage.cached_input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_input_tokens,
    })
}

/// `/v1/messages`.
pub struct Messages;

impl Endpoint for Messages {
    type Shape = Anthropic;
    type Options = ();
    const OPERATION: Operation = Operation::AnthropicMessages;

    fn read(body: &Value) -> Result<(Input, ()), String> {
        if body.get("max_tokens").and_then(Value::as_u64).is_none() {
            return Err("max_tokens: Field required (a whole number)".into());
        }
        Ok((Input::Conversation(conversation(body)?), ()))
    }

    fn whole(call: &Call, _: &(), answer: &Answer) -> Value {
        let (text, usage) = text_of(answer);
        let id = format!("msg_{:024}", MESSAGE_NUMBER.fetch_add(1, Ordering::Relaxed));
        json!({
            "id": id, "type": "message", "role": "assistant", "model": call.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": usage_json(usage, usage.output_tokens),
        })
    }

    /// Input counts come with message_start; each content block as a start,
    /// its deltas and a stop; the output count, cumulative, with message_delta.
    fn stream(_: &Call, whole: &Value) -> Response {
        let mut start = whole.clone();
        start["content"] = json!([]);
        start["stop_reason"] = Value::Null;
        start["stop_sequence"] = Value::Null;
        let output_tokens = whole
            .pointer("/usage/output_tokens")
            .cloned()
            .unwrap_or(json!(0));
        if start["usage"].is_object() {
            start["usage"]["output_tokens"] = json!(output_tokens.as_u64().unwrap_or(0).min(1));
        }
        let mut events = vec![(
            "message_start",
            json!({"type": "message_start", "message": start}),
        )];
        for (index, block) in whole["content"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            events.extend(block_events(index, block));
            if index == 0 {
                events.push(("ping", json!({"type": "ping"})));
            }
        }
        let mut usage = whole["usage"].clone();
        if let Some(usage) = usage.as_object_mut() {
            // Counts of the input are in message_start.
            usage.retain(|name, _| name == "output_tokens");
        }
        events.push((
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": whole["stop_sequence"]},
                   "usage": usage}),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        sse(events
            .into_iter()
            .map(|(name, data)| (Some(name), data.to_string()))
            .collect())
    }

    /// The message of message_start, its blocks built from their deltas, and
    /// the stop reason and usage of message_delta.
    fn assemble(events: &[Value]) -> Option<Value> {
        let mut message = events
            .iter()
            .find(|event| event["type"] == "message_start")?["message"]
            .clone();
        let mut blocks: Vec<Value> = Vec::new();
        let mut partial_json: Vec<String> = Vec::new();
        for event in events {
            let index = event["index"].as_u64().unwrap_or(0) as usize;
            match event["type"].as_str().unwrap_or_default() {
                "content_block_start" => {
                    while blocks.len() <= index {
                        blocks.push(Value::Null);
                        partial_json.push(String::new());
                    }
                    blocks[index] = event["content_block"].clone();
                }
                "content_block_delta" if index < blocks.len() => {
                    apply_delta(
                        &mut blocks[index],
                        &mut partial_json[index],
                        &event["delta"],
                    );
                }
                "content_block_stop" if index < blocks.len() && !partial_json[index].is_empty() => {
                    blocks[index]["input"] =
                        serde_json::from_str(&partial_json[index]).unwrap_or(json!({}));
                }
                "message_delta" => {
                    for field in ["stop_reason", "stop_sequence"] {
                        if let Some(value) = event["delta"].get(field) {
                            message[field] = value.clone();
                        }
                    }
                    if let (Some(usage), Some(counts)) =
                        (message["usage"].as_object_mut(), event["usage"].as_object())
                    {
                        for (name, count) in counts {
                            if !count.is_null() {
                                usage.insert(name.clone(), count.clone());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        message["content"] = Value::Array(blocks);
        Some(message)
    }
}

/// One content block as stream events: text and thinking in pieces, a tool
/// call's input as one JSON delta, other blocks whole in their start.
fn block_events(index: usize, block: &Value) -> Vec<(&'static str, Value)> {
    let start = |content_block: Value| {
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        )
    };
    let delta = |delta: Value| {
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    let mut events = Vec::new();
    match block["type"].as_str().unwrap_or_default() {
        "text" => {
            let mut empty = block.clone();
            empty["text"] = json!("");
            events.push(start(empty));
            let text = block["text"].as_str().unwrap_or_default();
            events.extend(
                pieces(text).map(|piece| delta(json!({"type": "text_delta", "text": piece}))),
            );
        }
        "thinking" => {
            events.push(start(
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ));
            let thinking = block["thinking"].as_str().unwrap_or_default();
            events.extend(
                pieces(thinking)
                    .map(|piece| delta(json!({"type": "thinking_delta", "thinking": piece}))),
            );
            if let Some(signature) = block["signature"].as_str().filter(|s| !s.is_empty()) {
                events.push(delta(
                    json!({"type": "signature_delta", "signature": signature}),
                ));
            }
        }
        "tool_use" | "server_tool_use" => {
            let mut empty = block.clone();
            empty["input"] = json!({});
            events.push(start(empty));
            events.push(delta(
                json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
            ));
        }
        _ => events.push(start(block.clone())),
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    events
}

/// A content block's delta applied: text, thinking, a signature, citations,
/// or a piece of a tool call's input (parsed when the block stops).
fn apply_delta(block: &mut Value, partial_json: &mut String, delta: &Value) {
    let append = |field: &mut Value, piece: &Value| {
        if let Some(piece) = piece.as_str() {
            let mut text = field.as_str().unwrap_or_default().to_string();
            text.push_str(piece);
            *field = Value::String(text);
        }
    };
    match delta["type"].as_str().unwrap_or_default() {
        "text_delta" => append(&mut block["text"], &delta["text"]),
        "thinking_delta" => append(&mut block["thinking"], &delta["thinking"]),
        "signature_delta" => block["signature"] = delta["signature"].clone(),
        "input_json_delta" => {
            partial_json.push_str(delta["partial_json"].as_str().unwrap_or_default())
        }
        "citations_delta" => {
            if !block["citations"].is_array() {
                block["citations"] = json!([]);
            }
            if let Some(citations) = block["citations"].as_array_mut() {
                citations.push(delta["citation"].clone());
            }
        }
        _ => {}
    }
}

/// `{"input_tokens": N}`: counted as the call would be metered; free, so not recorded.
pub async fn count_tokens(
    State(gateway): State<Arc<GatewayState>>,
    _: Caller<Anthropic>,
    body: Bytes,
) -> Response {
    let counted = read_body(&body)
        .and_then(|(body, model)| Ok((conversation(&body)?, model)))
        .map_err(Refusal::BadRequest)
        .and_then(|(conversation, model)| {
            gateway
                .routing
                .route(&model)
                .map_err(Refusal::UnknownModel)?;
            Ok(conversation
                .iter()
                .map(|(_, text)| tokens(text))
                .sum::<u64>())
        });
    match counted {
        Ok(input_tokens) => Json(json!({"input_tokens": input_tokens})).into_response(),
        Err(refusal) => refuse::<Anthropic>(&refusal),
    }
}
