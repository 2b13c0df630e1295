//! What one LLM call was: who made it, what it used, what it cost. Each call
//! is recorded in its run's ledger and, when the run ends, in the run's
//! `calls.jsonl` and the `calls` table (ARCHITECTURE.md, "Gateway").

pub use flotilla_shared::calls::{calls_jsonl, CallRecord, CallStatus};
