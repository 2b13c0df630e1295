//! What every API does with a call once it is read: route the model, answer
//! it, ask the run's spend gate, and record the call in the run's ledger.
//! The API modules only read requests and write responses in their own shape.

use std::time::Instant;

use crate::calls::{CallRecord, CallStatus, LlmApi, Usage};
use crate::routing::{Route, UnknownModel};
use crate::runs::RunLedger;
use crate::sim::Sim;
use crate::sim::{self, SIM_PRICES};

/// A call as every API reads it.
pub struct Call {
    /// The API the program spoke.
    pub api: LlmApi,
    /// The model as the program named it (`provider/model`).
    pub model: String,
    /// (role, text) pairs in order; a system prompt comes first as `system`.
    pub conversation: Vec<(String, String)>,
    pub streamed: bool,
    pub started: Instant,
    pub started_at_ms: i64,
}

impl Call {
    /// A call arriving now.
    pub fn new(
        api: LlmApi,
        model: String,
        conversation: Vec<(String, String)>,
        streamed: bool,
    ) -> Self {
        Call {
            api,
            model,
            conversation,
            streamed,
            started: Instant::now(),
            started_at_ms: now_ms(),
        }
    }
}

/// What the call got back.
pub struct Answer {
    pub text: String,
    pub usage: Usage,
}

/// Why a call gets no answer; each API says it in its own error shape.
#[derive(Debug)]
pub enum Refusal {
    UnknownModel(UnknownModel),
    /// The run may not spend the call's worst case (ARCHITECTURE.md, invariant 1).
    OverBudget(crate::spend::BudgetRefusal),
    /// The call cannot go to its provider, for the reason given.
    Unservable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownModel(unknown) => write!(f, "{unknown}"),
            Refusal::OverBudget(refusal) => write!(f, "{refusal}"),
            Refusal::Unservable(why) => write!(f, "{why}"),
        }
    }
}

/// Output tokens assumed for a call that sets no cap, for its worst case; the
/// gateway sets this cap on calls that have none, so the worst case holds.
pub const OUTPUT_BOUND: u64 = 4096;

/// Answers `call` with a sim model for the run of `ledger` and records it
/// there, its worst case held first: prompt bytes as input tokens (a token
/// is never less than a byte) and the output cap as output.
pub async fn answer(
    ledger: &RunLedger,
    call: &Call,
    sim: Sim,
    model: String,
    output_cap: u64,
) -> Result<Answer, Refusal> {
    let prices = sim_prices(ledger, call);
    let prompt_bytes: u64 = call.conversation.iter().map(|(_, c)| c.len() as u64).sum();
    let hold = hold_worst_case(ledger, prices, prompt_bytes, output_cap.max(1)).await?;
    let text = sim.truncate(
        sim.model.answer(ledger.seed, &call.conversation),
        output_cap,
    );
    let usage = Usage {
        input_tokens: call
            .conversation
            .iter()
            .map(|(_, content)| sim.tokens(content))
            .sum(),
        output_tokens: sim.tokens(&text),
        cached_input_tokens: 0,
    };
    let cost_usd = prices.cost(&usage);
    hold.settle(cost_usd);
    record(ledger, call, model, &usage, cost_usd);
    Ok(Answer { text, usage })
}

/// The sim's prices, unless the experiment gives the model its own.
fn sim_prices(ledger: &RunLedger, call: &Call) -> crate::pricing::Prices {
    ledger
        .prices
        .get(&call.model)
        .copied()
        .unwrap_or(SIM_PRICES)
}

/// Holds a sim call's worst case in the run's budget: its input bytes as
/// tokens (a token is never shorter than a byte) and its output cap.
async fn hold_worst_case(
    ledger: &RunLedger,
    prices: crate::pricing::Prices,
    input_bytes: u64,
    output_cap: u64,
) -> Result<crate::spend::SpendHold, Refusal> {
    let worst_case = prices.cost(&Usage {
        input_tokens: input_bytes.max(1),
        output_tokens: output_cap,
        cached_input_tokens: 0,
    });
    ledger
        .spend
        .hold(worst_case)
        .await
        .map_err(Refusal::OverBudget)
}

/// Records a sim call in the run's ledger.
fn record(ledger: &RunLedger, call: &Call, model: String, usage: &Usage, cost_usd: f64) {
    let latency_ms = call.started.elapsed().as_secs_f64() * 1000.0;
    ledger.record(CallRecord {
        started_at_ms: call.started_at_ms,
        provider: "sim".to_string(),
        model,
        api: call.api,
        streamed: call.streamed,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_input_tokens: usage.cached_input_tokens,
        cost_usd,
        cost_is_worst_case: false,
        latency_ms,
        time_to_first_token_ms: latency_ms,
        retries: 0,
        status: CallStatus::Succeeded,
        error: None,
    });
}

