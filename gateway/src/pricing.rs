//! Prices in dollars per million tokens, and what a call costs.

use crate::calls::Usage;

/// Dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
