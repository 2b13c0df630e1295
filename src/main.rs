//! The `flotilla` command line: argument parsing and dispatch only.

mod commands;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flotilla_shared::duration::parse_duration;
use flotilla_shared::error::exit_code;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Run experiment sweeps: a scenario over a grid of parameter variations, on one machine or many.",
    long_about = "Run experiment sweeps: a scenario (any program, usually one that drives LLM agents) is run many \
                  times over a grid of parameter variations, on one machine or on many, with results organised \
                  on disk and in SQLite.\n\nStart with `flotilla run EXPERIMENT.yaml`; the README documents the \
                  experiment file.",
    after_help = "Exit codes: 0 done, 1 failure, 2 invalid input, 3 experiment failed or was cancelled, \
                  4 coordinator unreachable, 5 token refused, 6 config conflicts with the stored one, \
                  7 no such experiment, 8 budget exhausted (partial results), 130 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment on this machine: embedded coordinator and local workers, live progress.
    ///
    /// Running the same file again runs only the runs that have not finished (resume); a file
    /// with more runs_per_variation or new axis values runs only the new runs (extension).
    Run(RunArgs),
    /// Check an experiment file and print its expanded grid.
    Validate(ValidateArgs),
    /// Long-lived coordinator: registry, run manifests, leases; serves workers and the CLI over gRPC.
    #[command(subcommand)]
    Coordinator(CoordinatorCommand),
    /// Worker node: joins a coordinator and runs the runs it is assigned.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Submit an experiment file to a coordinator.
    Submit(SubmitArgs),
    /// Show experiments' progress: counts by state, per variation and per worker.
    Status(StatusArgs),
    /// Follow a running experiment on a coordinator with the live display (or, with --json,
    /// its events) until it ends; the exit code tells how it ended. Ctrl+C stops watching only.
    Watch(WatchArgs),
    /// List the coordinator's experiments.
    Ls(ListArgs),
    /// Cancel an experiment: pending runs are cancelled; with --kill running runs are stopped too.
    Cancel(CancelArgs),
    /// Continue a cancelled or budget-exhausted experiment on a coordinator with its stored
    /// config: its cancelled runs run (with --retry-failed, its failed ones too). To give it a
    /// larger budget, submit its file again with a larger budget.total_usd.
    Resume(ResumeArgs),
    /// Analyse an experiment: statistics per variation, comparisons, main effects, failure modes,
    /// cost efficiency, power.
    ///
    /// Writes <root>/<name>/analysis/ (analysis-report.md, variation-statistics.json,
    /// comparisons.json, patterns.json, plots/*.svg) and prints the report. Works on unfinished
    /// experiments too, marking the figures as partial.
    Report(ReportArgs),
    /// Serve the sim models over HTTP with the OpenAI, Anthropic and Ollama APIs, enforcing
    /// provider-style limits.
    ///
    /// A stand-in for an LLM provider in tests, demos and benchmarks: answers are deterministic
    /// (from the model, the `x-flotilla-seed` header and the conversation), calls over a limit
    /// get 429 with Retry-After and rate-limit headers. Point a providers file at it
    /// (`base_url: http://ADDR/v1` for the OpenAI API).
    SimServer(SimServerArgs),
    /// Ask a coordinator's standard grpc.health.v1 service whether it is serving: exit 0 if it
    /// is, 1 otherwise (unreachable, TLS refused, not serving, no answer in time). For scripts,
    /// container healthchecks and probes.
    Health(HealthArgs),
    /// Compare experiments: the same analysis across them, on the metrics they share.
    ///
    /// Variations are matched by their parameters (on the axes every experiment has); each
    /// matched variation is compared across the experiments, and each pair of experiments is
    /// compared over all matched variations (runs pair up by seed when the experiments share
    /// their seed). Writes <root>/comparisons/A-vs-B/ with the same files as a report.
    Compare(CompareArgs),
    /// Print an experiment's runs for scripts: results.csv or results.jsonl as they stand now.
    ///
    /// One row (or JSON object) per run: run id, variation, repetition, attempts, status, worker,
    /// duration, cost, error, parameters and metrics. Read from --root here, or asked of a
    /// coordinator with --coordinator.
    Export(ExportArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// Experiment name.
    name: String,
    /// csv (as results.csv) or jsonl (as results.jsonl: parameters and metrics as objects).
    #[arg(long, value_enum, default_value = "csv")]
    format: commands::export::Format,
    #[command(flatten)]
    root: RootArg,
    /// Ask this coordinator (HOST:PORT) instead of reading --root here.
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Args)]
struct CompareArgs {
    /// Two or more experiment names.
    #[arg(required = true, num_args = 2.., value_name = "EXPERIMENT")]
    names: Vec<String>,
    #[command(flatten)]
    options: AnalysisArgs,
}

