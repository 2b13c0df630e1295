//! The three APIs the gateway speaks. What differs between them sits behind
//! two traits: [`ApiShape`] (an API's error shape and where its clients find
//! their key) and [`Endpoint`] (how one endpoint's request becomes a
//! [`Call`] and how an answer goes back, whole or streamed). Everything else
//! — the token, the body, routing, answering or relaying, the budget and the
//! record — is the one pipeline (`pipeline.rs`) every endpoint goes through.

pub mod anthropic;
pub mod ollama;
pub mod openai;
#[cfg(test)]
mod round_trips;

use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::call::{Answer, Api, Call, Input, Operation, Refusal};

/// One API's ways: its error shape and the variable its clients read the key from.
pub trait ApiShape: Send + Sync + 'static {
    const API: Api;
    /// Where a run's programs find their token, for the 401 message.
    const KEY_VARIABLE: &'static str;
    /// The error body for `refusal`, saying `message`.
    fn error_body(refusal: &Refusal, message: &str) -> Value;
}

/// One endpoint of one API that answers calls.
pub trait Endpoint: Send + Sync + 'static {
    type Shape: ApiShape;
    /// What the endpoint keeps from the request to shape its answer.
    type Options: Send + Sync;
    const OPERATION: Operation;
    /// Reads the request (a JSON object with a `model`) into what it asks.
    fn read(body: &Value) -> Result<(Input, Self::Options), String>;
    /// A sim model's answer as the API's whole (unstreamed) answer.
    fn whole(call: &Call, options: &Self::Options, answer: &Answer) -> Value;
    /// A whole answer — a sim's, or one from the response cache — as the
    /// stream the API sends when a call asks for one.
    fn stream(_call: &Call, whole: &Value) -> Response {
        Json(whole).into_response()
    }
    /// A provider's streamed answer (each event's or line's JSON, in order)
    /// put together as the whole answer, for the response cache; `None`
    /// when it cannot be.
    fn assemble(_events: &[Value]) -> Option<Value> {
        None
    }
}

/// A whole answer in the shape `call` asked for: the JSON as it is, or
/// streamed by endpoint `E`.
pub fn deliver<E: Endpoint>(call: &Call, whole: axum::body::Bytes) -> Response {
    if call.streamed {
        if let Ok(whole) = serde_json::from_slice::<Value>(&whole) {
            return E::stream(call, &whole);
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        whole,
    )
        .into_response()
}

/// The status a refusal is answered with.
pub fn status_of(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
        Refusal::BadRequest(_) | Refusal::Unservable(_) | Refusal::NotRecorded(_) => {
            StatusCode::BAD_REQUEST
        }
        Refusal::UnknownModel(_) => StatusCode::NOT_FOUND,
        Refusal::OverBudget(_) => StatusCode::PAYMENT_REQUIRED,
        Refusal::Unreachable(_) => StatusCode::BAD_GATEWAY,
        Refusal::RateLimited(_) | Refusal::NoCapacity(_) => StatusCode::TOO_MANY_REQUESTS,
        Refusal::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Refusal::Fenced(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `refusal` in API `A`'s error shape. A refused key, an exhausted budget,
/// a replay with no recorded answer or a fenced worker must not be retried: the official clients honour `x-should-retry: false`
/// over the status.
pub fn refuse<A: ApiShape>(refusal: &Refusal) -> Response {
    let message = match refusal {
        Refusal::Unauthorized => format!("{refusal}; programs get theirs in {}", A::KEY_VARIABLE),
        _ => refusal.to_string(),
    };
    let status = status_of(refusal);
    let mut response = (status, Json(A::error_body(refusal, &message))).into_response();
    if matches!(
        refusal,
        Refusal::Unauthorized
            | Refusal::OverBudget(_)
            | Refusal::NotRecorded(_)
            | Refusal::Fenced(_)
    ) {
        response
            .headers_mut()
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}

/// `refusal` in the shape of `api`, for code that knows the API as a value.
pub fn refuse_in(api: Api, refusal: &Refusal) -> Response {
    match api {
        Api::Openai => refuse::<openai::OpenAi>(refusal),
        Api::Anthropic => refuse::<anthropic::Anthropic>(refusal),
        Api::Ollama => refuse::<ollama::Ollama>(refusal),
    }
}

/// A JSON body with a `model` string, or why it is not one.
pub fn read_body(body: &[u8]) -> Result<(Value, String), String> {
    if body.is_empty() {
        return Err("missing request body".into());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .ok_or("the request needs `model`, a string such as sim/echo")?
        .to_string();
    Ok((value, model))
}

/// The text of a message's content: a string, or the text parts of a list of
/// blocks (OpenAI's `{"type": "text", "text"}` parts and Anthropic's blocks alike).
pub fn content_text(content: &Value) -> String {
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

/// (role, text) pairs of a `messages` list.
pub fn conversation_of(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|message| {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("user");
            let content = message.get("content").map(content_text).unwrap_or_default();
            (role.to_string(), content)
        })
        .collect()
}

/// Texts to embed: a string or a list of strings.
pub fn texts_of(input: Option<&Value>) -> Option<Vec<String>> {
    match input? {
        Value::String(text) => Some(vec![text.clone()]),
        Value::Array(texts) if texts.iter().all(Value::is_string) => Some(
            texts
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        _ => None,
    }
}

/// The answer's text in pieces for a stream: word by word, spaces kept.
pub fn pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ')
}

/// Server-sent events: `(name, data)` each, the name left out when `None`.
pub fn sse(events: Vec<(Option<&'static str>, String)>) -> Response {
    let events: Vec<Result<Event, std::convert::Infallible>> = events
        .into_iter()
        .map(|(name, data)| {
            let event = Event::default().data(data);
            Ok(match name {
                Some(name) => event.event(name),
                None => event,
            })
        })
        .collect();
    Sse::new(tokio_stream::iter(events)).into_response()
}

/// The text and usage of an answer to a conversation; an embedding endpoint
/// never renders one, nor a text endpoint vectors.
fn text_of(answer: &Answer) -> (&str, &crate::call::Usage) {
    match answer {
        Answer::Text { text, usage } => (text, usage),
        Answer::Vectors { usage, .. } => ("", usage),
    }
}
