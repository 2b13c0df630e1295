//! What each subcommand does, with the arguments it takes (shared groups in
//! `args`); `main.rs` only parses and dispatches.

pub mod args;
pub mod cache;
pub mod client;
pub mod control;
pub mod conventions;
pub mod display;
pub mod export;
pub mod health;
pub mod ledger;
pub mod live;
pub mod progress;
pub mod report;
pub mod run;
pub mod serve;
pub mod sim_server;
pub mod submission;
pub mod validate;

use std::io::Read;
use std::path::{Path, PathBuf};

use flotilla_shared::auth::read_token_file;
use flotilla_shared::{Error, Result};

/// Logs go to stderr; RUST_LOG overrides the default level.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// The token file `coordinator start` writes under its root when given none.
pub fn default_token_path(root: &Path) -> PathBuf {
    root.join("coordinator.token")
}

/// The token a client or worker presents: `--token-file`, else the root's token file.
pub fn client_token(token_file: Option<&Path>, root: &Path) -> Result<String> {
    if let Some(path) = token_file {
        return read_token_file(path);
    }
    let fallback = default_token_path(root);
    if fallback.exists() {
        return read_token_file(&fallback);
    }
    Err(Error::InvalidInput(format!(
        "no token: pass --token-file FILE (or set FLOTILLA_TOKEN_FILE) naming the coordinator's token file; {} does not exist",
        fallback.display()
    )))
}

/// A fresh random token, hex-encoded.
pub fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("cannot read /dev/urandom", e))?;
    Ok(flotilla_shared::config::hex(&bytes))
}
