//! The command line as a user drives it: validate, run, outputs, resume,
//! extension, conflicts and failures.

mod support;

use std::path::Path;

use support::*;

/// A quick sweep: 2 x 2 variations, 3 runs each; metrics printed on stdout,
/// an artifact written, one param echoed to stderr.
const SWEEP: &str = r#"name: sweep
run:
  kind: command
  command: ["sh", "-c", "echo note {a} >&2; echo art > $FLOTILLA_OUTPUT_DIR/out.txt; echo '{{\"value\": {a}, \"ok\": true, \"seed\": {seed}}}'"]
  timeout: 30s
params:
  base: 1
variations:
  - param: a
    values: [1, 2]
  - param: b
    values: [x, "y z"]
runs_per_variation: 3
metrics:
  - {name: value, goal: maximize}
"#;

fn run_experiment(root: &Path, file: &Path) -> std::process::Output {
    flotilla(&["run", "--workers", "2"])
        .arg(file)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn validate_prints_the_expanded_grid() {
    let output = run_ok(&mut flotilla(&[
        "validate",
        "examples/quickstart/experiment.yaml",
    ]));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("12 variation(s) x 20 run(s) = 240 runs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("var-001  noise=0.0  strategy=tit-for-tat"),
        "{stdout}"
    );

    let output = run_ok(&mut flotilla(&[
        "validate",
        "--json",
        "examples/quickstart/experiment.yaml",
    ]));
    let grid: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(grid["total_runs"], 240);
    assert_eq!(grid["variations"].as_array().unwrap().len(), 12);
}

#[test]
fn validate_refuses_bad_files_with_their_location() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("name: x\nrun: {kind: noop}\nrepeat: 3\n", "3:1", "repeat"),
        (
            "name: x\nrun: {kind: noop}\nvariations:\n  - param: a\n    values: []\n",
            "5:13",
            "variations[0].values",
        ),
        (
            "name: x\nrun: {kind: noop}\nvariations:\n  - {param: a, values: [1, 1]}\n",
            "4:28",
            "duplicate value 1",
        ),
        (
            "name: x\nrun:\n  kind: noop\n  timeout: 5 minutes\n",
            "4:12",
            "run.timeout",
        ),
        (
            "name: x\nrun:\n  kind: command\n  command: [echo, \"{nope}\"]\n",
            "4:19",
            "unknown placeholder {nope}",
        ),
        (
            "name: ../x\nrun: {kind: noop}\n",
            "1:7",
            "outside the experiments root",
        ),
        ("name: /abs\nrun: {kind: noop}\n", "1:7", "name"),
        ("name: a/b\nrun: {kind: noop}\n", "1:7", "name"),
    ];
    for (index, (yaml, position, needle)) in cases.iter().enumerate() {
        let file = write_experiment(dir.path(), &format!("bad{index}.yaml"), yaml);
        let output = flotilla(&["validate"]).arg(&file).output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "case {index}: {stderr}");
        assert!(
            stderr.contains(&format!("bad{index}.yaml:{position}:")),
            "case {index}: {stderr}"
        );
        assert!(stderr.contains(needle), "case {index}: {stderr}");
    }
}

