//! The response cache as the gateway uses it (ARCHITECTURE.md, "Response
//! cache"): before a call goes to its model, its key ([`key`]) is looked up
//! in the cluster's store of answers; a hit is served in the shape the
//! program asked for, costs nothing and reserves nothing; a miss goes
//! upstream holding a [`Ticket`], which records the answer if it succeeds
//! (and the run's cache mode writes) or lets the key go if it fails.
//!
//! The store is behind [`AnswerStore`]: the worker's, which asks its
//! coordinator (the gateway does not speak gRPC), or none, where the cache
//! is off (a sim-server).

pub mod key;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

pub use axum::body::Bytes;
use flotilla_shared::cache::{CacheMode, CachePolicy};
use flotilla_shared::calls::{CacheUse, CachedFrom};

use crate::call::{Call, Operation, Usage};
use crate::metering::runs::RunLedger;
pub use key::{Addressee, CacheKey};

pub type CacheFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A recorded answer: the API's whole answer as JSON, what it used and cost,
/// and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub answer: Bytes,
    pub usage: Usage,
    pub cost_usd: f64,
    pub from: CachedFrom,
}

/// A new answer to record under its key.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAnswer {
    pub key: CacheKey,
    pub operation: Operation,
    pub provider: String,
    pub model: String,
    pub seed: u64,
    pub occurrence: u32,
    /// The request as the key saw it (canonical JSON).
    pub request: Bytes,
    pub recorded: Recorded,
    /// An answer recorded under the key before this Unix time (ms) was too
    /// old for this run's `max_age`: this one replaces it.
    pub replaces_before_ms: Option<i64>,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Found {
    Hit(Arc<Recorded>),
    /// Nothing usable is recorded; a claiming lookup that misses makes its
    /// caller the one to answer the call (single flight).
    Miss,
}

/// The cluster's answers, as a worker reaches them.
pub trait AnswerStore: Send + Sync + 'static {
    /// The answer recorded under `key` no earlier than `oldest_ms`. With
    /// `claim`, a miss makes the caller the one to answer: others looking the
    /// key up with a claim meanwhile wait for its answer or for it to let go.
    fn lookup(
        &self,
        key: CacheKey,
        oldest_ms: Option<i64>,
        claim: bool,
    ) -> CacheFuture<'_, Result<Found, String>>;
    /// Records an answer (and ends its key's claim); it may land later.
    fn record(&self, answer: NewAnswer);
    /// Ends a claim with no answer: the call failed.
    fn abandon(&self, key: CacheKey);
}

/// How one run uses the cache: its policy, and who it is (answers it
/// records say where they came from).
#[derive(Debug, Clone, Default)]
pub struct RunCache {
    pub policy: CachePolicy,
    pub experiment: String,
    /// `var-001-run-002`.
    pub run: String,
    /// How many calls with each request the run has made (answered or
    /// under way): the next one's occurrence.
    occurrences: Arc<Mutex<HashMap<[u8; 32], u32>>>,
}

impl RunCache {
    pub fn new(policy: CachePolicy, experiment: String, run: String) -> Self {
        RunCache {
            policy,
            experiment,
            run,
            occurrences: Default::default(),
        }
    }

    fn take_occurrence(&self, digest: [u8; 32]) -> u32 {
        let mut counts = self.occurrences.lock().expect("not poisoned");
        let count = counts.entry(digest).or_default();
        *count += 1;
        *count - 1
    }

    /// A failed call gives its occurrence back when no later call with the
    /// same request took one meanwhile, so that a program's retry of a
    /// failed call is the same call again.
    fn give_back(&self, digest: [u8; 32], occurrence: u32) {
        let mut counts = self.occurrences.lock().expect("not poisoned");
        if let Some(count) = counts.get_mut(&digest) {
            if *count == occurrence + 1 {
                *count -= 1;
            }
        }
    }
}

/// What consulting the cache decided for a call.
pub enum Consulted {
    /// Serve this recorded answer.
    Hit(Arc<Recorded>),
    /// Answer upstream; with a ticket, the cache was asked and missed.
    Answer(Option<Box<Ticket>>),
    /// `cache: replay` and no answer is recorded: the message says which call.
    NotRecorded(String),
}

