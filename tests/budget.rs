//! A global budget that is never exceeded (ARCHITECTURE.md, invariant 1),
//! tried as a user would: programs using the official `openai` client make
//! calls of random size to a sim model priced by the experiment; the
//! coordinator reserves before it assigns, the gateway holds each run to its
//! reservation and asks for top-ups, and the experiment ends
//! `budget_exhausted` when no further run fits — also with a worker and the
//! coordinator killed -9 mid-sweep.

mod support;

use std::path::Path;

use support::*;

/// `CALLS` chat calls of 200 to 2,000 bytes each (random per run), with
/// `max_tokens: 8`; a refused call's error goes to `refusal.txt` and fails the run.
const SPENDER: &str = r#"
import json, os, random, sys, time
from openai import OpenAI

calls, pause = int(sys.argv[1]), float(sys.argv[2])
rng = random.Random(int(os.environ["FLOTILLA_SEED"]))
client = OpenAI()
for _ in range(calls):
    try:
        client.chat.completions.create(
            model="sim/echo", max_tokens=8,
            messages=[{"role": "user", "content": "x" * rng.randint(200, 2000)}])
    except Exception as error:
        with open(os.path.join(os.environ["FLOTILLA_OUTPUT_DIR"], "refusal.txt"), "w") as out:
            out.write(f"{getattr(error, 'status_code', None)} {error}")
        sys.exit(1)
    time.sleep(pause)
print(json.dumps({"calls": calls}))
"#;

/// An experiment of `runs` runs of SPENDER, sim/echo at $100 per million
/// tokens (a 2,000-byte prompt costs $0.05), under `budget`, every call paid
/// (`cache: off`).
fn spender(
    dir: &Path,
    name: &str,
    runs: u32,
    calls: u32,
    pause: f64,
    budget: &str,
) -> std::path::PathBuf {
    let python = python_with_clients();
    std::fs::write(dir.join("spender.py"), SPENDER).unwrap();
    write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nrun:\n  kind: command\n  command: [{python:?}, spender.py, \"{calls}\", \"{pause}\"]\n\
             runs_per_variation: {runs}\nretries: {{max_attempts: 3}}\n\
             prices:\n  sim/echo: {{input: 100, output: 100}}\nbudget: {budget}\n\
             # Every call paid: runs of one seed in other variations would share answers.\n\
             cache: off\n",
            python = python.display().to_string()
        ),
    )
}

