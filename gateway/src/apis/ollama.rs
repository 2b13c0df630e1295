//! The Ollama API as the official client speaks it (`OLLAMA_HOST` =
//! `http://127.0.0.1:PORT`, the run's token in `OLLAMA_API_KEY`):
//! `/api/chat` and `/api/generate`, streamed as NDJSON unless the request
//! says `"stream": false` (Ollama's default is to stream), `/api/embed` and
//! `/api/tags`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{conversation_of, pieces, text_of, texts_of, ApiShape, Endpoint};
use crate::call::{Answer, Api, Call, Input, Operation, Refusal};
use crate::caller::Caller;
use crate::state::GatewayState;

pub struct Ollama;

impl ApiShape for Ollama {
    const API: Api = Api::Ollama;
    const KEY_VARIABLE: &'static str = "OLLAMA_API_KEY";

    /// `{"error": "<message>"}`.
    fn error_body(refusal: &Refusal, message: &str) -> Value {
        match refusal {
            Refusal::Unauthorized => json!({"error": format!("unauthorized: {message}")}),
            _ => json!({"error": message}),
        }
    }
}

fn created_at() -> String {
    flotilla_shared::clock::rfc3339(flotilla_shared::clock::now_ms())
}

/// The metrics of a final object; durations in nanoseconds.
fn final_fields(call: &Call, answer: &Answer) -> Value {
    let total = call.started.elapsed().as_nanos() as u64;
    let usage = answer.usage();
    json!({
        "done": true, "done_reason": "stop", "total_duration": total, "load_duration": 0,
        "prompt_eval_count": usage.input_tokens, "prompt_eval_duration": total / 2,
        "eval_count": usage.output_tokens, "eval_duration": total / 2,
    })
}

/// One whole response object: the answer's text, then the final fields.
fn generated(call: &Call, answer: &Answer, chat: bool) -> Value {
    let (text, _) = text_of(answer);
    let mut whole = if chat {
        json!({"model": call.model, "created_at": created_at(), "message": {"role": "assistant", "content": text}})
    } else {
        json!({"model": call.model, "created_at": created_at(), "response": text})
    };
    merge(&mut whole, final_fields(call, answer));
    whole
}

fn merge(object: &mut Value, extra: Value) {
    if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
        object.extend(extra);
    }
}

/// Where the text is in an answer: `message.content` (chat) or `response`.
fn text_pointer(chat: bool) -> &'static str {
    if chat {
        "/message/content"
    } else {
        "/response"
    }
}

