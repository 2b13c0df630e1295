//! One LLM call as it is recorded: in the run's `calls.jsonl`, in the
//! `calls` table, and on the wire from worker to coordinator.

use serde::{Deserialize, Serialize};

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
            error: None,
        }
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