#[derive(Args)]
struct SimServerArgs {
    /// Address to listen on; port 0 picks a free port (the log line says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Requests per minute per model; over it, 429.
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens per minute per model (a token per four bytes of request); over it, 429.
    #[arg(long)]
    tpm: Option<u64>,
    /// Calls answered at once; more get 429.
    #[arg(long)]
    concurrency: Option<u64>,
    /// Time each answer takes, e.g. 20ms.
    #[arg(long, value_parser = duration_arg, default_value = "0s")]
    latency: Duration,
    /// Models served under names of their own, as a provider or an Ollama host would
    /// (YAML: models: [{name: llama3.2, answers: tit-for-tat, latency: 20ms, latency_max: 40ms,
    /// error_rate: 0.01, rate_limit_rate: 0.02, bytes_per_token: 4}]).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// Experiment name.
    name: String,
    #[command(flatten)]
    options: AnalysisArgs,
}

/// What `report` and `compare` share.
#[derive(Args)]
struct AnalysisArgs {
    #[command(flatten)]
    root: RootArg,
    /// What to print: the markdown report or every figure as JSON.
    #[arg(long, value_enum, default_value = "md")]
    format: commands::report::Format,
    /// Also size runs to detect this difference, in standard deviations (e.g. 0.5).
    #[arg(long)]
    min_effect: Option<f64>,
    /// Ask this coordinator (HOST:PORT) to write it on its root, instead of reading --root here.
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Args)]
struct RootArg {
    /// Experiments root: flotilla.db and one directory per experiment.
    #[arg(long, env = "FLOTILLA_ROOT", default_value = "./experiments")]
    root: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    /// The experiment file (YAML).
    file: PathBuf,
    #[command(flatten)]
    root: RootArg,
    /// Local workers to start (each runs one run at a time); default: the number of cores.
    #[arg(long)]
    workers: Option<u32>,
    /// Runs each local worker runs at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Also re-run runs that failed for good in an earlier run of this file.
    #[arg(long)]
    retry_failed: bool,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    show: ShowArgs,
    /// Serve /metrics (Prometheus) and the JSON API under /api/v1/ here (HOST:PORT) while the
    /// experiment runs.
    #[arg(long)]
    http: Option<SocketAddr>,
}

#[derive(Args)]
struct ShowArgs {
    /// No live display: a plain status line every 5 s on stderr (also when stderr is not a
    /// terminal).
    #[arg(long)]
    no_progress: bool,
    /// Print one JSON object per line on stdout: first `watching` with the experiment's status
    /// as the stream opens, then run_started, run_succeeded, run_failed,
    /// run_retried, run_cancelled, run_requeued, state_changed, budget, rate_limited, and
    /// last an `ended` object with the experiment's status.
    #[arg(long)]
    json: bool,
}

impl ShowArgs {
    fn show(&self) -> commands::progress::Show {
        commands::progress::Show::choose(self.no_progress, self.json)
    }
}

#[derive(Args)]
struct WatchArgs {
    /// Experiment name.
    name: String,
    #[command(flatten)]
    coordinator: CoordinatorArg,
    #[command(flatten)]
    show: ShowArgs,
}

#[derive(Args)]
struct LlmArgs {
    /// LLM providers the workers' gateways reach beyond the built-in sim/… and ollama/…
    /// (YAML: name, api openai|anthropic|ollama, base_url, api_key_env, limits, prices,
    /// default). API keys are read from this process's environment.
    #[arg(long, env = "FLOTILLA_PROVIDERS")]
    providers: Option<PathBuf>,
    /// The Ollama server behind the built-in ollama/… models.
    #[arg(long, env = "FLOTILLA_OLLAMA_URL", default_value = flotilla_gateway::providers::DEFAULT_OLLAMA_URL)]
    ollama_url: String,
}

