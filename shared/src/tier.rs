//! Service tiers: the half-price flex tier some providers offer for ordinary
//! synchronous calls (`service_tier: "flex"`), as an experiment asks for it
//! (`tier:`, `fallback:`) and a run carries it to its gateway
//! (ARCHITECTURE.md, "Gateway").

use serde::{Deserialize, Serialize};

/// The tier a call asks for, or was served at.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The provider's default tier, at its list price.
    #[default]
    Standard,
    /// Slower, sometimes refused for capacity, and cheaper (usually half).
    Flex,
}

impl Tier {
    pub const SPELLINGS: &'static str = "standard, flex";

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Flex => "flex",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "standard" => Some(Tier::Standard),
            "flex" => Some(Tier::Flex),
            _ => None,
        }
    }

    /// The tier an answer's `service_tier` says served it. Providers name
    /// their standard tier `default` (or `auto`, `standard`, …); anything but
    /// `flex` is priced as standard, so no saving is counted that the
    /// answer does not show.
    pub fn served(service_tier: Option<&str>) -> Self {
        match service_tier {
            Some("flex") => Tier::Flex,
            _ => Tier::Standard,
        }
    }

    pub fn is_standard(&self) -> bool {
        *self == Tier::Standard
    }
}

/// What a call asking for the flex tier does when the provider refuses it
/// for capacity ("resource unavailable").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierFallback {
    /// Send it again at once at the standard tier and price.
    #[default]
    Standard,
    /// Ask the flex tier again after a backoff, for as long as the call's bound allows.
    Wait,
}

impl TierFallback {
    pub const SPELLINGS: &'static str = "standard, wait";

    pub fn as_str(self) -> &'static str {
        match self {
            TierFallback::Standard => "standard",
            TierFallback::Wait => "wait",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "standard" => Some(TierFallback::Standard),
            "wait" => Some(TierFallback::Wait),
            _ => None,
        }
    }
}

/// An experiment's tier: which one its runs' calls ask for, and what they
/// do when it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TierPolicy {
    pub tier: Tier,
    #[serde(default)]
    pub fallback: TierFallback,
}

impl TierPolicy {
    pub fn is_default(&self) -> bool {
        *self == TierPolicy::default()
    }

    pub fn flex(fallback: TierFallback) -> Self {
        TierPolicy {
            tier: Tier::Flex,
            fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_read_as_written_and_answers_without_flex_count_as_standard() {
        for tier in [Tier::Standard, Tier::Flex] {
            assert_eq!(Tier::parse(tier.as_str()), Some(tier));
        }
        for fallback in [TierFallback::Standard, TierFallback::Wait] {
            assert_eq!(TierFallback::parse(fallback.as_str()), Some(fallback));
        }
        assert_eq!(Tier::parse("priority"), None);
        assert_eq!(Tier::served(Some("flex")), Tier::Flex);
        assert_eq!(Tier::served(Some("default")), Tier::Standard);
        assert_eq!(Tier::served(None), Tier::Standard);
        assert!(TierPolicy::default().is_default());
        assert!(!TierPolicy::flex(TierFallback::Standard).is_default());
    }
}
