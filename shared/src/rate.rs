//! Provider rate limits as the coordinator shares them among workers
//! (ARCHITECTURE.md, invariant 6) and the worker's gateway paces by.

use std::time::Duration;

/// Limits a provider declares for one model (or the sim-server applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Limits {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrency: Option<u64>,
}

impl Limits {
    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.concurrency.is_some()
    }

    /// The tighter of two declarations of the same provider's limits.
    pub fn tightest(self, other: Limits) -> Limits {
        fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Limits {
            requests_per_minute: min(self.requests_per_minute, other.requests_per_minute),
            tokens_per_minute: min(self.tokens_per_minute, other.tokens_per_minute),
            concurrency: min(self.concurrency, other.concurrency),
        }
    }
}

/// What a limit applies to: a provider's model, as the gateway keys its pacing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RateKey {
    pub provider: String,
    pub model: String,
}

impl std::fmt::Display for RateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// Calls of one worker waiting for, or holding, a key's limit: what its share is sized by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDemand {
    pub key: RateKey,
    /// Calls waiting for their turn plus calls in flight.
    pub calls: u32,
}

/// A worker's part of a shared limit; zero in a field means "wait for a larger share".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateShare {
    pub key: RateKey,
    pub limits: Limits,
}

/// A provider answered 429 for `key`: no worker calls it for `pause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatePause {
    pub key: RateKey,
    pub pause: Duration,
}

/// How one worker used a limited key: what the live display and `status`
/// show as a limit binding or not. Counts are totals since the worker
/// started; `waiting` is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub key: RateKey,
    /// The limits declared for the key (for a shared key, the cluster's).
    pub declared: Limits,
    /// The declared limits are the cluster's, split among workers.
    pub shared: bool,
    /// Calls sent, in all and in the last minute.
    pub calls: u64,
    pub calls_last_minute: u32,
    /// Estimated tokens of the calls sent in the last minute.
    pub tokens_last_minute: u64,
    /// Calls waiting for their turn now.
    pub waiting: u32,
    /// Calls the provider refused with 429.
    pub throttled: u64,
    /// Time calls spent waiting for their turn, summed over calls.
    pub waited_ms: u64,
}
