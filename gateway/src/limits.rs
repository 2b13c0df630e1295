//! Rate limits: GCRA (the generic cell rate algorithm) for requests and
//! tokens per minute, and concurrency. The sim-server enforces them as a
//! provider would, answering over-limit calls with 429; the worker's
//! rate-limit manager paces its calls under them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits a provider declares for one model (or the sim-server applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrency: Option<u64>,
}

/// GCRA over a rate per minute with a burst of `burst` units: a unit
/// conforms if it arrives no earlier than the theoretical arrival time less
/// the burst tolerance.
#[derive(Debug, Clone)]
pub struct Gcra {
    /// Time one unit takes at the rate.
    interval: Duration,
    /// How far ahead of the rate a burst may run.
    tolerance: Duration,
    theoretical_arrival: Instant,
}

impl Gcra {
    pub fn per_minute(rate: u64, burst: u64, now: Instant) -> Self {
        let interval = Duration::from_secs(60) / rate.max(1) as u32;
        Gcra {
            interval,
            tolerance: interval * (burst.max(1) - 1) as u32,
            theoretical_arrival: now,
        }
    }

    /// Takes `units` if they conform now; otherwise says how long until they would.
    pub fn try_take(&mut self, now: Instant, units: u64) -> Result<(), Duration> {
        let due = self.theoretical_arrival.max(now);
        let allowed_from = (due + self.interval * units.saturating_sub(1) as u32)
            .checked_sub(self.tolerance)
            .unwrap_or(now);
        if allowed_from > now {
            return Err(allowed_from - now);
        }
        self.theoretical_arrival = due + self.interval * units as u32;
        Ok(())
    }

    /// When all burst capacity is back: for `*-reset` headers.
    pub fn reset_in(&self, now: Instant) -> Duration {
        self.theoretical_arrival.saturating_duration_since(now)
    }

    /// Units that would conform right now: for `*-remaining` headers.
    pub fn remaining(&self, now: Instant) -> u64 {
        let used = self.theoretical_arrival.saturating_duration_since(now);
        let spare = (self.tolerance + self.interval).saturating_sub(used);
        (spare.as_nanos() / self.interval.as_nanos().max(1)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_without_burst_spaces_units_evenly() {
        let start = Instant::now();
        let mut gcra = Gcra::per_minute(600, 1, start);
        assert!(gcra.try_take(start, 1).is_ok());
        let wait = gcra.try_take(start, 1).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(gcra.try_take(start + Duration::from_millis(100), 1).is_ok());
    }

    #[test]
    fn a_burst_may_run_ahead_then_the_rate_holds() {
        let start = Instant::now();
        let mut gcra = Gcra::per_minute(60, 10, start);
        for _ in 0..10 {
            assert!(gcra.try_take(start, 1).is_ok());
        }
        assert_eq!(gcra.remaining(start), 0);
        assert_eq!(gcra.try_take(start, 1).unwrap_err(), Duration::from_secs(1));
        // Tokens: 1,000 per minute, a call of 300 fits three times in a burst of 1,000.
        let mut tokens = Gcra::per_minute(1000, 1000, start);
        for _ in 0..3 {
            assert!(tokens.try_take(start, 300).is_ok());
        }
        assert!(tokens.try_take(start, 300).is_err());
        assert_eq!(tokens.remaining(start), 100);
    }
}

/// One worker's rate-limit manager: per provider and model, calls wait for
/// their turn under the requests and tokens per minute (GCRA without burst,
/// so calls are spaced evenly) and the concurrency, and a key is paused for
/// every run on the worker when the provider says so (429, `Retry-After`, a
/// `*-remaining-*` header at zero).
#[derive(Default)]
pub struct RateLimitManager {
    keys: std::sync::Mutex<HashMap<(String, String), Arc<KeyState>>>,
}

struct KeyState {
    pacing: std::sync::Mutex<Pacing>,
    concurrency: Option<Arc<tokio::sync::Semaphore>>,
}

struct Pacing {
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
    paused_until: Option<Instant>,
}

/// Held while a call is in flight: its concurrency slot.
pub struct Permit {
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl RateLimitManager {
    fn key(&self, provider: &str, model: &str, limits: Limits) -> Arc<KeyState> {
        let mut keys = self.keys.lock().expect("not poisoned");
        keys.entry((provider.to_string(), model.to_string()))
            .or_insert_with(|| {
                let now = Instant::now();
                Arc::new(KeyState {
                    pacing: std::sync::Mutex::new(Pacing {
                        requests: limits
                            .requests_per_minute
                            .map(|rpm| Gcra::per_minute(rpm, 1, now)),
                        tokens: limits
                            .tokens_per_minute
                            .map(|tpm| Gcra::per_minute(tpm, tpm, now)),
                        paused_until: None,
                    }),
                    concurrency: limits
                        .concurrency
                        .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize))),
                })
            })
            .clone()
    }

    /// Waits until a call of about `tokens` tokens may go to `provider`'s `model`.
    pub async fn acquire(
        &self,
        provider: &str,
        model: &str,
        limits: Limits,
        tokens: u64,
    ) -> Permit {
        let key = self.key(provider, model, limits);
        let slot = match &key.concurrency {
            Some(semaphore) => Some(
                semaphore
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed"),
            ),
            None => None,
        };
        loop {
            let wait = {
                let mut pacing = key.pacing.lock().expect("not poisoned");
                pacing.try_take(Instant::now(), tokens)
            };
            match wait {
                None => return Permit { _slot: slot },
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// No call goes to `provider`'s `model` from this worker before `until`.
    pub fn pause(&self, provider: &str, model: &str, limits: Limits, until: Instant) {
        let key = self.key(provider, model, limits);
        let mut pacing = key.pacing.lock().expect("not poisoned");
        pacing.paused_until = Some(pacing.paused_until.map_or(until, |at| at.max(until)));
    }
}

impl Pacing {
    /// Takes a request and its tokens, or says how long to wait first.
    fn try_take(&mut self, now: Instant, tokens: u64) -> Option<Duration> {
        if let Some(until) = self.paused_until.filter(|until| *until > now) {
            return Some(until - now);
        }
        // A call larger than a minute's tokens still goes, alone.
        let tokens_wait = self.tokens.as_ref().and_then(|gcra| {
            let mut probe = gcra.clone();
            probe.try_take(now, tokens).err()
        });
        let requests_wait = self.requests.as_ref().and_then(|gcra| {
            let mut probe = gcra.clone();
            probe.try_take(now, 1).err()
        });
        if let Some(wait) = tokens_wait.into_iter().chain(requests_wait).max() {
            return Some(wait);
        }
        if let Some(gcra) = &mut self.requests {
            let _ = gcra.try_take(now, 1);
        }
        if let Some(gcra) = &mut self.tokens {
            let _ = gcra.try_take(now, tokens);
        }
        None
    }
}