impl LlmArgs {
    fn providers(
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
struct ValidateArgs {
    /// The experiment file (YAML).
    file: PathBuf,
    /// Print the grid as JSON.
    #[arg(long)]
    json: bool,
    /// Forecast the rest of the experiment from its finished runs under this root.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Forecast the rest of the experiment from the finished runs this coordinator (HOST:PORT) knows.
    #[arg(long)]
    coordinator: Option<String>,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Subcommand)]
enum CoordinatorCommand {
    /// Start the coordinator and serve until stopped (Ctrl+C or SIGTERM).
    Start(CoordinatorStartArgs),
}

/// A duration on the command line: `500ms`, `10s`, `2m`.
fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

#[derive(Args)]
struct TokenArg {
    /// File whose first line is the shared token. Without it, clients and workers read
    /// <root>/coordinator.token, which `coordinator start` writes when given no token file.
    #[arg(long, env = "FLOTILLA_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// How workers and clients reach a coordinator that serves TLS.
#[derive(Args)]
struct ClientTlsArgs {
    /// CA certificate (PEM) that signed the coordinator's certificate: the coordinator is then
    /// reached over TLS. Without it, an https:// address is checked against the public web roots.
    #[arg(long, env = "FLOTILLA_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This side's certificate (PEM), for a coordinator that requires client certificates
    /// (mutual TLS, its --tls-client-ca).
    #[arg(
        long,
        env = "FLOTILLA_TLS_CLIENT_CERT",
        value_name = "FILE",
        requires = "tls_client_key"
    )]
    tls_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-client-cert.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CLIENT_KEY",
        value_name = "FILE",
        requires = "tls_client_cert"
    )]
    tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    fn settings(self) -> flotilla_shared::tls::ClientTls {
        flotilla_shared::tls::ClientTls {
            ca: self.tls_ca,
            identity: self
                .tls_client_cert
                .zip(self.tls_client_key)
                .map(|(cert, key)| flotilla_shared::tls::CertAndKey { cert, key }),
        }
    }
}

/// The coordinator's TLS.
#[derive(Args)]
struct ServerTlsArgs {
    /// Certificate chain (PEM) to serve gRPC and HTTP over TLS; workers and clients then pass
    /// --tls-ca with the CA that signed it.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "FLOTILLA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: accept only workers and clients whose certificate this CA (PEM) signed
    /// (they pass --tls-client-cert and --tls-client-key); the token is still required.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    fn settings(self) -> Option<flotilla_shared::tls::ServerTls> {
        let identity = self
            .tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| flotilla_shared::tls::CertAndKey { cert, key })?;
        Some(flotilla_shared::tls::ServerTls {
            identity,
            client_ca: self.tls_client_ca,
        })
    }
}

#[derive(Args)]
struct HealthArgs {
    /// Coordinator address, HOST:PORT (or https://HOST:PORT).
    #[arg(env = "FLOTILLA_COORDINATOR", default_value = "127.0.0.1:7700")]
    address: String,
    /// The service to ask about; empty (the default) means the coordinator as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Give up, and exit 1, after this long (e.g. 3s).
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    timeout: Duration,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Args)]
struct CoordinatorStartArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one, printed at start).
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    #[command(flatten)]
    root: RootArg,
    #[command(flatten)]
    token: TokenArg,
    /// A worker silent for this long loses its runs, which are requeued (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    lease_timeout: Duration,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// Also serve HTTP here (HOST:PORT): /metrics (Prometheus) and the JSON API under
    /// /api/v1/. Beyond loopback every request needs the token (Authorization: Bearer TOKEN).
    #[arg(long)]
    http: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Join the coordinator at ADDR (HOST:PORT) and run runs until stopped; reconnects by itself.
    ///
    /// SIGTERM (or Ctrl+C, or `flotilla worker drain NAME`) drains it: it takes no more runs,
    /// lets running ones finish within --drain-timeout, hands the rest back (requeued without
    /// counting as failed attempts) and leaves. A second signal stops it at once.
    Join(WorkerJoinArgs),
    /// Drain a worker from anywhere: it takes no more runs, lets running ones finish within its
    /// --drain-timeout, hands the rest back and leaves.
    Drain(WorkerDrainArgs),
}

#[derive(Args)]
struct WorkerDrainArgs {
    /// The worker's name, as `flotilla status` lists it.
    name: String,
    #[command(flatten)]
    coordinator: CoordinatorArg,
}

#[derive(Args)]
struct WorkerJoinArgs {
    /// Coordinator address, HOST:PORT.
    #[arg(env = "FLOTILLA_COORDINATOR")]
    coordinator: String,
    /// Runs to run at once; default: the number of cores.
    #[arg(long)]
    slots: Option<u32>,
    /// Name unique among the coordinator's workers; default: HOSTNAME-PID.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Scratch space for run directories and cached workdirs; default: a directory of this
    /// process's own under the system temp dir, removed when the worker leaves.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    root: RootArg,
    #[command(flatten)]
    llm: LlmArgs,
    /// When drained, how long running runs may take to finish before they are handed back
    /// (e.g. 30s, 5m).
    #[arg(long, default_value = "5m", value_parser = duration_arg)]
    drain_timeout: Duration,
}

