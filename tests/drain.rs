//! Draining workers: SIGTERM or `flotilla worker drain` stops a worker taking
//! runs; running runs finish within its drain timeout or are handed back,
//! requeued without counting as failed attempts; then it leaves.

mod support;

use std::path::Path;

use support::*;

/// Runs of `seconds` each; one attempt only, so a handed-back attempt that
/// counted would fail its run.
fn experiment(dir: &Path, name: &str, seconds: &str, runs: u32) -> std::path::PathBuf {
    write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            r#"name: {name}
run:
  kind: command
  command: ["sh", "-c", "sleep {seconds}; echo '{{{{\"ok\": 1}}}}'"]
variations:
  - {{param: i, values: [1, 2]}}
runs_per_variation: {runs}
retries: {{max_attempts: 1}}
"#
        ),
    )
}

fn join(
    coordinator: &CoordinatorProcess,
    name: &str,
    slots: u32,
    drain: &str,
    dir: &Path,
) -> Process {
    let mut command = flotilla(&[
        "worker",
        "join",
        &coordinator.address,
        "--name",
        name,
        "--slots",
        &slots.to_string(),
        "--drain-timeout",
        drain,
    ]);
    command
        .arg("--token-file")
        .arg(&coordinator.token_file)
        .arg("--work-dir")
        .arg(dir.join(name));
    let mut process = Process::spawn(command);
    process.wait_for_line("joined");
    process
}

fn running_on(coordinator: &CoordinatorProcess, name: &str, worker: &str) -> u64 {
    coordinator.status_json(name)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == worker)
        .map_or(0, |w| w["running"].as_u64().unwrap())
}

#[test]
fn sigterm_lets_running_runs_finish_then_the_worker_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "drain-token");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let file = experiment(dir.path(), "finish", "1.5", 3);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut w1 = join(&coordinator, "w1", 2, "1m", dir.path());
    wait_until("two runs running on w1", || {
        running_on(&coordinator, "finish", "w1") == 2
    });
    unsafe {
        libc::kill(w1.child.id() as i32, libc::SIGTERM);
    }
    // It leaves by itself once its two runs have finished, taking no others.
    let status = w1.wait_exit();
    assert!(status.success(), "{:?}\n{}", status, w1.log.join("\n"));
    let json = coordinator.status_json("finish");
    let counts = &json["experiments"][0]["counts"];
    assert_eq!(counts["succeeded"], 2, "{json}");
    assert_eq!(counts["pending"], 4, "{json}");
    // Another worker does the rest; every run succeeded at its first attempt.
    let _w2 = join(&coordinator, "w2", 4, "1m", dir.path());
    wait_until("the experiment to complete", || {
        coordinator.status_json("finish")["experiments"][0]["state"] == "completed"
    });
    assert_eq!(
        count(
            &root,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'succeeded' AND attempt = 1"
        ),
        6
    );
    assert_eq!(count(&root, "SELECT COUNT(*) FROM attempts"), 6);
}

#[test]
fn a_drain_that_times_out_hands_runs_back_without_spending_their_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "drain-token");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let file = experiment(dir.path(), "handback", "3", 2);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut w1 = join(&coordinator, "w1", 2, "500ms", dir.path());
    wait_until("two runs running on w1", || {
        running_on(&coordinator, "handback", "w1") == 2
    });
    let said = run_ok(&mut coordinator.cli(&["worker", "drain", "w1"]));
    assert!(
        text(&said.stdout).contains("w1: draining; 2 runs running"),
        "{}",
        text(&said.stdout)
    );
    let status = w1.wait_exit();
    assert!(status.success(), "{:?}\n{}", status, w1.log.join("\n"));
    // Both runs were handed back: pending again, not failed.
    assert_handed_back(&coordinator, "handback", 4, 2);
    // With max_attempts 1, they still run to success elsewhere.
    let _w2 = join(&coordinator, "w2", 4, "1m", dir.path());
    wait_until("the experiment to complete", || {
        coordinator.status_json("handback")["experiments"][0]["state"] == "completed"
    });
    let json = coordinator.status_json("handback");
    assert_eq!(json["experiments"][0]["counts"]["succeeded"], 4, "{json}");
    // Draining a worker that is not there says so.
    let gone = coordinator
        .cli(&["worker", "drain", "w9"])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(7));
    assert!(text(&gone.stderr).contains("no worker named 'w9'; workers: w1, w2"));
}

#[test]
fn runs_signalled_with_their_worker_are_handed_back_not_failed() {
    // As Slurm's scancel and systemd's default KillMode do: SIGTERM to every
    // process of the worker, runs first here, so the runs end before the
    // worker has begun to drain.
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "drain-token");
    let root = dir.path().join("root");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let pids = dir.path().join("pids");
    let file = write_experiment(
        dir.path(),
        "signalled.yaml",
        &format!(
            r#"name: signalled
run:
  kind: command
  command: ["sh", "-c", "echo $$ >> {}; sleep 30; echo '{{{{\"ok\": 1}}}}'"]
variations:
  - {{param: i, values: [1, 2]}}
runs_per_variation: 1
retries: {{max_attempts: 1}}
"#,
            pids.display()
        ),
    );
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let mut w1 = join(&coordinator, "w1", 2, "1m", dir.path());
    let read_pids = || -> Vec<i32> {
        std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    wait_until("both runs to start", || read_pids().len() == 2);
    for pid in read_pids() {
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    unsafe {
        libc::kill(w1.child.id() as i32, libc::SIGTERM);
    }
    let status = w1.wait_exit();
    assert!(status.success(), "{:?}\n{}", status, w1.log.join("\n"));
    assert_handed_back(&coordinator, "signalled", 2, 2);
}
