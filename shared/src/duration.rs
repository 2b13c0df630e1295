//! Human durations in experiment files: `90s`, `10m`, `1h30m`, `250ms`.

use std::time::Duration;

/// Parses a duration such as `30s`, `10m`, `1h30m` or `500ms`.
/// Returns a message that says what would be valid when the text is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. 30s, 10m, 1h30m or 500ms".to_string());
    }
    let mut total_ms: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "'{text}' is not a duration: expected a number at '{rest}'; write e.g. 30s, 10m, 1h30m or 500ms"
            ));
        }
        let amount: u128 = rest[..digits_end]
            .parse()
            .map_err(|_| format!("'{text}' is not a duration: number too large"))?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let unit_ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "'{text}' has no unit; add one of ms, s, m, h, d (e.g. {amount}s)"
                ))
            }
            other => {
                return Err(format!(
                    "'{text}' has an unknown unit '{other}'; valid units are ms, s, m, h, d"
                ))
            }
        };
        total_ms = total_ms.saturating_add(amount.saturating_mul(unit_ms));
        rest = &rest[unit_end..];
    }
    let total_ms = u64::try_from(total_ms).map_err(|_| format!("'{text}' is too long"))?;
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way `parse_duration` reads it back.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u64), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A duration read at a glance, as the live display and the dashboard show
/// elapsed times and ETAs: `12s`, `4m05s`, `1h02m`.
pub fn duration_words(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration_words(Duration::from_secs(12)), "12s");
        assert_eq!(duration_words(Duration::from_secs(245)), "4m05s");
        assert_eq!(duration_words(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10 minutes")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("m")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1h30m", "45s", "250ms", "2h"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
