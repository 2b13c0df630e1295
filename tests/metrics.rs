//! `/metrics` in Prometheus text format, read with the Prometheus project's
//! own Python parser, and the JSON API, with the token asked beyond loopback.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use support::*;

/// A plain HTTP/1.1 GET; returns the status code and body.
fn get(address: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Reads the families the exposition holds with prometheus_client's parser:
/// `{name: {"type": …, "samples": [[name, labels, value], …]}}`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {"type": family.type,
                             "samples": [[s.name, s.labels, s.value] for s in family.samples]}
print(json.dumps(families))
"#;

fn parse(exposition: &str) -> serde_json::Value {
    let mut child = std::process::Command::new(python_with_clients())
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}\n{exposition}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn value(families: &serde_json::Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter()
        .find(|s| s[0] == sample && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .unwrap_or_else(|| panic!("no sample {sample} {labels:?} in {}", families[family]))[2]
        .as_f64()
        .unwrap()
}

#[test]
fn metrics_parse_with_the_prometheus_parser_and_count_runs_calls_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "metrics-token");
    let (coordinator, port) =
        CoordinatorProcess::start_with_http(&dir.path().join("root"), &token, "127.0.0.1:0");
    let http = format!("127.0.0.1:{port}");
    let _worker = coordinator.join_worker("w1", 4, &dir.path().join("w1"));
    // A chat experiment on sim models: runs, LLM calls and tokens to count.
    let file = write_experiment(
        dir.path(),
        "chat.yaml",
        "name: chatty\nrun:\n  kind: chat\n  model: '{model}'\n  prompt: 'Say hello'\n  max_tokens: 16\n\
         variations:\n  - {param: model, values: [sim/echo, sim/always-cooperate]}\nruns_per_variation: 3\n",
    );
    run_ok(
        coordinator
            .cli(&["submit", "--wait", "--no-progress"])
            .arg(&file),
    );

    let (status, exposition) = get(&http, "/metrics", None);
    assert_eq!(status, 200, "{exposition}");
    let families = parse(&exposition);
    let runs = |state: &str| {
        value(
            &families,
            "flotilla_runs",
            "flotilla_runs",
            &[("experiment", "chatty"), ("state", state)],
        )
    };
    assert_eq!(
        (runs("succeeded"), runs("pending"), runs("failed")),
        (6.0, 0.0, 0.0)
    );
    assert_eq!(
        families["flotilla_run_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(
        value(
            &families,
            "flotilla_run_duration_seconds",
            "flotilla_run_duration_seconds_count",
            &[]
        ),
        6.0
    );
    assert_eq!(families["flotilla_llm_calls"]["type"], "counter");
    assert_eq!(
        value(
            &families,
            "flotilla_llm_calls",
            "flotilla_llm_calls_total",
            &[("provider", "sim"), ("model", "echo")]
        ),
        3.0
    );
    assert!(
        value(
            &families,
            "flotilla_llm_output_tokens",
            "flotilla_llm_output_tokens_total",
            &[("provider", "sim"), ("model", "always-cooperate")]
        ) > 0.0
    );
    assert_eq!(
        value(
            &families,
            "flotilla_workers_connected",
            "flotilla_workers_connected",
            &[]
        ),
        1.0
    );
    assert!(
        value(
            &families,
            "flotilla_store_commit_seconds",
            "flotilla_store_commit_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(families["flotilla_spent_usd"]["samples"]
        .as_array()
        .is_some());

    // The JSON API says the same.
    let (status, body) = get(&http, "/api/v1/experiments/chatty", None);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["experiments"][0]["counts"]["succeeded"], 6, "{json}");
    assert_eq!(json["workers"][0]["name"], "w1");
    let (status, body) = get(&http, "/api/v1/experiments/nope", None);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn beyond_loopback_the_http_side_asks_for_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "http-token");
    // 0.0.0.0 listens beyond loopback; the test only ever connects to 127.0.0.1.
    let (_coordinator, port) =
        CoordinatorProcess::start_with_http(&dir.path().join("root"), &token, "0.0.0.0:0");
    let http = format!("127.0.0.1:{port}");
    let (status, body) = get(&http, "/metrics", None);
    assert_eq!(status, 401);
    assert!(body.contains("Authorization: Bearer TOKEN"), "{body}");
    assert_eq!(get(&http, "/metrics", Some("wrong")).0, 401);
    let (status, body) = get(&http, "/metrics", Some("http-token"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE flotilla_workers_connected gauge"));
}

#[test]
fn status_and_the_dashboard_api_report_one_pace_and_eta() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "pace-token");
    let (coordinator, port) =
        CoordinatorProcess::start_with_http(&dir.path().join("root"), &token, "127.0.0.1:0");
    let http = format!("127.0.0.1:{port}");
    // 40 runs of 0.2 s on one slot: about 8 s, long enough to read the pace mid-way.
    let file = write_experiment(
        dir.path(),
        "paced.yaml",
        "name: paced\nrun: {kind: command, command: [sh, -c, \"sleep 0.2; echo '{{\\\"x\\\": 1}}'\"]}\nvariations: [{param: i, values: [1, 2, 3, 4]}]\nruns_per_variation: 10\n",
    );
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    let _worker = coordinator.join_worker("w1", 1, &dir.path().join("w1"));
    let mut cli = serde_json::Value::Null;
    // A dozen runs ended first, so that one more moves the pace little.
    wait_until("a pace while runs remain", || {
        cli = coordinator.status_json("paced")["experiments"][0].clone();
        cli["counts"]["succeeded"].as_u64().unwrap_or(0) >= 12
            && cli["eta_seconds"].is_number()
            && cli["state"] == "running"
    });
    let (status, body) = get(&http, "/api/v1/experiments/paced", None);
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pace = &api["experiments"][0]["pace"];
    // Some 28 runs of 0.2 s remain: it is still running a moment later.
    assert_eq!(api["experiments"][0]["state"], "running", "{api}");
    // Read a moment apart from one pace the coordinator keeps: close.
    let (terminal, dashboard) = (
        cli["runs_per_minute"].as_f64().unwrap(),
        pace["runs_per_minute"].as_f64().unwrap(),
    );
    assert!(
        (terminal - dashboard).abs() <= 0.25 * terminal,
        "status says {terminal} runs/min, the dashboard {dashboard}: {cli} {pace}"
    );
    assert!(pace["eta"].as_f64().unwrap() > 0.0, "{pace}");
}
