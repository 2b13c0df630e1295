//! Command runs (ARCHITECTURE.md, "Worker session"): the program runs in its own process group with the
//! run's parameters substituted and the FLOTILLA_* environment; exit 0 with a
//! JSON object of metrics is success, anything else a failure with its reason.
//!
//! Per run the worker touches the file system as little as it can: stdout and
//! stderr are read through pipes, params.json is shared by all runs of a
//! variation (content-addressed), and output directories are reused. Inode
//! churn, not process start, dominated short runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use flotilla_shared::clock::now_ms;
use flotilla_shared::config::substitute;
use flotilla_shared::duration::format_duration;
use flotilla_shared::grid::value_as_argument;
use flotilla_shared::run::{Assignment, Outcome, RunResult, RunSpec, ShippedFile, COST_METRIC};
use flotilla_shared::workdir::content_hash;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;
use tracing::warn;

use super::RunContext;

/// Logs longer than this are shipped as their last part only.
const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;
/// Artifacts beyond this total are not shipped (the result says so).
const MAX_ARTIFACT_BYTES: u64 = 64 * 1024 * 1024;
const STDERR_TAIL_BYTES: usize = 2048;
/// After the program exits, a grandchild that escaped its process group may
/// still hold stdout open; its output is not waited for longer than this.
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(2);

