//! Provider limits shared by the whole cluster (ARCHITECTURE.md, invariant 6).
//!
//! A provider's declared limits (requests and tokens per minute,
//! concurrency) apply per model key to all workers together. Each worker
//! with calls for a key gets a share sized by its demand (calls waiting or
//! in flight, reported in heartbeats and as soon as a key's demand appears);
//! workers with no demand get none until they report some. The shares of a
//! key never sum above its limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_shared::rate::{KeyDemand, Limits, RateKey, RateShare};

#[derive(Debug, Default)]
pub struct RateShares {
    /// Calls per worker, by key; only non-zero demand is kept.
    demand: BTreeMap<RateKey, BTreeMap<Arc<str>, u32>>,
    /// What each worker was last told, by key.
    given: BTreeMap<RateKey, BTreeMap<Arc<str>, Limits>>,
}

impl RateShares {
    /// A worker reported its demand; returns the shares that changed, by
    /// worker. `declared` gives a provider's cluster-wide limits.
    pub fn report(
        &mut self,
        worker: &Arc<str>,
        demand: Vec<KeyDemand>,
        declared: impl Fn(&str) -> Option<Limits>,
    ) -> Vec<(Arc<str>, RateShare)> {
        let mut touched = Vec::new();
        for KeyDemand { key, calls } in demand {
            let workers = self.demand.entry(key.clone()).or_default();
            let before = workers.get(worker).copied().unwrap_or(0);
            if calls == 0 {
                workers.remove(worker);
            } else {
                workers.insert(worker.clone(), calls);
            }
            let never_told = !self
                .given
                .get(&key)
                .is_some_and(|given| given.contains_key(worker));
            if before != calls || never_told {
                touched.push(key);
            }
        }
        self.resplit(touched, declared)
    }

    /// The shares `worker` was last told of, by key.
    pub fn shares_of(&self, worker: &str) -> Vec<(RateKey, Limits)> {
        self.given
            .iter()
            .filter_map(|(key, given)| given.get(worker).map(|limits| (key.clone(), *limits)))
            .collect()
    }

    /// A worker left: its shares go to the others.
    pub fn worker_left(
        &mut self,
        worker: &Arc<str>,
        declared: impl Fn(&str) -> Option<Limits>,
    ) -> Vec<(Arc<str>, RateShare)> {
        let mut touched = Vec::new();
        for (key, workers) in &mut self.demand {
            if workers.remove(worker).is_some() {
                touched.push(key.clone());
            }
        }
        for given in self.given.values_mut() {
            given.remove(worker);
        }
        self.resplit(touched, declared)
    }

    /// Splits each touched key's limit anew; returns the shares that changed.
    fn resplit(
        &mut self,
        keys: Vec<RateKey>,
        declared: impl Fn(&str) -> Option<Limits>,
    ) -> Vec<(Arc<str>, RateShare)> {
        let mut changed = Vec::new();
        for key in keys {
            let Some(limits) = declared(&key.provider) else {
                continue;
            };
            let demand: Vec<(Arc<str>, u32)> = self
                .demand
                .get(&key)
                .map(|workers| workers.iter().map(|(w, c)| (w.clone(), *c)).collect())
                .unwrap_or_default();
            let given = self.given.entry(key.clone()).or_default();
            let mut shares: BTreeMap<Arc<str>, Limits> =
                split(limits, &demand).into_iter().collect();
            // Workers that had a share and no longer have demand are told theirs is gone.
            for worker in given.keys() {
                shares
                    .entry(worker.clone())
                    .or_insert_with(|| nothing(limits));
            }
            for (worker, share) in shares {
                if given.get(&worker) != Some(&share) {
                    given.insert(worker.clone(), share);
                    changed.push((
                        worker,
                        RateShare {
                            key: key.clone(),
                            limits: share,
                        },
                    ));
                }
            }
        }
        // Shrinking shares first: a worker told to slow down is told before another is told to speed up.
        changed.sort_by_key(|(_, share)| share.limits.requests_per_minute.unwrap_or(u64::MAX));
        changed
    }
}

/// A share of nothing in each limited dimension.
fn nothing(limits: Limits) -> Limits {
    Limits {
        requests_per_minute: limits.requests_per_minute.map(|_| 0),
        tokens_per_minute: limits.tokens_per_minute.map(|_| 0),
        concurrency: limits.concurrency.map(|_| 0),
    }
}