#[test]
fn run_writes_organised_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_experiment(&dir.path().join("exp"), "sweep.yaml", SWEEP);
    let root = dir.path().join("experiments");
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("12 succeeded"),
        "{}",
        text(&output.stdout)
    );

    let experiment = root.join("sweep");
    let config = experiment.join("config.yaml");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), SWEEP);
    assert!(std::fs::metadata(&config).unwrap().permissions().readonly());
    assert_eq!(
        std::fs::read_to_string(experiment.join(".meta/config.hash"))
            .unwrap()
            .trim()
            .len(),
        64
    );

    let run = experiment.join("runs/var-004-run-003");
    let params = read_json(&run.join("params.json"));
    assert_eq!(params["a"], 2);
    assert_eq!(params["b"], "y z");
    assert_eq!(params["base"], 1);
    let result = read_json(&run.join("result.json"));
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["metrics"]["value"], 2);
    assert_eq!(result["exit_code"], 0);
    assert_eq!(
        std::fs::read_to_string(run.join("stderr.log")).unwrap(),
        "note 2\n"
    );
    assert!(std::fs::read_to_string(run.join("stdout.log"))
        .unwrap()
        .contains("\"value\": 2"));
    assert_eq!(
        std::fs::read_to_string(run.join("artifacts/out.txt")).unwrap(),
        "art\n"
    );

    let summary = read_json(&experiment.join("batch-summary.json"));
    for field in [
        "name",
        "state",
        "total_runs",
        "succeeded",
        "failed",
        "cancelled",
        "pending",
        "started_at",
        "finished_at",
        "duration_s",
    ] {
        assert!(
            summary.get(field).is_some(),
            "batch-summary.json lacks {field}"
        );
    }
    assert_eq!(summary["state"], "completed");
    assert_eq!(summary["total_runs"], 12);
    assert_eq!(summary["succeeded"], 12);

    let rows = read_csv(&experiment.join("results.csv"));
    assert_eq!(rows.len(), 12);
    let header = std::fs::read_to_string(experiment.join("results.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        header.starts_with(
            "run_id,variation,repetition,seed,attempt,status,worker,duration_s,cost_usd,a,b,base,value,"
        ),
        "{header}"
    );
    assert!(rows
        .iter()
        .all(|r| r["status"] == "succeeded" && r["worker"].starts_with("local-")));
    // Repetitions share seeds across variations.
    let seeds: std::collections::BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r["repetition"].clone(), r["seed"].clone()))
        .collect();
    assert_eq!(seeds.len(), 3);

    assert_eq!(
        count(
            &root,
            "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"
        ),
        12
    );
    assert_eq!(count(&root, "SELECT COUNT(*) FROM attempts"), 12);
    assert_eq!(count(&root, "SELECT COUNT(*) FROM variations"), 4);
    let connection = rusqlite::Connection::open(root.join("flotilla.db")).unwrap();
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn running_again_runs_only_what_is_missing_and_extensions_run_only_new_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let file = write_experiment(&dir.path().join("exp"), "sweep.yaml", SWEEP);
    assert!(run_experiment(&root, &file).status.success());

    let again = run_experiment(&root, &file);
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("unchanged"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM attempts"),
        12,
        "nothing ran twice"
    );

    let extended = SWEEP
        .replace("runs_per_variation: 3", "runs_per_variation: 4")
        .replace("values: [1, 2]", "values: [1, 2, 3]");
    std::fs::write(&file, &extended).unwrap();
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("extended"),
        "{}",
        text(&output.stderr)
    );
    // 3 x 2 variations x 4 runs = 24 runs; 12 existed.
    assert_eq!(
        count(
            &root,
            "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"
        ),
        24
    );
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM attempts"),
        24,
        "only the 12 new runs ran"
    );
    assert_eq!(read_csv(&root.join("sweep/results.csv")).len(), 24);
    assert_eq!(
        std::fs::read_to_string(root.join("sweep/config.yaml")).unwrap(),
        extended
    );

    let changed = extended.replace("base: 1", "base: 2");
    std::fs::write(&file, changed).unwrap();
    let output = run_experiment(&root, &file);
    assert_eq!(output.status.code(), Some(6), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("params.base"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn failures_are_recorded_with_their_reason_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let pid_dir = dir.path().join("pids");
    std::fs::create_dir_all(&pid_dir).unwrap();
    let yaml = format!(
        r#"name: failures
run:
  kind: command
  command: ["sh", "-c", "case {{mode}} in ok) echo '{{{{\"v\": 1}}}}';; exit) echo boom >&2; exit 3;; hang) sleep 60 & echo $! > {pids}/{{run_id}}-{{attempt}}; wait;; silent) echo not-json;; esac"]
  timeout: 1s
variations:
  - param: mode
    values: [ok, exit, hang, silent]
runs_per_variation: 1
retries: {{max_attempts: 2}}
"#,
        pids = pid_dir.display()
    );
    let file = write_experiment(&dir.path().join("exp"), "failures.yaml", &yaml);
    let output = run_experiment(&root, &file);
    assert!(
        output.status.success(),
        "failures are data: {}",
        text(&output.stderr)
    );

    let rows = read_csv(&root.join("failures/results.csv"));
    let by_mode = |mode: &str| rows.iter().find(|r| r["mode"] == mode).unwrap().clone();
    assert_eq!(by_mode("ok")["status"], "succeeded");
    for mode in ["exit", "hang", "silent"] {
        assert_eq!(by_mode(mode)["status"], "failed", "{mode}");
        assert_eq!(
            by_mode(mode)["attempt"],
            "2",
            "{mode} retried up to max_attempts"
        );
    }
    let exit = read_json(&root.join("failures/runs/var-002-run-001/result.json"));
    assert_eq!(exit["exit_code"], 3);
    assert!(exit["error"]
        .as_str()
        .unwrap()
        .contains("exited with code 3"));
    assert_eq!(exit["stderr_tail"], "boom\n");
    let hang = read_json(&root.join("failures/runs/var-003-run-001/result.json"));
    assert_eq!(hang["timed_out"], true);
    assert!(hang["error"]
        .as_str()
        .unwrap()
        .contains("timed out after 1s"));
    let silent = read_json(&root.join("failures/runs/var-004-run-001/result.json"));
    assert!(silent["error"].as_str().unwrap().contains("no metrics"));
    assert_eq!(
        count(
            &root,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'failed'"
        ),
        6
    );

    // The timeout killed the whole process group: the background sleeps are gone.
    let pids: Vec<i32> = std::fs::read_dir(&pid_dir)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        wait_until(
            "the timed-out run's child to be gone",
            || unsafe { libc::kill(pid, 0) } != 0,
        );
    }
}

#[test]
fn continue_on_error_false_stops_the_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let yaml = r#"name: strict
run:
  kind: command
  command: ["sh", "-c", "if [ {x} = 1 ]; then exit 1; fi; echo '{{\"v\": 1}}'"]
variations:
  - param: x
    values: [1, 2, 3, 4, 5, 6, 7, 8]
