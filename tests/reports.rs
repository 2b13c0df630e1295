//! Cost reporting and `flotilla compare`, driven through the command line.

mod support;

use std::path::Path;

use support::*;

/// A scenario with three arms of known cost and quality: `cheap` is cheap and
/// middling, `pricey` costs more and scores best, `waste` costs most and
/// scores worst. `shift` moves every score (a different prompt, say), plus a
/// little seed-dependent noise so that paired differences vary.
const SCENARIO: &str = r#"import json, os, sys
arm, shift = sys.argv[1], float(sys.argv[2])
seed = int(os.environ["FLOTILLA_SEED"])
cost, base = {"cheap": (0.01, 10), "pricey": (0.05, 14), "waste": (0.06, 9), "free": (-1, 0)}[arm]
score = seed % 7 + base + shift + (seed // 7 % 3) * shift / 4
print(json.dumps({"score": score, "solved": score > 14, "cost_usd": cost}))
"#;

/// `flotilla ARGS --root ROOT`.
fn at_root(root: &Path, args: &[&str]) -> std::process::Command {
    let mut command = flotilla(args);
    command.arg("--root").arg(root);
    command
}

fn experiment(name: &str, shift: f64, arms: &str, goal: &str) -> String {
    format!(
        r#"name: {name}
run:
  kind: command
  command: ["python3", "scenario.py", "{{arm}}", "{{shift}}"]
params: {{shift: {shift}}}
variations:
  - param: arm
    values: [{arms}]
runs_per_variation: 12
retries: {{max_attempts: 1}}
continue_on_error: true
metrics:
  - {{name: score, goal: {goal}}}
  - {{name: solved, goal: maximize}}
"#
    )
}

fn run(root: &Path, dir: &Path, name: &str, yaml: &str) {
    std::fs::write(dir.join("scenario.py"), SCENARIO).unwrap();
    let file = write_experiment(dir, &format!("{name}.yaml"), yaml);
    let output = at_root(root, &["run", "--workers", "2"])
        .arg(&file)
        .output()
        .unwrap();
    // continue_on_error: true, so failed runs still complete the experiment.
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn runs_reporting_cost_get_cost_files_and_a_cost_section() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    run(
        &root,
        dir.path(),
        "priced",
        &experiment("priced", 0.0, "cheap, pricey, waste, free", "maximize"),
    );

    // A negative cost is refused: the run fails and says why.
    let results = read_csv(&root.join("priced/results.csv"));
    let free: Vec<_> = results.iter().filter(|r| r["variation"] == "4").collect();
    assert!(free.iter().all(|r| r["status"] == "failed"), "{free:?}");
    let failed = read_json(&root.join("priced/runs/var-004-run-001/result.json"));
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("metric cost_usd must be a non-negative number of dollars, got -1"),
        "{failed}"
    );
    let cheap = results
        .iter()
        .find(|r| r["run_id"] == "var-001-run-001")
        .unwrap();
    assert_eq!(cheap["cost_usd"], "0.01");
    assert!(
        !cheap.contains_key("metric.cost_usd") && cheap.get("score").is_some(),
        "the cost is a column of its own, not a metric: {cheap:?}"
    );

    let costs = read_json(&root.join("priced/batch-costs.json"));
    let total = costs["cost_usd"].as_f64().unwrap();
    assert!(
        (total - 12.0 * (0.01 + 0.05 + 0.06)).abs() < 1e-9,
        "{costs}"
    );
    assert_eq!(costs["runs_with_cost"], 36);
    assert_eq!(costs["per_run"]["var-002-run-003"], 0.05);
    let summary = read_json(&root.join("priced/batch-summary.json"));
    assert!(
        (summary["cost_usd"].as_f64().unwrap() - total).abs() < 1e-9,
        "{summary}"
    );

    let analysis = root.join("priced/analysis");
    let markdown = std::fs::read_to_string(analysis.join("analysis-report.md")).unwrap();
    assert!(markdown.contains("## Cost efficiency"), "{markdown}");
    assert!(
        markdown.contains("| var-001 arm=cheap | 12 | $0.12 | $0.01 |"),
        "{markdown}"
    );
    // waste is dearer and worse than pricey: off the frontier.
    assert!(
        markdown.contains("- score: var-001, var-002 (cheapest first)"),
        "{markdown}"
    );
    let statistics = read_json(&analysis.join("variation-statistics.json"));
    let pricey = &statistics["variations"][1]["cost"];
    assert_eq!(pricey["runs_with_cost"], 12);
    assert!((pricey["runs_per_dollar"].as_f64().unwrap() - 20.0).abs() < 1e-9);
    assert!((pricey["per_success_usd"].as_f64().unwrap() - 0.05).abs() < 1e-9);
    assert!(statistics["variations"][3]["cost"].is_null());
    let patterns = read_json(&analysis.join("patterns.json"));
    assert_eq!(
        patterns["cost_frontiers"][0]["variations"],
        serde_json::json!(["var-001", "var-002"])
    );
    let plot = std::fs::read_to_string(analysis.join("plots/score-vs-cost.svg")).unwrap();
    assert!(plot.contains("var-003") && plot.trim_end().ends_with("</svg>"));
    assert!(markdown.contains("![score vs cost](plots/score-vs-cost.svg)"));
    assert!(!markdown.contains("NaN"), "{markdown}");
}

