//! Dollars as whole nanodollars, for the budget ledger (ARCHITECTURE.md,
//! invariant 1): sums are exact, so "spent + reserved + estimate ≤ total" is
//! decided without rounding, and a cost is rounded up where rounding down
//! could let spending pass the total.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(u64);

const PER_DOLLAR: f64 = 1e9;

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub const fn from_nanos(nanos: u64) -> Usd {
        Usd(nanos)
    }

    pub fn nanos(self) -> u64 {
        self.0
    }

    /// `dollars` rounded up to the next nanodollar: what a cost is charged as.
    /// Negative or non-finite amounts are zero.
    pub fn charge(dollars: f64) -> Usd {
        if !dollars.is_finite() || dollars <= 0.0 {
            return Usd::ZERO;
        }
        Usd((dollars * PER_DOLLAR).ceil().min(u64::MAX as f64) as u64)
    }

    /// `dollars` rounded down: what a limit allows.
    pub fn allowance(dollars: f64) -> Usd {
        if !dollars.is_finite() || dollars <= 0.0 {
            return Usd::ZERO;
        }
        Usd((dollars * PER_DOLLAR).floor().min(u64::MAX as f64) as u64)
    }

    pub fn dollars(self) -> f64 {
        self.0 as f64 / PER_DOLLAR
    }

    pub fn saturating_sub(self, other: Usd) -> Usd {
        Usd(self.0.saturating_sub(other.0))
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }

    /// `self × fraction`, rounded down.
    pub fn scaled(self, fraction: f64) -> Usd {
        Usd((self.0 as f64 * fraction.clamp(0.0, 1.0)).floor() as u64)
    }
}

impl Add for Usd {
    type Output = Usd;
    fn add(self, other: Usd) -> Usd {
        Usd(self.0.saturating_add(other.0))
    }
}

impl AddAssign for Usd {
    fn add_assign(&mut self, other: Usd) {
        *self = *self + other;
    }
}

impl Sub for Usd {
    type Output = Usd;
    /// Saturates at zero: the ledger never holds a negative amount.
    fn sub(self, other: Usd) -> Usd {
        self.saturating_sub(other)
    }
}

impl Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, Add::add)
    }
}

/// `$0.42`, `$50.00`; amounts under a cent show four decimals (`$0.0031`).
/// Dollars as every screen shows them (the live display, `status`,
/// `validate`, the dashboard): cents, or four decimals under a cent.
pub fn dollars_words(amount: f64) -> String {
    if amount != 0.0 && amount.abs() < 0.01 {
        format!("${amount:.4}")
    } else {
        format!("${amount:.2}")
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&dollars_words(self.dollars()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_round_up_and_allowances_down() {
        assert_eq!(Usd::charge(0.000_000_000_1).nanos(), 1);
        assert_eq!(Usd::allowance(0.000_000_000_1).nanos(), 0);
        assert_eq!(Usd::charge(50.0), Usd::allowance(50.0));
        assert_eq!(Usd::charge(-1.0), Usd::ZERO);
        assert_eq!(Usd::charge(f64::NAN), Usd::ZERO);
        assert_eq!(Usd::from_nanos(3) - Usd::from_nanos(5), Usd::ZERO);
    }

    #[test]
    fn shows_cents_or_small_amounts() {
        assert_eq!(Usd::charge(0.42).to_string(), "$0.42");
        assert_eq!(Usd::charge(50.0).to_string(), "$50.00");
        assert_eq!(Usd::charge(0.0031).to_string(), "$0.0031");
        assert_eq!(Usd::ZERO.to_string(), "$0.00");
    }
}
