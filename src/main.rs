//! The `flotilla` command line: argument parsing and dispatch only.

mod commands;

use clap::{CommandFactory, Parser, Subcommand};
use flotilla_shared::error::exit_code;

/// The version `--version` prints: the package's, and the commit it was built
/// from (`build.rs`), so that a bug report names the exact source.
const FLOTILLA_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLOTILLA_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "flotilla",
    version = FLOTILLA_VERSION,
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
    Run(commands::run::RunArgs),
    /// Check an experiment file and print its expanded grid.
    Validate(commands::validate::ValidateArgs),
    /// Long-lived coordinator: registry, run manifests, leases; serves workers and the CLI over gRPC.
    #[command(subcommand)]
    Coordinator(CoordinatorCommand),
    /// Worker node: joins a coordinator and runs the runs it is assigned.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Submit an experiment file to a coordinator.
    Submit(commands::control::SubmitArgs),
    /// Show experiments' progress: counts by state, per variation and per worker.
    Status(commands::control::StatusArgs),
    /// Follow a running experiment on a coordinator with the live display (or, with --json,
    /// its events) until it ends; the exit code tells how it ended. Ctrl+C stops watching only.
    Watch(commands::control::WatchArgs),
    /// List the coordinator's experiments.
    Ls(commands::control::ListArgs),
    /// Cancel an experiment: pending runs are cancelled; with --kill running runs are stopped too.
    Cancel(commands::control::CancelArgs),
    /// Continue a cancelled or budget-exhausted experiment on a coordinator with its stored
    /// config: its cancelled runs run (with --retry-failed, its failed ones too). To give it a
    /// larger budget, submit its file again with a larger budget.total_usd.
    Resume(commands::control::ResumeArgs),
    /// Analyse an experiment: statistics per variation, comparisons, main effects, failure modes,
    /// cost efficiency, power.
    ///
    /// Writes <root>/<name>/analysis/ (analysis-report.md, variation-statistics.json,
    /// comparisons.json, patterns.json, plots/*.svg) and prints the report. Works on unfinished
    /// experiments too, marking the figures as partial.
    Report(commands::report::ReportArgs),
    /// Serve the sim models over HTTP with the OpenAI, Anthropic and Ollama APIs, enforcing
    /// provider-style limits.
    ///
    /// A stand-in for an LLM provider in tests, demos and benchmarks: answers are deterministic
    /// (from the model, the `x-flotilla-seed` header and the conversation; `sim/sample` alone
    /// answers anew every time), `GET /stats` counts the calls served, calls over a limit
    /// get 429 with Retry-After and rate-limit headers. Point a providers file at it
    /// (`base_url: http://ADDR/v1` for the OpenAI API).
    SimServer(commands::sim_server::SimServerArgs),
    /// Ask a coordinator's standard grpc.health.v1 service whether it is serving: exit 0 if it
    /// is, 1 otherwise (unreachable, TLS refused, not serving, no answer in time). For scripts,
    /// container healthchecks and probes.
    Health(commands::health::HealthArgs),
    /// Compare experiments: the same analysis across them, on the metrics they share.
    ///
    /// Variations are matched by their parameters (on the axes every experiment has); each
    /// matched variation is compared across the experiments, and each pair of experiments is
    /// compared over all matched variations (runs pair up by seed when the experiments share
    /// their seed). Writes <root>/comparisons/A-vs-B/ with the same files as a report.
    Compare(commands::report::CompareArgs),
    /// Print an experiment's runs for scripts: results.csv or results.jsonl as they stand now.
    ///
    /// One row (or JSON object) per run: run id, variation, repetition, attempts, status, worker,
    /// duration, cost, error, parameters and metrics. Read from --root here, or asked of a
    /// coordinator with --coordinator.
    Export(commands::export::ExportArgs),
    /// The response cache of a root: what it holds and saved (`stats`), and removing answers
    /// (`prune`).
    ///
    /// Every LLM call's answer is recorded under the call as its provider sees it plus the
    /// run's seed and the call's occurrence; a later identical call — in any experiment, on any
    /// worker — is answered from it for nothing. Experiments choose with `cache:` (read_write,
    /// off, read_only, replay; max_age).
    #[command(subcommand)]
    Cache(commands::cache::CacheCommand),
    /// An experiment's budget ledger: per run attempt, what was reserved, let out to its
    /// worker (granted), topped up, freed when its lease was lost (fenced), settled and
    /// released, and when — why a budget ended where it did. Read from --root.
    Ledger(commands::ledger::LedgerArgs),
    /// Print a shell completion script: `flotilla completions bash > ~/.local/share/bash-completion/completions/flotilla`,
    /// `flotilla completions zsh > "${fpath[1]}/_flotilla"`, `flotilla completions fish > ~/.config/fish/completions/flotilla.fish`.
    Completions(commands::conventions::CompletionsArgs),
    /// Print the manual page (roff), or with --out-dir write one page per subcommand:
    /// `flotilla man | man -l -`.
    Man(commands::conventions::ManArgs),
}

