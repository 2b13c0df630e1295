//! One LLM call as it is recorded: in the run's `calls.jsonl`, in the
//! `calls` table, and on the wire from worker to coordinator.

use serde::{Deserialize, Serialize};

use crate::tier::Tier;

/// The API a program spoke, or a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Openai,
    Anthropic,
    Ollama,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
            Api::Ollama => "ollama",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Succeeded,
    /// The provider or the gateway answered with an error.
    Failed,
}

/// Whether a call's answer came from the response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheUse {
    /// Answered from a recorded answer, for nothing.
    Hit,
    /// Looked for and not found (or too old): answered upstream.
    Miss,
    /// The cache was not asked (`cache: off`, or a call made before it existed).
    #[default]
    Off,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Off => "off",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hit" => Some(CacheUse::Hit),
            "miss" => Some(CacheUse::Miss),
            "off" => Some(CacheUse::Off),
            _ => None,
        }
    }
}

/// Where a cached answer came from: the call that was answered upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedFrom {
    pub experiment: String,
    /// `var-001-run-002`.
    pub run: String,
    /// Unix time in milliseconds when the answer was recorded.
    pub recorded_at_ms: i64,
}

/// One call, as written to `calls.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unix time in milliseconds when the call arrived.
    pub started_at_ms: i64,
    /// `sim`, `ollama`, or a provider of the providers file.
    pub provider: String,
    /// The model as the provider names it (without the provider prefix).
    pub model: String,
    /// The API the program spoke.
    pub api: Api,
    pub streamed: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_usd: f64,
    /// The usage could not be read, so the call is priced at its worst case.
    pub cost_is_worst_case: bool,
    pub latency_ms: f64,
    /// Time to the first token sent back; the whole latency for unstreamed calls.
    pub time_to_first_token_ms: f64,
    pub retries: u32,
    pub status: CallStatus,
    /// Whether the answer came from the response cache.
    #[serde(default)]
    pub cache: CacheUse,
    /// What the call would have cost upstream: for a hit, what the recorded
    /// call cost; otherwise its own cost.
    #[serde(default)]
    pub would_cost_usd: f64,
    /// For a hit, the call that recorded the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_from: Option<CachedFrom>,
    /// The tier that served the call, as its answer said (a call the flex
    /// tier refused for good: flex).
    #[serde(default)]
    pub tier: Tier,
    /// What the tier saved against the standard price of the same usage.
    #[serde(default)]
    pub tier_saved_usd: f64,
    /// How many times the flex tier refused the call for capacity before it
    /// was served (at flex after waiting, or at standard after falling back).
    #[serde(default)]
    pub tier_refusals: u32,
    /// Why the call failed, in words; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `calls.jsonl`: one JSON object per line, in the order the calls arrived.
pub fn calls_jsonl(calls: &[CallRecord]) -> String {
    let mut out = String::new();
    for call in calls {
        out.push_str(&serde_json::to_string(call).expect("a call serialises"));
        out.push('\n');
    }
    out
}

/// How an experiment's calls used the response cache: how many were
/// answered from it, what that saved, and when those answers were recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheSavings {
    pub calls: u64,
    pub hits: u64,
    /// What the hits would have cost upstream.
    pub saved_usd: f64,
    /// Unix ms of the oldest and newest answer served from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_from_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_to_ms: Option<i64>,
}

impl CacheSavings {
    pub fn add(&mut self, call: &CallRecord) {
        self.calls += 1;
        if call.cache != CacheUse::Hit {
            return;
        }
        self.hits += 1;
        self.saved_usd += call.would_cost_usd;
        if let Some(from) = &call.cached_from {
            let at = from.recorded_at_ms;
            self.recorded_from_ms = Some(self.recorded_from_ms.map_or(at, |t| t.min(at)));
            self.recorded_to_ms = Some(self.recorded_to_ms.map_or(at, |t| t.max(at)));
        }
    }

