//! The provider's answer, back to the program as it came — whole, or event
//! by event as it streams — with the call metered from the usage it reports
//! and recorded in the run's ledger; the budget's hold becomes its cost.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tokio_stream::StreamExt;

use flotilla_shared::calls::CacheUse;

use super::limits::Permit;
use super::relay::{CallStopper, TierPrices};
use crate::apis::refuse_in;
use crate::cache::{cache_use, Ticket};
use crate::call::Refusal;
use crate::call::{Api, Call, Usage};
use crate::metering::calls::{CallRecord, CallStatus};
use crate::metering::runs::RunLedger;
use crate::metering::spend::SpendHold;
use flotilla_shared::tier::Tier;

/// What the provider's answer said it used, and the tier that served it,
/// read as it streams by.
#[derive(Default)]
struct Meter {
    usage: Option<Usage>,
    service_tier: Option<String>,
}

impl Meter {
    /// Reads usage from one JSON object of the answer (a whole body, an SSE
    /// event's data or an NDJSON line).
    fn read(&mut self, api: Api, object: &Value) {
        let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_u64);
        match api {
            Api::Openai => {
                // Top level of a whole answer, and on a stream's chunks.
                if let Some(tier) = object.get("service_tier").and_then(Value::as_str) {
                    self.service_tier = Some(tier.to_string());
                }
                if let Some(prompt) = number("/usage/prompt_tokens") {
                    self.usage = Some(Usage {
                        input_tokens: prompt,
                        output_tokens: number("/usage/completion_tokens").unwrap_or(0),
                        cached_input_tokens: number("/usage/prompt_tokens_details/cached_tokens")
                            .unwrap_or(0),
                    });
                }
            }
            Api::Anthropic => {
                // Input counts in message_start (or the whole message); the
                // output count is cumulative in message_delta: the last one wins.
                let usage = object
                    .pointer("/message/usage")
                    .or_else(|| object.get("usage"));
                if let Some(usage) = usage {
                    let field = |name: &str| usage.get(name).and_then(Value::as_u64);
                    let mut current = self.usage.unwrap_or_default();
                    if let Some(input) = field("input_tokens") {
                        let cache_read = field("cache_read_input_tokens").unwrap_or(0);
                        current.input_tokens =
                            input + field("cache_creation_input_tokens").unwrap_or(0) + cache_read;
                        current.cached_input_tokens = cache_read;
                    }
                    if let Some(output) = field("output_tokens") {
                        current.output_tokens = output;
                    }
                    self.usage = Some(current);
                }
            }
            Api::Ollama => {
                if object.get("done").and_then(Value::as_bool) == Some(true)
                    || object.get("embeddings").is_some()
                {
                    self.usage = Some(Usage {
                        input_tokens: number("/prompt_eval_count").unwrap_or(0),
                        output_tokens: number("/eval_count").unwrap_or(0),
                        cached_input_tokens: 0,
                    });
                }
            }
        }
    }
}

/// Response headers worth passing on: content type, retry advice, limits, ids.
fn relayed_headers(upstream: &reqwest::header::HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in upstream {
        let name = name.as_str();
        let keep = name == "content-type"
            || name.starts_with("retry-after")
            || name == "x-should-retry"
            || name.starts_with("x-ratelimit-")
            || name.starts_with("anthropic-ratelimit-")
            || name == "request-id"
            || name == "x-request-id";
        if keep {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.insert(name, value);
            }
        }
    }
    headers
}

/// What recording a relayed call needs.
pub struct Metering {
    ledger: Arc<RunLedger>,
    provider: String,
    model: String,
    api: Api,
    prices: TierPrices,
    /// The tier the last attempt asked for, and how often the flex tier refused the call.
    tier_asked: Tier,
    tier_refusals: u32,
    worst_case: f64,
    started: Instant,
    started_at_ms: i64,
    retries: u32,
    streamed: bool,
    /// The call's worst case, held in the run's budget until it is metered.
    hold: std::sync::Mutex<Option<SpendHold>>,
    /// The cache missed: a successful answer is recorded with this.
    ticket: std::sync::Mutex<Option<Box<Ticket>>>,
    /// How the endpoint puts a streamed answer together for the cache.
    assemble: fn(&[Value]) -> Option<Value>,
}

/// What a call whose usage cannot be read is charged.
#[derive(Clone, Copy, PartialEq)]
enum Unmetered {
    /// The provider refused it: nothing was generated.
    Free,
    /// It may have generated anything up to its cap.
    WorstCase,
}