/// A whole answer as NDJSON lines: the text in pieces (a chat's thinking and
/// tool calls each on a line of their own), then the final object with the
/// metrics and an empty text.
fn streamed(whole: &Value, chat: bool) -> Response {
    let line = |text: &str| {
        let mut line =
            json!({"model": whole["model"], "created_at": whole["created_at"], "done": false});
        if chat {
            line["message"] = json!({"role": "assistant", "content": text});
        } else {
            line["response"] = json!(text);
        }
        line
    };
    let mut lines = Vec::new();
    if let Some(thinking) = whole
        .pointer("/message/thinking")
        .or_else(|| whole.get("thinking"))
    {
        let mut thought = line("");
        if chat {
            thought["message"]["thinking"] = thinking.clone();
        } else {
            thought["thinking"] = thinking.clone();
        }
        lines.push(thought);
    }
    let text = whole
        .pointer(text_pointer(chat))
        .and_then(Value::as_str)
        .unwrap_or_default();
    lines.extend(pieces(text).map(line));
    if let Some(tool_calls) = whole.pointer("/message/tool_calls") {
        let mut called = line("");
        called["message"]["tool_calls"] = tool_calls.clone();
        lines.push(called);
    }
    let mut last = whole.clone();
    if chat {
        last["message"] = json!({"role": "assistant", "content": ""});
    } else {
        last["response"] = json!("");
        if let Some(object) = last.as_object_mut() {
            object.remove("thinking");
        }
    }
    lines.push(last);
    // Every line is one JSON object: ollama-python parses each, so no blank lines.
    let body = Body::from_stream(tokio_stream::iter(
        lines
            .into_iter()
            .map(|line| Ok::<_, std::convert::Infallible>(line.to_string() + "\n")),
    ));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// NDJSON lines put together: the final line's fields with the text (and a
/// chat's thinking and tool calls) of every line.
fn assembled(lines: &[Value], chat: bool) -> Option<Value> {
    let mut whole = lines
        .iter()
        .rev()
        .find(|line| line["done"] == true)?
        .clone();
    let pointer = text_pointer(chat);
    let text: String = lines
        .iter()
        .filter_map(|line| line.pointer(pointer).and_then(Value::as_str))
        .collect();
    let thinking: String = lines
        .iter()
        .filter_map(|line| {
            line.pointer("/message/thinking")
                .or_else(|| line.get("thinking"))
                .and_then(Value::as_str)
        })
        .collect();
    let tool_calls: Vec<Value> = lines
        .iter()
        .filter_map(|line| {
            line.pointer("/message/tool_calls")
                .and_then(Value::as_array)
        })
        .flatten()
        .cloned()
        .collect();
    if chat {
        whole["message"] = json!({"role": "assistant", "content": text});
        if !thinking.is_empty() {
            whole["message"]["thinking"] = json!(thinking);
        }
        if !tool_calls.is_empty() {
            whole["message"]["tool_calls"] = Value::Array(tool_calls);
        }
    } else {
        whole["response"] = json!(text);
        if !thinking.is_empty() {
            whole["thinking"] = json!(thinking);
        }
    }
    Some(whole)
}

/// `/api/chat`.
pub struct Chat;

impl Endpoint for Chat {
    type Shape = Ollama;
    type Options = ();
    const OPERATION: Operation = Operation::OllamaChat;

    fn read(body: &Value) -> Result<(Input, ()), String> {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok((Input::Conversation(conversation_of(&messages)), ()))
    }

    fn whole(call: &Call, _: &(), answer: &Answer) -> Value {
        generated(call, answer, true)
    }

    fn stream(_: &Call, whole: &Value) -> Response {
        streamed(whole, true)
    }

    fn assemble(lines: &[Value]) -> Option<Value> {
        assembled(lines, true)
    }
}

/// `/api/generate`: a prompt, with an optional system prompt.
pub struct Generate;

impl Endpoint for Generate {
    type Shape = Ollama;
    type Options = ();
    const OPERATION: Operation = Operation::OllamaGenerate;

    fn read(body: &Value) -> Result<(Input, ()), String> {
        let mut conversation = Vec::new();
        if let Some(system) = body.get("system").and_then(Value::as_str) {
            conversation.push(("system".to_string(), system.to_string()));
        }
        let prompt = body
            .get("prompt")
            .and_then(Value::as_str)
            .unwrap_or_default();
        conversation.push(("user".to_string(), prompt.to_string()));
        Ok((Input::Conversation(conversation), ()))
    }

    fn whole(call: &Call, _: &(), answer: &Answer) -> Value {
        generated(call, answer, false)
    }

    fn stream(_: &Call, whole: &Value) -> Response {
        streamed(whole, false)
    }

    fn assemble(lines: &[Value]) -> Option<Value> {
        assembled(lines, false)
    }
}

/// `/api/embed`.
pub struct Embed;

impl Endpoint for Embed {
    type Shape = Ollama;
    type Options = ();
    const OPERATION: Operation = Operation::OllamaEmbed;

    fn read(body: &Value) -> Result<(Input, ()), String> {
        let texts = texts_of(body.get("input"))
            .ok_or("input is required: a string or a list of strings")?;
        Ok((Input::Texts(texts), ()))
    }

    fn whole(call: &Call, _: &(), answer: &Answer) -> Value {
        let (vectors, usage) = match answer {
            Answer::Vectors { vectors, usage } => (vectors.as_slice(), usage),
            Answer::Text { usage, .. } => (&[][..], usage),
        };
        json!({
            "model": call.model, "embeddings": vectors,
            "total_duration": call.started.elapsed().as_nanos() as u64, "load_duration": 0,
            "prompt_eval_count": usage.input_tokens,
        })
    }
}

/// `/api/tags`: the models this worker serves, as Ollama lists them.
pub async fn tags(State(gateway): State<Arc<GatewayState>>, _: Caller<Ollama>) -> Response {
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
