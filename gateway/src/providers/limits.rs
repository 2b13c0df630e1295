//! Rate limits: GCRA (the generic cell rate algorithm) for requests and
//! tokens per minute, and concurrency. The sim-server enforces them as a
//! provider would, answering over-limit calls with 429; the worker's
//! rate-limit manager paces its calls under them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use flotilla_shared::rate::Limits;
use flotilla_shared::rate::{KeyDemand, KeyUse, RateKey, RatePause, RateShare};
use tokio::sync::{mpsc, Notify};

use super::recent::LastMinute;

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
    /// A rate of zero admits nothing: callers check for it before asking.
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
///
/// A provider's declared limits are shared by the whole cluster
/// (ARCHITECTURE.md, invariant 6): for its keys this worker paces by the
/// share the coordinator gives it (`set_shares`), reports its demand (calls
/// waiting or in flight, `demand`) and passes on the 429s it sees (`pauses`)
/// so that every worker pauses the key. Until a key's first share arrives its
/// calls wait. The worker's own Ollama keeps its own limit.
#[derive(Default)]
pub struct RateLimitManager {
    keys: Mutex<HashMap<RateKey, Arc<KeyState>>>,
    /// 429s seen here, for the session to pass on; and a nudge when a shared
    /// key's demand appears, so the coordinator hears of it at once.
    signals: Mutex<Option<mpsc::UnboundedSender<RateSignal>>>,
    /// Pauses other workers passed on for keys this worker has not called yet.
    pauses_ahead: Mutex<HashMap<RateKey, Instant>>,
}

/// Why a provider's key is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseCause {
    /// The provider said nothing remains until a reset (a `*-remaining-*` header at zero).
    Exhausted,
    /// The provider refused a call: 429.
    Throttled,
}

/// What the manager tells the worker's session.
#[derive(Debug, Clone, PartialEq)]
pub enum RateSignal {
    /// A provider answered 429 (or said nothing is left) for this long.
    Paused(RatePause),
    /// A shared key had no calls and now has some: report demand now.
    DemandAppeared,
}

struct KeyState {
    pacing: Mutex<Pacing>,
    /// Wakes waiting calls when a call ends or the share changes.
    changed: Notify,
}

struct Pacing {
    /// The limits in force: the declared ones, or this worker's share of them.
    limits: Limits,
    /// The limits the providers file declares (for a shared key, the cluster's).
    declared: Limits,
    /// Shared keys pace by the coordinator's share; `None` until it arrives.
    shared: bool,
    share_known: bool,
    requests: Option<Gcra>,
    tokens: Option<Gcra>,
    paused_until: Option<Instant>,
    in_flight: u64,
    waiting: u64,
    /// The most calls waiting or in flight since demand was last reported:
    /// a key between two calls still has demand.
    peak: u64,
    calls: u64,
    last_minute: LastMinute,
    /// Calls the provider refused with 429.
    throttled: u64,
    waited: Duration,
}

/// Held while a call is in flight: its concurrency slot.
pub struct Permit {
    key: Option<Arc<KeyState>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            key.pacing.lock().expect("not poisoned").in_flight -= 1;
            key.changed.notify_waiters();
        }
    }
}

impl RateLimitManager {
    /// Where the session hears of 429s and of new demand.
    pub fn signals(&self) -> mpsc::UnboundedReceiver<RateSignal> {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.signals.lock().expect("not poisoned") = Some(sender);
        receiver
    }

    fn signal(&self, signal: RateSignal) {
        if let Some(sender) = &*self.signals.lock().expect("not poisoned") {
            let _ = sender.send(signal);
        }
    }

    /// A key's state, made on first use. `shared`: its limits are the
    /// provider's declared ones, which the cluster shares.
    fn key(&self, key: RateKey, limits: Limits, shared: bool) -> Arc<KeyState> {
        let mut keys = self.keys.lock().expect("not poisoned");
        let paused_until = self.pauses_ahead.lock().expect("not poisoned").remove(&key);
        keys.entry(key)
            .or_insert_with(|| {
                let now = Instant::now();
                let mut pacing = Pacing {
                    limits: Limits::default(),
                    declared: limits,
                    // Only declared limits are split; a 429 is passed on either way.
                    shared: shared && limits.is_limited(),
                    share_known: false,
                    requests: None,
                    tokens: None,
                    paused_until,
                    in_flight: 0,
                    waiting: 0,
                    peak: 0,
                    calls: 0,
                    last_minute: LastMinute::new(now),
                    throttled: 0,
                    waited: Duration::ZERO,
                };
                pacing.set_limits(limits, now);
                Arc::new(KeyState {
                    pacing: Mutex::new(pacing),
                    changed: Notify::new(),
                })
            })
            .clone()
    }

