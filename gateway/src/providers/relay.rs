//! Calls to the providers of the providers file, in three steps: `prepare`
//! (the provider must speak the call's API and have a price; the model's own
//! name and an output cap go on the request; the worst case is held in the
//! run's budget), `retry::send` (paced by the worker's rate-limit manager,
//! retried with backoff on 429, 5xx and unreachable providers) and
//! `respond` (the answer goes back as the provider sent it, a stream as it
//! streams, and the call is metered from the usage it reports — or priced at
//! its worst case, and marked so, when that cannot be read).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::response::Response;
use serde_json::Value;

use super::respond::{respond_streaming, respond_whole, Metering};
use super::retry::{send, NotAnswered};
use super::Provider;
use crate::apis::refuse_in;
use crate::cache::Ticket;
use crate::call::{Api, Call, Operation, Refusal, Usage, OUTPUT_BOUND};
use crate::metering::runs::RunLedger;
use crate::metering::spend::SpendHold;
use crate::pricing::Prices;
use crate::spend_lease::{CallStop, CALL_BOUND, FLEX_CALL_BOUND};
use crate::state::GatewayState;
use flotilla_shared::tier::{Tier, TierFallback};

/// Cuts a relayed answer off when the worker's spend lease runs out or the
/// call reaches its bound (ARCHITECTURE.md, invariant 8).
pub struct CallStopper {
    gateway: Arc<GatewayState>,
    started: std::time::Instant,
    bound: Duration,
}

impl CallStopper {
    pub async fn wait(&self) -> CallStop {
        self.gateway
            .spend_lease
            .call_must_stop(self.started, self.bound)
            .await
    }
}

/// The prices a call is metered at, by the tier its answer says served it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierPrices {
    pub standard: Prices,
    /// Where the providers file says the model is offered at the flex tier.
    pub flex: Option<Prices>,
}

impl TierPrices {
    /// The prices of `tier`; the standard ones where the flex tier has none
    /// (no saving is counted that the providers file does not state).
    pub fn at(&self, tier: Tier) -> Prices {
        match (tier, self.flex) {
            (Tier::Flex, Some(flex)) => flex,
            _ => self.standard,
        }
    }

    /// What `usage` costs at the dearest tier that may serve it: the hold
    /// must cover the call whichever tier its provider answers at.
    pub fn dearest_cost(&self, usage: &Usage) -> f64 {
        let standard = self.standard.cost(usage);
        self.flex
            .map_or(standard, |flex| standard.max(flex.cost(usage)))
    }
}

/// How a call asks for its tier.
pub enum TierPlan {
    /// As the program sent it.
    AsSent,
    /// At the flex tier first (`service_tier: "flex"` added); on a refusal
    /// for capacity, as `fallback` says, with the request as the program
    /// sent it at hand for the standard tier.
    Flex {
        fallback: TierFallback,
        standard_payload: Bytes,
    },
}

/// A call made ready for its provider.
pub struct Prepared {
    pub provider: Arc<Provider>,
    /// The model by the provider's own name.
    pub model: String,
    pub url: String,
    /// The request as it goes out first.
    pub payload: Bytes,
    pub tier: TierPlan,
    pub prices: TierPrices,
    /// How long the call may last, waits included (ARCHITECTURE.md, invariant 8).
    pub bound: Duration,
    pub worst_case: f64,
    pub streams: bool,
    /// Held until the call is metered (ARCHITECTURE.md, invariant 1).
    pub hold: SpendHold,
}

/// Sends `call` to `provider` for `model`, pacing, retrying and metering; the
/// answer (or the provider's last error, unchanged) goes back to the program,
/// and, with a `ticket` (the cache missed), a success is recorded in the
/// cache (a stream put together by `assemble`).
pub async fn relay(
    gateway: &Arc<GatewayState>,
    ledger: &Arc<RunLedger>,
    provider: Arc<Provider>,
    model: String,
    call: Call,
    ticket: Option<Box<Ticket>>,
    assemble: fn(&[Value]) -> Option<Value>,
) -> Result<Response, Refusal> {
    let prepared = prepare(ledger, provider, model, &call).await?;
    let sent = send(gateway, &prepared, ledger.seed, call.started).await;
    let Prepared {
        provider,
        model,
        prices,
        bound,
        worst_case,
        streams,
        hold,
        ..
    } = prepared;
    let metering = Metering::new(
        ledger.clone(),
        &provider.name,
        model,
        &call,
        prices,
        worst_case,
        sent.retries,
        hold,
    )
    .with_ticket(ticket, assemble)
    .with_tier(sent.tier_asked, sent.tier_refusals);
    let stop = CallStopper {
        gateway: gateway.clone(),
        started: call.started,
        bound,
    };
    Ok(match sent.response {
        Err(NotAnswered::Unreachable(error)) => {
            let message = format!("cannot reach provider '{}': {error}", provider.name);
            metering.record(None, Some(message.clone()), 0.0);
            refuse_in(call.api(), &Refusal::Unreachable(message))
        }
        Err(NotAnswered::Fenced(why)) => {
            // Never sent: it cost nothing and is not recorded as a call.
            drop(metering);
            return Err(Refusal::Fenced(why));
        }
        Err(NotAnswered::Stopped(why)) => {
            // Sent and cut off: the provider may bill it, so it is charged its worst case.
            metering.record_cut_off(why.to_string());
            refuse_in(call.api(), &Refusal::Fenced(why.to_string()))
        }
        Ok(response) if !response.status().is_success() || !streams => {
            respond_whole(response, call.api(), metering, stop).await
        }
        Ok(response) => respond_streaming(
            response,
            call.api(),
            call.wants_stream_usage,
            metering,
            sent.permit,
            stop,
        ),
    })
}