#[test]
fn compare_matches_variations_by_parameters_across_experiments() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    run(
        &root,
        dir.path(),
        "v1",
        &experiment("v1", 0.0, "cheap, pricey", "maximize"),
    );
    // v2 scores 2 higher (plus noise) and has an arm v1 lacks.
    run(
        &root,
        dir.path(),
        "v2",
        &experiment("v2", 2.0, "cheap, pricey, waste", "maximize"),
    );

    let output = run_ok(&mut at_root(
        &root,
        &["compare", "v1", "v2", "--min-effect", "0.5"],
    ));
    let markdown = text(&output.stdout);
    assert!(
        markdown.starts_with("# Comparison of `v1`, `v2`"),
        "{markdown}"
    );
    for note in [
        "2 matched variation(s) per experiment, matched on arm.",
        "1 variation(s) of `v2` have no counterpart in every other experiment and are left out.",
        "runs with the same parameters and repetition pair up",
        "Constant `shift` differs: 0 in `v1`, 2 in `v2`.",
    ] {
        assert!(markdown.contains(note), "missing {note:?} in {markdown}");
    }
    assert!(
        markdown.contains("- v2 beats v1 on score by"),
        "the experiments overall: {markdown}"
    );
    assert!(
        markdown.contains("v2/var-002 (arm=pricey) beats v1/var-002 (arm=pricey) on score"),
        "{markdown}"
    );

    let folder = root.join("comparisons/v1-vs-v2");
    let comparisons = read_json(&folder.join("comparisons.json"));
    let list = comparisons["comparisons"].as_array().unwrap();
    // Only the same parameters in different experiments are compared: 2 per metric.
    assert_eq!(list.len(), 4, "{comparisons:#}");
    for comparison in list {
        let (a, b) = (
            comparison["a"].as_str().unwrap(),
            comparison["b"].as_str().unwrap(),
        );
        assert_eq!(a.split('/').nth(1), b.split('/').nth(1), "{a} vs {b}");
        assert_eq!(comparison["pairs"], 12, "equal seeds pair the runs");
    }
    let score = list
        .iter()
        .find(|c| c["metric"] == "score" && c["a"] == "v1/var-001")
        .unwrap();
    assert_eq!(score["primary_test"], "paired_t");
    assert_eq!(score["power_test"], "paired_t");
    assert!(score["difference"].as_f64().unwrap() < -2.0, "{score}");
    let pooled = &comparisons["pooled_comparisons"][0];
    assert_eq!(
        (pooled["a"].as_str(), pooled["b"].as_str()),
        (Some("v1"), Some("v2"))
    );
    assert_eq!(pooled["pairs"], 24);
    assert!(pooled["significant"].as_bool().unwrap(), "{pooled}");
    let statistics = read_json(&folder.join("variation-statistics.json"));
    assert_eq!(statistics["variations"].as_array().unwrap().len(), 4);
    assert_eq!(
        statistics["compared_experiments"],
        serde_json::json!(["v1", "v2"])
    );
    let patterns = read_json(&folder.join("patterns.json"));
    let by_experiment = patterns["main_effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["axis"] == "experiment" && e["metric"] == "score")
        .unwrap();
    assert_eq!(by_experiment["best"], "v2");
    assert!(folder.join("plots/score-by-variation.svg").exists());
    assert!(folder.join("analysis-report.md").exists());

    // Bad requests say what is wrong.
    let unknown = at_root(&root, &["compare", "v1", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(7), "{}", text(&unknown.stderr));
    assert!(text(&unknown.stderr).contains("no experiment named 'nope'"));
    let alone = at_root(&root, &["compare", "v1"]).output().unwrap();
    assert_eq!(alone.status.code(), Some(2), "{}", text(&alone.stderr));
    let twice = at_root(&root, &["compare", "v1", "v1"]).output().unwrap();
    assert_eq!(twice.status.code(), Some(2));
    assert!(text(&twice.stderr).contains("'v1' is named twice"));

    // Opposite goals for the same metric cannot be compared.
    run(
        &root,
        dir.path(),
        "v3",
        &experiment("v3", 0.0, "cheap", "minimize"),
    );
    let conflict = at_root(&root, &["compare", "v1", "v3"]).output().unwrap();
    assert_eq!(conflict.status.code(), Some(2));
    assert!(
        text(&conflict.stderr).contains(
            "metric 'score' is to be maximized in one experiment and minimized in the other"
        ),
        "{}",
        text(&conflict.stderr)
    );
}

#[test]
fn a_runs_cost_is_the_sum_of_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    // The first attempt fails after spending 2 cents; the retry spends 3.
    let yaml = r#"name: retried
run:
  kind: command
  command: ["sh", "-c", "if [ $FLOTILLA_ATTEMPT = 1 ]; then echo '{{\"cost_usd\": 0.02}}'; exit 1; fi; echo '{{\"x\": 1, \"cost_usd\": 0.03}}'"]
runs_per_variation: 3
retries: {max_attempts: 2}
"#;
    let file = write_experiment(dir.path(), "retried.yaml", yaml);
    let output = run_ok(at_root(&root, &["run", "--workers", "1"]).arg(&file));
    assert!(
        text(&output.stdout).contains("3 succeeded, 0 failed, 0 cancelled, 0 running, 0 pending"),
        "{}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stdout).contains(", $0.15 spent)"),
        "the final status line gives the spend: {}",
        text(&output.stdout)
    );
    // Running the file again has nothing to do; the spend is read back from flotilla.db.
    let again = run_ok(at_root(&root, &["run", "--workers", "1"]).arg(&file));
    assert!(
        text(&again.stdout).contains(", $0.15 spent)"),
        "{}",
        text(&again.stdout)
    );
    let results = read_csv(&root.join("retried/results.csv"));
    assert_eq!(results.len(), 3);
    for row in &results {
        assert_eq!(
            (row["attempt"].as_str(), row["status"].as_str()),
            ("2", "succeeded")
        );
        let cost: f64 = row["cost_usd"].parse().unwrap();
        assert!((cost - 0.05).abs() < 1e-12, "{row:?}");
    }
    let summary = read_json(&root.join("retried/batch-summary.json"));
    assert!(
        (summary["cost_usd"].as_f64().unwrap() - 0.15).abs() < 1e-9,
        "{summary}"
    );
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM attempts WHERE cost_usd = 0.02"),
        3
    );
    let markdown =
        std::fs::read_to_string(root.join("retried/analysis/analysis-report.md")).unwrap();
    // Per success counts what the failed attempts spent too.
    assert!(markdown.contains("| 3 | $0.15 | $0.05 |"), "{markdown}");
}