impl Metering {
    /// What `call`, sent to `provider` for `model`, is recorded with.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ledger: Arc<RunLedger>,
        provider: &str,
        model: String,
        call: &Call,
        prices: TierPrices,
        worst_case: f64,
        retries: u32,
        hold: SpendHold,
    ) -> Self {
        Metering {
            ledger,
            provider: provider.to_string(),
            model,
            api: call.api(),
            prices,
            tier_asked: Tier::Standard,
            tier_refusals: 0,
            worst_case,
            started: call.started,
            started_at_ms: call.started_at_ms,
            retries,
            streamed: call.streamed,
            hold: std::sync::Mutex::new(Some(hold)),
            ticket: std::sync::Mutex::new(None),
            assemble: |_| None,
        }
    }

    /// A call the cache missed: its answer, whole or put together by
    /// `assemble` from its stream, is recorded if it succeeds.
    pub fn with_ticket(
        mut self,
        ticket: Option<Box<Ticket>>,
        assemble: fn(&[Value]) -> Option<Value>,
    ) -> Self {
        self.ticket = std::sync::Mutex::new(ticket);
        self.assemble = assemble;
        self
    }

    /// The tier the call's last attempt asked for, and the flex tier's refusals before it.
    pub fn with_tier(mut self, asked: Tier, refusals: u32) -> Self {
        self.tier_asked = asked;
        self.tier_refusals = refusals;
        self
    }

    fn cache_use(&self) -> CacheUse {
        cache_use(&self.ticket.lock().expect("not poisoned"))
    }

    fn wants_answer(&self) -> bool {
        self.ticket.lock().expect("not poisoned").is_some()
    }

    /// Records the call: priced from `usage`; without usage, free if the
    /// provider refused it, else at its worst case. The budget's hold becomes
    /// that cost.
    pub fn record(&self, usage: Option<Usage>, error: Option<String>, time_to_first_token_ms: f64) {
        let unmetered = if error.is_some() {
            Unmetered::Free
        } else {
            Unmetered::WorstCase
        };
        self.record_as(usage, None, error, time_to_first_token_ms, unmetered, None);
    }

    /// A call cut off in flight: the provider may bill it, so it is charged
    /// its worst case unless usage was read.
    pub fn record_cut_off(&self, why: String) {
        self.record_as(None, None, Some(why), 0.0, Unmetered::WorstCase, None);
    }

    /// Records the call as [`Metering::record`] does, priced at the tier
    /// `service_tier` (the answer's) says served it; a call that succeeded
    /// with its usage read records `whole`, its answer, in the cache.
    fn record_as(
        &self,
        usage: Option<Usage>,
        service_tier: Option<&str>,
        error: Option<String>,
        time_to_first_token_ms: f64,
        unmetered: Unmetered,
        whole: Option<Bytes>,
    ) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let failed = error.is_some();
        // An answer says which tier served it; one that does not is priced
        // at standard. A call with no answer is recorded at the tier it asked.
        let tier = match (&usage, service_tier) {
            (Some(_), served) => Tier::served(served),
            (None, _) => self.tier_asked,
        };
        let (usage, cost_usd, tier_saved_usd, worst) = match usage {
            Some(usage) => {
                let cost = self.prices.at(tier).cost(&usage);
                (usage, cost, self.prices.standard.cost(&usage) - cost, false)
            }
            None if unmetered == Unmetered::Free => (Usage::default(), 0.0, 0.0, false),
            None => (Usage::default(), self.worst_case, 0.0, true),
        };
        if let Some(hold) = self.hold.lock().expect("not poisoned").take() {
            hold.settle(cost_usd);
        }
        let cache = self.cache_use();
        let ticket = self.ticket.lock().expect("not poisoned").take();
        if let (Some(ticket), Some(whole), false, false) = (ticket, whole, failed, worst) {
            // Only whole, metered successes are recorded (ARCHITECTURE.md, "Response cache").
            ticket.answered(whole, usage, cost_usd);
        }
        self.ledger.record(CallRecord {
            started_at_ms: self.started_at_ms,
            provider: self.provider.clone(),
            model: self.model.clone(),
            api: self.api,
            streamed: self.streamed,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            cost_usd,
            cost_is_worst_case: worst,
            latency_ms,
            time_to_first_token_ms: if time_to_first_token_ms > 0.0 {
                time_to_first_token_ms
            } else {
                latency_ms
            },
            retries: self.retries,
            status: if failed {
                CallStatus::Failed
            } else {
                CallStatus::Succeeded
            },
            cache,
            would_cost_usd: cost_usd,
            cached_from: None,
            tier,
            tier_saved_usd,
            tier_refusals: self.tier_refusals,
            error,
        });
    }
}