runs_per_variation: 5
retries: {max_attempts: 1}
continue_on_error: false
max_parallel: 1
"#;
    let file = write_experiment(&dir.path().join("exp"), "strict.yaml", yaml);
    let output = run_experiment(&root, &file);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let summary = read_json(&root.join("strict/batch-summary.json"));
    assert_eq!(summary["state"], "failed");
    assert_eq!(summary["failed"], 1);
    assert!(summary["cancelled"].as_u64().unwrap() > 30, "{summary}");
}

#[test]
fn interrupted_run_resumes_with_only_the_missing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    // Runs after the first repetition wait on a gate that opens only after
    // Ctrl+C: the sweep cannot finish before it is interrupted.
    let gate = dir.path().join("gate");
    let yaml = format!(
        r#"name: slow
run:
  kind: command
  command: ["sh", "-c", "[ $FLOTILLA_REPETITION = 1 ] || while [ ! -e {} ]; do sleep 0.02; done; echo '{{{{\"v\": {{x}}}}}}'"]
variations:
  - param: x
    values: [1, 2, 3, 4]
runs_per_variation: 6
"#,
        gate.display()
    );
    let file = write_experiment(&dir.path().join("exp"), "slow.yaml", &yaml);
    let mut command = flotilla(&["run", "--workers", "2"]);
    command.arg(&file).arg("--root").arg(&root);
    let mut process = Process::spawn(command);
    let summary = root.join("slow/batch-summary.json");
    wait_until("some runs to succeed", || {
        summary.exists()
            && std::fs::read_to_string(&summary)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|s| s["succeeded"].as_u64() >= Some(2))
    });
    unsafe { libc::kill(process.child.id() as i32, libc::SIGINT) };
    process.wait_for_line("interrupted: no new runs start");
    std::fs::write(&gate, "open").unwrap();
    let status = process.wait_exit();
    assert_eq!(status.code(), Some(130), "{}", process.log.join("\n"));
    let first = read_json(&summary);
    assert_eq!(first["state"], "cancelled");
    let done = first["succeeded"].as_u64().unwrap();
    assert!(
        done < 24 && first["cancelled"].as_u64().unwrap() > 0,
        "{first}"
    );
    assert_eq!(
        read_csv(&root.join("slow/results.csv")).len(),
        24,
        "partial results are written"
    );

    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        count(
            &root,
            "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"
        ),
        24
    );
    // Every run succeeded exactly once: the resumed run did not repeat finished ones.
    assert_eq!(
        count(
            &root,
            "SELECT COUNT(*) FROM attempts WHERE outcome = 'succeeded'"
        ),
        24
    );
    assert_eq!(read_json(&summary)["state"], "completed");
}

#[test]
fn quickstart_example_runs_and_its_variations_differ() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let output = flotilla(&[
        "run",
        "examples/quickstart/experiment.yaml",
        "--workers",
        "2",
    ])
    .arg("--root")
    .arg(&root)
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let rows = read_csv(&root.join("quickstart/results.csv"));
    assert_eq!(rows.len(), 240);
    assert!(rows.iter().all(|r| r["status"] == "succeeded"));
    let mean = |strategy: &str, noise: &str, metric: &str| {
        let values: Vec<f64> = rows
            .iter()
            .filter(|r| r["strategy"] == strategy && r["noise"] == noise)
            .map(|r| match r[metric].as_str() {
                "true" => 1.0,
                "false" => 0.0,
                number => number.parse().unwrap(),
            })
            .collect();
        assert_eq!(values.len(), 20);
        values.iter().sum::<f64>() / values.len() as f64
    };
    assert!(
        mean("tit-for-tat", "0.0", "cooperation_rate")
            > mean("always-defect", "0.0", "cooperation_rate") + 0.3
    );
    assert!(mean("always-defect", "0.0", "win") > mean("tit-for-tat", "0.0", "win"));
    assert!(
        mean("tit-for-tat", "0.0", "cooperation_rate")
            > mean("tit-for-tat", "0.2", "cooperation_rate")
    );
    assert!(root
        .join("quickstart/runs/var-001-run-001/artifacts/moves.csv")
        .exists());
    let report =
        std::fs::read_to_string(root.join("quickstart/analysis/analysis-report.md")).unwrap();
    assert!(
        report.contains("## Interaction: strategy × noise on score"),
        "{report}"
    );
    let patterns = read_json(&root.join("quickstart/analysis/patterns.json"));
    assert_eq!(patterns["interaction"]["rows"].as_array().unwrap().len(), 4);
    assert_eq!(
        patterns["interaction"]["columns"].as_array().unwrap().len(),
        3
    );
}

#[test]
fn results_csv_is_kept_current_while_the_experiment_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let yaml = r#"name: live
run:
  kind: command
  command: ["sh", "-c", "sleep 1; echo '{{\"v\": {x}}}'"]
variations:
  - param: x
    values: [1, 2, 3, 4]
