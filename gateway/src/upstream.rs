//! Calls to the providers of the providers file: the request goes on in its
//! own API with the provider's key and model name, paced by the worker's
//! rate-limit manager and retried with backoff on 429 and 5xx; the answer
//! comes back as the provider sent it (a stream as it streams), and the call
//! is metered from the usage the provider reports — or priced at its worst
//! case, and marked so, when that cannot be read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use tokio_stream::StreamExt;

use crate::answers::Call;
use crate::calls::{CallRecord, CallStatus, Usage};
use crate::limits::PauseCause;
use crate::pricing::Prices;
use crate::providers::{Provider, ProviderApi};
use crate::runs::RunLedger;
use crate::GatewayState;

/// Attempts after the first when the provider answers 429 or 5xx, or cannot be reached.
const RETRIES: u32 = 4;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
use crate::answers::OUTPUT_BOUND;

/// Which endpoint of which API a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    AnthropicMessages,
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
}

impl Endpoint {
    fn api(self) -> ProviderApi {
        match self {
            Endpoint::OpenAiChat | Endpoint::OpenAiCompletions | Endpoint::OpenAiEmbeddings => {
                ProviderApi::Openai
            }
            Endpoint::AnthropicMessages => ProviderApi::Anthropic,
            Endpoint::OllamaChat | Endpoint::OllamaGenerate | Endpoint::OllamaEmbed => {
                ProviderApi::Ollama
            }
        }
    }

    /// The path after the provider's base URL (OpenAI's base ends in /v1).
    fn path(self) -> &'static str {
        match self {
            Endpoint::OpenAiChat => "/chat/completions",
            Endpoint::OpenAiCompletions => "/completions",
            Endpoint::OpenAiEmbeddings => "/embeddings",
            Endpoint::AnthropicMessages => "/v1/messages",
            Endpoint::OllamaChat => "/api/chat",
            Endpoint::OllamaGenerate => "/api/generate",
            Endpoint::OllamaEmbed => "/api/embed",
        }
    }

    fn streams(self, body: &Value) -> bool {
        let asked = body.get("stream").and_then(Value::as_bool);
        match self.api() {
            // Ollama streams unless told not to.
            ProviderApi::Ollama => self != Endpoint::OllamaEmbed && asked.unwrap_or(true),
            _ => asked.unwrap_or(false),
        }
    }

    /// The output cap the request sets; embeddings produce no output tokens.
    pub(crate) fn output_cap(self, body: &Value) -> Option<u64> {
        let field = |pointer: &str| body.pointer(pointer).and_then(Value::as_u64);
        if matches!(self, Endpoint::OpenAiEmbeddings | Endpoint::OllamaEmbed) {
            return Some(0);
        }
        match self.api() {
            ProviderApi::Openai => field("/max_completion_tokens").or_else(|| field("/max_tokens")),
            ProviderApi::Anthropic => field("/max_tokens"),
            ProviderApi::Ollama => field("/options/num_predict"),
        }
    }

    /// Sets the output cap on a request that has none, so that the worst
    /// case the budget holds is a bound on what the call can cost.
    fn cap_output(self, body: &mut Value, provider: &Provider) {
        if self.output_cap(body).is_some() {
            return;
        }
        match self {
            Endpoint::OpenAiChat if provider.base_url.contains("api.openai.com") => {
                // OpenAI's reasoning models accept only the newer name.
                body["max_completion_tokens"] = Value::from(OUTPUT_BOUND);
            }
            Endpoint::OpenAiChat | Endpoint::OpenAiCompletions | Endpoint::AnthropicMessages => {
                body["max_tokens"] = Value::from(OUTPUT_BOUND);
            }
            Endpoint::OllamaChat | Endpoint::OllamaGenerate => {
                if !body.get("options").is_some_and(Value::is_object) {
                    body["options"] = serde_json::json!({});
                }
                body["options"]["num_predict"] = Value::from(OUTPUT_BOUND);
            }
            Endpoint::OpenAiEmbeddings | Endpoint::OllamaEmbed => {}
        }
    }
}

