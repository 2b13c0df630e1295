//! What makes two calls the same call (ARCHITECTURE.md, "Response cache"):
//! the call as its provider would see it, minus transport — provider,
//! model, API endpoint and the request body in canonical form (keys sorted)
//! without the fields that do not change the answer — plus the run's seed
//! and the call's occurrence (the n-th call of the run with that body).

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::call::Operation;

/// Top-level request fields that change how an answer travels or is
/// billed, not what it says.
const NOT_THE_ANSWER: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "request_id",
    "keep_alive",
];

/// A call's key: SHA-256 of what identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The request as the key sees it: canonical JSON of the body without
/// the fields in [`NOT_THE_ANSWER`].
pub fn canonical_request(body: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match body {
        Value::Object(fields) => {
            let kept: Vec<(&String, &Value)> = fields
                .iter()
                .filter(|(name, _)| !NOT_THE_ANSWER.contains(&name.as_str()))
                .collect();
            write_object(&kept, &mut out);
        }
        other => write_canonical(other, &mut out),
    }
    out
}

/// The body's part of the key, shared by every occurrence of it in a run.
pub fn request_digest(canonical_request: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical_request).into()
}

/// Who answers the call and how it asks.
#[derive(Debug, Clone, Copy)]
pub struct Addressee<'a> {
    pub operation: Operation,
    /// `sim`, `ollama` or a provider of the providers file.
    pub provider: &'a str,
    /// The model by its provider's name.
    pub model: &'a str,
}

/// The key of the `occurrence`-th call (from 0) with this request in a run
/// seeded `seed`.
pub fn cache_key(
    to: Addressee<'_>,
    request_digest: &[u8; 32],
    seed: u64,
    occurrence: u32,
) -> CacheKey {
    let mut hash = Sha256::new();
    // Lengths first, so that no two different fields run together alike.
    for part in [to.operation.path(), to.provider, to.model] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.update(to.operation.api().as_str().as_bytes());
    hash.update(request_digest);
    hash.update(seed.to_le_bytes());
    hash.update(occurrence.to_le_bytes());
    CacheKey(hash.finalize().into())
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(fields) => {
            let fields: Vec<(&String, &Value)> = fields.iter().collect();
            write_object(&fields, out);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            serde_json::to_writer(&mut *out, scalar).expect("writing to memory");
        }
    }
}

/// Keys sorted whatever order the map keeps them in.
fn write_object(fields: &[(&String, &Value)], out: &mut Vec<u8>) {
    let mut fields = fields.to_vec();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (position, (name, value)) in fields.into_iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, name).expect("writing to memory");
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(body: Value, seed: u64, occurrence: u32) -> CacheKey {
        let to = Addressee {
            operation: Operation::OpenAiChat,
            provider: "openai",
            model: "gpt-4o-mini",
        };
        cache_key(
            to,
            &request_digest(&canonical_request(&body)),
            seed,
            occurrence,
        )
    }

    #[test]
    fn transport_and_bookkeeping_fields_do_not_change_the_key() {
        let plain = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5});
        let streamed = json!({"temperature": 0.5, "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"content": "hi", "role": "user"}], "model": "gpt-4o-mini", "user": "u-1", "metadata": {"a": 1}});
        assert_eq!(key(plain.clone(), 7, 0), key(streamed, 7, 0));
        assert_eq!(
            canonical_request(&plain),
            br#"{"messages":[{"content":"hi","role":"user"}],"temperature":0.5}"#
        );
    }

    #[test]
    fn the_answer_changing_fields_the_seed_and_the_occurrence_do() {
        let body = json!({"messages": [{"role": "user", "content": "hi"}]});
        let base = key(body.clone(), 7, 0);
        assert_ne!(base, key(body.clone(), 8, 0), "another repetition");
        assert_ne!(base, key(body.clone(), 7, 1), "the second time in a run");
        assert_ne!(
            base,
            key(
                json!({"messages": [{"role": "user", "content": "hi!"}]}),
                7,
                0
            )
        );
        assert_ne!(
            base,
            key(
                json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1}),
                7,
                0
            )
        );
        let digest = request_digest(&canonical_request(&body));
        let other_model = Addressee {
            operation: Operation::OpenAiChat,
            provider: "openai",
            model: "gpt-4o",
        };
        assert_ne!(base, cache_key(other_model, &digest, 7, 0));
        let other_endpoint = Addressee {
            operation: Operation::OpenAiCompletions,
            provider: "openai",
            model: "gpt-4o-mini",
        };
        assert_ne!(base, cache_key(other_endpoint, &digest, 7, 0));
    }
}