/// Each demanding worker's share of `limits`, in proportion to its calls.
pub fn split(limits: Limits, demand: &[(Arc<str>, u32)]) -> Vec<(Arc<str>, Limits)> {
    let weights: Vec<u64> = demand.iter().map(|(_, calls)| u64::from(*calls)).collect();
    let rpm = limits
        .requests_per_minute
        .map(|limit| divide(limit, &weights));
    let tpm = limits
        .tokens_per_minute
        .map(|limit| divide(limit, &weights));
    let concurrency = limits.concurrency.map(|limit| divide(limit, &weights));
    demand
        .iter()
        .enumerate()
        .map(|(i, (worker, _))| {
            (
                worker.clone(),
                Limits {
                    requests_per_minute: rpm.as_ref().map(|parts| parts[i]),
                    tokens_per_minute: tpm.as_ref().map(|parts| parts[i]),
                    concurrency: concurrency.as_ref().map(|parts| parts[i]),
                },
            )
        })
        .collect()
}

/// Divides `limit` in proportion to `weights`, never more than `limit` in
/// all: rounded down, what rounding leaves going to the largest remainders;
/// then, while there is one for each, every demanding worker gets at least
/// one, taken from the largest part.
fn divide(limit: u64, weights: &[u64]) -> Vec<u64> {
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let exact = u128::from(limit) * u128::from(*w);
        parts.push((exact / total) as u64);
        remainders.push((exact % total, i));
    }
    let mut left = limit - parts.iter().sum::<u64>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        if weights[i] > 0 {
            parts[i] += 1;
            left -= 1;
        }
    }
    let demanding = weights.iter().filter(|w| **w > 0).count() as u64;
    if limit >= demanding {
        for i in 0..weights.len() {
            if weights[i] > 0 && parts[i] == 0 {
                let largest = (0..parts.len())
                    .max_by_key(|&j| parts[j])
                    .expect("not empty");
                parts[largest] -= 1;
                parts[i] = 1;
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> RateKey {
        RateKey {
            provider: "openrouter".into(),
            model: "m".into(),
        }
    }

    fn declared(_: &str) -> Option<Limits> {
        Some(Limits {
            requests_per_minute: Some(600),
            tokens_per_minute: None,
            concurrency: Some(8),
        })
    }

    #[test]
    fn shares_follow_demand_and_go_back_when_a_worker_leaves() {
        let mut shares = RateShares::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let told = shares.report(
            &a,
            vec![KeyDemand {
                key: key(),
                calls: 10,
            }],
            declared,
        );
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1.limits.requests_per_minute, Some(600));
        // b has three times a's demand: three times the share.
        let told = shares.report(
            &b,
            vec![KeyDemand {
                key: key(),
                calls: 30,
            }],
            declared,
        );
        let of = |worker: &Arc<str>| {
            told.iter()
                .find(|(w, _)| w == worker)
                .map(|(_, s)| s.limits)
                .unwrap()
        };
        assert_eq!(of(&a).requests_per_minute, Some(150));
        assert_eq!(of(&b).requests_per_minute, Some(450));
        assert_eq!(of(&a).concurrency, Some(2));
        assert_eq!(of(&b).concurrency, Some(6));
        // a shrinks first.
        assert_eq!(told[0].0, a);
        let told = shares.worker_left(&b, declared);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1.limits.requests_per_minute, Some(600));
        // A worker whose demand falls to nothing gives its share back.
        let told = shares.report(
            &a,
            vec![KeyDemand {
                key: key(),
                calls: 0,
            }],
            declared,
        );
        assert_eq!(told[0].1.limits.requests_per_minute, Some(0));
    }

    #[test]
    fn the_same_demand_again_sends_nothing() {
        let mut shares = RateShares::default();
        let a: Arc<str> = "a".into();
        assert_eq!(
            shares
                .report(
                    &a,
                    vec![KeyDemand {
                        key: key(),
                        calls: 3
                    }],
                    declared
                )
                .len(),
            1
        );
        assert!(shares
            .report(
                &a,
                vec![KeyDemand {
                    key: key(),
                    calls: 3
                }],
                declared
            )
            .is_empty());
    }

    proptest! {
        /// The shares of a limit never sum above it, and every demanding
        /// worker gets some while there is one for each (invariant 6).
        #[test]
        fn shares_never_sum_above_the_limit(
            limit in 0u64..10_000,
            weights in proptest::collection::vec(0u64..1_000, 0..40),
        ) {
            let parts = divide(limit, &weights);
            prop_assert_eq!(parts.len(), weights.len());
            prop_assert!(parts.iter().sum::<u64>() <= limit);
            let demanding = weights.iter().filter(|w| **w > 0).count() as u64;
            if demanding > 0 {
                prop_assert_eq!(parts.iter().sum::<u64>(), limit);
            }
            for (part, weight) in parts.iter().zip(&weights) {
                if *weight == 0 {
                    prop_assert_eq!(*part, 0);
                } else if limit >= demanding {
                    prop_assert!(*part >= 1);
                }
            }
        }
    }
}