struct Ending {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    cancelled: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Paths of one run on this worker.
struct RunPaths {
    output_dir: PathBuf,
    metrics: PathBuf,
}

pub async fn execute(
    assignment: Assignment,
    context: &RunContext,
    cancel: oneshot::Receiver<()>,
) -> RunResult {
    let started_at_ms = now_ms();
    let started = Instant::now();
    let output_dir = match context.take_output_dir() {
        Ok(dir) => dir,
        Err(e) => {
            return failed_to_start(
                &assignment,
                format!("cannot create an output directory: {e}"),
                started_at_ms,
            )
        }
    };
    let paths = RunPaths {
        metrics: output_dir.with_extension("metrics.json"),
        output_dir,
    };
    let token = match super::open_gateway_run(&assignment, context) {
        Ok(token) => token,
        Err(error) => {
            context.return_output_dir(paths.output_dir, true);
            return failed_to_start(&assignment, error, started_at_ms);
        }
    };
    let gateway_environment = context.gateway.environment(&token);
    let outcome = run_program(&assignment, context, &paths, &gateway_environment, cancel).await;
    // Whether the run left its output directory empty, as far as this worker saw.
    let mut output_left_empty = false;
    let (calls, budget_stop) = context.gateway.state.runs.close(&token);
    let mut result = RunResult::failed(&assignment, String::new(), started_at_ms);
    result.duration_s = started.elapsed().as_secs_f64();
    match outcome {
        Err(error) => result.error = error,
        Ok(ending) => {
            result.exit_code = ending.exit_code;
            result.signal = ending.signal;
            result.timed_out = ending.timed_out;
            let metrics_file = match std::fs::read_to_string(&paths.metrics) {
                Ok(text) => {
                    let _ = std::fs::remove_file(&paths.metrics);
                    Some(text)
                }
                Err(_) => None,
            };
            let metrics = read_metrics(metrics_file, &ending.stdout).and_then(|mut map| {
                result.cost_usd = take_cost(&mut map)?;
                Ok(map)
            });
            result.outcome = match (&ending, &metrics) {
                (
                    Ending {
                        cancelled: true, ..
                    },
                    _,
                ) => Outcome::Cancelled,
                (
                    Ending {
                        exit_code: Some(0), ..
                    },
                    Ok(_),
                ) => Outcome::Succeeded,
                _ => Outcome::Failed,
            };
            result.error = if ending.cancelled {
                "cancelled".to_string()
            } else if ending.timed_out {
                format!("timed out after {}", format_duration(assignment.timeout))
            } else if let Some(signal) = ending.signal {
                format!("killed by signal {signal} ({})", signal_name(signal))
            } else if let Some(code) = ending.exit_code.filter(|c| *c != 0) {
                format!("exited with code {code}")
            } else if let Err(why) = &metrics {
                why.clone()
            } else {
                String::new()
            };
            result.metrics_json = metrics.ok().map(|m| Value::Object(m).to_string());
            let tail_start = ending.stderr.len().saturating_sub(STDERR_TAIL_BYTES);
            result.stderr_tail = String::from_utf8_lossy(&ending.stderr[tail_start..]).into_owned();
            let (files, left_empty) =
                collect_files(ending.stdout, ending.stderr, &paths.output_dir);
            result.files = files;
            output_left_empty = left_empty;
        }
    }
    super::add_calls(&mut result, calls);
    super::apply_budget_stop(&mut result, budget_stop);
    context.return_output_dir(paths.output_dir, output_left_empty);
    result
}

fn failed_to_start(assignment: &Assignment, error: String, started_at_ms: i64) -> RunResult {
    warn!(run = %assignment.run, error, "run could not start");
    RunResult::failed(assignment, error, started_at_ms)
}

/// The params file of a variation, written once per worker and shared by its runs.
fn params_file(context: &RunContext, params_json: &str) -> Result<PathBuf, String> {
    let path = context.scratch.join("params").join(format!(
        "{}.json",
        &content_hash(params_json.as_bytes())[..32]
    ));
    if !path.exists() {
        let dir = path.parent().expect("params dir");
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        flotilla_shared::atomic_file::write_atomic(&path, params_json.as_bytes())
            .map_err(|e| format!("cannot write params.json: {e}"))?;
    }
    Ok(path)
}

async fn run_program(
    assignment: &Assignment,
    context: &RunContext,
    paths: &RunPaths,
    gateway_environment: &[(&str, String)],
    cancel: oneshot::Receiver<()>,
) -> Result<Ending, String> {
    let RunSpec::Command {
        argv,
        workdir_path,
        workdir_hash,
        ..
    } = &assignment.spec
    else {
        unreachable!("command runs only")
    };
    let workdir = context
        .workdirs
        .resolve(workdir_path, workdir_hash)
        .await
        .map_err(|e| format!("cannot get the experiment's workdir: {e}"))?;
    let params_path = params_file(context, &assignment.params_json)?;
    let params: Map<String, Value> = serde_json::from_str(&assignment.params_json)
        .map_err(|e| format!("params are not a JSON object: {e}"))?;

    let run_id = assignment.run.run_id();
    let builtin = |name: &str| -> Option<String> {
        Some(match name {
            "seed" => assignment.seed.to_string(),
            "run_id" => run_id.clone(),
            "variation" => assignment.run.variation.to_string(),
            "repetition" => assignment.run.repetition.to_string(),
            "attempt" => assignment.attempt.to_string(),
            "output_dir" => paths.output_dir.to_string_lossy().into_owned(),
            _ => return None,
        })
    };
    let lookup = |name: &str| {
        params
            .get(name)
            .map(value_as_argument)
            .or_else(|| builtin(name))
    };
    let argv: Vec<String> = argv
        .iter()
        .map(|a| substitute(a, lookup))
        .collect::<Result<_, _>>()?;
    let program = resolve_program(&argv[0], &workdir);

    let mut command = tokio::process::Command::new(&program);
    command
        .args(&argv[1..])
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout or cancel kills the whole tree.
        .process_group(0)
        .env("FLOTILLA_RUN_ID", &run_id)
        .env("FLOTILLA_EXPERIMENT", &assignment.run.experiment)
        .env("FLOTILLA_VARIATION", assignment.run.variation.to_string())
        .env("FLOTILLA_REPETITION", assignment.run.repetition.to_string())
        .env("FLOTILLA_ATTEMPT", assignment.attempt.to_string())
        .env("FLOTILLA_SEED", assignment.seed.to_string())
        .env("FLOTILLA_PARAMS", &params_path)
        .env("FLOTILLA_OUTPUT_DIR", &paths.output_dir)
        .env("FLOTILLA_METRICS", &paths.metrics)
        .envs(
            gateway_environment
                .iter()
                .map(|(name, value)| (name, value)),
        );
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start '{}': {e}", program.display()))?;
    let process_group = child.id().map(|id| id as i32);
    // The pipes are read in this run's own task, beside the wait: no task
    // per pipe to schedule (and wake on another thread) for every run.
    let mut stdout = std::pin::pin!(read_capped(child.stdout.take().expect("piped stdout")));
    let mut stderr = std::pin::pin!(read_capped(child.stderr.take().expect("piped stderr")));
    let (mut stdout_read, mut stderr_read) = (None, None);
    let deadline = tokio::time::sleep(assignment.timeout);
    let mut deadline = std::pin::pin!(deadline);
    let mut cancel = std::pin::pin!(cancel);

    let mut timed_out = false;
    let mut cancelled = false;
    let status = loop {
        tokio::select! {
            bytes = &mut stdout, if stdout_read.is_none() => stdout_read = Some(bytes),
            bytes = &mut stderr, if stderr_read.is_none() => stderr_read = Some(bytes),
            status = child.wait() => break status,
            _ = &mut deadline => {
                timed_out = true;
                kill_group(process_group);
                break child.wait().await;
            }
            _ = &mut cancel => {
                cancelled = true;
                kill_group(process_group);
                break child.wait().await;
            }
        }
    }
    .map_err(|e| format!("cannot wait for the program: {e}"))?;
    // Children left behind by the program die with it.
    kill_group(process_group);
    use std::os::unix::process::ExitStatusExt;
    if !timed_out && !cancelled && ended_by_stop_signal(status.signal(), status.code()) {
        // Slurm's scancel and systemd's default KillMode signal every process
        // of a worker, its runs with it. Waiting a moment lets the same signal
        // start the worker's drain, which then hands this run back instead of
        // counting it as failed (ARCHITECTURE.md, "Worker session").
        tokio::time::sleep(STOP_SIGNAL_GRACE).await;
    }
    let drain_until = tokio::time::Instant::now() + PIPE_DRAIN_GRACE;
    let stdout = match stdout_read {
        Some(bytes) => bytes,
        None => drain(stdout, drain_until).await,
    };
    let stderr = match stderr_read {
        Some(bytes) => bytes,
        None => drain(stderr, drain_until).await,
    };
    Ok(Ending {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        cancelled,
        stdout,
        stderr,
    })
}

/// The rest of a pipe, unless something other than the program still holds
/// it open at `until`.
async fn drain(
    reader: impl std::future::Future<Output = Vec<u8>>,
    until: tokio::time::Instant,
) -> Vec<u8> {
    match tokio::time::timeout_at(until, reader).await {
        Ok(bytes) => bytes,
        Err(_) => {
            b"[flotilla: output still open after the program ended; not read further]\n".to_vec()
        }
    }
}

/// Reads a pipe to its end, keeping at most the last MAX_LOG_BYTES.
async fn read_capped(mut pipe: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut dropped = false;
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buffer[..n]);
                if kept.len() > 2 * MAX_LOG_BYTES {
                    kept.drain(..kept.len() - MAX_LOG_BYTES);
                    dropped = true;
                }
            }
        }
    }
    if kept.len() > MAX_LOG_BYTES {
        kept.drain(..kept.len() - MAX_LOG_BYTES);
        dropped = true;
    }
    if dropped {
        let mut marked =
            format!("[flotilla: log truncated to its last {MAX_LOG_BYTES} bytes]\n").into_bytes();
        marked.extend_from_slice(&kept);
        return marked;
    }
    kept
}