pub async fn respond_whole(
    upstream: reqwest::Response,
    api: Api,
    metering: Metering,
    stop: CallStopper,
) -> Response {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = relayed_headers(upstream.headers());
    let bytes = tokio::select! {
        bytes = upstream.bytes() => bytes.unwrap_or_default(),
        why = stop.wait() => {
            metering.record_cut_off(why.to_string());
            return refuse_in(api, &Refusal::Fenced(why.to_string()));
        }
    };
    if status.is_success() {
        let mut meter = Meter::default();
        if let Ok(object) = serde_json::from_slice::<Value>(&bytes) {
            meter.read(api, &object);
        }
        metering.record_as(
            meter.usage,
            meter.service_tier.as_deref(),
            None,
            0.0,
            Unmetered::WorstCase,
            Some(bytes.clone()),
        );
    } else {
        let message = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
        metering.record(
            None,
            Some(format!("provider answered {status}: {message}")),
            0.0,
        );
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Passes a stream on as it arrives, event by event, reading usage on the way.
pub fn respond_streaming(
    upstream: reqwest::Response,
    api: Api,
    client_wants_usage: bool,
    metering: Metering,
    permit: Permit,
    stop: CallStopper,
) -> Response {
    let headers = relayed_headers(upstream.headers());
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        // The concurrency slot is held until the stream ends.
        let _permit = permit;
        let separator: &[u8] = if api == Api::Ollama { b"\n" } else { b"\n\n" };
        let mut meter = Meter::default();
        let mut first_token_ms = 0.0;
        let mut pending: Vec<u8> = Vec::new();
        let mut chunks = upstream.bytes_stream();
        let mut failure = None;
        // Kept for the cache only when it missed.
        let mut events: Option<Vec<Value>> = metering.wants_answer().then(Vec::new);
        loop {
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                why = stop.wait() => {
                    failure = Some(why.to_string());
                    break;
                }
            };
            let Some(chunk) = chunk else { break };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    failure = Some(format!("the provider's stream broke: {error}"));
                    break;
                }
            };
            pending.extend_from_slice(&chunk);
            while let Some(end) = find(&pending, separator) {
                let event: Vec<u8> = pending.drain(..end + separator.len()).collect();
                let Some(object) = event_json(api, &event) else {
                    let _ = sender.send(Ok(Bytes::from(event))).await;
                    continue;
                };
                meter.read(api, &object);
                if let Some(events) = &mut events {
                    events.push(object.clone());
                }
                let usage_only = api == Api::Openai
                    && object.get("usage").is_some_and(|u| !u.is_null())
                    && object
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_none_or(|c| c.is_empty());
                if usage_only && !client_wants_usage {
                    continue;
                }
                if first_token_ms == 0.0 {
                    first_token_ms = metering.started.elapsed().as_secs_f64() * 1000.0;
                }
                if sender.send(Ok(Bytes::from(event))).await.is_err() {
                    failure = Some("the program stopped reading the stream".into());
                    break;
                }
            }
        }
        if !pending.is_empty() {
            let _ = sender.send(Ok(Bytes::from(pending))).await;
        }
        // A stream cut short is priced from what it reported, else at its
        // worst case: the provider may have generated up to the cap. Only a
        // whole stream is put together for the cache.
        let whole = events
            .filter(|_| failure.is_none())
            .and_then(|events| (metering.assemble)(&events))
            .map(|whole| Bytes::from(serde_json::to_vec(&whole).expect("JSON serialises")));
        let failed = failure.is_some();
        metering.record_as(
            meter.usage,
            meter.service_tier.as_deref(),
            failure.filter(|_| meter.usage.is_none()),
            first_token_ms,
            Unmetered::WorstCase,
            whole.filter(|_| !failed),
        );
    });
    let mut response = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
    ));
    *response.headers_mut() = headers;
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The JSON object an SSE event's `data:` carries, or an NDJSON line.
fn event_json(api: Api, event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    if api == Api::Ollama {
        return serde_json::from_str(text.trim()).ok();
    }
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:").map(str::trim_start))
        .collect();
    serde_json::from_str(&data.join("\n")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_each_api() {
        let mut meter = Meter::default();
        meter.read(Api::Openai, &serde_json::json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}}));
        assert_eq!(
            meter.usage,
            Some(Usage {
                input_tokens: 9,
                output_tokens: 2,
                cached_input_tokens: 4
            })
        );
        let mut meter = Meter::default();
        meter.read(Api::Anthropic, &serde_json::json!({"type": "message_start", "message": {"usage": {"input_tokens": 40, "output_tokens": 1, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 50}}}));
        meter.read(
            Api::Anthropic,
            &serde_json::json!({"type": "message_delta", "usage": {"output_tokens": 25}}),
        );
        assert_eq!(
            meter.usage,
            Some(Usage {
                input_tokens: 100,
                output_tokens: 25,
                cached_input_tokens: 50
            })
        );
        let mut meter = Meter::default();
        meter.read(
            Api::Ollama,
            &serde_json::json!({"done": false, "message": {"content": "x"}}),
        );
        assert_eq!(meter.usage, None);
        meter.read(
            Api::Ollama,
            &serde_json::json!({"done": true, "prompt_eval_count": 26, "eval_count": 282}),
        );
        assert_eq!(
            meter.usage,
            Some(Usage {
                input_tokens: 26,
                output_tokens: 282,
                cached_input_tokens: 0
            })
        );
    }
}
