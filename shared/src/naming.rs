//! Names that become paths: experiment names and run ids.
//!
//! Experiment names are directory names under the experiments root, so they are
//! restricted to `[a-z0-9][a-z0-9_-]{0,63}`: nothing in them can escape the root
//! (ARCHITECTURE.md, invariant 5).

/// The folder under the experiments root where `flotilla compare` writes;
/// no experiment may take its name.
pub const COMPARISONS_DIR: &str = "comparisons";

/// Checks an experiment name; the error says what would be valid.
pub fn check_experiment_name(name: &str) -> Result<(), String> {
    if name == COMPARISONS_DIR {
        return Err(format!(
            "'{name}' is reserved: `flotilla compare` writes to <root>/{COMPARISONS_DIR}/; choose another name"
        ));
    }
    let valid_chars =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !name.is_empty() && name.len() <= 64 && first_ok && name.chars().all(valid_chars) {
        return Ok(());
    }
    let why = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > 64 {
        format!("it is {} characters long", name.len())
    } else if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        "it could name a path outside the experiments root".to_string()
    } else {
        "it has characters that are not allowed".to_string()
    };
    Err(format!(
        "'{name}' is not a valid experiment name ({why}); use 1 to 64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit"
    ))
}

/// How files and reports name a variation: `var-003` (1-based).
pub fn variation_name(variation: u32) -> String {
    format!("var-{variation:03}")
}

/// The id of a run, and the name of its directory: `var-003-run-007`.
/// Variation indices and repetitions are 1-based.
pub fn run_id(variation: u32, repetition: u32) -> String {
    format!("{}-run-{repetition:03}", variation_name(variation))
}

/// Parses `var-003-run-007` back into (variation, repetition).
pub fn parse_run_id(id: &str) -> Option<(u32, u32)> {
    let rest = id.strip_prefix("var-")?;
    let (variation, repetition) = rest.split_once("-run-")?;
    Some((variation.parse().ok()?, repetition.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_directory_safe_names() {
        for name in ["quickstart", "model-comparison", "a", "0_x-1"] {
            check_experiment_name(name).unwrap();
        }
    }

    #[test]
    fn refuses_names_that_escape_the_root() {
        for name in [
            "../x",
            "/abs",
            "a/b",
            ".hidden",
            "",
            "Upper",
            "sp ace",
            &"x".repeat(65),
        ] {
            assert!(check_experiment_name(name).is_err(), "{name} accepted");
        }
        assert!(check_experiment_name(COMPARISONS_DIR)
            .unwrap_err()
            .contains("reserved"));
        assert!(check_experiment_name("../x")
            .unwrap_err()
            .contains("outside"));
    }

    #[test]
    fn run_ids_round_trip() {
        assert_eq!(run_id(3, 7), "var-003-run-007");
        assert_eq!(run_id(1234, 1), "var-1234-run-001");
        assert_eq!(parse_run_id("var-003-run-007"), Some((3, 7)));
        assert_eq!(parse_run_id("var-x-run-1"), None);
    }
}