/// Why a call cannot go upstream, in words for the API's error shape.
pub enum Refused {
    WrongApi(String),
    NoPrice(String),
    OverBudget(crate::spend::BudgetRefusal),
}

/// What the provider's answer said it used, read as it streams by.
#[derive(Default)]
struct Meter {
    usage: Option<Usage>,
}

impl Meter {
    /// Reads usage from one JSON object of the answer (a whole body, an SSE
    /// event's data or an NDJSON line).
    fn read(&mut self, api: ProviderApi, object: &Value) {
        let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_u64);
        match api {
            ProviderApi::Openai => {
                if let Some(prompt) = number("/usage/prompt_tokens") {
                    self.usage = Some(Usage {
                        input_tokens: prompt,
                        output_tokens: number("/usage/completion_tokens").unwrap_or(0),
                        cached_input_tokens: number("/usage/prompt_tokens_details/cached_tokens")
                            .unwrap_or(0),
                    });
                }
            }
            ProviderApi::Anthropic => {
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
            ProviderApi::Ollama => {
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

/// How long the provider asks to wait: `retry-after-ms`, else `retry-after` seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        .or_else(|| {
            text("retry-after")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|s| Duration::from_secs_f64(s.max(0.0)))
        })
}

/// When a `*-remaining-requests` header at zero says the provider's window is
/// spent: until its reset (Go-style `1.5s`/`250ms`, or seconds).
fn exhausted_until(headers: &reqwest::header::HeaderMap, now: Instant) -> Option<Instant> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let remaining = text("x-ratelimit-remaining-requests")
        .or_else(|| text("anthropic-ratelimit-requests-remaining"))?;
    if remaining.trim() != "0" {
        return None;
    }
    let reset = text("x-ratelimit-reset-requests")
        .and_then(parse_reset)
        .unwrap_or(Duration::from_secs(1));
    Some(now + reset)
}

fn parse_reset(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Some(ms) = text.strip_suffix("ms") {
        return ms
            .parse::<f64>()
            .ok()
            .map(|v| Duration::from_secs_f64(v / 1000.0));
    }
    if let Some(seconds) = text.strip_suffix('s') {
        // `6m0s`: minutes then seconds.
        let (minutes, seconds) = match seconds.split_once('m') {
            Some((m, s)) => (m.parse::<f64>().ok()?, s.parse::<f64>().ok()?),
            None => (0.0, seconds.parse::<f64>().ok()?),
        };
        return Some(Duration::from_secs_f64(minutes * 60.0 + seconds));
    }
    text.parse::<f64>().ok().map(Duration::from_secs_f64)
}