/// No file of an analysis directory may hold NaN or infinities.
fn assert_all_defined(folder: &Path) {
    for file in [
        "analysis-report.md",
        "variation-statistics.json",
        "comparisons.json",
        "patterns.json",
    ] {
        let content = std::fs::read_to_string(folder.join(file)).unwrap();
        for bad in ["NaN", "inf"] {
            assert!(!content.contains(bad), "{file} holds {bad}:\n{content}");
        }
    }
}

#[test]
fn edge_cases_give_defined_figures_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    // one: a single run succeeds; flat (and flat2): no spread, cost on some runs only;
    // dead: every run fails; gappy: score missing in half the runs, a string label.
    let script = r#"case {arm} in
      one) [ $FLOTILLA_REPETITION = 1 ] || exit 3; echo '{{"score": 5, "ok": true}}';;
      flat|flat2) if [ $FLOTILLA_REPETITION -le 2 ]; then echo '{{"score": 7, "ok": true, "cost_usd": 0.5}}'; else echo '{{"score": 7, "ok": true}}'; fi;;
      dead) echo 'boom in /tmp/x/1.txt' >&2; exit 9;;
      gappy) if [ $((FLOTILLA_REPETITION % 2)) = 0 ]; then echo '{{"ok": false, "label": "x"}}'; else echo '{{"score": '$FLOTILLA_REPETITION', "ok": false, "label": "y"}}'; fi;;
    esac"#;
    let yaml = |name: &str, arms: &str| {
        format!(
            "name: {name}\nrun:\n  kind: command\n  command: [\"sh\", \"-c\", {script:?}]\nvariations:\n  - param: arm\n    values: [{arms}]\nruns_per_variation: 4\nretries: {{max_attempts: 1}}\ncontinue_on_error: true\nmetrics:\n  - {{name: score, goal: minimize}}\n  - {{name: ok, goal: maximize}}\n"
        )
    };
    for (name, arms) in [
        ("edges", "one, flat, dead, gappy, flat2"),
        ("edges-again", "one, flat, dead, gappy, flat2"),
        ("single", "flat"),
    ] {
        let file = write_experiment(dir.path(), &format!("{name}.yaml"), &yaml(name, arms));
        let output = at_root(&root, &["run", "--workers", "2"])
            .arg(&file)
            .output()
            .unwrap();
        // Failed runs do not fail the experiment: continue_on_error is true.
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    }

    let markdown = text(&run_ok(&mut at_root(&root, &["report", "edges"])).stdout);
    for expected in [
        "No values for var-003",
        "Not analysed (values are neither numbers nor booleans): label",
        "exit 9: exited with code N",
        "other pair(s) could not be tested: too few values, or values that do not vary",
        "| var-002 arm=flat | 2 | $1 | $0.5 |",
    ] {
        assert!(
            markdown.contains(expected),
            "missing {expected:?}:\n{markdown}"
        );
    }
    assert_all_defined(&root.join("edges/analysis"));
    let comparisons = read_json(&root.join("edges/analysis/comparisons.json"));
    let verdicts: Vec<&str> = comparisons["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["verdict"].as_str().unwrap())
        .collect();
    for reason in ["the values do not vary", "not enough data to compare"] {
        assert!(
            verdicts.iter().any(|v| v.contains(reason)),
            "no verdict says {reason:?}: {verdicts:#?}"
        );
    }

    let single = text(&run_ok(&mut at_root(&root, &["report", "single"])).stdout);
    assert!(single.contains("0 of 0 pairwise comparisons"), "{single}");
    assert_all_defined(&root.join("single/analysis"));

    run_ok(&mut at_root(&root, &["compare", "edges", "edges-again"]));
    assert_all_defined(&root.join("comparisons/edges-vs-edges-again"));
}