runs_per_variation: 2
"#;
    let file = write_experiment(&dir.path().join("exp"), "live.yaml", yaml);
    let mut command = flotilla(&["run", "--workers", "2"]);
    command.arg(&file).arg("--root").arg(&root);
    let mut process = Process::spawn(command);
    let csv = root.join("live/results.csv");
    // 8 runs of 1 s on 2 workers last at least 4 s; the file is rewritten every 3 s.
    wait_until("results.csv with unfinished runs", || {
        csv.exists()
            && read_csv(&csv)
                .iter()
                .any(|r| r["status"] == "running" || r["status"] == "pending")
    });
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "still running while the file shows unfinished runs"
    );
    assert!(process.wait_exit().success());
    let rows = read_csv(&csv);
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r["status"] == "succeeded"));
}

#[test]
fn report_analyses_variations_comparisons_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    // "good" scores higher than "bad" in every repetition; "broken" always fails.
    let yaml = r#"name: judged
run:
  kind: command
  command: ["sh", "-c", "case {arm} in broken) echo 'crashed at step 42' >&2; exit 2;; good) echo '{{\"score\": '$((FLOTILLA_REPETITION + 10))', \"ok\": true, \"note\": \"x\"}}';; bad) echo '{{\"score\": '$FLOTILLA_REPETITION', \"ok\": false, \"note\": \"y\"}}';; esac"]
variations:
  - param: arm
    values: [bad, good, broken]
runs_per_variation: 6
retries: {max_attempts: 1}
baseline: {arm: bad}
metrics:
  - {name: score, goal: maximize}
  - {name: ok, goal: maximize}
"#;
    let file = write_experiment(&dir.path().join("exp"), "judged.yaml", yaml);
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("analysis-report.md"),
        "{}",
        text(&output.stdout)
    );

    let output = run_ok(
        flotilla(&["report", "judged", "--min-effect", "0.5"])
            .arg("--root")
            .arg(&root),
    );
    let markdown = text(&output.stdout);
    assert!(
        markdown.contains(
            "var-002 (arm=good) beats var-001 (arm=bad) on score by 10 (95% CI [7.5933, 12.4067] unadjusted), Welch"
        ),
        "{markdown}"
    );
    // All true against all false: no t-test applies, McNemar's test on the
    // seed pairs does, with Tango's interval, which inverts it.
    assert!(
        markdown.contains("var-002 (arm=good) beats var-001 (arm=bad) on ok by 1 (95% CI [0.2193, 1] unadjusted), McNemar, runs paired by seed, p_adj=0.014"),
        "{markdown}"
    );
    assert!(
        markdown.contains(
            "is not adjusted for the number of comparisons; the p-values are Holm-adjusted"
        ),
        "{markdown}"
    );
    assert!(
        markdown.contains("Not analysed (values are neither numbers nor booleans): note"),
        "{markdown}"
    );
    assert!(
        markdown.contains("exit 2: exited with code N"),
        "{markdown}"
    );
    assert!(
        markdown
            .contains("To detect a difference of 0.5 standard deviations: 64 runs per variation with independent runs, 34 runs per variation when runs pair up"),
        "{markdown}"
    );
    assert!(!markdown.contains("NaN"), "{markdown}");

    let analysis = root.join("judged/analysis");
    let statistics = read_json(&analysis.join("variation-statistics.json"));
    let good = &statistics["variations"][1];
    assert_eq!(good["metrics"]["score"]["n"], 6);
    assert_eq!(good["metrics"]["score"]["mean"], 13.5);
    assert_eq!(good["metrics"]["ok"]["rate"], 1.0);
    assert_eq!(statistics["variations"][2]["failure_rate"], 1.0);
    assert_eq!(statistics["partial"], false);
    let comparisons = read_json(&analysis.join("comparisons.json"));
    let score = comparisons["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["metric"] == "score" && c["a"] == "var-002")
        .unwrap();
    assert_eq!(
        score["primary_test"], "welch",
        "a constant difference has no paired variance"
    );
    assert_eq!(score["pairs"], 6);
    assert_eq!(score["cliffs_delta"], 1.0);
    assert_eq!(
        score["runs_needed_for_min_effect"], 64,
        "--min-effect 0.5 with the two-sample t-test"
    );
    let patterns = read_json(&analysis.join("patterns.json"));
    assert_eq!(patterns["failure_modes"][0]["count"], 6);
    assert_eq!(
        patterns["failure_modes"][0]["example_run"],
        "var-003-run-001"
    );
    assert_eq!(patterns["main_effects"][0]["best"], "good");

    let plot = std::fs::read_to_string(analysis.join("plots/score-by-variation.svg")).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"),
        "{plot}"
    );
    assert_eq!(
        plot.matches("<circle").count(),
        12,
        "one point per succeeded run"
    );
    assert!(
        plot.contains("no values"),
        "the broken variation says it has none"
    );
    assert!(analysis.join("plots/main-effect-arm-ok.svg").exists());
    assert!(
        markdown.contains("![score by variation](plots/score-by-variation.svg)"),
        "{markdown}"
    );

    let json = run_ok(
        flotilla(&["report", "judged", "--format", "json"])
            .arg("--root")
            .arg(&root),
    );
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(document["experiment"], "judged");

    let missing = flotilla(&["report", "nope"])
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(7), "{}", text(&missing.stderr));
}