/// `flotilla run FILE --root ROOT` with `workers` (its --workers and --slots), to its end.
fn run_here(file: &Path, root: &Path, workers: &[&str]) -> std::process::Output {
    flotilla(&["run"])
        .args(workers)
        .arg(file)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

/// Dollars the calls recorded in flotilla.db cost.
fn metered(root: &Path) -> f64 {
    let connection = rusqlite::Connection::open(root.join("flotilla.db")).unwrap();
    connection
        .query_row("SELECT COALESCE(SUM(cost_usd), 0) FROM calls", [], |row| {
            row.get(0)
        })
        .unwrap()
}

/// Leases reserved and never settled nor released: what stays reserved.
fn open_reservations(root: &Path) -> i64 {
    count(
        root,
        "SELECT COUNT(*) FROM ledger r WHERE r.kind = 'reserved' AND NOT EXISTS \
         (SELECT 1 FROM ledger e WHERE e.lease_id = r.lease_id AND e.kind IN ('settled', 'released'))",
    )
}

/// Runs whose calls cost more than their lease was granted (reserved plus top-ups).
fn runs_over_their_grant(root: &Path) -> i64 {
    count(
        root,
        "SELECT COUNT(*) FROM (SELECT lease_id, \
           SUM(CASE WHEN kind IN ('reserved', 'topped_up') THEN amount_nanos ELSE 0 END) AS granted, \
           SUM(CASE WHEN kind = 'settled' THEN amount_nanos ELSE 0 END) AS spent \
         FROM ledger GROUP BY lease_id) WHERE spent > granted AND granted > 0",
    )
}

#[test]
fn a_binding_budget_ends_the_experiment_and_a_larger_one_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let file = spender(
        dir.path(),
        "spend",
        40,
        2,
        0.0,
        "{total_usd: 0.40, per_run_usd: 0.25}",
    );
    let output = run_here(&file, &root, &["--workers", "2", "--slots", "2"]);
    assert_eq!(output.status.code(), Some(8), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    assert!(said.contains("budget_exhausted"), "{said}");
    assert!(
        said.contains("left of $0.40"),
        "spent, reserved and left show: {said}"
    );
    assert!(
        said.contains("budget exhausted: $"),
        "the reason shows: {said}"
    );
    let summary = read_json(&root.join("spend/batch-summary.json"));
    assert_eq!(summary["state"], "budget_exhausted", "{summary}");
    let reason = summary["reason"].as_str().unwrap();
    assert!(reason.starts_with("budget exhausted: $"), "{reason}");
    assert!(reason.contains("of $0.40 spent"), "{reason}");
    let budget = &summary["budget"];
    assert_eq!(budget["total_usd"], 0.4);
    assert_eq!(
        budget["reserved_usd"], 0.0,
        "nothing stays reserved: {budget}"
    );
    let spent = budget["spent_usd"].as_f64().unwrap();
    assert!(spent <= 0.40, "{spent}");
    assert!(
        (metered(&root) - spent).abs() < 1e-6,
        "the ledger's spending is the calls' metered cost"
    );
    assert!(summary["succeeded"].as_u64().unwrap() > 0);
    assert!(summary["cancelled"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(open_reservations(&root), 0);
    assert_eq!(runs_over_their_grant(&root), 0);
    let report = std::fs::read_to_string(root.join("spend/analysis/analysis-report.md")).unwrap();
    assert!(report.contains("the budget ran out"), "{report}");

    // The forecast from the finished runs: the rest would not fit.
    let forecast = run_ok(flotilla(&["validate"]).arg(&file).arg("--root").arg(&root));
    let forecast = text(&forecast.stdout);
    assert!(
        forecast.contains("cost: worst case $10.00 (40 runs × $0.25 per run); budget $0.40"),
        "{forecast}"
    );
    assert!(forecast.contains("forecast from "), "{forecast}");
    assert!(forecast.contains("(95% interval $"), "{forecast}");
    assert!(forecast.contains("will likely run out"), "{forecast}");

    // A larger total on resubmit is an extension: the experiment goes on.
    let larger = std::fs::read_to_string(&file)
        .unwrap()
        .replace("total_usd: 0.40", "total_usd: 20.0");
    std::fs::write(&file, larger).unwrap();
    let output = run_here(&file, &root, &["--workers", "2", "--slots", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let summary = read_json(&root.join("spend/batch-summary.json"));
    assert_eq!(summary["state"], "completed", "{summary}");
    assert_eq!(summary["succeeded"], 40, "{summary}");
    assert_eq!(open_reservations(&root), 0);
}

#[test]
fn a_run_that_reaches_its_per_run_budget_fails_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    // Ten calls of up to $0.2 worst case each cannot stay under $0.25.
    let file = spender(
        dir.path(),
        "capped",
        1,
        10,
        0.0,
        "{total_usd: 5.0, per_run_usd: 0.25}",
    );
    let output = run_here(&file, &root, &["--workers", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let run_dir = root.join("capped/runs/var-001-run-001");
    let result = read_json(&run_dir.join("result.json"));
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(
        result["error"], "per-run budget reached ($0.25)",
        "{result}"
    );
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM attempts"),
        1,
        "not retried"
    );
    // The program saw a 402 in OpenAI's error shape, in words.
    let refusal = std::fs::read_to_string(run_dir.join("artifacts/refusal.txt")).unwrap();
    assert!(refusal.starts_with("402 "), "{refusal}");
    assert!(
        refusal.contains("per-run budget ($0.25); this call could cost up to $"),
        "{refusal}"
    );
    let spent: f64 = calls_of(&run_dir)
        .iter()
        .map(|c| c["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(spent <= 0.25, "{spent}");
}

#[test]
fn a_call_the_ledger_has_no_room_for_is_refused_with_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    // Only a total: runs start with 1% of it and top up call by call.
    let file = spender(
        dir.path(),
        "model-comparison",
        3,
        20,
        0.0,
        "{total_usd: 0.30}",
    );
    let output = run_here(&file, &root, &["--workers", "1"]);
    assert_eq!(output.status.code(), Some(8), "{}", text(&output.stderr));
    let refusal = std::fs::read_to_string(
        root.join("model-comparison/runs/var-001-run-001/artifacts/refusal.txt"),
    )
    .unwrap();
    assert!(refusal.starts_with("402 "), "{refusal}");
    assert!(
        refusal.contains("budget: experiment model-comparison has $")
            && refusal.contains(" of $0.30 left; this call could cost up to $"),
        "{refusal}"
    );
    let summary = read_json(&root.join("model-comparison/batch-summary.json"));
    assert_eq!(summary["state"], "budget_exhausted");
    assert!(metered(&root) <= 0.30);
    assert_eq!(open_reservations(&root), 0);
}

#[test]
fn the_budget_holds_through_a_killed_worker_and_a_killed_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let mut coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "3s");
    let address = coordinator.address.clone();
    let file = spender(
        dir.path(),
        "faults",
        60,
        3,
        0.05,
        "{total_usd: 3.00, per_run_usd: 0.30}",
    );
    let _w1 = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    let mut doomed = coordinator.join_worker("w2", 2, &dir.path().join("w2"));
    let _w3 = coordinator.join_worker("w3", 2, &dir.path().join("w3"));
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let finished = |status: &serde_json::Value| {
        let counts = &status["experiments"][0]["counts"];
        counts["succeeded"].as_u64().unwrap_or(0) + counts["failed"].as_u64().unwrap_or(0)
    };
    wait_until("some runs to finish", || {
        finished(&coordinator.status_json("faults")) >= 4
    });
    doomed.kill9();
    // The budget may end it first: a lost worker's reservations stay charged.
    wait_until("more runs to finish", || {
        let status = coordinator.status_json("faults");
        finished(&status) >= 8 || status["experiments"][0]["state"] != "running"
    });
    coordinator.process.kill9();
    let coordinator = CoordinatorProcess::start(&root, &token, &address, "3s");
    wait_until("the experiment to end", || {
        let state = coordinator.status_json("faults")["experiments"][0]["state"].clone();
        state == "budget_exhausted" || state == "completed"
    });
    let spent = metered(&root);
    assert!(spent <= 3.00, "metered spend {spent} passed the total");
    assert_eq!(open_reservations(&root), 0, "nothing stays reserved");
    assert_eq!(runs_over_their_grant(&root), 0);
    let status = coordinator.status_json("faults");
    assert_eq!(
        status["experiments"][0]["state"], "budget_exhausted",
        "the budget binds"
    );
    let reason = status["experiments"][0]["end_reason"].as_str().unwrap();
    assert!(reason.starts_with("budget exhausted: $"), "{reason}");
    let budget = &status["experiments"][0]["budget"];
    assert_eq!(budget["reserved_usd"], 0.0, "{budget}");
    assert!(budget["spent_usd"].as_f64().unwrap() <= 3.00, "{budget}");
    // The coordinator's ledger feeds the forecast.
    let forecast = run_ok(coordinator.cli(&["validate"]).arg(&file));
    let forecast = text(&forecast.stdout);
    assert!(forecast.contains("forecast from "), "{forecast}");
    assert!(forecast.contains("budget: $"), "{forecast}");
    // `flotilla ledger` accounts for every dollar: what was settled is what
    // was spent, what the lost worker held was released at the end.
    let ledger = run_ok(flotilla(&["ledger", "faults", "--json", "--root"]).arg(&root));
    let ledger: serde_json::Value = serde_json::from_slice(&ledger.stdout).unwrap();
    let spent = budget["spent_usd"].as_f64().unwrap();
    assert!(
        (ledger["settled_usd"].as_f64().unwrap() - spent).abs() < 1e-6,
        "{ledger}"
    );
    assert_eq!(ledger["outstanding_usd"], 0.0, "{ledger}");
    let (reserved, topped, fenced, released) = (
        ledger["reserved_usd"].as_f64().unwrap(),
        ledger["topped_up_usd"].as_f64().unwrap(),
        ledger["fenced_usd"].as_f64().unwrap(),
        ledger["released_usd"].as_f64().unwrap(),
    );
    assert!(
        released > 0.0,
        "the killed worker's reservations were released: {ledger}"
    );
    for lease in ledger["leases"].as_array().unwrap() {
        let kinds: Vec<&str> = lease["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds[0], "reserved", "{lease}");
        let ends = kinds
            .iter()
            .filter(|k| ["settled", "released"].contains(k))
            .count();
        assert_eq!(ends, 1, "settled or released once: {lease}");
    }
    // Every dollar reserved or topped up was settled (spent or given back
    // unspent), freed when its lease was lost, or released.
    let settled_reservations: f64 = ledger["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "settled")
        })
        .flat_map(|l| {
            l["entries"].as_array().unwrap().iter().filter(|e| {
                ["reserved", "topped_up", "fenced"].contains(&e["kind"].as_str().unwrap())
            })
        })
        .map(|e| {
            let amount = e["amount_usd"].as_f64().unwrap();
            if e["kind"] == "fenced" {
                -amount
            } else {
                amount
            }
        })
        .sum();
    assert!(
        (reserved + topped - fenced - released - settled_reservations).abs() < 1e-6,
        "{ledger}"
    );
    let printed = run_ok(flotilla(&["ledger", "faults", "--root"]).arg(&root));
    let printed = text(&printed.stdout);
    assert!(
        printed.starts_with("faults: budget $3.000000; reserved $"),
        "{printed}"
    );
    assert!(
        printed.contains(" attempt 1 on ") && printed.contains("  released "),
        "{printed}"
    );
}

#[test]
fn a_budget_sweep_whose_next_run_does_not_fit_runs_those_that_do_and_ends() {
    // Four variations of ten runs, six calls each (about $0.17 a run), $0.50
    // reserved for a variation's run until three of its runs finished: near
    // the end the next run in line may not fit while another variation's
    // does. The sweep must go on with those and end `budget_exhausted`.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let file = spender(
        dir.path(),
        "balanced",
        10,
        6,
        0.0,
        "{total_usd: 2.00, per_run_usd: 0.50}",
    );
    let mut yaml = std::fs::read_to_string(&file).unwrap();
    yaml.push_str("variations: [{param: arm, values: [a, b, c, d]}]\n");
    std::fs::write(&file, yaml).unwrap();
    let mut run = Process::spawn({
        let mut command = flotilla(&["run", "--workers", "3", "--slots", "1", "--no-progress"]);
        command.arg(&file).arg("--root").arg(&root);
        command
    });
    let status = run.wait_exit();
    assert_eq!(status.code(), Some(8), "{}", run.log.join("\n"));
    let summary = read_json(&root.join("balanced/batch-summary.json"));
    assert_eq!(summary["state"], "budget_exhausted", "{summary}");
    let spent = summary["budget"]["spent_usd"].as_f64().unwrap();
    assert!(spent <= 2.0, "{summary}");
    // It stopped only when no pending run's estimate fitted: no variation's
    // estimate ($0.50 at most) fits in what was left.
    assert!(spent > 1.5, "stopped early, at ${spent}: {summary}");
    assert_eq!(open_reservations(&root), 0);
    assert_eq!(runs_over_their_grant(&root), 0);
}

#[test]
fn running_runs_report_what_they_have_spent_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let token_file = write_token(dir.path(), "live-spend-token");
    let coordinator = CoordinatorProcess::start(&root, &token_file, "127.0.0.1:0", "3s");
    let _worker = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    // Each run makes its one call at once, then waits 8 s before it ends.
    let file = spender(
        dir.path(),
        "live",
        2,
        1,
        8.0,
        "{total_usd: 5.00, per_run_usd: 1.00}",
    );
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let live = || coordinator.status_json("live")["experiments"][0].clone();
    wait_until("the running runs' spend in status", || {
        let experiment = live();
        experiment["counts"]["running"] == 2
            && experiment["running_spend_usd"].as_f64().unwrap_or(0.0) > 0.0
    });
    // Heartbeats every second: a little later both runs' calls are in.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let experiment = live();
    assert_eq!(experiment["counts"]["running"], 2, "{experiment}");
    assert_eq!(
        experiment["budget"]["spent_usd"], 0.0,
        "nothing settled yet: {experiment}"
    );
    let seen = experiment["running_spend_usd"].as_f64().unwrap();
    wait_until("the experiment to complete", || {
        live()["state"] == "completed"
    });
    let experiment = live();
    assert_eq!(experiment["running_spend_usd"], 0.0, "{experiment}");
    let spent = experiment["budget"]["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - seen).abs() < 1e-6,
        "what the runs reported while running ({seen}) is what they spent ({spent})"
    );
}
