//! Argument groups several commands share: the root, the token, TLS on
//! either side, the coordinator to reach, LLM providers, how progress is
//! shown, and durations. Each command's own arguments live in its module.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flotilla_shared::duration::parse_duration;

use super::client::Target;
use super::progress::Show;

#[derive(Args)]
pub struct RootArg {
    /// Experiments root: flotilla.db and one directory per experiment.
    #[arg(long, env = "FLOTILLA_ROOT", default_value = "./experiments")]
    pub root: PathBuf,
}

#[derive(Args)]
pub struct TokenArg {
    /// File whose first line is the shared token. Without it, clients and workers read
    /// <root>/coordinator.token, which `coordinator start` writes when given no token file.
    #[arg(long, env = "FLOTILLA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// How workers and clients reach a coordinator that serves TLS.
#[derive(Args)]
pub struct ClientTlsArgs {
    /// CA certificate (PEM) that signed the coordinator's certificate: the coordinator is then
    /// reached over TLS. Without it, an https:// address is checked against the public web roots.
    #[arg(long, env = "FLOTILLA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This side's certificate (PEM), for a coordinator that requires client certificates
    /// (mutual TLS, its --tls-client-ca).
    #[arg(
        long,
        env = "FLOTILLA_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-client-cert.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    pub fn settings(self) -> flotilla_wire::tls::ClientTls {
        flotilla_wire::tls::ClientTls {
            ca: self.tls_ca,
            identity: self
                .tls_client_cert
                .zip(self.tls_client_key)
                .map(|(cert, key)| flotilla_wire::tls::CertAndKey { cert, key }),
        }
    }
}

/// The coordinator's TLS.
#[derive(Args)]
pub struct ServerTlsArgs {
    /// Certificate chain (PEM) to serve gRPC and HTTP over TLS; workers and clients then pass
    /// --tls-ca with the CA that signed it.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "FLOTILLA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: accept only workers and clients whose certificate this CA (PEM) signed
    /// (they pass --tls-client-cert and --tls-client-key); the token is still required.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    pub fn settings(self) -> Option<flotilla_wire::tls::ServerTls> {
        let identity = self
            .tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| flotilla_wire::tls::CertAndKey { cert, key })?;
        Some(flotilla_wire::tls::ServerTls {
            identity,
            client_ca: self.tls_client_ca,
        })
    }
}

#[derive(Args)]
pub struct CoordinatorArg {
    /// Coordinator address, HOST:PORT.
    #[arg(long, env = "FLOTILLA_COORDINATOR", default_value = "127.0.0.1:7700")]
    pub coordinator: String,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    #[command(flatten)]
    pub root: RootArg,
}

#[derive(Args)]
pub struct LlmArgs {
    /// LLM providers the workers' gateways reach beyond the built-in sim/… and ollama/…
    /// (YAML: name, api openai|anthropic|ollama, base_url, api_key_env, limits, prices,
    /// default). API keys are read from this process's environment.
    #[arg(long, env = "FLOTILLA_PROVIDERS")]
    pub providers: Option<PathBuf>,
    /// The Ollama server behind the built-in ollama/… models.
    #[arg(long, env = "FLOTILLA_OLLAMA_URL", default_value = flotilla_gateway::providers::DEFAULT_OLLAMA_URL)]
    pub ollama_url: String,
}

impl LlmArgs {
    pub fn providers(
        &self,
    ) -> Result<Vec<flotilla_gateway::providers::Provider>, flotilla_shared::Error> {
        match &self.providers {
            None => Ok(Vec::new()),
            Some(path) => flotilla_gateway::providers::read_providers(path)
                .map_err(flotilla_shared::Error::InvalidInput),
        }
    }
}

#[derive(Args)]
pub struct ShowArgs {
    /// No live display: a plain status line every 5 s on stderr (also when stderr is not a
    /// terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Print one JSON object per line on stdout: first `watching` with the experiment's status
    /// as the stream opens, then run_started, run_succeeded, run_failed,
    /// run_retried, run_cancelled, run_requeued, state_changed, budget, rate_limited, and
    /// last an `ended` object with the experiment's status.
    #[arg(long)]
    pub json: bool,
}

impl ShowArgs {
    pub fn show(&self) -> Show {
        Show::choose(self.no_progress, self.json)
    }
}

/// A duration on the command line: `500ms`, `10s`, `2m`.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

impl CoordinatorArg {
    /// The coordinator these arguments name, with how to reach it.
    pub fn target(self) -> Target {
        Target {
            address: self.coordinator,
            token_file: self.token.token_file,
            root: self.root.root,
            tls: self.tls.settings(),
        }
    }
}

/// The coordinator at `address`, reached with these token and TLS arguments
/// (for commands that read a root here unless given a coordinator).
pub fn remote(address: String, token: TokenArg, tls: ClientTlsArgs, root: PathBuf) -> Target {
    Target {
        address,
        token_file: token.token_file,
        root,
        tls: tls.settings(),
    }
}
