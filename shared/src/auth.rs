//! Shared-token authentication of workers and clients (ARCHITECTURE.md, invariant 5).

use std::path::Path;

use crate::error::{Error, Result};

/// gRPC metadata key that carries the token on control calls.
pub const TOKEN_METADATA_KEY: &str = "x-flotilla-token";

/// Reads a token file: its first line, trimmed. Empty tokens are refused.
pub fn read_token_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read token file {}", path.display()), e))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(Error::InvalidInput(format!(
            "token file {} is empty; put a secret on its first line",
            path.display()
        )));
    }
    Ok(token)
}

/// Compares in time independent of where the first difference is.
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens() {
        assert!(tokens_match("secret", "secret"));
        assert!(!tokens_match("secret", "secreT"));
        assert!(!tokens_match("secret", "secret2"));
    }

    #[test]
    fn reads_first_line_and_refuses_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  abc \nrest").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "abc");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token_file(&path).is_err());
    }
}
