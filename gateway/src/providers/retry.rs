//! Sending a prepared call: each attempt waits its turn under the worker's
//! rate limits; a 429 or a spent window (`*-remaining-requests: 0`) pauses
//! the key for every run of the worker; 429, 5xx and unreachable providers
//! are retried with exponential backoff and jitter (or the provider's hint).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::limits::{PauseCause, Permit};
use super::relay::Prepared;
use super::Provider;
use crate::spend_lease::{CallStop, CALL_BOUND};
use crate::state::GatewayState;

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

/// The last attempt's outcome, the retries it took, and the rate-limit
/// permit (held until a stream ends).
pub struct Sent {
    pub response: Result<reqwest::Response, NotAnswered>,
    pub retries: u32,
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

/// Sends `prepared`, retrying as the module says; an attempt goes out only
/// while the worker's spend lease holds, and is cut off when it runs out or
/// the call reaches its bound (ARCHITECTURE.md, invariant 8).
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
                .body(prepared.payload.clone()),
        );
        if let Err(why) = gateway.spend_lease.check() {
            return Sent {
                response: Err(NotAnswered::Fenced(why)),
                retries,
                permit,
            };
        }
        let response = tokio::select! {
            response = request.send() => response.map_err(NotAnswered::Unreachable),
            stop = gateway.spend_lease.call_must_stop(started, CALL_BOUND) => {
                Err(NotAnswered::Stopped(stop))
            }
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
    fn resets_read_as_providers_write_them() {
        assert_eq!(parse_reset("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_reset("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("2"), Some(Duration::from_secs(2)));
    }
}