    /// "412 of 480 calls answered from the cache, recorded 2026-11-20 to
    /// 2026-12-02", or `None` when no call was.
    pub fn sentence(&self) -> Option<String> {
        if self.hits == 0 {
            return None;
        }
        let day = |ms: Option<i64>| ms.map(|ms| crate::clock::rfc3339(ms)[..10].to_string());
        let recorded = match (day(self.recorded_from_ms), day(self.recorded_to_ms)) {
            (Some(from), Some(to)) if from == to => format!(", recorded {from}"),
            (Some(from), Some(to)) => format!(", recorded {from} to {to}"),
            _ => String::new(),
        };
        Some(format!(
            "{} of {} calls answered from the cache{recorded}",
            self.hits, self.calls
        ))
    }
}

/// What an experiment's calls spent at each tier and what the flex tier
/// saved against standard prices. Cache hits were served by no tier and are
/// left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TierSpend {
    /// By the tier that served the calls, standard first.
    pub tiers: Vec<TierLine>,
    /// Times the flex tier refused a call for capacity.
    pub refusals: u64,
    /// Calls served at standard after a flex refusal.
    pub fell_back: u64,
}

/// The calls one tier served.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierLine {
    pub tier: Tier,
    pub calls: u64,
    pub cost_usd: f64,
    /// What the same usage would have cost at standard prices, less `cost_usd`.
    pub saved_usd: f64,
}

impl TierSpend {
    pub fn add(&mut self, call: &CallRecord) {
        if call.cache == CacheUse::Hit {
            return;
        }
        self.refusals += u64::from(call.tier_refusals);
        if call.tier == Tier::Standard && call.tier_refusals > 0 {
            self.fell_back += 1;
        }
        let line = self.line_mut(call.tier);
        line.calls += 1;
        line.cost_usd += call.cost_usd;
        line.saved_usd += call.tier_saved_usd;
    }

    /// Another experiment's spending added to this one's (comparisons).
    pub fn merge(&mut self, other: &TierSpend) {
        for theirs in &other.tiers {
            let line = self.line_mut(theirs.tier);
            line.calls += theirs.calls;
            line.cost_usd += theirs.cost_usd;
            line.saved_usd += theirs.saved_usd;
        }
        self.refusals += other.refusals;
        self.fell_back += other.fell_back;
    }

    /// The line of `tier`, begun empty in its place (standard first) if there is none.
    fn line_mut(&mut self, tier: Tier) -> &mut TierLine {
        if self.line(tier).is_none() {
            self.tiers.push(TierLine {
                tier,
                calls: 0,
                cost_usd: 0.0,
                saved_usd: 0.0,
            });
            self.tiers.sort_by_key(|line| line.tier);
        }
        self.tiers
            .iter_mut()
            .find(|line| line.tier == tier)
            .expect("present")
    }

    pub fn line(&self, tier: Tier) -> Option<&TierLine> {
        self.tiers.iter().find(|line| line.tier == tier)
    }

    pub fn saved_usd(&self) -> f64 {
        self.tiers.iter().map(|line| line.saved_usd).sum()
    }

    /// Whether any call asked for the flex tier.
    pub fn used_flex(&self) -> bool {
        self.line(Tier::Flex).is_some() || self.refusals > 0
    }