/// Embeds `inputs` with the sim for the run of `ledger` and records the call (input tokens only).
pub async fn embed(
    ledger: &RunLedger,
    call: &Call,
    sim: Sim,
    model: String,
    inputs: &[String],
) -> Result<(Vec<Vec<f32>>, Usage), Refusal> {
    let usage = Usage {
        input_tokens: inputs.iter().map(|text| sim.tokens(text)).sum(),
        output_tokens: 0,
        cached_input_tokens: 0,
    };
    let prices = sim_prices(ledger, call);
    let input_bytes = inputs.iter().map(|text| text.len() as u64).sum();
    let hold = hold_worst_case(ledger, prices, input_bytes, 0).await?;
    let vectors = inputs.iter().map(|text| sim::embedding(text)).collect();
    let cost_usd = prices.cost(&usage);
    hold.settle(cost_usd);
    record(ledger, call, model, &usage, cost_usd);
    Ok((vectors, usage))
}

/// Marks a response the official clients must not retry (a refused key, an
/// exhausted budget): they honour `x-should-retry: false` over the status.
pub fn without_retries(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        "x-should-retry",
        axum::http::HeaderValue::from_static("false"),
    );
    response
}

/// A JSON body with a `model` string, or why it is not one.
pub fn read_body(body: &[u8]) -> Result<(serde_json::Value, String), String> {
    if body.is_empty() {
        return Err("missing request body".into());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let model = value
        .get("model")
        .and_then(serde_json::Value::as_str)
        .ok_or("the request needs `model`, a string such as sim/echo")?
        .to_string();
    Ok((value, model))
}

/// Input tokens of a conversation as the sim counts them (for token-count endpoints).
pub fn count_input_tokens(conversation: &[(String, String)]) -> u64 {
    conversation
        .iter()
        .map(|(_, content)| sim::tokens(content))
        .sum()
}

/// The answer's text in pieces for a stream: word by word, spaces kept.
pub fn pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ')
}

pub use flotilla_shared::clock::now_ms;

/// The text of a message's content: a string, or the text parts of a list of
/// blocks (OpenAI's `{"type": "text", "text"}` parts and Anthropic's blocks alike).
pub fn content_text(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(serde_json::Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// (role, text) pairs of a `messages` list.
pub fn conversation_of(messages: &[serde_json::Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|message| {
            let role = message
                .get("role")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("user");
            let content = message.get("content").map(content_text).unwrap_or_default();
            (role.to_string(), content)
        })
        .collect()
}

/// A routed call: a sim model to answer here, or the response to send as it
/// is (a provider's relayed answer, or a refusal in the API's shape).
pub enum Routed {
    /// A sim model, the model's name, and the call's output cap.
    Sim(Sim, String, u64),
    Done(axum::response::Response),
}

/// Routes `call`; calls for a provider are relayed to it right away.
#[allow(clippy::too_many_arguments)]
pub async fn route_call(
    gateway: &std::sync::Arc<crate::GatewayState>,
    ledger: &std::sync::Arc<RunLedger>,
    call: &Call,
    endpoint: crate::upstream::Endpoint,
    body: serde_json::Value,
    client_wants_usage: bool,
    refusal: fn(&Refusal) -> axum::response::Response,
) -> Routed {
    let (provider, name) = match gateway.routing.route(&call.model) {
        Ok((Route::Sim(model), name)) => {
            let cap = endpoint.output_cap(&body).unwrap_or(OUTPUT_BOUND);
            return Routed::Sim(model, name, cap);
        }
        Ok((Route::Upstream(provider), name)) => (provider, name),
        Err(unknown) => return Routed::Done(refusal(&Refusal::UnknownModel(unknown))),
    };
    let relayed = crate::upstream::relay(
        gateway,
        ledger.clone(),
        provider,
        name,
        endpoint,
        body,
        call,
        client_wants_usage,
    )
    .await;
    Routed::Done(relayed.unwrap_or_else(|refused| {
        refusal(&match refused {
            crate::upstream::Refused::WrongApi(why) | crate::upstream::Refused::NoPrice(why) => {
                Refusal::Unservable(why)
            }
            crate::upstream::Refused::OverBudget(refusal) => Refusal::OverBudget(refusal),
        })
    }))
}
