//! Wire forms of budgets and shared rate limits (ARCHITECTURE.md,
//! invariants 1 and 6). Dollars travel as whole nanodollars.

use std::time::Duration;

use super::missing;
use crate::proto;
use flotilla_shared::error::Error;
use flotilla_shared::money::Usd;
use flotilla_shared::protocol::{SpendAnswer, SpendGrant, SpendRequest};
use flotilla_shared::rate::{KeyDemand, KeyUse, Limits, RateKey, RatePause, RateShare};
use flotilla_shared::run::{AssignedBudget, BudgetStop};

impl From<AssignedBudget> for proto::AssignedBudget {
    fn from(budget: AssignedBudget) -> Self {
        proto::AssignedBudget {
            reserved_nanos: budget.granted.nanos(),
            per_run_cap_nanos: budget.per_run_cap.nanos(),
            per_run_declared: budget.per_run_declared,
        }
    }
}

impl From<proto::AssignedBudget> for AssignedBudget {
    fn from(budget: proto::AssignedBudget) -> Self {
        AssignedBudget {
            granted: Usd::from_nanos(budget.reserved_nanos),
            per_run_cap: Usd::from_nanos(budget.per_run_cap_nanos),
            per_run_declared: budget.per_run_declared,
        }
    }
}

pub(super) fn budget_stop_to_proto(stop: Option<BudgetStop>) -> proto::BudgetStop {
    match stop {
        None => proto::BudgetStop::None,
        Some(BudgetStop::PerRunCap) => proto::BudgetStop::PerRunCap,
        Some(BudgetStop::Exhausted) => proto::BudgetStop::Exhausted,
    }
}

pub(super) fn budget_stop_from_proto(number: i32) -> Result<Option<BudgetStop>, Error> {
    match proto::BudgetStop::try_from(number) {
        Ok(proto::BudgetStop::None) => Ok(None),
        Ok(proto::BudgetStop::PerRunCap) => Ok(Some(BudgetStop::PerRunCap)),
        Ok(proto::BudgetStop::Exhausted) => Ok(Some(BudgetStop::Exhausted)),
        Ok(proto::BudgetStop::Unspecified) => Err(missing("RunResult.budget_stop")),
        Err(_) => Err(Error::Protocol(format!("unknown budget stop {number}"))),
    }
}

impl From<SpendRequest> for proto::SpendRequest {
    fn from(request: SpendRequest) -> Self {
        proto::SpendRequest {
            request_id: request.request_id,
            lease_id: request.lease_id,
            amount_nanos: request.amount.nanos(),
        }
    }
}

impl From<proto::SpendRequest> for SpendRequest {
    fn from(request: proto::SpendRequest) -> Self {
        SpendRequest {
            request_id: request.request_id,
            lease_id: request.lease_id,
            amount: Usd::from_nanos(request.amount_nanos),
        }
    }
}

impl From<SpendGrant> for proto::SpendGrant {
    fn from(grant: SpendGrant) -> Self {
        let (granted, amount, left, total) = match grant.answer {
            SpendAnswer::Granted { amount } => (true, amount, Usd::ZERO, Usd::ZERO),
            SpendAnswer::Refused { left, total } => (false, Usd::ZERO, left, total),
        };
        proto::SpendGrant {
            request_id: grant.request_id,
            lease_id: grant.lease_id,
            granted,
            granted_nanos: amount.nanos(),
            left_nanos: left.nanos(),
            total_nanos: total.nanos(),
        }
    }
}

impl From<proto::SpendGrant> for SpendGrant {
    fn from(grant: proto::SpendGrant) -> Self {
        SpendGrant {
            request_id: grant.request_id,
            lease_id: grant.lease_id,
            answer: if grant.granted {
                SpendAnswer::Granted {
                    amount: Usd::from_nanos(grant.granted_nanos),
                }
            } else {
                SpendAnswer::Refused {
                    left: Usd::from_nanos(grant.left_nanos),
                    total: Usd::from_nanos(grant.total_nanos),
                }
            },
        }
    }
}

impl From<Limits> for proto::RateLimits {
    fn from(limits: Limits) -> Self {
        proto::RateLimits {
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
            concurrency: limits.concurrency,
        }
    }
}

impl From<proto::RateLimits> for Limits {
    fn from(limits: proto::RateLimits) -> Self {
        Limits {
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
            concurrency: limits.concurrency,
        }
    }
}

