//! Command runs (DESIGN §5): the program runs in its own process group with the
//! run's parameters substituted and the FLOTILLA_* environment; exit 0 with a
//! JSON object of metrics is success, anything else a failure with its reason.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use flotilla_shared::clock::now_ms;
use flotilla_shared::config::substitute;
use flotilla_shared::duration::format_duration;
use flotilla_shared::grid::value_as_argument;
use flotilla_shared::run::{Assignment, Outcome, RunResult, RunSpec, ShippedFile};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tracing::warn;

use super::RunContext;

/// Logs larger than this are shipped as their last part only.
const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;
/// Artifacts beyond this total are not shipped (the result says so).
const MAX_ARTIFACT_BYTES: u64 = 64 * 1024 * 1024;
const STDERR_TAIL_BYTES: usize = 2048;

struct Ending {
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    cancelled: bool,
}

pub async fn execute(
    assignment: Assignment,
    context: &RunContext,
    cancel: oneshot::Receiver<()>,
) -> RunResult {
    let started_at_ms = now_ms();
    let started = Instant::now();
    let run_dir = context
        .scratch
        .join(&assignment.run.experiment)
        .join(format!(
            "{}-a{}-{}",
            assignment.run.run_id(),
            assignment.attempt,
            assignment.lease_id
        ));
    let outcome = run_program(&assignment, context, &run_dir, cancel).await;
    let mut result = RunResult {
        lease_id: assignment.lease_id,
        run: assignment.run.clone(),
        attempt: assignment.attempt,
        outcome: Outcome::Failed,
        metrics_json: None,
        exit_code: None,
        signal: None,
        timed_out: false,
        error: String::new(),
        stderr_tail: String::new(),
        duration_s: started.elapsed().as_secs_f64(),
        started_at_ms,
        files: Vec::new(),
    };
    match outcome {
        Err(error) => result.error = error,
        Ok(ending) => {
            result.exit_code = ending.exit_code;
            result.signal = ending.signal;
            result.timed_out = ending.timed_out;
            let metrics = read_metrics(&run_dir);
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
            result.stderr_tail = tail_text(&run_dir.join("stderr.log"), STDERR_TAIL_BYTES);
            result.files = collect_files(&run_dir);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&run_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(dir = %run_dir.display(), error = %e, "cannot remove run scratch directory");
        }
    }
    result
}

