//! The response cache's policy as an experiment sets it (`cache:`) and a
//! run carries it to its gateway (ARCHITECTURE.md, "Response cache").

use serde::{Deserialize, Serialize};

/// How an experiment's calls use the response cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Answer from the cache when it can, record every new answer.
    #[default]
    ReadWrite,
    /// Always call upstream, record nothing.
    Off,
    /// Answer from the cache when it can, record nothing new.
    ReadOnly,
    /// Answer only from the cache; a call with no recorded answer fails.
    Replay,
}

impl CacheMode {
    pub const SPELLINGS: &'static str = "read_write, off, read_only, replay";

    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::ReadWrite => "read_write",
            CacheMode::Off => "off",
            CacheMode::ReadOnly => "read_only",
            CacheMode::Replay => "replay",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read_write" => Some(CacheMode::ReadWrite),
            "off" => Some(CacheMode::Off),
            "read_only" => Some(CacheMode::ReadOnly),
            "replay" => Some(CacheMode::Replay),
            _ => None,
        }
    }

    /// Whether calls look for a recorded answer.
    pub fn reads(self) -> bool {
        self != CacheMode::Off
    }

    /// Whether new answers are recorded.
    pub fn writes(self) -> bool {
        self == CacheMode::ReadWrite
    }
}

/// An experiment's use of the cache: its mode, and how old a recorded answer
/// may be to be used (providers update models behind one name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CachePolicy {
    pub mode: CacheMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

impl CachePolicy {
    pub fn is_default(&self) -> bool {
        *self == CachePolicy::default()
    }

    /// The oldest recording time (Unix ms) an answer may have to be used at `now_ms`.
    pub fn oldest_usable_ms(&self, now_ms: i64) -> Option<i64> {
        self.max_age_ms
            .map(|age| now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)))
    }
}