/// Sends `body` to `provider` for `model`, pacing, retrying and metering; the
/// answer (or the provider's last error, unchanged) goes back to the program.
#[allow(clippy::too_many_arguments)]
pub async fn relay(
    gateway: &Arc<GatewayState>,
    ledger: Arc<RunLedger>,
    provider: Arc<Provider>,
    model: String,
    endpoint: Endpoint,
    mut body: Value,
    call: &Call,
    client_wants_usage: bool,
) -> Result<Response, Refused> {
    if provider.api != endpoint.api() {
        return Err(Refused::WrongApi(format!(
            "provider '{}' speaks the {} API; call its models with the {} client",
            provider.name,
            provider.api.as_str(),
            provider.api.as_str()
        )));
    }
    // The experiment's price first, then the providers file's, then the table's.
    let prices = ledger.prices.get(&call.model).copied().or_else(|| provider.price_of(&model)).ok_or_else(|| {
        Refused::NoPrice(format!(
            "no price is known for {}/{model}; add it under the provider's prices in the providers file (dollars per million tokens)",
            provider.name
        ))
    })?;
    let streams = endpoint.streams(&body);
    body["model"] = Value::from(model.clone());
    endpoint.cap_output(&mut body, &provider);
    if streams && endpoint.api() == ProviderApi::Openai {
        // Usage comes only if asked for; the extra chunk is passed on only if
        // the program asked for it, so a streamed call costs what it would unstreamed.
        body["stream_options"]["include_usage"] = Value::Bool(true);
    }
    let payload = Bytes::from(body.to_string());
    // Bytes bound the prompt's tokens for byte-level tokenizers.
    let worst_case = prices.cost(&Usage {
        input_tokens: payload.len() as u64,
        output_tokens: endpoint.output_cap(&body).unwrap_or(OUTPUT_BOUND),
        cached_input_tokens: 0,
    });
    // Held until the call is metered (ARCHITECTURE.md, invariant 1).
    let hold = ledger
        .spend
        .hold(worst_case)
        .await
        .map_err(Refused::OverBudget)?;
    let hold = std::sync::Mutex::new(Some(hold));
    let estimated_tokens = (payload.len() as u64).div_ceil(4).max(1);
    let url = format!("{}{}", provider.base_url, endpoint.path());
    let mut attempt = 0u32;
    loop {
        let permit = gateway
            .limits
            .acquire(
                &provider.name,
                &model,
                provider.limits,
                provider.shares_limits,
                estimated_tokens,
            )
            .await;
        let mut request = gateway
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-flotilla-seed", ledger.seed.to_string())
            .body(payload.clone());
        if let Some(key) = &provider.api_key {
            request = match provider.api {
                ProviderApi::Anthropic => request
                    .header("x-api-key", key)
                    .header("anthropic-version", "2023-06-01"),
                ProviderApi::Openai | ProviderApi::Ollama => request.bearer_auth(key),
            };
        } else if provider.api == ProviderApi::Anthropic {
            request = request.header("anthropic-version", "2023-06-01");
        }
        let sent = request.send().await;
        let now = Instant::now();
        let retryable = match &sent {
            Err(_) => true,
            Ok(response) => {
                let status = response.status();
                if let Some(until) = exhausted_until(response.headers(), now) {
                    gateway.limits.pause(
                        &provider.name,
                        &model,
                        provider.limits,
                        provider.shares_limits,
                        until,
                        PauseCause::Exhausted,
                    );
                }
                if status == StatusCode::TOO_MANY_REQUESTS {
                    let wait = retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
                    gateway.limits.pause(
                        &provider.name,
                        &model,
                        provider.limits,
                        provider.shares_limits,
                        now + wait,
                        PauseCause::Throttled,
                    );
                }
                status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
        };
        if retryable && attempt < RETRIES {
            let hinted = sent.as_ref().ok().and_then(|r| retry_after(r.headers()));
            let backoff = (BACKOFF_FIRST * 2u32.pow(attempt)).min(BACKOFF_MAX);
            // Jitter: up to a quarter off, from the clock's nanoseconds.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let jitter = f64::from(nanos % 1000) / 4000.0;
            drop(permit);
            tokio::time::sleep(hinted.unwrap_or(backoff.mul_f64(1.0 - jitter))).await;
            attempt += 1;
            continue;
        }
        let context = Metering {
            ledger: ledger.clone(),
            provider: provider.name.clone(),
            model: model.clone(),
            api: call.api,
            prices,
            worst_case,
            started: call.started,
            started_at_ms: call.started_at_ms,
            retries: attempt,
            streamed: streams,
            hold,
        };
        return Ok(match sent {
            Err(error) => {
                let message = format!("cannot reach provider '{}': {error}", provider.name);
                context.record(None, Some(message.clone()), 0.0);
                // In the error shape of the API the program speaks.
                let body = match endpoint.api() {
                    ProviderApi::Openai => {
                        serde_json::json!({"error": {"message": message, "type": "api_error", "param": null, "code": "upstream_unreachable"}})
                    }
                    ProviderApi::Anthropic => {
                        serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
                    }
                    ProviderApi::Ollama => serde_json::json!({"error": message}),
                };
                let mut response = Response::new(Body::from(body.to_string()));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                response
            }
            Ok(response) if !response.status().is_success() || !streams => {
                respond_whole(response, endpoint.api(), context).await
            }
            Ok(response) => respond_streaming(
                response,
                endpoint.api(),
                client_wants_usage,
                context,
                permit,
            ),
        });
    }
}

/// What recording a relayed call needs.
struct Metering {
    ledger: Arc<RunLedger>,
    provider: String,
    model: String,
    api: crate::calls::LlmApi,
    prices: Prices,
    worst_case: f64,
    started: Instant,
    started_at_ms: i64,
    retries: u32,
    streamed: bool,
    /// The call's worst case, held in the run's budget until it is metered.
    hold: std::sync::Mutex<Option<crate::spend::SpendHold>>,
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
    /// Records the call: priced from `usage`; without usage, free if the
    /// provider refused it, else at its worst case. The budget's hold becomes
    /// that cost.
    fn record(&self, usage: Option<Usage>, error: Option<String>, time_to_first_token_ms: f64) {
        let unmetered = if error.is_some() {
            Unmetered::Free
        } else {
            Unmetered::WorstCase
        };
        self.record_as(usage, error, time_to_first_token_ms, unmetered);
    }

    fn record_as(
        &self,
        usage: Option<Usage>,
        error: Option<String>,
        time_to_first_token_ms: f64,
        unmetered: Unmetered,
    ) {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let failed = error.is_some();
        let (usage, cost_usd, worst) = match usage {
            Some(usage) => (usage, self.prices.cost(&usage), false),
            None if unmetered == Unmetered::Free => (Usage::default(), 0.0, false),
            None => (Usage::default(), self.worst_case, true),
        };
        if let Some(hold) = self.hold.lock().expect("not poisoned").take() {
            hold.settle(cost_usd);
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
            error,
        });
    }
}

