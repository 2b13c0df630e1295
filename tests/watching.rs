//! Watching a sweep from outside: `--json` events for scripts, `flotilla
//! watch` from many clients at once (killing one changes nothing), plain
//! lines with `--no-progress`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::*;

/// A run that fails on its first attempt and succeeds on its second (a
/// marker file beside the experiment remembers); the others succeed.
fn flaky(marker_dir: &std::path::Path) -> String {
    format!(
        r#"name: events
run:
  kind: command
  command: ["sh", "-c", "if [ {{i}} = 2 ] && [ ! -e {marker}/flaky-{{repetition}} ]; then touch {marker}/flaky-{{repetition}}; exit 3; fi; sleep 0.2; echo '{{{{\"score\": {{i}}}}}}'"]
variations:
  - param: i
    values: [1, 2, 3]
runs_per_variation: 2
retries: {{max_attempts: 2}}
metrics:
  - {{name: score, goal: maximize}}
"#,
        marker = marker_dir.display()
    )
}

fn lines_json(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object: {line}: {e}"))
        })
        .collect()
}

#[test]
fn run_with_json_prints_one_event_per_line_from_the_first_run_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_experiment(dir.path(), "events.yaml", &flaky(dir.path()));
    let output = run_ok(
        flotilla(&["run", "--json", "--workers", "2"])
            .arg(&file)
            .arg("--root")
            .arg(dir.path().join("experiments"))
            .current_dir(dir.path()),
    );
    let events = lines_json(&output.stdout);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for event in &events {
        *kinds
            .entry(event["event"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    // 6 runs, the two of i = 2 twice: 8 attempts started, 6 succeeded, 2 retried.
    assert_eq!(kinds.get("run_started"), Some(&8), "{kinds:?}");
    assert_eq!(kinds.get("run_succeeded"), Some(&6), "{kinds:?}");
    assert_eq!(kinds.get("run_retried"), Some(&2), "{kinds:?}");
    let retried = events.iter().find(|e| e["event"] == "run_retried").unwrap();
    assert_eq!(retried["variation"], 2);
    assert_eq!(retried["attempt"], 1);
    assert!(
        retried["message"].as_str().unwrap().contains("exit"),
        "{retried}"
    );
    assert!(retried["worker"].as_str().unwrap().starts_with("local-"));
    let state = events
        .iter()
        .find(|e| e["event"] == "state_changed")
        .unwrap();
    assert_eq!(state["state"], "completed");
    // Last, the end, which names the report.
    let ended = &events[events.len() - 1];
    assert_eq!(ended["event"], "ended");
    assert_eq!(ended["experiment"]["counts"]["succeeded"], 6);
    let report = ended["report"].as_str().unwrap();
    assert!(
        report.ends_with("events/analysis/analysis-report.md") && Path::new(report).exists(),
        "{ended}"
    );
    // Each event names its experiment and a time.
    // First the state it starts from.
    assert_eq!(events[0]["event"], "watching");
    assert_eq!(events[0]["experiment"]["total_runs"], 6);
    assert!(events[1..events.len() - 1]
        .iter()
        .all(|e| e["experiment"] == "events" && e["at"].as_str().is_some()));
}

/// Runs that take a while, so that watchers come and go while they run.
const SLOW: &str = r#"name: slow
run:
  kind: command
  command: ["sh", "-c", "sleep 0.3; echo '{{\"ok\": 1}}'"]
variations:
  - {param: i, values: [1, 2, 3, 4]}
runs_per_variation: 10
"#;

#[test]
fn many_watchers_follow_an_experiment_and_one_killed_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "watch-token");
    let coordinator =
        CoordinatorProcess::start(&dir.path().join("root"), &token, "127.0.0.1:0", "10s");
    let file = write_experiment(dir.path(), "slow.yaml", SLOW);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    // Watchers before any worker: the experiment waits, they wait with it.
    let spawn_watcher = |args: &[&str]| {
        let mut command = coordinator.cli(&["watch", "slow"]);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().unwrap()
    };
    // JSON watchers' lines are read as they come: each says `watching` once subscribed.
    let json_watchers: Vec<_> = (0..3)
        .map(|_| {
            let mut child = spawn_watcher(&["--json"]);
            let stdout = child.stdout.take().unwrap();
            let (sender, lines) = std::sync::mpsc::channel::<String>();
            std::thread::spawn(move || {
                for line in
                    std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
                {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
            (child, lines)
        })
        .collect();
    let mut received: Vec<Vec<String>> = vec![Vec::new(); json_watchers.len()];
    for (i, (_, lines)) in json_watchers.iter().enumerate() {
        let first = lines
            .recv_timeout(DEADLINE)
            .expect("the watcher subscribes");
        assert!(first.contains("\"event\":\"watching\""), "{first}");
        received[i].push(first);
    }
    let plain_watcher = spawn_watcher(&["--no-progress"]);
    let mut doomed = Process::spawn({
        let mut command = coordinator.cli(&["watch", "slow", "--json"]);
        command.stdout(Stdio::null());
        command
    });
    let _worker = coordinator.join_worker("w1", 4, &dir.path().join("w1"));
    wait_until("runs ending", || {
        coordinator.status_json("slow")["experiments"][0]["counts"]["succeeded"]
            .as_u64()
            .unwrap_or(0)
            >= 8
    });
    doomed.kill9();
    for (i, (mut watcher, lines)) in json_watchers.into_iter().enumerate() {
        let status = watcher.wait().unwrap();
        assert!(status.success());
        received[i].extend(lines.try_iter());
        // The reader thread may still hold the last lines: it ends with the pipe.
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
            received[i].push(line);
        }
        let events: Vec<serde_json::Value> = received[i]
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let ended = events.last().unwrap();
        assert_eq!(ended["event"], "ended");
        assert_eq!(ended["experiment"]["state"], "completed");
        assert_eq!(ended["experiment"]["counts"]["succeeded"], 40);
        // Subscribed before the worker joined: every run's start and end.
        let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
        assert_eq!((count("run_started"), count("run_succeeded")), (40, 40));
    }
    let output = plain_watcher.wait_with_output().unwrap();
    assert!(output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("slow  running  40 runs"), "{stderr}");
    assert!(text(&output.stdout).contains("slow  completed  40 runs: 40 succeeded"));
    let status = coordinator.status_json("slow");
    assert_eq!(status["experiments"][0]["counts"]["succeeded"], 40);
}

#[test]
fn a_cancelled_experiment_resumes_on_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "resume-token");
    let coordinator =
        CoordinatorProcess::start(&dir.path().join("root"), &token, "127.0.0.1:0", "10s");
    let file = write_experiment(dir.path(), "slow.yaml", SLOW);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    // Cancelled before any worker came: every run is cancelled.
    run_ok(&mut coordinator.cli(&["cancel", "slow"]));
    wait_until("the experiment to end cancelled", || {
        coordinator.status_json("slow")["experiments"][0]["state"] == "cancelled"
    });
    let _worker = coordinator.join_worker("w1", 8, &dir.path().join("w1"));
    let output = run_ok(&mut coordinator.cli(&["resume", "slow", "--wait", "--no-progress"]));
    let said = text(&output.stdout);
    assert!(
        said.contains("slow: resumed (40 runs, 40 to run)"),
        "{said}"
    );
    assert!(
        said.contains("slow  completed  40 runs: 40 succeeded"),
        "{said}"
    );
    // Nothing is left to resume; an unknown name is refused with exit code 7.
    let again = run_ok(&mut coordinator.cli(&["resume", "slow"]));
    assert!(text(&again.stdout).contains("nothing to resume"));
    let unknown = coordinator.cli(&["resume", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(7), "{}", text(&unknown.stderr));
}
