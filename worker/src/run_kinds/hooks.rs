//! `run.setup` and `run.teardown`: a program a worker runs once for an
//! experiment, in its workdir, in a process group of its own, killed at its
//! timeout. Its output (stdout and stderr together) becomes
//! `workers/NAME/setup.log` or `teardown.log` under the experiment.

use std::process::Stdio;
use std::time::Duration;

use flotilla_shared::config::Hook;
use flotilla_shared::duration::format_duration;

use super::command::{kill_group, resolve_program};
use super::RunContext;

/// The log kept of a hook: its last part, when it says a lot.
const MAX_HOOK_LOG_BYTES: usize = 1024 * 1024;

/// Runs `hook` for `experiment` in the workdir at `workdir_path` (fetched if
/// this worker's copy differs); returns whether it succeeded (else why) and its output.
pub async fn run_hook(
    context: &RunContext,
    experiment: &str,
    hook: &Hook,
    workdir_path: &std::path::Path,
    workdir_hash: &str,
) -> (Result<(), String>, Vec<u8>) {
    let workdir = match context.workdirs.resolve(workdir_path, workdir_hash).await {
        Ok(workdir) => workdir,
        Err(e) => {
            return (
                Err(format!("cannot get the experiment's workdir: {e}")),
                Vec::new(),
            )
        }
    };
    let program = resolve_program(&hook.command[0], &workdir);
    let (reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return (Err(format!("cannot make a pipe: {e}")), Vec::new()),
    };
    let writer_too = match writer.try_clone() {
        Ok(writer) => writer,
        Err(e) => return (Err(format!("cannot make a pipe: {e}")), Vec::new()),
    };
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&hook.command[1..])
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_too)
        .process_group(0)
        .env("FLOTILLA_EXPERIMENT", experiment)
        .env("FLOTILLA_WORKER", &context.worker_name);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return (
                Err(format!("cannot start '{}': {e}", program.display())),
                Vec::new(),
            )
        }
    };
    // The parent's copies of the write end go with `command`.
    drop(command);
    let process_group = child.id().map(|id| id as i32);
    let output = tokio::task::spawn_blocking(move || read_output(reader));
    let timeout = Duration::from_millis(hook.timeout_ms);
    let status = tokio::select! {
        status = child.wait() => status.map(Some),
        _ = tokio::time::sleep(timeout) => {
            kill_group(process_group);
            child.wait().await.map(|_| None)
        }
    };
    kill_group(process_group);
    let log = tokio::time::timeout(Duration::from_secs(2), output)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let outcome = match status {
        Err(e) => Err(format!("cannot wait for it: {e}")),
        Ok(None) => Err(format!("timed out after {}", format_duration(timeout))),
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "killed by a signal".to_string(),
        }),
    };
    (outcome, log)
}

/// Reads the hook's output until every writer closed it, keeping the last part.
fn read_output(mut reader: std::io::PipeReader) -> Vec<u8> {
    use std::io::Read;
    let mut log = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                log.extend_from_slice(&chunk[..read]);
                if log.len() > 2 * MAX_HOOK_LOG_BYTES {
                    log.drain(..log.len() - MAX_HOOK_LOG_BYTES);
                }
            }
        }
    }
    if log.len() > MAX_HOOK_LOG_BYTES {
        log.drain(..log.len() - MAX_HOOK_LOG_BYTES);
    }
    log
}