/// A relative program path with a '/' is taken relative to the workdir; a bare
/// name is looked up on PATH.
pub(super) fn resolve_program(program: &str, workdir: &Path) -> PathBuf {
    let path = Path::new(program);
    if program.contains('/') && path.is_relative() {
        workdir.join(path)
    } else {
        path.to_path_buf()
    }
}

/// How long a run ended by a stop signal waits before it reports, for the
/// worker's own drain to begin.
const STOP_SIGNAL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a program ended by a signal schedulers and service managers stop
/// things with: killed by it, or exiting with 128 + it, as shells do.
pub fn ended_by_stop_signal(signal: Option<i32>, exit_code: Option<i32>) -> bool {
    let is_stop_signal =
        |signal: i32| matches!(signal, libc::SIGTERM | libc::SIGINT | libc::SIGHUP);
    signal.is_some_and(is_stop_signal)
        || exit_code.is_some_and(|code| code > 128 && is_stop_signal(code - 128))
}

pub(super) fn kill_group(process_group: Option<i32>) {
    if let Some(group) = process_group {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// Metrics from $FLOTILLA_METRICS (its content, when the program wrote it),
/// or else the last non-empty stdout line.
fn read_metrics(metrics_file: Option<String>, stdout: &[u8]) -> Result<Map<String, Value>, String> {
    if let Some(text) = metrics_file {
        return match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err("$FLOTILLA_METRICS does not hold a JSON object".to_string()),
        };
    }
    let text = String::from_utf8_lossy(stdout);
    let last_line = text.lines().rev().find(|l| !l.trim().is_empty());
    match last_line.map(|l| serde_json::from_str::<Value>(l.trim())) {
        Some(Ok(Value::Object(map))) => Ok(map),
        _ => Err("no metrics: write a JSON object to $FLOTILLA_METRICS or print one as the last line of stdout".to_string()),
    }
}

/// Removes the program's own cost report from its metrics: it is the run's
/// cost, not a quality to compare.
fn take_cost(metrics: &mut Map<String, Value>) -> Result<Option<f64>, String> {
    match metrics.remove(COST_METRIC) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(cost) if cost.is_finite() && cost >= 0.0 => Ok(Some(cost)),
            _ => Err(format!(
                "metric {COST_METRIC} must be a non-negative number of dollars, got {value}"
            )),
        },
    }
}

