//! Sending a prepared call: each attempt waits its turn under the worker's
//! rate limits; a 429 or a spent window (`*-remaining-requests: 0`) pauses
//! the key for every run of the worker; 429, 5xx and unreachable providers
//! are retried with exponential backoff and jitter (or the provider's hint).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::limits::{PauseCause, Permit};
use super::relay::{Prepared, TierPlan};
use super::Provider;
use crate::spend_lease::CallStop;
use crate::state::GatewayState;
use flotilla_shared::tier::{Tier, TierFallback};

/// Attempts after the first when the provider answers 429 or 5xx, or cannot be reached.
const RETRIES: u32 = 4;

/// Waits between attempts: doubling from 250 ms to at most 8 s, up to a
/// quarter less at random, unless the provider says how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(250),
            max: Duration::from_secs(8),
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (0-based); `jitter` in [0, 1).
    pub fn wait(self, retry: u32, hinted: Option<Duration>, jitter: f64) -> Duration {
        hinted.unwrap_or_else(|| {
            let doubled = (self.first * 2u32.saturating_pow(retry)).min(self.max);
            doubled.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 4.0)
        })
    }
}

/// Jitter in [0, 1) from the clock's nanoseconds.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// The last attempt's outcome, the retries it took, the tier it asked for
/// and how often the flex tier refused it, and the rate-limit permit (held
/// until a stream ends).
pub struct Sent {
    pub response: Result<reqwest::Response, NotAnswered>,
    pub retries: u32,
    pub tier_asked: Tier,
    pub tier_refusals: u32,
    pub permit: Permit,
}

/// Why a call has no answer from its provider.
#[derive(Debug)]
pub enum NotAnswered {
    /// The provider could not be reached: nothing was billed.
    Unreachable(reqwest::Error),
    /// The worker's spend lease ran out before the call went out: nothing
    /// was sent (ARCHITECTURE.md, invariant 8).
    Fenced(String),
    /// Cut off in flight: the provider may bill it.
    Stopped(CallStop),
}

/// The request going out: at which tier, as which bytes.
struct Attempt {
    tier: Tier,
    payload: axum::body::Bytes,
}

/// Sends `prepared`, retrying as the module says; an attempt goes out only
/// while the worker's spend lease holds, and is cut off when it runs out or
/// the call reaches its bound (ARCHITECTURE.md, invariant 8). A call at the
/// flex tier that the provider refuses for capacity falls back to the
/// standard tier at once, or waits and asks again, as its run says.
pub async fn send(
    gateway: &Arc<GatewayState>,
    prepared: &Prepared,
    seed: u64,
    started: Instant,
) -> Sent {
    let provider = &prepared.provider;
    let estimated_tokens = (prepared.payload.len() as u64).div_ceil(4).max(1);
    let backoff = Backoff::default();
    let mut retries = 0u32;
    let mut attempt = Attempt {
        tier: match prepared.tier {
            TierPlan::AsSent => Tier::Standard,
            TierPlan::Flex { .. } => Tier::Flex,
        },
        payload: prepared.payload.clone(),
    };
    let mut tier_refusals = 0u32;
    loop {
        let permit = gateway
            .limits
            .acquire(
                &provider.name,
                &prepared.model,
                provider.limits,
                provider.shares_limits,
                estimated_tokens,
            )
            .await;
        let request = provider.authorize(
            gateway
                .http
                .post(&prepared.url)
                .header("content-type", "application/json")
                .header("x-flotilla-seed", seed.to_string())
                .body(attempt.payload.clone()),
        );
        if let Err(why) = gateway.spend_lease.check() {
            return Sent {
                response: Err(NotAnswered::Fenced(why)),
                retries,
                tier_asked: attempt.tier,
                tier_refusals,
                permit,
            };
        }
        let stop = gateway.spend_lease.call_must_stop(started, prepared.bound);
        let response = tokio::select! {
            response = request.send() => response.map_err(NotAnswered::Unreachable),
            stop = stop => Err(NotAnswered::Stopped(stop)),
        };
        let response = match (&prepared.tier, attempt.tier, response) {
            (
                TierPlan::Flex {
                    fallback,
                    standard_payload,
                },
                Tier::Flex,
                Ok(answer),
            ) => {
                let (answer, refused) = read_tier_refusal(answer).await;
                if refused {
                    tier_refusals += 1;
                    let wait =
                        FLEX_WAIT.wait(tier_refusals - 1, retry_after(answer.headers()), jitter());
                    match fallback {
                        TierFallback::Standard => {
                            attempt = Attempt {
                                tier: Tier::Standard,
                                payload: standard_payload.clone(),
                            };
                            continue;
                        }
                        TierFallback::Wait if started.elapsed() + wait < prepared.bound => {
                            drop(permit);
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        TierFallback::Wait => {
                            // No capacity within the call's bound: the refusal goes to the program.
                            return Sent {
                                response: Ok(answer),
                                retries,
                                tier_asked: Tier::Flex,
                                tier_refusals,
                                permit,
                            };
                        }
                    }
                }
                Ok(answer)
            }
            (_, _, response) => response,
        };
        let retryable = match &response {
            Err(NotAnswered::Unreachable(_)) => true,
            Err(_) => false,
            Ok(response) => heed_limits(gateway, provider, &prepared.model, response),
        };
        if !retryable || retries >= RETRIES {
            return Sent {
                response,
                retries,
                tier_asked: attempt.tier,
                tier_refusals,
                permit,
            };
        }
        let hinted = response
            .as_ref()
            .ok()
            .and_then(|r| retry_after(r.headers()));
        drop(permit);
        tokio::time::sleep(backoff.wait(retries, hinted, jitter())).await;
        retries += 1;
    }
}

/// Waits between asks of a flex tier that has no capacity: from a second,
/// doubling to half a minute, unless the provider says how long.
const FLEX_WAIT: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(30),
};