async fn respond_whole(
    upstream: reqwest::Response,
    api: ProviderApi,
    context: Metering,
) -> Response {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = relayed_headers(upstream.headers());
    let bytes = upstream.bytes().await.unwrap_or_default();
    if status.is_success() {
        let mut meter = Meter::default();
        if let Ok(object) = serde_json::from_slice::<Value>(&bytes) {
            meter.read(api, &object);
        }
        context.record(meter.usage, None, 0.0);
    } else {
        let message = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
        context.record(
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
fn respond_streaming(
    upstream: reqwest::Response,
    api: ProviderApi,
    client_wants_usage: bool,
    context: Metering,
    permit: crate::limits::Permit,
) -> Response {
    let headers = relayed_headers(upstream.headers());
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        // The concurrency slot is held until the stream ends.
        let _permit = permit;
        let separator: &[u8] = if api == ProviderApi::Ollama {
            b"\n"
        } else {
            b"\n\n"
        };
        let mut meter = Meter::default();
        let mut first_token_ms = 0.0;
        let mut pending: Vec<u8> = Vec::new();
        let mut chunks = upstream.bytes_stream();
        let mut failure = None;
        while let Some(chunk) = chunks.next().await {
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
                let usage_only = api == ProviderApi::Openai
                    && object.get("usage").is_some_and(|u| !u.is_null())
                    && object
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_none_or(|c| c.is_empty());
                if usage_only && !client_wants_usage {
                    continue;
                }
                if first_token_ms == 0.0 {
                    first_token_ms = context.started.elapsed().as_secs_f64() * 1000.0;
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
        // worst case: the provider may have generated up to the cap.
        context.record_as(
            meter.usage,
            failure.filter(|_| meter.usage.is_none()),
            first_token_ms,
            Unmetered::WorstCase,
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
fn event_json(api: ProviderApi, event: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(event).ok()?;
    if api == ProviderApi::Ollama {
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
    fn resets_read_as_providers_write_them() {
        assert_eq!(parse_reset("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
    }

    #[test]
    fn usage_is_read_from_each_api() {
        let mut meter = Meter::default();
        meter.read(ProviderApi::Openai, &serde_json::json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}}));
        assert_eq!(
            meter.usage,
            Some(Usage {
                input_tokens: 9,
                output_tokens: 2,
                cached_input_tokens: 4
            })
        );
        let mut meter = Meter::default();
        meter.read(ProviderApi::Anthropic, &serde_json::json!({"type": "message_start", "message": {"usage": {"input_tokens": 40, "output_tokens": 1, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 50}}}));
        meter.read(
            ProviderApi::Anthropic,
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
            ProviderApi::Ollama,
            &serde_json::json!({"done": false, "message": {"content": "x"}}),
        );
        assert_eq!(meter.usage, None);
        meter.read(
            ProviderApi::Ollama,
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