#[test]
fn results_jsonl_and_export_give_every_run_with_its_params_metrics_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: exported
run:
  kind: command
  command: ["sh", "-c", "if [ {mode} = bad ]; then echo boom >&2; exit 2; fi; echo '{{\"score\": {n}, \"label\": \"m{n}\"}}'"]
params:
  actors.regulator.model: sim/echo
variations:
  - param: mode
    values: [good, bad]
  - param: n
    values: [1, 2]
retries: {max_attempts: 1}
"#;
    let file = write_experiment(&dir.path().join("exp"), "exported.yaml", yaml);
    let root = dir.path().join("experiments");
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let written = std::fs::read_to_string(root.join("exported/results.jsonl")).unwrap();
    let runs: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(runs.len(), 4);
    let good = &runs[1];
    assert_eq!(good["run_id"], "var-002-run-001");
    assert_eq!(good["status"], "succeeded");
    assert_eq!(good["params"]["n"], 2);
    assert_eq!(good["params"]["actors.regulator.model"], "sim/echo");
    assert_eq!(
        good["metrics"],
        serde_json::json!({"score": 2, "label": "m2"})
    );
    assert_eq!(good["error"], serde_json::Value::Null);
    let bad = &runs[2];
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["params"]["mode"], "bad");
    assert_eq!(bad["error"], "exited with code 2");

    // `flotilla export` prints the same, in either format.
    let jsonl = run_ok(flotilla(&["export", "exported", "--format", "jsonl", "--root"]).arg(&root));
    assert_eq!(text(&jsonl.stdout), written);
    let csv = run_ok(flotilla(&["export", "exported", "--root"]).arg(&root));
    assert_eq!(
        text(&csv.stdout),
        std::fs::read_to_string(root.join("exported/results.csv")).unwrap()
    );
    let missing = flotilla(&["export", "nothing", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(7));
    assert!(text(&missing.stderr).contains("no experiment named 'nothing'"));
}

#[test]
fn cases_from_a_file_are_crossed_with_the_other_axes_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    std::fs::create_dir_all(&exp).unwrap();
    std::fs::write(
        exp.join("configs.jsonl"),
        "{\"id\": \"calm\", \"state.mood\": 1, \"turns\": 3}\n{\"id\": \"tense\", \"state.mood\": 5, \"turns\": 7}\n",
    )
    .unwrap();
    let yaml = r#"name: cased
run:
  kind: command
  command: ["sh", "-c", "echo '{{\"turns\": {turns}, \"mood\": {state.mood}, \"speed\": {speed}}}'"]
variations:
  - param: speed
    values: [1, 2]
  - cases: configs.jsonl
"#;
    let file = write_experiment(&exp, "cased.yaml", yaml);
    let shown = run_ok(flotilla(&["validate"]).arg(&file));
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("cases (2 from configs.jsonl): calm, tense"),
        "{shown}"
    );
    assert!(shown.contains("var-004  case=tense  speed=2"), "{shown}");
    let root = dir.path().join("experiments");
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // Variation 4: speed 2 crossed with the second case.
    let params = read_json(&root.join("cased/runs/var-004-run-001/params.json"));
    assert_eq!(params["speed"], 2);
    assert_eq!(params["id"], "tense");
    assert_eq!(params["state.mood"], 5);
    let result = read_json(&root.join("cased/runs/var-004-run-001/result.json"));
    assert_eq!(result["metrics"]["turns"], 7, "{result}");
    let rows = read_csv(&root.join("cased/results.csv"));
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().any(|r| r["id"] == "calm" && r["speed"] == "1"));

    // A bad case stops everything before it runs, naming file, line and field.
    std::fs::write(
        exp.join("configs.jsonl"),
        "{\"id\": \"calm\", \"turns\": 3}\n\n{\"id\": \"broken\", \"turns\": }\n",
    )
    .unwrap();
    let refused = flotilla(&["validate"]).arg(&file).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = text(&refused.stderr);
    assert!(
        said.contains("configs.jsonl:3:1: variations[1].cases[1]: is not JSON"),
        "{said}"
    );
}

#[test]
fn reports_pair_runs_by_case_in_the_main_effect_of_the_other_axes() {
    let dir = tempfile::tempdir().unwrap();
    // Six cases of very different difficulty, one run each per model: model
    // "strong" scores one more than "weak" on every case.
    let yaml = r#"name: paired
run:
  kind: command
  command: ["sh", "-c", "if [ {model} = strong ]; then b=1; else b=0; fi; echo \"{{\\\"score\\\": $(( {difficulty} * 10 + b ))}}\""]
variations:
  - param: model
    values: [weak, strong]
  - cases: [{id: c1, difficulty: 0}, {id: c2, difficulty: 3}, {id: c3, difficulty: 9}, {id: c4, difficulty: 1}, {id: c5, difficulty: 7}, {id: c6, difficulty: 4}]
metrics:
  - {name: score, goal: maximize}
"#;
    let file = write_experiment(&dir.path().join("exp"), "paired.yaml", yaml);
    let root = dir.path().join("experiments");
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report = std::fs::read_to_string(root.join("paired/analysis/analysis-report.md")).unwrap();
    assert!(report.contains("paired by case"), "{report}");
    let weak = report
        .lines()
        .find(|line| line.starts_with("| model | score | weak |"))
        .unwrap_or_else(|| panic!("{report}"));
    // Unpaired, the levels overlap widely; paired by case the difference is exactly -1.
    assert!(weak.contains("| -1 (6) |"), "{weak}");
}

