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

use super::{conversation_of, pieces, refuse, text_of, texts_of, ApiShape, Endpoint};
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

/// One response object, or NDJSON lines ending with the final object.
fn generated(call: &Call, answer: &Answer, chat: bool) -> Response {
    let piece_object = |text: &str| {
        if chat {
            json!({"model": call.model, "created_at": created_at(), "message": {"role": "assistant", "content": text}})
        } else {
            json!({"model": call.model, "created_at": created_at(), "response": text})
        }
    };
    let merge = |mut object: Value, extra: Value| {
        if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
            object.extend(extra);
        }
        object
    };
    let (text, _) = text_of(answer);
    if !call.streamed {
        return Json(merge(piece_object(text), final_fields(call, answer))).into_response();
    }
    // Every line is one JSON object: ollama-python parses each, so no blank lines.
    let mut lines: Vec<String> = pieces(text)
        .map(|piece| merge(piece_object(piece), json!({"done": false})).to_string() + "\n")
        .collect();
    lines.push(merge(piece_object(""), final_fields(call, answer)).to_string() + "\n");
    let body = Body::from_stream(tokio_stream::iter(
        lines.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
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

    fn render(call: &Call, _: &(), answer: &Answer) -> Response {
        generated(call, answer, true)
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

    fn render(call: &Call, _: &(), answer: &Answer) -> Response {
        generated(call, answer, false)
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

    fn render(call: &Call, _: &(), answer: &Answer) -> Response {
        let Answer::Vectors { vectors, usage } = answer else {
            return refuse::<Ollama>(&Refusal::ServerError("no vectors were made".into()));
        };
        Json(json!({
            "model": call.model, "embeddings": vectors,
            "total_duration": call.started.elapsed().as_nanos() as u64, "load_duration": 0,
            "prompt_eval_count": usage.input_tokens,
        }))
        .into_response()
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
