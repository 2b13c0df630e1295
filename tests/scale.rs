//! Large experiments and many workers as a user meets them: run directories
//! spread over groups past 10,000 runs, and a coordinator that can hold a
//! connection per worker.

mod support;

use std::os::unix::process::CommandExt;

use support::*;

/// 2 variations x 5,001 runs: just past the 10,000 runs a flat `runs/` holds.
const LARGE: &str = r#"name: large
run:
  kind: command
  command: ["/bin/echo", "{{\"v\": {repetition}}}"]
  timeout: 1m
variations:
  - param: a
    values: [1, 2]
runs_per_variation: 5001
"#;

#[test]
fn an_experiment_of_more_than_ten_thousand_runs_groups_its_run_directories() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_experiment(&dir.path().join("exp"), "large.yaml", LARGE);
    let root = dir.path().join("root");
    let output = flotilla(&["run", "--workers", "2", "--slots", "2"])
        .arg(&file)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("10002 succeeded"),
        "{}",
        text(&output.stdout)
    );

    let runs = root.join("large/runs");
    let entries = |path: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(entries(&runs), ["var-001", "var-002"]);
    assert_eq!(entries(&runs.join("var-002")), ["000"]);
    let group = entries(&runs.join("var-002/000"));
    assert_eq!(group.len(), 5001);
    assert!(group.iter().all(|name| name.starts_with("var-002-run-")));

    let last = runs.join("var-002/000/var-002-run-5001");
    let result = read_json(&last.join("result.json"));
    assert_eq!(result["run_id"], "var-002-run-5001");
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["metrics"]["v"], 5001);
    assert_eq!(read_json(&last.join("params.json"))["a"], 2);
    assert_eq!(
        std::fs::read_to_string(last.join("stdout.log")).unwrap(),
        "{\"v\": 5001}\n"
    );

    let rows = read_csv(&root.join("large/results.csv"));
    assert_eq!(rows.len(), 10002);
    assert!(rows.iter().all(|row| row["status"] == "succeeded"));
    let jsonl = std::fs::read_to_string(root.join("large/results.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 10002);
    // Nothing half written is left beside them.
    assert!(!root.join("large/.results.csv.writing").exists());
}

#[test]
fn the_coordinator_raises_its_open_file_limit_to_what_the_system_allows() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "limit-token");
    let mut command = flotilla(&["coordinator", "start", "--listen", "127.0.0.1:0"]);
    command
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--token-file")
        .arg(&token);
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limits.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let coordinator =
        CoordinatorProcess::listening(Process::spawn(command), &dir.path().join("root"), &token);
    let pid = coordinator.process.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let figures: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(
        figures,
        ["4096", "4096"],
        "a thousand workers need more than 256 descriptors: {open_files}"
    );
}

/// One thread serves workers unless asked for more: a second only costs
/// wake-ups while a thousand workers idle (ARCHITECTURE.md, "Scale").
#[test]
fn the_coordinator_serves_on_one_thread_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "threads-token");
    for (extra, expected) in [(None, "threads=1"), (Some("3"), "threads=3")] {
        let root = dir.path().join(format!("root-{expected}"));
        let mut command = flotilla(&["coordinator", "start", "--listen", "127.0.0.1:0"]);
        command
            .arg("--root")
            .arg(&root)
            .arg("--token-file")
            .arg(&token);
        if let Some(threads) = extra {
            command.args(["--threads", threads]);
        }
        let mut process = Process::spawn(command);
        let line = process.wait_for_line("coordinator listening");
        assert!(
            line.split_whitespace().any(|word| word == expected),
            "{expected} expected: {line}"
        );
    }
    let refused = flotilla(&["coordinator", "start", "--threads", "0"])
        .arg("--root")
        .arg(dir.path().join("root-0"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("--threads") && said.contains("1..=1024"),
        "the error names the flag and what is valid: {said}"
    );
}