async fn run_program(
    assignment: &Assignment,
    context: &RunContext,
    run_dir: &Path,
    cancel: oneshot::Receiver<()>,
) -> Result<Ending, String> {
    let RunSpec::Command {
        argv,
        workdir_path,
        workdir_hash,
    } = &assignment.spec
    else {
        unreachable!("command runs only")
    };
    let workdir = context
        .workdirs
        .resolve(workdir_path, workdir_hash)
        .await
        .map_err(|e| format!("cannot get the experiment's workdir: {e}"))?;
    let output_dir = run_dir.join("artifacts");
    std::fs::create_dir_all(&output_dir)
        .map_err(|e| format!("cannot create {}: {e}", output_dir.display()))?;
    let params_path = run_dir.join("params.json");
    std::fs::write(&params_path, &assignment.params_json)
        .map_err(|e| format!("cannot write params.json: {e}"))?;
    let params: Map<String, Value> = serde_json::from_str(&assignment.params_json)
        .map_err(|e| format!("params are not a JSON object: {e}"))?;
    let metrics_path = run_dir.join("metrics.json");

    let run_id = assignment.run.run_id();
    let builtin = |name: &str| -> Option<String> {
        Some(match name {
            "seed" => assignment.seed.to_string(),
            "run_id" => run_id.clone(),
            "variation" => assignment.run.variation.to_string(),
            "repetition" => assignment.run.repetition.to_string(),
            "attempt" => assignment.attempt.to_string(),
            "output_dir" => output_dir.to_string_lossy().into_owned(),
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

    let stdout = std::fs::File::create(run_dir.join("stdout.log"))
        .map_err(|e| format!("cannot create stdout.log: {e}"))?;
    let stderr = std::fs::File::create(run_dir.join("stderr.log"))
        .map_err(|e| format!("cannot create stderr.log: {e}"))?;
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&argv[1..])
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Its own process group, so a timeout or cancel kills the whole tree.
        .process_group(0)
        .env("FLOTILLA_RUN_ID", &run_id)
        .env("FLOTILLA_EXPERIMENT", &assignment.run.experiment)
        .env("FLOTILLA_VARIATION", assignment.run.variation.to_string())
        .env("FLOTILLA_REPETITION", assignment.run.repetition.to_string())
        .env("FLOTILLA_ATTEMPT", assignment.attempt.to_string())
        .env("FLOTILLA_SEED", assignment.seed.to_string())
        .env("FLOTILLA_PARAMS", &params_path)
        .env("FLOTILLA_OUTPUT_DIR", &output_dir)
        .env("FLOTILLA_METRICS", &metrics_path);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start '{}': {e}", program.display()))?;
    let process_group = child.id().map(|id| id as i32);

    let mut timed_out = false;
    let mut cancelled = false;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = tokio::time::sleep(assignment.timeout) => {
            timed_out = true;
            kill_group(process_group);
            child.wait().await
        }
        _ = cancel => {
            cancelled = true;
            kill_group(process_group);
            child.wait().await
        }
    }
    .map_err(|e| format!("cannot wait for the program: {e}"))?;
    // Children left behind by the program die with it.
    kill_group(process_group);
    use std::os::unix::process::ExitStatusExt;
    Ok(Ending {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        cancelled,
    })
}

/// A relative program path with a '/' is taken relative to the workdir; a bare
/// name is looked up on PATH.
fn resolve_program(program: &str, workdir: &Path) -> PathBuf {
    let path = Path::new(program);
    if program.contains('/') && path.is_relative() {
        workdir.join(path)
    } else {
        path.to_path_buf()
    }
}

fn kill_group(process_group: Option<i32>) {
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

/// Metrics from $FLOTILLA_METRICS, or else the last non-empty stdout line.
fn read_metrics(run_dir: &Path) -> Result<Map<String, Value>, String> {
    let metrics_file = run_dir.join("metrics.json");
    if let Ok(text) = std::fs::read_to_string(&metrics_file) {
        return match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err("$FLOTILLA_METRICS does not hold a JSON object".to_string()),
        };
    }
    let last_line = tail_text(&run_dir.join("stdout.log"), 64 * 1024)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string);
    match last_line.as_deref().map(|l| serde_json::from_str::<Value>(l.trim())) {
        Some(Ok(Value::Object(map))) => Ok(map),
        _ => Err("no metrics: write a JSON object to $FLOTILLA_METRICS or print one as the last line of stdout".to_string()),
    }
}

fn tail_text(path: &Path, max_bytes: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// stdout.log, stderr.log and everything under artifacts/, to ship back.
fn collect_files(run_dir: &Path) -> Vec<ShippedFile> {
    let mut files = Vec::new();
    for log in ["stdout.log", "stderr.log"] {
        if let Ok(mut content) = std::fs::read(run_dir.join(log)) {
            if content.len() > MAX_LOG_BYTES {
                let mut kept =
                    format!("[flotilla: log truncated to its last {MAX_LOG_BYTES} bytes]\n")
                        .into_bytes();
                kept.extend_from_slice(&content[content.len() - MAX_LOG_BYTES..]);
                content = kept;
            }
            files.push(ShippedFile {
                path: log.to_string(),
                content,
            });
        }
    }
    let mut total = 0u64;
    let mut skipped = Vec::new();
    collect_artifacts(
        &run_dir.join("artifacts"),
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
    files
}

fn collect_artifacts(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<ShippedFile>,
    total: &mut u64,
    skipped: &mut Vec<String>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
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
}