/// stdout.log and stderr.log (when the run wrote to them) and everything
/// under the output directory (as artifacts/), to ship back; and whether
/// the output directory was empty.
fn collect_files(stdout: Vec<u8>, stderr: Vec<u8>, output_dir: &Path) -> (Vec<ShippedFile>, bool) {
    let mut files: Vec<ShippedFile> = [("stdout.log", stdout), ("stderr.log", stderr)]
        .into_iter()
        .filter(|(_, content)| !content.is_empty())
        .map(|(path, content)| ShippedFile {
            path: path.into(),
            content,
        })
        .collect();
    let mut total = 0u64;
    let mut skipped = Vec::new();
    let had_entries = collect_artifacts(
        output_dir,
        "artifacts",
        &mut files,
        &mut total,
        &mut skipped,
    );
    if !skipped.is_empty() {
        let note = format!(
            "artifacts over {} MiB in total were not shipped:\n{}\n",
            MAX_ARTIFACT_BYTES / (1024 * 1024),
            skipped.join("\n")
        );
        files.push(ShippedFile {
            path: "artifacts-not-shipped.txt".into(),
            content: note.into_bytes(),
        });
    }
    (files, !had_entries)
}

fn collect_artifacts(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<ShippedFile>,
    total: &mut u64,
    skipped: &mut Vec<String>,
) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    let had_entries = !entries.is_empty();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = format!("{prefix}/{name}");
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            collect_artifacts(&entry.path(), &relative, files, total, skipped);
        } else if file_type.is_file() {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if *total + size > MAX_ARTIFACT_BYTES {
                skipped.push(relative);
                continue;
            }
            if let Ok(content) = std::fs::read(entry.path()) {
                *total += size;
                files.push(ShippedFile {
                    path: relative,
                    content,
                });
            }
        }
    }
    had_entries
}

#[cfg(test)]
mod stop_signal_tests {
    use super::ended_by_stop_signal;

    #[test]
    fn a_stop_signal_counts_whether_it_killed_or_the_program_exited_128_plus_it() {
        assert!(ended_by_stop_signal(Some(libc::SIGTERM), None));
        assert!(ended_by_stop_signal(None, Some(143)));
        assert!(ended_by_stop_signal(None, Some(130)));
        assert!(!ended_by_stop_signal(Some(libc::SIGSEGV), None));
        assert!(!ended_by_stop_signal(None, Some(1)));
        assert!(
            !ended_by_stop_signal(None, Some(137)),
            "SIGKILL is no request to stop"
        );
    }
}
