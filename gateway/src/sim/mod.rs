//! The sim provider: models that answer deterministically from (model, run
//! seed, conversation), so that experiments, tests and benchmarks need no
//! API key and no network (ARCHITECTURE.md, "Gateway") — all but `sample`,
//! which answers anew every time, as a provider sampling at a temperature
//! does, so that a fresh answer can be told from a recorded one.

use std::sync::atomic::{AtomicU64, Ordering};

pub mod answers;
pub mod server;

use crate::pricing::Prices;

/// A conversation as the sim models read it: (role, text) pairs in order.
pub type Conversation = [(String, String)];

/// The sim models and what each answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimModel {
    /// Always `cooperate`.
    AlwaysCooperate,
    /// Always `defect`.
    AlwaysDefect,
    /// The other side's last move in the conversation (`cooperate` to begin with).
    TitForTat,
    /// `cooperate` or `defect`, drawn from the run's seed and the conversation.
    Random,
    /// The last user message, word for word.
    Echo,
    /// A score from 0 to 10 for the answer being judged, from the seed and the conversation.
    Judge,
    /// `sample N`: N counts the answers this process's `sample` gave, so no
    /// two answers are alike.
    Sample,
}

/// Answers `sample` gave in this process.
static SAMPLES: AtomicU64 = AtomicU64::new(0);

impl SimModel {
    pub const ALL: [(&'static str, SimModel); 7] = [
        ("always-cooperate", SimModel::AlwaysCooperate),
        ("always-defect", SimModel::AlwaysDefect),
        ("tit-for-tat", SimModel::TitForTat),
        ("random", SimModel::Random),
        ("echo", SimModel::Echo),
        ("judge", SimModel::Judge),
        ("sample", SimModel::Sample),
    ];

    pub fn named(name: &str) -> Option<SimModel> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, model)| *model)
    }

    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.iter().map(|(name, _)| *name)
    }

    /// What the model says to `conversation` in a run seeded with `seed`.
    pub fn answer(self, seed: u64, conversation: &Conversation) -> String {
        match self {
            SimModel::AlwaysCooperate => "cooperate".into(),
            SimModel::AlwaysDefect => "defect".into(),
            SimModel::TitForTat => last_move(conversation).unwrap_or("cooperate").into(),
            SimModel::Random => {
                if draw(seed, conversation).is_multiple_of(2) {
                    "cooperate".into()
                } else {
                    "defect".into()
                }
            }
            SimModel::Echo => conversation
                .iter()
                .rev()
                .find(|(role, _)| role == "user")
                .map(|(_, text)| text.clone())
                .unwrap_or_default(),
            SimModel::Judge => (draw(seed, conversation) % 11).to_string(),
            SimModel::Sample => format!("sample {}", SAMPLES.fetch_add(1, Ordering::Relaxed) + 1),
        }
    }
}

/// Dimensions of the sim's embeddings.
pub const EMBEDDING_DIMENSIONS: usize = 16;

/// A unit vector drawn from the text alone: equal texts embed equally, in every run.
pub fn embedding(text: &str) -> Vec<f32> {
    let conversation = [(String::new(), text.to_string())];
    let raw: Vec<f64> = (0..EMBEDDING_DIMENSIONS as u64)
        .map(|dimension| (draw(dimension, &conversation) % 20_001) as f64 / 10_000.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|v| (v / norm) as f32).collect()
}

/// A sim model as one server serves it: what it answers and how it counts tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sim {
    pub model: SimModel,
    pub bytes_per_token: u64,
}

impl Sim {
    /// The built-in way: a token per four bytes.
    pub fn of(model: SimModel) -> Sim {
        Sim {
            model,
            bytes_per_token: 4,
        }
    }

    /// Tokens in `text`, at least one.
    pub fn tokens(&self, text: &str) -> u64 {
        (text.len() as u64)
            .div_ceil(self.bytes_per_token.max(1))
            .max(1)
    }

    /// `text` cut to at most `cap` tokens, as a provider stops at `max_tokens`.
    pub fn truncate(&self, mut text: String, cap: u64) -> String {
        let bytes = cap.max(1).saturating_mul(self.bytes_per_token.max(1));
        if (text.len() as u64) > bytes {
            let mut end = bytes as usize;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }
}

/// The sim's prices: small but not zero, so that metering shows in every figure.
pub const SIM_PRICES: Prices = Prices::new(1.0, 2.0, 0.5);

/// Tokens the sim counts for a text by default: one per four bytes, at least one.
pub fn tokens(text: &str) -> u64 {
    Sim::of(SimModel::Echo).tokens(text)
}

/// The other side's last move: the last `cooperate` or `defect` in the last
/// user message that names one.
fn last_move(conversation: &Conversation) -> Option<&'static str> {
    conversation
        .iter()
        .rev()
        .filter(|(role, _)| role == "user")
        .find_map(|(_, text)| {
            let text = text.to_ascii_lowercase();
            match (text.rfind("cooperate"), text.rfind("defect")) {
                (Some(c), Some(d)) => Some(if c > d { "cooperate" } else { "defect" }),
                (Some(_), None) => Some("cooperate"),
                (None, Some(_)) => Some("defect"),
                (None, None) => None,
            }
        })
}

/// A number drawn from a text alone.
pub fn draw_text(text: &str) -> u64 {
    draw(0, &[(String::new(), text.to_string())])
}

/// A number drawn from the seed and the conversation (FNV-1a, then SplitMix64).
fn draw(seed: u64, conversation: &Conversation) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for (role, text) in conversation {
        for byte in role.bytes().chain([0]).chain(text.bytes()).chain([0]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let mut z = hash.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> (String, String) {
        ("user".into(), text.into())
    }

    #[test]
    fn tit_for_tat_plays_the_other_sides_last_move() {
        let model = SimModel::TitForTat;
        assert_eq!(model.answer(1, &[user("Let's play.")]), "cooperate");
        assert_eq!(
            model.answer(
                1,
                &[
                    user("I cooperate"),
                    ("assistant".into(), "cooperate".into()),
                    user("I defect")
                ]
            ),
            "defect"
        );
        assert_eq!(
            model.answer(1, &[user("first defect, then cooperate")]),
            "cooperate"
        );
    }

    #[test]
    fn seeded_models_repeat_themselves_and_vary_with_the_seed() {
        let conversation = [user("Round 1: your move?")];
        for model in [SimModel::Random, SimModel::Judge] {
            assert_eq!(
                model.answer(7, &conversation),
                model.answer(7, &conversation)
            );
            let answers: std::collections::BTreeSet<String> = (0..50)
                .map(|seed| model.answer(seed, &conversation))
                .collect();
            assert!(answers.len() > 1, "{model:?} ignores the seed");
        }
        let score: u32 = SimModel::Judge.answer(3, &conversation).parse().unwrap();
        assert!(score <= 10);
    }

    #[test]
    fn echo_returns_the_last_user_message() {
        assert_eq!(
            SimModel::Echo.answer(
                0,
                &[user("one"), ("assistant".into(), "x".into()), user("two")]
            ),
            "two"
        );
        assert_eq!(tokens(""), 1);
        assert_eq!(tokens("abcde"), 2);
    }
}