#[test]
fn simulation_batch_example_runs_every_configuration_and_records_the_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/simulation-batch/experiment.yaml");
    let output = run_experiment(&root, &file);
    assert!(
        output.status.success(),
        "failures are data: {}",
        text(&output.stderr)
    );
    let outcomes: Vec<serde_json::Value> =
        std::fs::read_to_string(root.join("simulation-batch/results.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
    assert_eq!(outcomes.len(), 12);
    let broken: Vec<&serde_json::Value> = outcomes
        .iter()
        .filter(|o| o["status"] != "succeeded")
        .collect();
    assert_eq!(broken.len(), 1, "{outcomes:?}");
    assert_eq!(broken[0]["params"]["id"], "broken");
    assert_eq!(broken[0]["error"], "exited with code 2");
    let stderr =
        std::fs::read_to_string(root.join("simulation-batch/runs/var-012-run-001/stderr.log"))
            .unwrap();
    assert!(
        stderr.contains("turns must be a positive whole number, got -5"),
        "{stderr}"
    );
    assert!(outcomes
        .iter()
        .filter(|o| o["status"] == "succeeded")
        .all(|o| o["metrics"]["final_population"].is_number()));
}

#[test]
fn model_comparison_example_compares_actor_models_under_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let path = path_with_clients();
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/model-comparison/experiment.yaml");
    let output = flotilla(&["run", "--workers", "2", "--slots", "2"])
        .arg(&file)
        .arg("--root")
        .arg(&root)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = read_json(&root.join("model-comparison/batch-summary.json"));
    assert_eq!(summary["succeeded"], 40, "{summary}");
    let spent = summary["budget"]["spent_usd"].as_f64().unwrap();
    assert!(spent > 0.0 && spent <= 50.0, "{summary}");
    let report =
        std::fs::read_to_string(root.join("model-comparison/analysis/analysis-report.md")).unwrap();
    assert!(report.contains("- Best on **deal**"), "{report}");
    assert!(report.contains("| variation | runs with cost | total | mean per run | 95% CI | per success | runs per $ |"), "{report}");
    // Each difference's interval comes from its test's design: paired rates
    // get the interval that inverts McNemar's test, so the two agree.
    let comparisons = read_json(&root.join("model-comparison/analysis/comparisons.json"));
    let mut paired = 0;
    for comparison in comparisons["comparisons"].as_array().unwrap() {
        if comparison["primary_test"] != "mcnemar" || comparison["primary_p"].is_null() {
            continue;
        }
        paired += 1;
        let [low, high] = [0, 1].map(|i| comparison["difference_ci95"][i].as_f64().unwrap());
        let p = comparison["primary_p"].as_f64().unwrap();
        assert_eq!(low > 0.0 || high < 0.0, p < 0.05, "{comparison}");
    }
    assert!(paired > 0, "{comparisons}");
    assert!(
        report.contains("not adjusted for the number of comparisons"),
        "{report}"
    );
    // Every run's calls went through the gateway: six rounds, two actors.
    let calls = calls_of(&root.join("model-comparison/runs/var-004-run-010"));
    assert_eq!(calls.len(), 12);
}

#[test]
fn teardown_runs_when_continue_on_error_stops_the_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: stopped
run:
  kind: command
  command: ["sh", "-c", "if [ {n} = 3 ]; then exit 1; fi; sleep 0.2; echo '{{\"v\": {n}}}'"]
  setup: ["sh", "-c", "echo up $FLOTILLA_WORKER"]
  teardown: ["sh", "-c", "echo down $FLOTILLA_WORKER"]
variations:
  - param: n
    values: [1, 2, 3, 4, 5, 6, 7, 8]
retries: {max_attempts: 1}
continue_on_error: false
"#;
    let file = write_experiment(&dir.path().join("exp"), "stopped.yaml", yaml);
    let root = dir.path().join("experiments");
    let output = run_experiment(&root, &file);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let workers = root.join("stopped/workers");
    let mut set_up = 0;
    for entry in std::fs::read_dir(&workers).unwrap() {
        let worker = entry.unwrap().path();
        let name = worker.file_name().unwrap().to_string_lossy().into_owned();
        let setup = std::fs::read_to_string(worker.join("setup.log")).unwrap();
        assert_eq!(setup, format!("up {name}\n"));
        let teardown = std::fs::read_to_string(worker.join("teardown.log")).unwrap();
        assert_eq!(
            teardown,
            format!("down {name}\n"),
            "every worker set up is torn down"
        );
        set_up += 1;
    }
    assert!(set_up >= 1);
}

