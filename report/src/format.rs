//! The one way reports write numbers: tables, verdicts and plot labels alike.

/// Up to four decimals with trailing zeros dropped; scientific notation for
/// magnitudes below 0.001 or from 100,000 up. Exact zero prints as `0`.
pub fn number(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    if value.abs() >= 0.001 && value.abs() < 100_000.0 {
        let text = format!("{value:.4}");
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        // -0.00004 rounds to "-0".
        return if trimmed == "-0" { "0" } else { trimmed }.to_string();
    }
    format!("{value:.3e}")
}

/// `[low, high]`, or a dash when there is no interval.
pub fn interval(interval: Option<[f64; 2]>) -> String {
    interval
        .map(|[low, high]| format!("[{}, {}]", number(low), number(high)))
        .unwrap_or_else(|| "—".into())
}

/// The number, or a dash.
pub fn optional(value: Option<f64>) -> String {
    value.map(number).unwrap_or_else(|| "—".into())
}

pub fn money(value: f64) -> String {
    format!("${}", number(value))
}

pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A p-value as papers write it: three decimals, or `<0.001`.
pub fn p_value(p: f64) -> String {
    if p < 0.001 {
        "<0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(7.59291), "7.5929");
        assert_eq!(number(-3.0), "-3");
        assert_eq!(number(0.00004), "4.000e-5");
        assert_eq!(number(123_456.0), "1.235e5");
        assert_eq!(number(-0.00000001), "-1.000e-8");
        assert_eq!(interval(Some([0.0, 1.0])), "[0, 1]");
        assert_eq!(interval(None), "—");
        assert_eq!(p_value(0.0004), "<0.001");
        assert_eq!(percent(0.125), "12.5%");
    }
}