/// Whether a flex answer is a refusal for capacity — OpenAI's 429 "resource
/// unavailable", Groq's 498 `capacity_exceeded` — rather than a rate limit
/// or an answer. Such a refusal is not billed. The answer comes back whole,
/// its body read if it may be one.
async fn read_tier_refusal(answer: reqwest::Response) -> (reqwest::Response, bool) {
    let status = answer.status();
    if status.as_u16() != 498 && status != StatusCode::TOO_MANY_REQUESTS {
        return (answer, false);
    }
    let mut rebuilt = axum::http::Response::builder().status(status.as_u16());
    for (name, value) in answer.headers() {
        rebuilt = rebuilt.header(name.as_str(), value.as_bytes());
    }
    let body = answer.bytes().await.unwrap_or_default();
    let refused = status.as_u16() == 498 || names_no_capacity(&body);
    let rebuilt = rebuilt
        .body(body)
        .expect("a received answer's status and headers are valid");
    (reqwest::Response::from(rebuilt), refused)
}

/// A 429's body that says the tier has no capacity, not that a limit was reached.
fn names_no_capacity(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    ["resource_unavailable", "resource unavailable", "capacity"]
        .iter()
        .any(|words| text.contains(words))
}

/// Pauses the key when the answer says the provider's window is spent or
/// it refused for rate; whether the answer is worth retrying.
fn heed_limits(
    gateway: &GatewayState,
    provider: &Provider,
    model: &str,
    response: &reqwest::Response,
) -> bool {
    let (status, now) = (response.status(), Instant::now());
    let pause = |until, cause| {
        gateway.limits.pause(
            &provider.name,
            model,
            provider.limits,
            provider.shares_limits,
            until,
            cause,
        )
    };
    if let Some(until) = exhausted_until(response.headers(), now) {
        pause(until, PauseCause::Exhausted);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after(response.headers()).unwrap_or(Duration::from_secs(1));
        pause(now + wait, PauseCause::Throttled);
    }
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_takes_hints() {
        let backoff = Backoff::default();
        assert_eq!(backoff.wait(0, None, 0.0), Duration::from_millis(250));
        assert_eq!(backoff.wait(2, None, 0.0), Duration::from_secs(1));
        assert_eq!(backoff.wait(9, None, 0.0), Duration::from_secs(8));
        assert_eq!(
            backoff.wait(0, None, 0.999),
            Duration::from_millis(250).mul_f64(1.0 - 0.999 / 4.0)
        );
        let hint = Some(Duration::from_millis(1234));
        assert_eq!(backoff.wait(3, hint, 0.5), Duration::from_millis(1234));
    }

    #[test]
    fn capacity_refusals_are_told_from_rate_limits() {
        assert!(names_no_capacity(
            br#"{"error": {"message": "Resource unavailable, try again later", "type": "resource_unavailable"}}"#
        ));
        assert!(names_no_capacity(
            br#"{"error": {"code": "capacity_exceeded"}}"#
        ));
        assert!(!names_no_capacity(
            br#"{"error": {"message": "Rate limit reached for requests", "code": "rate_limit_exceeded"}}"#
        ));
    }

    #[test]
    fn resets_read_as_providers_write_them() {
        assert_eq!(parse_reset("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
    }
}
