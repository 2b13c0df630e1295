//! The response cache's messages and their domain forms: how a call used
//! the cache, where a cached answer came from, an experiment's cache mode.

use flotilla_shared::cache::CacheMode;
use flotilla_shared::calls::{CacheUse, CachedFrom};
use flotilla_shared::error::Error;

use crate::proto;

pub fn use_to_proto(cache: CacheUse) -> proto::CacheUse {
    match cache {
        CacheUse::Hit => proto::CacheUse::Hit,
        CacheUse::Miss => proto::CacheUse::Miss,
        CacheUse::Off => proto::CacheUse::Off,
    }
}

pub fn use_from_proto(cache: proto::CacheUse) -> Result<CacheUse, Error> {
    match cache {
        proto::CacheUse::Hit => Ok(CacheUse::Hit),
        proto::CacheUse::Miss => Ok(CacheUse::Miss),
        proto::CacheUse::Off => Ok(CacheUse::Off),
        proto::CacheUse::Unspecified => Err(super::missing("LlmCall.cache")),
    }
}

pub fn mode_to_proto(mode: CacheMode) -> proto::CacheMode {
    match mode {
        CacheMode::ReadWrite => proto::CacheMode::ReadWrite,
        CacheMode::Off => proto::CacheMode::Off,
        CacheMode::ReadOnly => proto::CacheMode::ReadOnly,
        CacheMode::Replay => proto::CacheMode::Replay,
    }
}

pub fn mode_from_proto(mode: proto::CacheMode) -> Result<CacheMode, Error> {
    match mode {
        proto::CacheMode::ReadWrite => Ok(CacheMode::ReadWrite),
        proto::CacheMode::Off => Ok(CacheMode::Off),
        proto::CacheMode::ReadOnly => Ok(CacheMode::ReadOnly),
        proto::CacheMode::Replay => Ok(CacheMode::Replay),
        proto::CacheMode::Unspecified => Err(super::missing("RunAssignment.cache_mode")),
    }
}

pub fn from_to_proto(from: CachedFrom) -> proto::CachedFrom {
    proto::CachedFrom {
        experiment: from.experiment,
        run: from.run,
        recorded_at_ms: from.recorded_at_ms,
    }
}

pub fn from_from_proto(from: proto::CachedFrom) -> CachedFrom {
    CachedFrom {
        experiment: from.experiment,
        run: from.run,
        recorded_at_ms: from.recorded_at_ms,
    }
}

/// A key as it travels: exactly 32 bytes.
pub fn key_from_proto(key: &[u8]) -> Result<[u8; 32], Error> {
    key.try_into().map_err(|_| {
        Error::Protocol(format!(
            "a cache key is 32 bytes (SHA-256), got {}",
            key.len()
        ))
    })
}