/// Checks that the call can go to `provider`, shapes its request and holds
/// its worst case.
async fn prepare(
    ledger: &RunLedger,
    provider: Arc<Provider>,
    model: String,
    call: &Call,
) -> Result<Prepared, Refusal> {
    if provider.api != call.api() {
        return Err(Refusal::Unservable(format!(
            "provider '{}' speaks the {} API; call its models with the {} client",
            provider.name,
            provider.api.as_str(),
            provider.api.as_str()
        )));
    }
    // The experiment's price first, then the providers file's, then the table's.
    let standard = ledger.prices.get(&call.model).copied().or_else(|| provider.price_of(&model)).ok_or_else(|| {
        Refusal::Unservable(format!(
            "no price is known for {}/{model}; add it under the provider's prices in the providers file (dollars per million tokens)",
            provider.name
        ))
    })?;
    let prices = TierPrices {
        standard,
        flex: provider.flex_price_of(&model),
    };
    let mut body = call.body.clone();
    body["model"] = Value::from(model.clone());
    cap_output(call.operation, &mut body, &provider);
    if call.streamed && call.api() == Api::Openai {
        // Usage comes only if asked for; the extra chunk is passed on only if
        // the program asked for it, so a streamed call costs what it would unstreamed.
        body["stream_options"]["include_usage"] = Value::Bool(true);
    }
    let standard_payload = Bytes::from(body.to_string());
    let (payload, tier, bound) = match flex_fallback(ledger, call, &body, &prices) {
        None => (standard_payload, TierPlan::AsSent, CALL_BOUND),
        Some(fallback) => {
            body["service_tier"] = Value::from(Tier::Flex.as_str());
            let plan = TierPlan::Flex {
                fallback,
                standard_payload,
            };
            (Bytes::from(body.to_string()), plan, FLEX_CALL_BOUND)
        }
    };
    // Bytes bound the prompt's tokens for byte-level tokenizers.
    let worst_case = prices.dearest_cost(&Usage {
        input_tokens: payload.len() as u64,
        output_tokens: call.operation.output_cap(&body).unwrap_or(OUTPUT_BOUND),
        cached_input_tokens: 0,
    });
    let hold = ledger
        .spend
        .hold(worst_case)
        .await
        .map_err(Refusal::OverBudget)?;
    Ok(Prepared {
        url: format!("{}{}", provider.base_url, call.operation.path()),
        provider,
        model,
        payload,
        tier,
        prices,
        bound,
        worst_case,
        streams: call.streamed,
        hold,
    })
}

/// The fallback of a call that goes out at the flex tier: its run asks for
/// flex, it is a chat completion (the one endpoint of the OpenAI API served
/// here that takes `service_tier`), the providers file prices the model at
/// flex, and the program did not choose a tier itself.
fn flex_fallback(
    ledger: &RunLedger,
    call: &Call,
    body: &Value,
    prices: &TierPrices,
) -> Option<TierFallback> {
    let asks = ledger.tier.tier == Tier::Flex
        && call.operation == Operation::OpenAiChat
        && prices.flex.is_some()
        && body.get("service_tier").is_none_or(Value::is_null);
    asks.then_some(ledger.tier.fallback)
}

/// Sets the output cap on a request that has none, so that the worst case
/// the budget holds is a bound on what the call can cost.
fn cap_output(operation: Operation, body: &mut Value, provider: &Provider) {
    if operation.output_cap(body).is_some() {
        return;
    }
    match operation {
        Operation::OpenAiChat if provider.base_url.contains("api.openai.com") => {
            // OpenAI's reasoning models accept only the newer name.
            body["max_completion_tokens"] = Value::from(OUTPUT_BOUND);
        }
        Operation::OpenAiChat | Operation::OpenAiCompletions | Operation::AnthropicMessages => {
            body["max_tokens"] = Value::from(OUTPUT_BOUND);
        }
        Operation::OllamaChat | Operation::OllamaGenerate => {
            if !body.get("options").is_some_and(Value::is_object) {
                body["options"] = serde_json::json!({});
            }
            body["options"]["num_predict"] = Value::from(OUTPUT_BOUND);
        }
        Operation::OpenAiEmbeddings | Operation::OllamaEmbed => {}
    }
}
