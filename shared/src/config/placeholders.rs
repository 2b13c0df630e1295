//! `{param}` placeholders in `run.command`. `{{` and `}}` stand for literal braces.

use std::collections::BTreeSet;

/// Placeholders every run has besides its parameters.
pub const BUILTIN_PLACEHOLDERS: &[&str] = &[
    "seed",
    "run_id",
    "variation",
    "repetition",
    "attempt",
    "output_dir",
];

enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{{") {
            out.push(Piece::Text("{"));
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            out.push(Piece::Text("}"));
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("'{template}' opens a placeholder with '{{' that is never closed (write {{{{ for a literal brace)"))?;
            out.push(Piece::Placeholder(&after[..end]));
            rest = &after[end + 1..];
        } else if rest.starts_with('}') {
            return Err(format!(
                "'{template}' has a '}}' with no matching '{{' (write }}}} for a literal brace)"
            ));
        } else {
            let end = rest.find(['{', '}']).unwrap_or(rest.len());
            out.push(Piece::Text(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Ok(out)
}

/// Checks that every placeholder in `template` is known.
pub(super) fn check(template: &str, known: &BTreeSet<&str>) -> Result<(), String> {
    for piece in pieces(template)? {
        if let Piece::Placeholder(name) = piece {
            if !known.contains(name) {
                let valid: Vec<&str> = known.iter().copied().collect();
                return Err(format!(
                    "unknown placeholder {{{name}}}; valid placeholders are {}",
                    valid.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Replaces placeholders using `lookup`; validation guarantees every name resolves.
pub fn substitute(
    template: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(name) => out.push_str(
                &lookup(name).ok_or_else(|| format!("no value for placeholder {{{name}}}"))?,
            ),
        }
    }
    Ok(out)
}