#[derive(Args)]
struct CoordinatorArg {
    /// Coordinator address, HOST:PORT.
    #[arg(long, env = "FLOTILLA_COORDINATOR", default_value = "127.0.0.1:7700")]
    coordinator: String,
    #[command(flatten)]
    token: TokenArg,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(flatten)]
    root: RootArg,
}

#[derive(Args)]
struct SubmitArgs {
    /// The experiment file (YAML).
    file: PathBuf,
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// Wait until the experiment ends, showing progress; the exit code tells how it ended.
    #[arg(long)]
    wait: bool,
    /// Also re-run runs that failed for good earlier.
    #[arg(long)]
    retry_failed: bool,
    /// With --wait: how progress is shown.
    #[command(flatten)]
    show: ShowArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// Experiment name; without it, every experiment.
    name: Option<String>,
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ResumeArgs {
    /// Experiment name.
    name: String,
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// Also re-run runs that failed for good.
    #[arg(long)]
    retry_failed: bool,
    /// Wait until the experiment ends, showing progress; the exit code tells how it ended.
    #[arg(long)]
    wait: bool,
    /// With --wait: how progress is shown.
    #[command(flatten)]
    show: ShowArgs,
}

#[derive(Args)]
struct CancelArgs {
    /// Experiment name.
    name: String,
    #[command(flatten)]
    coordinator: CoordinatorArg,
    /// Also stop runs that are running now.
    #[arg(long)]
    kill: bool,
}

fn main() {
    let cli = Cli::parse();
    // Printing commands piped into `head` end quietly when the reader goes,
    // as other command-line tools do, instead of panicking on a broken pipe.
    // (Not the long-lived ones: they write to sockets and children's pipes.)
    if matches!(
        cli.command,
        Command::Status(_)
            | Command::Ls(_)
            | Command::Export(_)
            | Command::Validate(_)
            | Command::Report(_)
            | Command::Compare(_)
    ) {
        end_quietly_when_stdout_closes();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(dispatch(cli));
    // Do not wait for lingering tasks (e.g. open streams) at exit.
    runtime.shutdown_background();
    std::process::exit(code);
}

/// SIGPIPE ends the process when it comes from stdout, as the default action
/// would; raised by a socket (a coordinator that went away mid-write: gRPC's
/// vectored writes do not suppress it), it is ignored and the write fails
/// with an error as usual.
fn end_quietly_when_stdout_closes() {
    extern "C" fn on_broken_pipe(_: libc::c_int) {
        let mut stdout = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: libc::POLLOUT,
            revents: 0,
        };
        // poll and _exit are async-signal-safe. A pipe whose reader is gone
        // polls as POLLERR.
        unsafe {
            if libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & libc::POLLERR != 0 {
                libc::_exit(128 + libc::SIGPIPE);
            }
        }
    }
    unsafe {
        libc::signal(
            libc::SIGPIPE,
            on_broken_pipe as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

async fn dispatch(cli: Cli) -> i32 {
    let outcome = match cli.command {
        Command::Run(args) => {
            commands::init_logging("warn");
            match args.llm.providers() {
                Err(error) => Err(error.into()),
                Ok(providers) => {
                    commands::run::run(commands::run::Options {
                        file: args.file,
                        root: args.root.root,
                        workers: args.workers,
                        slots: args.slots,
                        retry_failed: args.retry_failed,
                        providers,
                        ollama_url: args.llm.ollama_url,
                        show: args.show.show(),
                        http: args.http,
                    })
                    .await
                }
            }
        }
        Command::Validate(args) => {
            let source = match (args.root, args.coordinator) {
                (Some(root), _) => commands::validate::Observed::Root(root),
                (None, Some(address)) => {
                    commands::validate::Observed::Coordinator(commands::client::Target {
                        address,
                        token_file: args.token.token_file,
                        root: PathBuf::from("./experiments"),
                        tls: args.tls.settings(),
                    })
                }
                (None, None) => commands::validate::Observed::Nothing,
            };
            commands::validate::validate(&args.file, args.json, source).await
        }
        Command::SimServer(args) => {
            commands::init_logging("info");
            commands::sim_server::serve(
                args.listen,
                args.config.as_deref(),
                flotilla_gateway::sim::server::SimServerSettings {
                    limits: flotilla_gateway::limits::Limits {
                        requests_per_minute: args.rpm,
                        tokens_per_minute: args.tpm,
                        concurrency: args.concurrency,
                    },
                    latency: args.latency,
                    models: Vec::new(),
                },
            )
            .await
        }
        Command::Coordinator(CoordinatorCommand::Start(args)) => {
            commands::init_logging("info");
            commands::serve::coordinator(commands::serve::CoordinatorOptions {
                listen: args.listen,
                root: args.root.root,
                token_file: args.token.token_file,
                lease_timeout: args.lease_timeout,
                http: args.http,
                tls: args.tls.settings(),
            })
            .await
        }
        Command::Health(args) => {
            commands::init_logging("error");
            commands::health::health(
                &args.address,
                &args.service,
                &args.tls.settings(),
                args.timeout,
            )
            .await
        }
        Command::Worker(WorkerCommand::Join(args)) => {
            commands::init_logging("info");
            match args.llm.providers() {
                Err(error) => Err(error.into()),
                Ok(providers) => {
                    commands::serve::worker(commands::serve::WorkerOptions {
                        coordinator: args.coordinator,
                        slots: args.slots,
                        name: args.name,
                        token_file: args.token.token_file,
                        root: args.root.root,
                        work_dir: args.work_dir,
                        providers,
                        ollama_url: args.llm.ollama_url,
                        drain_timeout: args.drain_timeout,
                        tls: args.tls.settings(),
                    })
                    .await
                }
            }
        }
        Command::Worker(WorkerCommand::Drain(args)) => {
            commands::init_logging("warn");
            commands::control::drain(&target(args.coordinator), &args.name).await
        }
        Command::Submit(args) => {
            commands::init_logging("warn");
            let target = target(args.coordinator);
            commands::control::submit(
                &target,
                &args.file,
                args.wait.then(|| args.show.show()),
                args.retry_failed,
            )
            .await
        }
        Command::Status(args) => {
            commands::init_logging("warn");
            commands::control::status(&target(args.coordinator), args.name, args.json).await
        }
        Command::Watch(args) => {
            commands::init_logging("warn");
            commands::control::watch(&target(args.coordinator), &args.name, args.show.show()).await
        }
        Command::Resume(args) => {
            commands::init_logging("warn");
            commands::control::resume(
                &target(args.coordinator),
                &args.name,
                args.retry_failed,
                args.wait.then(|| args.show.show()),
            )
            .await
        }
        Command::Ls(args) => {
            commands::init_logging("warn");
            commands::control::list(&target(args.coordinator), args.json).await
        }
        Command::Report(args) => {
            commands::init_logging("warn");
            report(vec![args.name], args.options).await
        }
        Command::Compare(args) => {
            commands::init_logging("warn");
            report(args.names, args.options).await
        }
        Command::Export(args) => {
            commands::init_logging("warn");
            let target = args.coordinator.map(|address| commands::client::Target {
                address,
                token_file: args.token.token_file,
                root: args.root.root.clone(),
                tls: args.tls.settings(),
            });
            commands::export::export(&args.name, args.format, &args.root.root, target.as_ref())
                .await
        }
        Command::Cancel(args) => {
            commands::init_logging("warn");
            commands::control::cancel(&target(args.coordinator), args.name, args.kill).await
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            error
                .downcast_ref::<flotilla_shared::Error>()
                .map(|e| e.exit_code())
                .unwrap_or(exit_code::FAILURE)
        }
    }
}

fn target(args: CoordinatorArg) -> commands::client::Target {
    commands::client::Target {
        address: args.coordinator,
        token_file: args.token.token_file,
        root: args.root.root,
        tls: args.tls.settings(),
    }
}

/// A report (one name) or comparison (several): written here from --root, or
/// by the coordinator on its root.
async fn report(names: Vec<String>, options: AnalysisArgs) -> anyhow::Result<i32> {
    let request = commands::report::Request {
        names,
        format: options.format,
        min_effect: options.min_effect,
    };
    match options.coordinator {
        Some(address) => {
            let target = commands::client::Target {
                address,
                token_file: options.token.token_file,
                root: options.root.root,
                tls: options.tls.settings(),
            };
            commands::report::remote(&target, request).await
        }
        None => commands::report::local(&options.root.root, request),
    }
}
