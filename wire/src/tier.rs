//! Service tiers on the wire: what a run's calls ask for, and what served a call.

use flotilla_shared::tier::{Tier, TierFallback, TierPolicy};

use crate::proto;

pub fn tier_to_proto(tier: Tier) -> proto::ServiceTier {
    match tier {
        Tier::Standard => proto::ServiceTier::Standard,
        Tier::Flex => proto::ServiceTier::Flex,
    }
}

/// Unspecified (a peer from before tiers) is standard.
pub fn tier_from_proto(tier: proto::ServiceTier) -> Tier {
    match tier {
        proto::ServiceTier::Flex => Tier::Flex,
        proto::ServiceTier::Standard | proto::ServiceTier::Unspecified => Tier::Standard,
    }
}

pub fn fallback_to_proto(fallback: TierFallback) -> proto::TierFallback {
    match fallback {
        TierFallback::Standard => proto::TierFallback::Standard,
        TierFallback::Wait => proto::TierFallback::Wait,
    }
}

pub fn policy_from_proto(tier: proto::ServiceTier, fallback: proto::TierFallback) -> TierPolicy {
    TierPolicy {
        tier: tier_from_proto(tier),
        fallback: match fallback {
            proto::TierFallback::Wait => TierFallback::Wait,
            proto::TierFallback::Standard | proto::TierFallback::Unspecified => {
                TierFallback::Standard
            }
        },
    }
}
