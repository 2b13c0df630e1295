//! `flotilla sim-server`: the sim models over HTTP with the OpenAI, Anthropic
//! and Ollama APIs, for anyone who calls (no run tokens), with the limits a
//! provider enforces: over-limit calls get 429 with `Retry-After` and the
//! providers' rate-limit headers. Tests and benchmarks point workers at it as
//! a realistic upstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::apis::refuse_in;
use crate::call::{Api, Refusal};
use crate::providers::limits::{Gcra, Limits};
use crate::sim::{self, SimModel};

/// How the sim-server behaves.
#[derive(Debug, Clone, Default)]
pub struct SimServerSettings {
    /// Applied per model, as providers do.
    pub limits: Limits,
    /// Added to every answer before it is sent (a model's own latency replaces it).
    pub latency: Duration,
    /// Models served under names of their own (`--config`), besides `sim/…`.
    pub models: Vec<ServedModel>,
}

/// A model the sim-server serves under a name of its own, as a provider or
/// an Ollama host would (`llama3.2`), answering like one of the sim models.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModel {
    pub name: String,
    pub answers: SimModel,
    /// Each answer takes a time drawn evenly from this range.
    pub latency: (Duration, Duration),
    /// Shares of calls answered 500 and 429, drawn from the conversation.
    pub error_rate: f64,
    pub rate_limit_rate: f64,
    /// How it counts tokens: one per this many bytes.
    pub bytes_per_token: u64,
    /// Offered at the flex tier (`service_tier: "flex"`), and how.
    pub flex: Option<FlexOffer>,
}

