//! Adaptive sampling through the command line (ARCHITECTURE.md, "Adaptive
//! sampling"): `flotilla run` on an experiment with `sampling: {mode:
//! adaptive}`; the scheduler stops giving runs to variations whose question
//! is decided, and ends their runs that have not started `decided`.

mod support;

use std::path::Path;

use support::*;

/// A score of `effect` plus noise of this run's own (seed and effect), and a
/// pass flag.
const SCORER: &str = r#"
import json, os, random, sys
effect = float(sys.argv[1])
rng = random.Random(f"{os.environ['FLOTILLA_SEED']}-{effect}")
score = effect + rng.gauss(0, 1)
print(json.dumps({"score": score, "passed": score > 1.0}))
"#;

const RUNS: usize = 60;

fn experiment(dir: &Path, name: &str, sampling: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("scorer.py"), SCORER).unwrap();
    write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nrun:\n  kind: command\n  command: [python3, scorer.py, \"{{effect}}\"]\n\
             variations:\n  - param: effect\n    values: [0.0, 0.1, 3.0]\n\
             runs_per_variation: {RUNS}\nmetrics:\n  - {{name: score, goal: maximize}}\n  - {{name: passed, goal: maximize}}\n\
             {sampling}"
        ),
    )
}

fn statuses(root: &Path, name: &str) -> Vec<(String, String)> {
    read_csv(&root.join(name).join("results.csv"))
        .into_iter()
        .map(|row| (row["variation"].clone(), row["status"].clone()))
        .collect()
}

#[test]
fn a_best_question_stops_sampling_the_variations_it_eliminated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let file = experiment(
        dir.path(),
        "best",
        "sampling: {mode: adaptive, metric: score, question: best, min_runs: 5}\n",
    );
    run_ok(
        flotilla(&["run", "--workers", "2", "--no-progress"])
            .arg(&file)
            .arg("--root")
            .arg(&root),
    );
    let rows = statuses(&root, "best");
    assert_eq!(rows.len(), 3 * RUNS, "every run has a row");
    let count = |variation: &str, status: &str| {
        rows.iter()
            .filter(|(v, s)| v == variation && s == status)
            .count()
    };
    // The clear loser is eliminated early; its runs that had not started are decided.
    assert!(count("1", "decided") > RUNS / 2, "{rows:?}");
    assert_eq!(count("1", "failed") + count("1", "cancelled"), 0);
    let explained = run_ok(flotilla(&["validate"]).arg(&file));
    assert!(
        text(&explained.stdout).contains("sampling: adaptive on score (question: best"),
        "{}",
        text(&explained.stdout)
    );
    let sampled: usize = rows.iter().filter(|(_, s)| s == "succeeded").count();
    assert!(sampled < 2 * RUNS, "{sampled} runs of {}", 3 * RUNS);
    let summary = read_json(&root.join("best/batch-summary.json"));
    assert_eq!(summary["state"], "completed", "{summary}");
    // The report states the decisions from the confidence sequences.
    let report = std::fs::read_to_string(root.join("best/analysis/analysis-report.md")).unwrap();
    assert!(report.contains("## Adaptive sampling"), "{report}");
    assert!(report.contains("var-001 | eliminated by"), "{report}");
    assert!(
        report.contains("not valid after adaptive stopping"),
        "fixed-sample tests are not shown as decisions"
    );
    assert!(
        report.contains(&format!(
            "saved {} runs",
            count("1", "decided") + count("2", "decided") + count("3", "decided")
        )),
        "{report}"
    );
}

#[test]
fn a_fixed_sweep_and_a_boolean_metric_are_sampled_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let fixed = experiment(dir.path(), "fixed", "sampling: {mode: fixed}\n");
    run_ok(
        flotilla(&["run", "--workers", "2", "--no-progress"])
            .arg(&fixed)
            .arg("--root")
            .arg(&root),
    );
    assert!(statuses(&root, "fixed")
        .iter()
        .all(|(_, s)| s == "succeeded"));
    // A rate: the bounded sequences decide it.
    let rate = experiment(
        dir.path(),
        "rate",
        "sampling: {mode: adaptive, metric: passed}\n",
    );
    run_ok(
        flotilla(&["run", "--workers", "2", "--no-progress"])
            .arg(&rate)
            .arg("--root")
            .arg(&root),
    );
    let rows = statuses(&root, "rate");
    assert!(
        rows.iter().any(|(v, s)| v == "1" && s == "decided"),
        "{rows:?}"
    );
}

#[test]
fn status_shows_each_variation_live_eliminated_or_decided() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let token = write_token(dir.path(), "adaptive-token");
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "10s");
    let file = experiment(
        dir.path(),
        "watched",
        "sampling: {mode: adaptive, metric: score}\n",
    );
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let _worker = coordinator.join_worker("w1", 2, dir.path());
    wait_until("the sweep to end", || {
        coordinator.status_json("watched")["experiments"][0]["state"] == "completed"
    });
    let status = coordinator.status_json("watched");
    let experiment = &status["experiments"][0];
    assert!(
        experiment["counts"]["decided"].as_u64().unwrap() > 0,
        "{status}"
    );
    let standings: Vec<&str> = experiment["variations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["standing"].as_str().unwrap())
        .collect();
    assert!(
        standings[0].starts_with("eliminated by var-003"),
        "{standings:?}"
    );
    assert!(standings[2].starts_with("best"), "{standings:?}");
    let table = run_ok(&mut coordinator.cli(&["status", "watched"]));
    assert!(
        text(&table.stdout).contains("decided"),
        "{}",
        text(&table.stdout)
    );
}
