//! Prices in dollars per million tokens, what a call costs, and the dated
//! table of common hosted models' prices. The gateway prices calls with
//! them; submission checks that every hosted model an experiment names has one.

use serde::{Deserialize, Serialize};

/// Tokens a call used, as the response reported them (or as the gateway
/// bounded them when it could not read them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from a prompt cache (priced at the cached rate).
    pub cached_input_tokens: u64,
}

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    pub input: f64,
    pub output: f64,
    /// Cached input; the input price when a provider has no cached rate.
    pub cached_input: f64,
}

impl Prices {
    pub const fn new(input: f64, output: f64, cached_input: f64) -> Self {
        Prices {
            input,
            output,
            cached_input,
        }
    }

    /// The cost of `usage`: cached input at the cached rate, the rest of the input at the input rate.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let fresh_input = usage.input_tokens.saturating_sub(usage.cached_input_tokens);
        (fresh_input as f64 * self.input
            + usage.cached_input_tokens as f64 * self.cached_input
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// When the table of hosted prices below was collected. Providers change
/// prices: a providers file's `prices` override it, and an experiment's too.
pub const HOSTED_PRICES_AS_OF: &str = "2025-10";

/// Dollars per million tokens (input, output, cached input) of common hosted
/// models, by the provider's own model name, as published on
/// [`HOSTED_PRICES_AS_OF`].
const HOSTED_PRICES: &[(&str, Prices)] = &[
    ("gpt-4o", Prices::new(2.50, 10.00, 1.25)),
    ("gpt-4o-mini", Prices::new(0.15, 0.60, 0.075)),
    ("gpt-4.1", Prices::new(2.00, 8.00, 0.50)),
    ("gpt-4.1-mini", Prices::new(0.40, 1.60, 0.10)),
    ("gpt-4.1-nano", Prices::new(0.10, 0.40, 0.025)),
    ("gpt-5", Prices::new(1.25, 10.00, 0.125)),
    ("gpt-5-mini", Prices::new(0.25, 2.00, 0.025)),
    ("gpt-5-nano", Prices::new(0.05, 0.40, 0.005)),
    ("o3", Prices::new(2.00, 8.00, 0.50)),
    ("o4-mini", Prices::new(1.10, 4.40, 0.275)),
    ("claude-opus-4-1", Prices::new(15.00, 75.00, 1.50)),
    ("claude-sonnet-4-5", Prices::new(3.00, 15.00, 0.30)),
    ("claude-sonnet-4", Prices::new(3.00, 15.00, 0.30)),
    ("claude-haiku-4-5", Prices::new(1.00, 5.00, 0.10)),
    ("claude-3-5-haiku", Prices::new(0.80, 4.00, 0.08)),
];

/// The table's price of `model`: by its name, or — for names such as
/// OpenRouter's `openai/gpt-4o-mini` or a dated snapshot `gpt-4o-2024-08-06`
/// — by the longest known name it ends with or starts with.
pub fn hosted_price(model: &str) -> Option<Prices> {
    let name = model.rsplit('/').next().unwrap_or(model);
    HOSTED_PRICES
        .iter()
        .filter(|(known, _)| {
            name == *known
                || name.strip_prefix(known).is_some_and(|rest| {
                    rest.starts_with('-') && rest[1..].starts_with(|c: char| c.is_ascii_digit())
                })
        })
        .max_by_key(|(known, _)| known.len())
        .map(|(_, prices)| *prices)
}

/// Providers whose models are billed: a model an experiment names under
/// one of these needs a price before it is submitted.
pub const HOSTED_PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "openrouter",
    "together",
    "groq",
    "mistral",
    "google",
    "deepseek",
    "fireworks",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_names_are_found_under_prefixes_and_dated_snapshots() {
        assert_eq!(
            hosted_price("gpt-4o-mini"),
            Some(Prices::new(0.15, 0.60, 0.075))
        );
        assert_eq!(
            hosted_price("openai/gpt-4o-mini"),
            hosted_price("gpt-4o-mini")
        );
        assert_eq!(hosted_price("gpt-4o-2024-08-06"), hosted_price("gpt-4o"));
        assert_eq!(
            hosted_price("claude-sonnet-4-5-20250929"),
            hosted_price("claude-sonnet-4-5")
        );
        assert_eq!(hosted_price("llama3.2"), None);
        assert_eq!(
            hosted_price("gpt-4o-mini-tts"),
            None,
            "a different model, not a snapshot"
        );
    }

    #[test]
    fn cached_input_is_priced_at_its_own_rate() {
        let prices = Prices::new(2.0, 8.0, 0.5);
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            cached_input_tokens: 400_000,
        };
        // 600k fresh × $2 + 400k cached × $0.5 + 500k × $8, per million.
        assert!((prices.cost(&usage) - (1.2 + 0.2 + 4.0)).abs() < 1e-12);
    }
}