/// How a served model answers at the flex tier: slower, and refusing a
/// share of calls for capacity ("resource unavailable", not billed).
#[derive(Debug, Clone, PartialEq)]
pub struct FlexOffer {
    /// Each flex answer takes a time drawn evenly from this range, instead of the model's.
    pub latency: (Duration, Duration),
    /// Share of flex calls refused, drawn afresh for every attempt.
    pub refusal_rate: f64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    models: Vec<RawModel>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    answers: String,
    #[serde(default)]
    latency: Option<String>,
    #[serde(default)]
    latency_max: Option<String>,
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    rate_limit_rate: f64,
    #[serde(default)]
    bytes_per_token: Option<u64>,
    #[serde(default)]
    flex: Option<RawFlex>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlex {
    #[serde(default)]
    latency: Option<String>,
    #[serde(default)]
    latency_max: Option<String>,
    #[serde(default)]
    refusal_rate: f64,
}

/// Reads a sim-server `--config` file:
///
/// ```yaml
/// models:
///   - {name: llama3.2, answers: tit-for-tat, latency: 20ms, latency_max: 40ms,
///      error_rate: 0.01, rate_limit_rate: 0.02, bytes_per_token: 3,
///      flex: {latency: 60ms, latency_max: 120ms, refusal_rate: 0.1}}
/// ```
pub fn parse_config(yaml: &str, file: &str) -> Result<Vec<ServedModel>, String> {
    let raw: RawConfig = serde_saphyr::from_str(yaml).map_err(|e| format!("{file}: {e}"))?;
    raw.models
        .into_iter()
        .enumerate()
        .map(|(index, model)| {
            let at =
                |message: String| format!("{file}: models[{index}] ({}): {message}", model.name);
            let answers = SimModel::named(&model.answers).ok_or_else(|| {
                at(format!(
                    "answers '{}' is no sim model; valid: {}",
                    model.answers,
                    SimModel::names().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let duration = |text: &Option<String>| -> Result<Duration, String> {
                text.as_deref()
                    .map(flotilla_shared::duration::parse_duration)
                    .transpose()
                    .map(Option::unwrap_or_default)
                    .map_err(|e| at(format!("latency: {e}")))
            };
            let range = |low: &Option<String>, high: &Option<String>, what: &str| {
                let low = duration(low)?;
                let high = if high.is_some() { duration(high)? } else { low };
                if high < low {
                    return Err(at(format!(
                        "{what}latency_max must not be below {what}latency"
                    )));
                }
                Ok((low, high))
            };
            let latency = range(&model.latency, &model.latency_max, "")?;
            let flex = model
                .flex
                .as_ref()
                .map(|flex| {
                    range(&flex.latency, &flex.latency_max, "flex.").map(|latency| FlexOffer {
                        latency,
                        refusal_rate: flex.refusal_rate,
                    })
                })
                .transpose()?;
            for (what, rate) in [
                ("error_rate", model.error_rate),
                ("rate_limit_rate", model.rate_limit_rate),
                (
                    "flex.refusal_rate",
                    flex.as_ref().map_or(0.0, |f| f.refusal_rate),
                ),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(at(format!(
                        "{what} must be a share from 0 to 1, not {rate}"
                    )));
                }
            }
            if model.bytes_per_token == Some(0) {
                return Err(at("bytes_per_token must be at least 1".into()));
            }
            Ok(ServedModel {
                name: model.name.clone(),
                answers,
                latency,
                flex,
                error_rate: model.error_rate,
                rate_limit_rate: model.rate_limit_rate,
                bytes_per_token: model.bytes_per_token.unwrap_or(4),
            })
        })
        .collect()
}

/// The sim-server's own state: its settings and each model's limiters.
pub struct SimServer {
    pub settings: SimServerSettings,
    limiters: Mutex<HashMap<String, ModelLimiters>>,
    in_flight: AtomicU64,
    /// Calls answered with 429, for benchmarks.
    pub refused: AtomicU64,
    pub served: AtomicU64,
    /// Calls admitted within the limits, counted as they begin: a provider
    /// bills a call whose client went away before the answer.
    pub billed: AtomicU64,
    /// Of those, calls at the flex tier; and flex calls refused for capacity.
    pub billed_flex: AtomicU64,
    pub refused_flex: AtomicU64,
    /// Numbers each flex attempt, so that a call asked again may be served.
    flex_attempts: AtomicU64,
}

struct ModelLimiters {
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
}

/// Which API a request speaks, from its path: it decides the error shape.
fn api_of(path: &str) -> Api {
    if path.starts_with("/v1/messages") {
        Api::Anthropic
    } else if path.starts_with("/api/") {
        Api::Ollama
    } else {
        Api::Openai
    }
}

/// Why a call is over a limit, and when to come back.
struct OverLimit {
    what: &'static str,
    retry_after: Duration,
    limit: u64,
}

impl SimServer {
    pub fn new(settings: SimServerSettings) -> Self {
        SimServer {
            settings,
            limiters: Mutex::new(HashMap::new()),
            in_flight: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            served: AtomicU64::new(0),
            billed: AtomicU64::new(0),
            billed_flex: AtomicU64::new(0),
            refused_flex: AtomicU64::new(0),
            flex_attempts: AtomicU64::new(0),
        }
    }

    /// `{"served": N, "refused": M, "billed": B, "billed_flex": F,
    /// "refused_flex": R}`: calls answered, refused with 429 for a limit,
    /// begun within the limits (answered or not), begun at the flex tier,
    /// and refused by the flex tier for capacity.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "served": self.served.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "billed": self.billed.load(Ordering::Relaxed),
            "billed_flex": self.billed_flex.load(Ordering::Relaxed),
            "refused_flex": self.refused_flex.load(Ordering::Relaxed),
        })
    }

    /// Takes a request and its tokens from the model's limits, or says which limit it exceeds.
    fn admit(&self, model: &str, tokens: u64, now: Instant) -> Result<(u64, Duration), OverLimit> {
        let limits = self.settings.limits;
        let mut all = self.limiters.lock().expect("not poisoned");
        let limiters = all
            .entry(model.to_string())
            .or_insert_with(|| ModelLimiters {
                // A second's worth of burst: a client pacing at the rate never hits 429.
                requests: limits
                    .requests_per_minute
                    .map(|rpm| Gcra::per_minute(rpm, rpm.div_ceil(60), now)),
                tokens: limits
                    .tokens_per_minute
                    .map(|tpm| Gcra::per_minute(tpm, tpm.div_ceil(60).max(tokens), now)),
            });
        if let (Some(gcra), Some(limit)) = (&limiters.tokens, limits.tokens_per_minute) {
            let mut probe = gcra.clone();
            if let Err(wait) = probe.try_take(now, tokens) {
                return Err(OverLimit {
                    what: "tokens",
                    retry_after: wait,
                    limit,
                });
            }
        }
        let remaining = match (&mut limiters.requests, limits.requests_per_minute) {
            (Some(gcra), Some(limit)) => {
                gcra.try_take(now, 1).map_err(|wait| OverLimit {
                    what: "requests",
                    retry_after: wait,
                    limit,
                })?;
                (gcra.remaining(now), gcra.reset_in(now))
            }
            _ => (u64::MAX, Duration::ZERO),
        };
        if let Some(gcra) = &mut limiters.tokens {
            let _ = gcra.try_take(now, tokens);
        }
        Ok(remaining)
    }
}

/// Retry-After in whole seconds (at least 1), and `retry-after-ms` exactly.
fn retry_headers(response: &mut Response, wait: Duration) {
    let headers = response.headers_mut();
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    headers.insert("retry-after", HeaderValue::from(seconds));
    headers.insert(
        "retry-after-ms",
        HeaderValue::from(wait.as_millis().max(1) as u64),
    );
}

/// A Go-style duration (`1.5s`, `250ms`), as OpenAI's reset headers are written.
fn go_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

fn limit_headers(response: &mut Response, api: Api, limit: u64, remaining: u64, reset: Duration) {
    let now_ms = flotilla_shared::clock::now_ms() + reset.as_millis() as i64;
    let (names, reset_value) = match api {
        Api::Anthropic => (
            [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ],
            flotilla_shared::clock::rfc3339(now_ms),
        ),
        Api::Openai | Api::Ollama => (
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
            go_duration(reset),
        ),
    };
    let headers = response.headers_mut();
    for (name, value) in
        names
            .into_iter()
            .zip([limit.to_string(), remaining.to_string(), reset_value])
    {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

fn too_many(api: Api, over: &OverLimit) -> Response {
    let message = format!(
        "rate limit reached: {} per minute ({}); retry after {:.3}s",
        over.what,
        over.limit,
        over.retry_after.as_secs_f64()
    );
    let mut response = refuse_in(api, &Refusal::RateLimited(message));
    retry_headers(&mut response, over.retry_after);
    limit_headers(&mut response, api, over.limit, 0, over.retry_after);
    response
}

impl SimServer {
    /// A call admitted within the limits begins: a POST is billed from here
    /// (unless the flex tier refuses it first), then the model's latency and
    /// simulated failures follow.
    async fn begin(
        &self,
        method: &axum::http::Method,
        model: &str,
        request: &[u8],
        flex: bool,
    ) -> Option<Refusal> {
        let served = self.settings.models.iter().find(|m| m.name == model);
        let offer = match (flex, served.and_then(|m| m.flex.as_ref())) {
            (false, _) => None,
            (true, Some(offer)) => Some(offer),
            (true, None) => {
                return Some(Refusal::BadRequest(format!(
                    "the model {model} is not offered at service_tier 'flex'"
                )))
            }
        };
        if let Some(offer) = offer {
            let attempt = self.flex_attempts.fetch_add(1, Ordering::Relaxed);
            let text = format!("{attempt} {}", String::from_utf8_lossy(request));
            let draw = (sim::draw_text(&text) % 1_000_000) as f64 / 1_000_000.0;
            if draw < offer.refusal_rate {
                self.refused_flex.fetch_add(1, Ordering::Relaxed);
                return Some(Refusal::NoCapacity(
                    "Resource unavailable: the flex tier has no capacity for this request now; retry later or send it without service_tier 'flex'".into(),
                ));
            }
            self.billed_flex.fetch_add(1, Ordering::Relaxed);
        }
        if method == axum::http::Method::POST {
            self.billed.fetch_add(1, Ordering::Relaxed);
        }
        self.simulate(served, offer, request).await
    }

    /// Waits the model's latency (its flex latency at the flex tier) and
    /// draws whether the call fails as the model's `--config` says (a 429 or
    /// a 500); failures are drawn from the request itself, so a run repeats them.
    async fn simulate(
        &self,
        served: Option<&ServedModel>,
        flex: Option<&FlexOffer>,
        request: &[u8],
    ) -> Option<Refusal> {
        let draw =
            (sim::draw_text(&String::from_utf8_lossy(request)) % 1_000_000) as f64 / 1_000_000.0;
        let within = |(low, high): (Duration, Duration)| low + (high - low).mul_f64(draw);
        let latency = match (served, flex) {
            (_, Some(offer)) => within(offer.latency),
            (Some(m), None) => within(m.latency),
            (None, None) => self.settings.latency,
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let m = served?;
        if draw < m.rate_limit_rate {
            Some(Refusal::RateLimited(String::new()))
        } else if draw < m.rate_limit_rate + m.error_rate {
            Some(Refusal::ServerError("simulated server error".into()))
        } else {
            None
        }
    }
}

/// A simulated failure in the API's shape; a simulated 429 counts as refused.
fn refuse_simulated(api: Api, refusal: Refusal, server: &SimServer) -> Response {
    match refusal {
        Refusal::RateLimited(_) => {
            server.refused.fetch_add(1, Ordering::Relaxed);
            too_many(
                api,
                &OverLimit {
                    what: "requests (simulated)",
                    retry_after: Duration::from_millis(200),
                    limit: 0,
                },
            )
        }
        Refusal::NoCapacity(_) => {
            let mut response = refuse_in(api, &refusal);
            retry_headers(&mut response, FLEX_RETRY_AFTER);
            response
        }
        other => refuse_in(api, &other),
    }
}

/// When a flex call refused for capacity is told to come back.
const FLEX_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Runs before every API handler of a sim-server (and only there: the
/// sim-server's router has it, a worker's gateway does not): limits, then latency.
pub async fn enforce(
    State(server): State<Arc<SimServer>>,
    request: Request,
    next: Next,
) -> Response {
    let api = api_of(request.uri().path());
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, 64 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request too large").into_response();
    };
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let flex = parsed.get("service_tier").and_then(Value::as_str) == Some("flex");
    // What the call will cost in tokens, counted as the sim counts them.
    let tokens = (bytes.len() as u64).div_ceil(4).max(1);
    if let Some(cap) = server.settings.limits.concurrency {
        if server.in_flight.fetch_add(1, Ordering::SeqCst) >= cap {
            server.in_flight.fetch_sub(1, Ordering::SeqCst);
            server.refused.fetch_add(1, Ordering::Relaxed);
            let over = OverLimit {
                what: "concurrent requests",
                retry_after: Duration::from_millis(100),
                limit: cap,
            };
            return too_many(api, &over);
        }
    } else {
        server.in_flight.fetch_add(1, Ordering::SeqCst);
    }
    let admitted = if parts.method == axum::http::Method::POST {
        server.admit(&model, tokens, Instant::now())
    } else {
        Ok((u64::MAX, Duration::ZERO))
    };
    let response = match admitted {
        Err(over) => {
            server.refused.fetch_add(1, Ordering::Relaxed);
            too_many(api, &over)
        }
        Ok((remaining, reset)) => match server.begin(&parts.method, &model, &bytes, flex).await {
            Some(refusal) => refuse_simulated(api, refusal, &server),
            None => {
                server.served.fetch_add(1, Ordering::Relaxed);
                let mut response = next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
                if let Some(limit) = server.settings.limits.requests_per_minute {
                    limit_headers(&mut response, api, limit, remaining, reset);
                }
                response
            }
        },
    };
    server.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_offered_at_flex_says_how_slow_and_how_often_refused() {
        let models = parse_config(
            "models:\n  - {name: small, answers: echo, latency: 10ms,\n     flex: {latency: 40ms, latency_max: 80ms, refusal_rate: 0.25}}\n",
            "sim.yaml",
        )
        .unwrap();
        assert_eq!(
            models[0].flex,
            Some(FlexOffer {
                latency: (Duration::from_millis(40), Duration::from_millis(80)),
                refusal_rate: 0.25,
            })
        );
        let share = parse_config(
            "models:\n  - {name: small, answers: echo, flex: {refusal_rate: 2}}\n",
            "sim.yaml",
        );
        assert!(share
            .unwrap_err()
            .contains("flex.refusal_rate must be a share from 0 to 1"));
        let slower = parse_config(
            "models:\n  - {name: small, answers: echo, flex: {latency: 2s, latency_max: 1s}}\n",
            "sim.yaml",
        );
        assert!(slower
            .unwrap_err()
            .contains("flex.latency_max must not be below flex.latency"));
    }

    #[test]
    fn durations_read_as_openai_writes_them() {
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.500s");
    }
}