#[test]
fn chat_runs_send_rendered_messages_feed_answers_back_and_score_them() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: quiz
run:
  kind: chat
  model: "{model}"
  system: "Answer with a number."
  prompt: "Question {id}: what is {a} plus {b}? The answer is {sum}."
  turns: ["Are you sure about {sum}?"]
  max_tokens: 64
  temperature: 0
  score:
    - {metric: correct, regex: "\\b{sum}\\b"}
    - {metric: first_number, regex: "is (\\d+)"}
    - {metric: polite, contains: "please"}
    - {metric: quality, judge: {model: sim/judge, rubric: "Rate 0-10 how well '{output}' answers {a}+{b}"}}
variations:
  - param: model
    values: [sim/echo, sim/always-cooperate]
  - cases: [{id: q1, a: 2, b: 3, sum: 5}, {id: q2, a: 10, b: 20, sum: 30}]
metrics:
  - {name: correct, goal: maximize}
"#;
    let file = write_experiment(&dir.path().join("exp"), "quiz.yaml", yaml);
    let shown = text(&run_ok(flotilla(&["validate"]).arg(&file)).stdout);
    assert!(shown.contains("run: chat with {model}"), "{shown}");
    let root = dir.path().join("experiments");
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let runs: Vec<serde_json::Value> = std::fs::read_to_string(root.join("quiz/results.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    // sim/echo repeats the last user message: the follow-up turn, which names the sum.
    let echo_q2 = runs
        .iter()
        .find(|r| r["params"]["model"] == "sim/echo" && r["params"]["id"] == "q2")
        .unwrap();
    let metrics = &echo_q2["metrics"];
    assert_eq!(metrics["correct"], true, "{metrics}");
    assert_eq!(
        metrics["first_number"],
        serde_json::Value::Null,
        "{metrics}"
    );
    assert_eq!(metrics["polite"], false);
    let quality = metrics["quality"].as_f64().unwrap();
    assert!((0.0..=10.0).contains(&quality));
    assert!(metrics["input_tokens"].as_u64().unwrap() > 0);
    assert!(metrics["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(metrics["cost"].as_f64().unwrap() > 0.0);
    let cooperate = runs
        .iter()
        .find(|r| r["params"]["model"] == "sim/always-cooperate")
        .unwrap();
    assert_eq!(cooperate["metrics"]["correct"], false);
    // The run keeps the rendered conversation (both turns and both answers) and the answer.
    let run_dir = root.join(format!("quiz/runs/{}", echo_q2["run_id"].as_str().unwrap()));
    let conversation = read_json(&run_dir.join("conversation.json"));
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        5,
        "system, question, answer, follow-up, answer"
    );
    assert_eq!(
        messages[1]["content"],
        "Question q2: what is 10 plus 20? The answer is 30."
    );
    assert_eq!(messages[3]["content"], "Are you sure about 30?");
    assert_eq!(
        std::fs::read_to_string(run_dir.join("answer.txt")).unwrap(),
        "Are you sure about 30?"
    );
    // Calls: two turns and the judge, all metered.
    assert_eq!(calls_of(&run_dir).len(), 3);
}

#[test]
fn a_judge_answer_that_is_not_a_score_fails_the_run_with_the_answer_kept() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: misjudged
run:
  kind: chat
  model: sim/echo
  prompt: "hello"
  score:
    - {metric: quality, judge: {model: sim/echo, rubric: "Rate '{output}' from 0 to 10"}}
retries: {max_attempts: 1}
"#;
    let file = write_experiment(&dir.path().join("exp"), "misjudged.yaml", yaml);
    let root = dir.path().join("experiments");
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let run_dir = root.join("misjudged/runs/var-001-run-001");
    let result = read_json(&run_dir.join("result.json"));
    assert_eq!(result["status"], "failed");
    assert_eq!(
        result["error"],
        "score quality: the judge's answer is not a score from 0 to 10: \"Rate 'hello' from 0 to 10\""
    );
    let kept = std::fs::read_to_string(run_dir.join("judge-quality.txt")).unwrap();
    assert_eq!(kept, "Rate 'hello' from 0 to 10");
}

#[test]
fn chat_eval_example_names_the_best_model_with_an_interval_paired_by_item() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/chat-eval/experiment.yaml");
    let output = run_experiment(&root, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let runs = std::fs::read_to_string(root.join("chat-eval/results.jsonl")).unwrap();
    assert_eq!(runs.lines().count(), 90);
    let report =
        std::fs::read_to_string(root.join("chat-eval/analysis/analysis-report.md")).unwrap();
    let best = report
        .lines()
        .find(|line| line.starts_with("- Best on **correct** (maximize) by model:"))
        .unwrap_or_else(|| panic!("{report}"));
    // A rate of 30 of 30 is not certain: Wilson's interval, not a t-interval
    // of no width.
    assert!(
        best.contains("sim/echo with rate 1 (95% CI [0.8865, 1], Wilson) over 30 runs"),
        "{best}"
    );
    assert!(
        best.contains("Newcombe, paired) over 30 runs paired by case"),
        "{best}"
    );
    let analysis = root.join("chat-eval/analysis");
    let table = report
        .lines()
        .find(|line| line.contains("| rank | variation | n | rate |"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(table.contains("95% CI (Wilson)"), "{table}");
    // Rates are drawn as rates, with their intervals, on [0, 1].
    let effect =
        std::fs::read_to_string(analysis.join("plots/main-effect-model-correct.svg")).unwrap();
    assert!(effect.contains("95% CI (Wilson)"), "{effect}");
    assert_axis_is_zero_to_one(&effect);
    let rates = std::fs::read_to_string(analysis.join("plots/correct-by-variation.svg")).unwrap();
    assert!(rates.contains("rate by variation"), "{rates}");
    assert_axis_is_zero_to_one(&rates);
    let effects: serde_json::Value =
        read_json(&analysis.join("patterns.json"))["main_effects"].clone();
    let level = &effects
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["axis"] == "model" && e["metric"] == "correct")
        .unwrap()["levels"][0];
    assert_eq!(level["ci95_method"], "wilson", "{level}");
}

/// The tick labels of an SVG plot's value axis run from 0 to 1.
fn assert_axis_is_zero_to_one(svg: &str) {
    let ticks: Vec<&str> = svg
        .lines()
        .filter(|line| line.contains(r#"font-size="11" text-anchor="middle""#))
        .filter_map(|line| line.split('>').nth(1)?.split('<').next())
        .collect();
    assert_eq!(ticks.first(), Some(&"0"), "{svg}");
    assert_eq!(ticks.last(), Some(&"1"), "{svg}");
}

#[test]
fn llm_prisoners_dilemma_example_finds_cooperation_that_differs_between_pairings() {
    let dir = tempfile::tempdir().unwrap();
    // The example's provider, on an ephemeral port; its limit raised so that the test is quick.
    let (copy, _server) = prisoners_dilemma_copy(dir.path(), 6000);
    let path = path_with_clients();
    let root = dir.path().join("experiments");
    let output = flotilla(&["run", "--workers", "2", "--slots", "4"])
        .arg(copy.join("experiment.yaml"))
        .arg("--root")
        .arg(&root)
        .arg("--providers")
        .arg(copy.join("providers.yaml"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let games: Vec<serde_json::Value> =
        std::fs::read_to_string(root.join("llm-prisoners-dilemma/results.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
    assert_eq!(games.len(), 24);
    let cooperation = |a: &str, b: &str| -> f64 {
        let rates: Vec<f64> = games
            .iter()
            .filter(|g| g["params"]["agent_a.model"] == a && g["params"]["agent_b.model"] == b)
            .map(|g| g["metrics"]["cooperation_rate"].as_f64().unwrap())
            .collect();
        rates.iter().sum::<f64>() / rates.len() as f64
    };
    assert_eq!(
        cooperation("freetier/sim/tit-for-tat", "freetier/sim/tit-for-tat"),
        1.0
    );
    assert!(cooperation("freetier/sim/always-defect", "freetier/sim/tit-for-tat") < 0.1);
    let report =
        std::fs::read_to_string(root.join("llm-prisoners-dilemma/analysis/analysis-report.md"))
            .unwrap();
    assert!(
        report.contains("- Best on **cooperation_rate** (maximize): var-"),
        "{report}"
    );
    // Every call went to the provider of the providers file, paced and metered.
    let calls = calls_of(&root.join("llm-prisoners-dilemma/runs/var-001-run-001"));
    assert_eq!(calls.len(), 20);
    assert!(calls.iter().all(|c| c["provider"] == "freetier"));
}

#[test]
fn help_lists_every_exit_code_the_readme_lists() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = readme.split("## Exit codes").nth(1).unwrap();
    let codes: Vec<&str> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(' ').next())
        .filter(|code| code.chars().all(|c| c.is_ascii_digit()) && !code.is_empty())
        .collect();
    assert!(codes.len() >= 9, "{codes:?}");
    let help = text(&run_ok(&mut flotilla(&["--help"])).stdout);
    let listed = help
        .split("Exit codes:")
        .nth(1)
        .unwrap_or_else(|| panic!("{help}"));
    // The help is wrapped to the terminal: compare words, not lines.
    let listed = format!(
        " {} ",
        listed.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    for code in codes {
        assert!(
            listed.contains(&format!(" {code} ")),
            "exit code {code} is missing from --help: {listed}"
        );
    }
}

#[test]
fn a_test_that_needs_a_missing_tool_skips_unless_ci_is_set() {
    assert_eq!(tool_decision(true, true, "tmux", "tmux"), Ok(true));
    assert_eq!(tool_decision(true, false, "tmux", "tmux"), Ok(true));
    assert_eq!(tool_decision(false, false, "tmux", "tmux"), Ok(false));
    let failure = tool_decision(false, true, "chromium", "chromium").unwrap_err();
    assert!(failure.contains(".ci/run installs it"), "{failure}");
    // And the probe itself: a tool that is nowhere is not found.
    assert!(std::process::Command::new("flotilla-no-such-tool-0")
        .status()
        .is_err());
}
