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
            Refusal::BadRequest(_) | Refusal::Unservable(_) => "invalid_request_error",
            Refusal::UnknownModel(_) => "not_found_error",
            Refusal::OverBudget(_) => "billing_error",
            Refusal::RateLimited(_) => "rate_limit_error",
            Refusal::Unreachable(_) | Refusal::ServerError(_) => "api_error",
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

    fn render(call: &Call, _: &(), answer: &Answer) -> Response {
        let (text, usage) = text_of(answer);
        let id = format!("msg_{:024}", MESSAGE_NUMBER.fetch_add(1, Ordering::Relaxed));
        if !call.streamed {
            return Json(json!({
                "id": id, "type": "message", "role": "assistant", "model": call.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": usage_json(usage, usage.output_tokens),
            }))
            .into_response();
        }
        // Input counts come with message_start; the output count, cumulative, with message_delta.
        let mut events = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": call.model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage_json(usage, 1)}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
        ];
        for piece in pieces(text) {
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
                   "usage": {"output_tokens": usage.output_tokens}}),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        sse(events
            .into_iter()
            .map(|(name, data)| (Some(name), data.to_string()))
            .collect())
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