    /// Waits until a call of about `tokens` tokens may go to `provider`'s
    /// `model`. `shared`: the limits are the provider's declared ones, which
    /// the cluster shares.
    pub async fn acquire(
        &self,
        provider: &str,
        model: &str,
        limits: Limits,
        shared: bool,
        tokens: u64,
    ) -> Permit {
        let key = self.key(
            RateKey {
                provider: provider.to_string(),
                model: model.to_string(),
            },
            limits,
            shared,
        );
        let newly_demanded = {
            let mut pacing = key.pacing.lock().expect("not poisoned");
            // A key first made by a share knows the declared limits from its first call.
            pacing.declared = limits;
            pacing.waiting += 1;
            pacing.peak = pacing.peak.max(pacing.waiting + pacing.in_flight);
            // A call that cannot go at all until the coordinator hears of it.
            !pacing.has_share()
        };
        if newly_demanded {
            self.signal(RateSignal::DemandAppeared);
        }
        let asked = Instant::now();
        loop {
            // Registered before looking, so that a change in between is not missed.
            let changed = key.changed.notified();
            let wait = {
                let mut pacing = key.pacing.lock().expect("not poisoned");
                let now = Instant::now();
                let wait = pacing.try_take(now, tokens);
                if wait.is_none() {
                    pacing.waiting -= 1;
                    pacing.in_flight += 1;
                    pacing.calls += 1;
                    pacing.last_minute.record(now, tokens);
                    pacing.waited += now - asked;
                }
                wait
            };
            let Some(wait) = wait else {
                drop(changed);
                return Permit { key: Some(key) };
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }

    /// No call goes to `provider`'s `model` from this worker before `until`:
    /// the provider said its limit was reached. A shared key's pause is
    /// passed on to every worker.
    pub fn pause(
        &self,
        provider: &str,
        model: &str,
        limits: Limits,
        shared: bool,
        until: Instant,
        cause: PauseCause,
    ) {
        let rate_key = RateKey {
            provider: provider.to_string(),
            model: model.to_string(),
        };
        let key = self.key(rate_key.clone(), limits, shared);
        {
            let mut pacing = key.pacing.lock().expect("not poisoned");
            if cause == PauseCause::Throttled {
                pacing.throttled += 1;
            }
            pacing.pause_until(until);
        }
        if shared {
            self.signal(RateSignal::Paused(RatePause {
                key: rate_key,
                pause: until.saturating_duration_since(Instant::now()),
            }));
        }
    }

    /// Another worker saw a 429 for `key`: pause it here too.
    pub fn pause_for(&self, key: &RateKey, pause: Duration) {
        let until = Instant::now() + pause;
        let state = self.keys.lock().expect("not poisoned").get(key).cloned();
        match state {
            Some(state) => state
                .pacing
                .lock()
                .expect("not poisoned")
                .pause_until(until),
            None => {
                let mut ahead = self.pauses_ahead.lock().expect("not poisoned");
                let at = ahead.entry(key.clone()).or_insert(until);
                *at = (*at).max(until);
            }
        }
    }

    /// The coordinator's shares for this worker (ARCHITECTURE.md, invariant 6).
    pub fn set_shares(&self, shares: Vec<RateShare>) {
        let now = Instant::now();
        for share in shares {
            let state = self.key(share.key, share.limits, true);
            {
                let mut pacing = state.pacing.lock().expect("not poisoned");
                pacing.share_known = true;
                pacing.set_limits(share.limits, now);
            }
            state.changed.notify_waiters();
        }
    }

    /// The most calls waiting for or holding each shared key since the last
    /// report; the count starts again from the calls there are now.
    pub fn demand(&self) -> Vec<KeyDemand> {
        let keys = self.keys.lock().expect("not poisoned");
        let mut demand: Vec<KeyDemand> = keys
            .iter()
            .filter_map(|(key, state)| {
                let mut pacing = state.pacing.lock().expect("not poisoned");
                let calls = pacing.peak.max(pacing.waiting + pacing.in_flight);
                pacing.peak = pacing.waiting + pacing.in_flight;
                pacing.shared.then(|| KeyDemand {
                    key: key.clone(),
                    calls: calls as u32,
                })
            })
            .collect();
        demand.sort_by(|a, b| a.key.cmp(&b.key));
        demand
    }

    /// How each key with a declared limit, or one a provider said was
    /// reached, has been used: for the live display and `status`.
    pub fn usage(&self) -> Vec<KeyUse> {
        let now = Instant::now();
        let keys = self.keys.lock().expect("not poisoned");
        let mut usage: Vec<KeyUse> = keys
            .iter()
            .filter_map(|(key, state)| {
                let pacing = state.pacing.lock().expect("not poisoned");
                if !pacing.declared.is_limited() && pacing.throttled == 0 {
                    return None;
                }
                let (calls_last_minute, tokens_last_minute) = pacing.last_minute.totals(now);
                Some(KeyUse {
                    key: key.clone(),
                    declared: pacing.declared,
                    shared: pacing.shared,
                    calls: pacing.calls,
                    calls_last_minute,
                    tokens_last_minute,
                    waiting: pacing.waiting as u32,
                    throttled: pacing.throttled,
                    waited_ms: pacing.waited.as_millis() as u64,
                })
            })
            .collect();
        usage.sort_by(|a, b| a.key.cmp(&b.key));
        usage
    }
}

impl Pacing {
    /// Whether calls may go at all: a shared key needs a share with room.
    fn has_share(&self) -> bool {
        !self.shared
            || (self.share_known
                && self.limits.requests_per_minute != Some(0)
                && self.limits.tokens_per_minute != Some(0)
                && self.limits.concurrency != Some(0))
    }

    /// New limits, keeping the pacing's place: a call already spaced under
    /// the old rate is not sent again sooner.
    fn set_limits(&mut self, limits: Limits, now: Instant) {
        let rate = |per_minute: Option<u64>, burst: fn(u64) -> u64, old: &Option<Gcra>| {
            per_minute.map(|rate| {
                let mut gcra = Gcra::per_minute(rate, burst(rate), now);
                if let Some(old) = old {
                    gcra.theoretical_arrival = old.theoretical_arrival;
                }
                gcra
            })
        };
        self.requests = rate(limits.requests_per_minute, |_| 1, &self.requests);
        self.tokens = rate(limits.tokens_per_minute, |tpm| tpm, &self.tokens);
        self.limits = limits;
    }

    fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |at| at.max(until)));
    }

    /// Takes a request and its tokens, or says how long to wait first.
    fn try_take(&mut self, now: Instant, tokens: u64) -> Option<Duration> {
        /// How often a call without a share (or a slot) looks again, besides being woken.
        const LOOK_AGAIN: Duration = Duration::from_millis(250);
        if self.shared && !self.share_known {
            return Some(LOOK_AGAIN);
        }
        if let Some(until) = self.paused_until.filter(|until| *until > now) {
            return Some(until - now);
        }
        if self
            .limits
            .concurrency
            .is_some_and(|cap| self.in_flight >= cap)
            || self.limits.requests_per_minute == Some(0)
            || self.limits.tokens_per_minute == Some(0)
        {
            return Some(LOOK_AGAIN);
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

#[cfg(test)]
mod manager_tests {
    use super::*;

    fn key() -> RateKey {
        RateKey {
            provider: "remote".into(),
            model: "m".into(),
        }
    }

    const DECLARED: Limits = Limits {
        requests_per_minute: Some(600),
        tokens_per_minute: None,
        concurrency: None,
    };

    #[tokio::test]
    async fn a_shared_key_waits_for_its_share_and_says_so() {
        let manager = Arc::new(RateLimitManager::default());
        let mut signals = manager.signals();
        let waiting = {
            let manager = manager.clone();
            tokio::spawn(async move { manager.acquire("remote", "m", DECLARED, true, 1).await })
        };
        assert_eq!(signals.recv().await, Some(RateSignal::DemandAppeared));
        assert_eq!(
            manager.demand(),
            vec![KeyDemand {
                key: key(),
                calls: 1
            }]
        );
        assert!(!waiting.is_finished());
        manager.set_shares(vec![RateShare {
            key: key(),
            limits: DECLARED,
        }]);
        let permit = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the share lets the call go")
            .unwrap();
        drop(permit);
    }

    #[tokio::test]
    async fn a_429_is_passed_on_and_a_pause_from_elsewhere_holds_calls() {
        let manager = RateLimitManager::default();
        let mut signals = manager.signals();
        let until = Instant::now() + Duration::from_millis(300);
        manager.pause("remote", "m", DECLARED, true, until, PauseCause::Throttled);
        let Some(RateSignal::Paused(pause)) = signals.recv().await else {
            panic!("a shared key's 429 is passed on");
        };
        assert_eq!(pause.key, key());
        // A pause for a key not called yet holds its first call.
        let other = RateKey {
            provider: "remote".into(),
            model: "n".into(),
        };
        manager.pause_for(&other, Duration::from_millis(200));
        let started = Instant::now();
        let _permit = manager
            .acquire("remote", "n", Limits::default(), true, 1)
            .await;
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