impl From<RateKey> for proto::RateKey {
    fn from(key: RateKey) -> Self {
        proto::RateKey {
            provider: key.provider,
            model: key.model,
        }
    }
}

/// A message's rate key, which every message that has one must carry.
pub(crate) fn rate_key(key: Option<proto::RateKey>) -> Result<RateKey, Error> {
    let key = key.ok_or_else(|| missing("a rate key"))?;
    if key.provider.is_empty() {
        return Err(missing("RateKey.provider"));
    }
    Ok(RateKey {
        provider: key.provider,
        model: key.model,
    })
}

impl From<RateShare> for proto::RateShare {
    fn from(share: RateShare) -> Self {
        proto::RateShare {
            key: Some(share.key.into()),
            limits: Some(share.limits.into()),
        }
    }
}

impl TryFrom<proto::RateShare> for RateShare {
    type Error = Error;
    fn try_from(share: proto::RateShare) -> Result<Self, Error> {
        Ok(RateShare {
            key: rate_key(share.key)?,
            limits: share.limits.map(Into::into).unwrap_or_default(),
        })
    }
}

impl From<RatePause> for proto::RatePause {
    fn from(pause: RatePause) -> Self {
        proto::RatePause {
            key: Some(pause.key.into()),
            pause_ms: pause.pause.as_millis() as u64,
        }
    }
}

impl TryFrom<proto::RatePause> for RatePause {
    type Error = Error;
    fn try_from(pause: proto::RatePause) -> Result<Self, Error> {
        Ok(RatePause {
            key: rate_key(pause.key)?,
            pause: Duration::from_millis(pause.pause_ms),
        })
    }
}

impl From<KeyDemand> for proto::KeyDemand {
    fn from(demand: KeyDemand) -> Self {
        proto::KeyDemand {
            key: Some(demand.key.into()),
            calls: demand.calls,
        }
    }
}

impl TryFrom<proto::KeyDemand> for KeyDemand {
    type Error = Error;
    fn try_from(demand: proto::KeyDemand) -> Result<Self, Error> {
        Ok(KeyDemand {
            key: rate_key(demand.key)?,
            calls: demand.calls,
        })
    }
}

impl From<KeyUse> for proto::KeyUse {
    fn from(usage: KeyUse) -> Self {
        proto::KeyUse {
            key: Some(usage.key.into()),
            declared: Some(usage.declared.into()),
            shared: usage.shared,
            calls: usage.calls,
            calls_last_minute: usage.calls_last_minute,
            tokens_last_minute: usage.tokens_last_minute,
            waiting: usage.waiting,
            throttled: usage.throttled,
            waited_ms: usage.waited_ms,
        }
    }
}

impl TryFrom<proto::KeyUse> for KeyUse {
    type Error = Error;
    fn try_from(usage: proto::KeyUse) -> Result<Self, Error> {
        Ok(KeyUse {
            key: rate_key(usage.key)?,
            declared: usage.declared.map(Into::into).unwrap_or_default(),
            shared: usage.shared,
            calls: usage.calls,
            calls_last_minute: usage.calls_last_minute,
            tokens_last_minute: usage.tokens_last_minute,
            waiting: usage.waiting,
            throttled: usage.throttled,
            waited_ms: usage.waited_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_shares_round_trip() {
        let grant = SpendGrant {
            request_id: 3,
            lease_id: 9,
            answer: SpendAnswer::Refused {
                left: Usd::charge(0.42),
                total: Usd::charge(50.0),
            },
        };
        assert_eq!(
            SpendGrant::from(proto::SpendGrant::from(grant.clone())),
            grant
        );
        let share = RateShare {
            key: RateKey {
                provider: "openrouter".into(),
                model: "gpt".into(),
            },
            limits: Limits {
                requests_per_minute: Some(0),
                tokens_per_minute: None,
                concurrency: Some(2),
            },
        };
        assert_eq!(
            RateShare::try_from(proto::RateShare::from(share.clone())).unwrap(),
            share
        );
        assert!(budget_stop_from_proto(0).is_err());
        assert!(budget_stop_from_proto(42).is_err());
        assert_eq!(
            budget_stop_from_proto(budget_stop_to_proto(Some(BudgetStop::PerRunCap)) as i32)
                .unwrap(),
            Some(BudgetStop::PerRunCap)
        );
    }
}