/// Looks `call` up for the run of `ledger`, addressed `to`.
pub async fn consult(
    store: Option<&Arc<dyn AnswerStore>>,
    ledger: &Arc<RunLedger>,
    call: &Call,
    to: Addressee<'_>,
) -> Consulted {
    let policy = ledger.cache.policy;
    let Some(store) = store.filter(|_| policy.mode.reads()) else {
        return Consulted::Answer(None);
    };
    let request = key::canonical_request(&call.body);
    let digest = key::request_digest(&request);
    let occurrence = ledger.cache.take_occurrence(digest);
    let key = key::cache_key(to, &digest, ledger.seed, occurrence);
    let claim = policy.mode.writes();
    let oldest = policy.oldest_usable_ms(flotilla_shared::clock::now_ms());
    let found = store.lookup(key, oldest, claim).await;
    let mut ticket = Ticket {
        store: store.clone(),
        ledger: ledger.clone(),
        new: NewAnswer {
            key,
            operation: to.operation,
            provider: to.provider.to_string(),
            model: to.model.to_string(),
            seed: ledger.seed,
            occurrence,
            request: Bytes::from(request),
            replaces_before_ms: oldest,
            recorded: Recorded {
                answer: Bytes::new(),
                usage: Usage::default(),
                cost_usd: 0.0,
                from: CachedFrom {
                    experiment: ledger.cache.experiment.clone(),
                    run: ledger.cache.run.clone(),
                    recorded_at_ms: 0,
                },
            },
        },
        digest,
        claimed: false,
        answered: false,
    };
    match found {
        Ok(Found::Hit(recorded)) => {
            ticket.answered = true;
            Consulted::Hit(recorded)
        }
        Ok(Found::Miss) | Err(_) if policy.mode == CacheMode::Replay => {
            let why = match found {
                Err(error) => format!("the cache cannot be read: {error}"),
                _ => "no answer is recorded for it".to_string(),
            };
            Consulted::NotRecorded(format!(
                "cache: replay answers only from the cache, and {why}: call {} of this request to {}/{} in run {} of {} (seed {}, key {})",
                occurrence + 1,
                to.provider,
                to.model,
                ledger.cache.run,
                ledger.cache.experiment,
                ledger.seed,
                key.hex()
            ))
        }
        Ok(Found::Miss) => {
            ticket.claimed = claim;
            Consulted::Answer(Some(Box::new(ticket)))
        }
        Err(error) => {
            tracing::warn!(%error, "the response cache cannot be read; calling upstream");
            Consulted::Answer(Some(Box::new(ticket)))
        }
    }
}

/// A call answered upstream after the cache missed: recording its answer
/// ends the claim; dropped unanswered, it ends the claim with none and
/// gives the run's occurrence back.
pub struct Ticket {
    store: Arc<dyn AnswerStore>,
    ledger: Arc<RunLedger>,
    new: NewAnswer,
    digest: [u8; 32],
    claimed: bool,
    answered: bool,
}

impl Ticket {
    /// The call got `answer` (the API's whole answer), using `usage` and
    /// costing `cost_usd`: recorded when the run's mode writes.
    pub fn answered(mut self, answer: Bytes, usage: Usage, cost_usd: f64) {
        self.answered = true;
        if !self.ledger.cache.policy.mode.writes() {
            return;
        }
        let mut new = self.new.clone();
        new.recorded.answer = answer;
        new.recorded.usage = usage;
        new.recorded.cost_usd = cost_usd;
        new.recorded.from.recorded_at_ms = flotilla_shared::clock::now_ms();
        self.claimed = false;
        self.store.record(new);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.answered {
            self.ledger
                .cache
                .give_back(self.digest, self.new.occurrence);
        }
        if self.claimed {
            self.store.abandon(self.new.key);
        }
    }
}

/// How a call used the cache, from what consulting it decided.
pub fn cache_use(ticket: &Option<Box<Ticket>>) -> CacheUse {
    match ticket {
        Some(_) => CacheUse::Miss,
        None => CacheUse::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::RunCache;

    #[test]
    fn a_failed_call_gives_its_occurrence_back_unless_a_later_one_took_the_next() {
        let cache = RunCache::default();
        let (asked, other) = ([1u8; 32], [2u8; 32]);
        assert_eq!(cache.take_occurrence(asked), 0);
        assert_eq!(cache.take_occurrence(other), 0, "each request counts alone");
        assert_eq!(cache.take_occurrence(asked), 1);
        cache.give_back(asked, 1);
        assert_eq!(
            cache.take_occurrence(asked),
            1,
            "a retry is the same call again"
        );
        assert_eq!(cache.take_occurrence(asked), 2);
        cache.give_back(asked, 1);
        assert_eq!(
            cache.take_occurrence(asked),
            3,
            "the second call's slot stays taken: a later call has the third"
        );
    }
}
