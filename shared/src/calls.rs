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