#[derive(Subcommand)]
enum CoordinatorCommand {
    /// Start the coordinator and serve until stopped (Ctrl+C or SIGTERM).
    Start(commands::serve::CoordinatorStartArgs),
}

#[derive(Subcommand)]
enum WorkerCommand {
    /// Join the coordinator at ADDR (HOST:PORT) and run runs until stopped; reconnects by itself.
    ///
    /// SIGTERM (or Ctrl+C, or `flotilla worker drain NAME`) drains it: it takes no more runs,
    /// lets running ones finish within --drain-timeout, hands the rest back (requeued without
    /// counting as failed attempts) and leaves. A second signal stops it at once.
    Join(commands::serve::WorkerJoinArgs),
    /// Drain a worker from anywhere: it takes no more runs, lets running ones finish within its
    /// --drain-timeout, hands the rest back and leaves.
    Drain(commands::control::WorkerDrainArgs),
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
            | Command::Cache(_)
            | Command::Ledger(_)
            | Command::Completions(_)
            | Command::Man(_)
    ) {
        end_quietly_when_stdout_closes();
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // The coordinator's own count (ARCHITECTURE.md, "Scale"); other commands use every core.
    if let Command::Coordinator(CoordinatorCommand::Start(args)) = &cli.command {
        runtime.worker_threads(usize::from(args.threads));
    }
    let runtime = runtime.enable_all().build().expect("tokio runtime");
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

impl Command {
    /// What a command logs by default (`RUST_LOG` overrides it): the
    /// long-lived roles say what they do, the others only what goes wrong.
    fn log_level(&self) -> &'static str {
        match self {
            Command::Coordinator(_) | Command::SimServer(_) => "info",
            Command::Worker(WorkerCommand::Join(_)) => "info",
            Command::Health(_) => "error",
            _ => "warn",
        }
    }
}

async fn dispatch(cli: Cli) -> i32 {
    commands::init_logging(cli.command.log_level());
    let outcome = match cli.command {
        Command::Run(args) => commands::run::run(args).await,
        Command::Validate(args) => commands::validate::main(args).await,
        Command::Cache(command) => commands::cache::main(command),
        Command::Completions(args) => commands::conventions::completions(args, Cli::command()),
        Command::Man(args) => commands::conventions::man(args, Cli::command()),
        Command::Ledger(args) => commands::ledger::main(args),
        Command::SimServer(args) => commands::sim_server::main(args).await,
        Command::Coordinator(CoordinatorCommand::Start(args)) => {
            commands::serve::coordinator(args).await
        }
        Command::Health(args) => commands::health::main(args).await,
        Command::Worker(WorkerCommand::Join(args)) => commands::serve::worker(args).await,
        Command::Worker(WorkerCommand::Drain(args)) => commands::control::drain_command(args).await,
        Command::Submit(args) => commands::control::submit_command(args).await,
        Command::Status(args) => commands::control::status_command(args).await,
        Command::Watch(args) => commands::control::watch_command(args).await,
        Command::Resume(args) => commands::control::resume_command(args).await,
        Command::Ls(args) => commands::control::list_command(args).await,
        Command::Report(args) => commands::report::report(args).await,
        Command::Compare(args) => commands::report::compare(args).await,
        Command::Export(args) => commands::export::main(args).await,
        Command::Cancel(args) => commands::control::cancel_command(args).await,
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
