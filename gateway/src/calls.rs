//! What one LLM call was: who made it, what it used, what it cost. Each call
//! is recorded in its run's ledger and, when the run ends, in the run's
//! `calls.jsonl` and the `calls` table (ARCHITECTURE.md, "Gateway").

use serde::Serialize;

pub use flotilla_shared::calls::{calls_jsonl, CallRecord, CallStatus, LlmApi};

/// Tokens a call used, as the response reported them (or as the gateway
/// bounded them when it could not read them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from a prompt cache (priced at the cached rate).
    pub cached_input_tokens: u64,
}