    /// "The flex tier served 180 of 200 calls for $0.4500, saving $0.4500
    /// against standard prices; it refused 25 times and 20 calls fell back
    /// to standard", or `None` when no call asked for it.
    pub fn sentence(&self) -> Option<String> {
        if !self.used_flex() {
            return None;
        }
        let calls: u64 = self.tiers.iter().map(|line| line.calls).sum();
        let (flex_calls, flex_cost) = self
            .line(Tier::Flex)
            .map_or((0, 0.0), |line| (line.calls, line.cost_usd));
        let mut sentence = format!(
            "The flex tier served {flex_calls} of {calls} calls for ${flex_cost:.4}, saving ${:.4} against standard prices",
            self.saved_usd()
        );
        if self.refusals > 0 {
            sentence.push_str(&format!(
                "; it refused {} time{} for capacity and {} call{} fell back to standard",
                self.refusals,
                if self.refusals == 1 { "" } else { "s" },
                self.fell_back,
                if self.fell_back == 1 { "" } else { "s" },
            ));
        }
        Some(sentence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(cache: CacheUse, would_cost_usd: f64, recorded_at_ms: i64) -> CallRecord {
        CallRecord {
            started_at_ms: 0,
            provider: "sim".into(),
            model: "echo".into(),
            api: Api::Openai,
            streamed: false,
            input_tokens: 1,
            output_tokens: 1,
            cached_input_tokens: 0,
            cost_usd: if cache == CacheUse::Hit {
                0.0
            } else {
                would_cost_usd
            },
            cost_is_worst_case: false,
            latency_ms: 1.0,
            time_to_first_token_ms: 1.0,
            retries: 0,
            status: CallStatus::Succeeded,
            cache,
            would_cost_usd,
            cached_from: (cache == CacheUse::Hit).then(|| CachedFrom {
                experiment: "first".into(),
                run: "var-001-run-001".into(),
                recorded_at_ms,
            }),
            tier: Tier::Standard,
            tier_saved_usd: 0.0,
            tier_refusals: 0,
            error: None,
        }
    }

    #[test]
    fn tier_spend_splits_calls_by_the_tier_that_served_them() {
        let mut spend = TierSpend::default();
        assert_eq!(spend.sentence(), None);
        let served = |tier: Tier, cost: f64, saved: f64, refusals: u32| CallRecord {
            tier,
            tier_saved_usd: saved,
            tier_refusals: refusals,
            ..call(CacheUse::Miss, cost, 0)
        };
        spend.add(&served(Tier::Flex, 0.5, 0.5, 0));
        spend.add(&served(Tier::Flex, 0.25, 0.25, 2));
        spend.add(&served(Tier::Standard, 1.0, 0.0, 1));
        spend.add(&call(CacheUse::Hit, 3.0, 0));
        assert_eq!(spend.tiers[0].tier, Tier::Standard, "standard comes first");
        let mut both = spend.clone();
        both.merge(&spend);
        assert_eq!(both.line(Tier::Flex).unwrap().calls, 4);
        assert_eq!((both.refusals, both.fell_back), (6, 2));
        assert_eq!(spend.line(Tier::Flex).unwrap().calls, 2);
        assert_eq!(spend.line(Tier::Flex).unwrap().cost_usd, 0.75);
        assert_eq!(spend.saved_usd(), 0.75);
        assert_eq!((spend.refusals, spend.fell_back), (3, 1));
        assert_eq!(
            spend.sentence().unwrap(),
            "The flex tier served 2 of 3 calls for $0.7500, saving $0.7500 against standard prices; it refused 3 times for capacity and 1 call fell back to standard"
        );
    }

    #[test]
    fn savings_count_hits_what_they_saved_and_when_they_were_recorded() {
        let mut savings = CacheSavings::default();
        assert_eq!(savings.sentence(), None);
        let day = 86_400_000;
        savings.add(&call(CacheUse::Miss, 0.5, 0));
        savings.add(&call(CacheUse::Hit, 0.25, 20_412 * day));
        savings.add(&call(CacheUse::Hit, 0.125, 20_424 * day));
        assert_eq!((savings.calls, savings.hits), (3, 2));
        assert_eq!(savings.saved_usd, 0.375);
        assert_eq!(
            savings.sentence().unwrap(),
            "2 of 3 calls answered from the cache, recorded 2025-11-20 to 2025-12-02"
        );
    }

    #[test]
    fn a_record_without_cache_fields_reads_as_off() {
        let old = r#"{"started_at_ms":1,"provider":"sim","model":"echo","api":"openai","streamed":false,"input_tokens":1,"output_tokens":1,"cached_input_tokens":0,"cost_usd":0.1,"cost_is_worst_case":false,"latency_ms":1.0,"time_to_first_token_ms":1.0,"retries":0,"status":"succeeded"}"#;
        let call: CallRecord = serde_json::from_str(old).unwrap();
        assert_eq!(call.cache, CacheUse::Off);
        assert_eq!(call.cached_from, None);
    }
}
