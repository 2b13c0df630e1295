//! TLS between the coordinator and its workers and clients, on gRPC and HTTP,
//! with certificates made by each test; mutual TLS; the standard health
//! check (`flotilla health`); the warning when a coordinator listens beyond
//! loopback in the clear.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn coordinator_with_tls(
    dir: &Path,
    certs: &TestCerts,
    extra: &[&str],
) -> (CoordinatorProcess, u16) {
    let token_file = write_token(dir, "tls-test-token");
    let mut command = flotilla(&[
        "coordinator",
        "start",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ]);
    command
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--tls-cert")
        .arg(&certs.server_cert)
        .arg("--tls-key")
        .arg(&certs.server_key)
        .args(extra);
    let mut process = Process::spawn(command);
    let line = process.wait_for_line("HTTP listening");
    assert!(line.contains("https://127.0.0.1:"), "{line}");
    let port = http_port(&line);
    (
        CoordinatorProcess::listening(process, &dir.join("root"), &token_file),
        port,
    )
}

fn health(address: &str, tls: &[&str]) -> (i32, String) {
    let output = flotilla(&["health", address, "--timeout", "20s"])
        .args(tls)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!("{}{}", text(&output.stdout), text(&output.stderr)),
    )
}

/// An HTTPS GET by Python's standard library; returns the status code, or
/// the error's text.
fn https_get(url: &str, ca: &Path, client: Option<(&Path, &Path)>, token: Option<&str>) -> String {
    let script = r#"
import ssl, sys, urllib.request
url, ca, cert, key, token = sys.argv[1:6]
context = ssl.create_default_context(cafile=ca)
if cert:
    context.load_cert_chain(cert, key)
request = urllib.request.Request(url)
if token:
    request.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(request, context=context, timeout=20) as answer:
        print(answer.status, answer.read().decode()[:200].replace("\n", " "))
except Exception as error:
    print("error", type(error).__name__, error)
"#;
    let (cert, key) = client
        .map(|(c, k)| (c.display().to_string(), k.display().to_string()))
        .unwrap_or_default();
    let output = Command::new("python3")
        .args(["-c", script, url, &ca.display().to_string(), &cert, &key])
        .arg(token.unwrap_or(""))
        .output()
        .unwrap();
    text(&output.stdout).trim().to_string()
}

fn noop_experiment(dir: &Path, name: &str) -> std::path::PathBuf {
    write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            r#"name: {name}
run:
  kind: command
  command: ["sh", "-c", "echo '{{{{\"score\": 1}}}}'"]
variations:
  - {{param: i, values: [1, 2]}}
runs_per_variation: 3
"#
        ),
    )
}

#[test]
fn workers_and_clients_reach_a_tls_coordinator_only_through_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(&dir.path().join("certs"), "Flotilla test CA");
    let other = TestCerts::generate(&dir.path().join("other"), "Someone else's CA");
    let (coordinator, http_port) = coordinator_with_tls(dir.path(), &certs, &[]);
    let ca = certs.ca.to_str().unwrap();
    let address = &coordinator.address.clone();

    // The health check: serving over TLS with the right CA; refused in the
    // clear, with a CA that did not sign the certificate, and once stopped.
    let (code, said) = health(address, &["--tls-ca", ca]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("serving"), "{said}");
    let (code, said) = health(
        &format!("https://localhost:{}", address.rsplit(':').next().unwrap()),
        &["--tls-ca", ca],
    );
    assert_eq!(code, 0, "the certificate names localhost too: {said}");
    let (code, said) = health(address, &[]);
    assert_eq!(code, 1, "plain gRPC to a TLS port: {said}");
    let (code, said) = health(address, &["--tls-ca", other.ca.to_str().unwrap()]);
    assert_eq!(code, 1, "an unknown CA: {said}");
    assert!(
        said.contains("certificate") || said.contains("Certificate"),
        "says why: {said}"
    );

    // A worker and a client over TLS run an experiment to the end.
    let mut worker = Command::new(flotilla_bin());
    worker
        .args([
            "worker",
            "join",
            address,
            "--name",
            "tls-worker",
            "--slots",
            "2",
        ])
        .arg("--token-file")
        .arg(&coordinator.token_file)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .args(["--tls-ca", ca]);
    let mut worker = Process::spawn(worker);
    worker.wait_for_line("joined");
    let file = noop_experiment(dir.path(), "over-tls");
    let output = coordinator
        .cli(&[
            "submit",
            file.to_str().unwrap(),
            "--wait",
            "--no-progress",
            "--tls-ca",
            ca,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let status = coordinator
        .cli(&["status", "over-tls", "--json", "--tls-ca", ca])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["experiments"][0]["counts"]["succeeded"], 6,
        "{status}"
    );

    // A client that does not ask for TLS is told what to pass.
    let plain = coordinator.cli(&["status", "--json"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(4), "unreachable without TLS");

    // HTTPS for the dashboard and the API, with the same certificate.
    let url = format!("https://127.0.0.1:{http_port}/api/v1/status");
    let answer = https_get(&url, &certs.ca, None, None);
    assert!(answer.starts_with("200 "), "{answer}");
    let answer = https_get(&url, &other.ca, None, None);
    assert!(answer.contains("CERTIFICATE_VERIFY_FAILED"), "{answer}");

    worker.kill9();
    drop(coordinator);
    let (code, said) = health(address, &["--tls-ca", ca]);
    assert_eq!(code, 1, "a stopped coordinator: {said}");
}

#[test]
fn mutual_tls_turns_away_clients_without_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(&dir.path().join("certs"), "Flotilla test CA");
    let other = TestCerts::generate(&dir.path().join("other"), "Someone else's CA");
    let (coordinator, http_port) = coordinator_with_tls(
        dir.path(),
        &certs,
        &["--tls-client-ca", certs.ca.to_str().unwrap()],
    );
    let ca = certs.ca.to_str().unwrap();
    let ours = [
        "--tls-ca",
        ca,
        "--tls-client-cert",
        certs.client_cert.to_str().unwrap(),
        "--tls-client-key",
        certs.client_key.to_str().unwrap(),
    ];
    let theirs = [
        "--tls-ca",
        ca,
        "--tls-client-cert",
        other.client_cert.to_str().unwrap(),
        "--tls-client-key",
        other.client_key.to_str().unwrap(),
    ];
    let address = &coordinator.address;
    assert_eq!(health(address, &ours).0, 0);
    assert_eq!(
        health(address, &["--tls-ca", ca]).0,
        1,
        "no client certificate"
    );
    assert_eq!(
        health(address, &theirs).0,
        1,
        "a certificate from another CA"
    );

    let mut args = vec!["status", "--json"];
    args.extend(ours);
    let status = coordinator.cli(&args).output().unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    let status = coordinator
        .cli(&["status", "--json", "--tls-ca", ca])
        .output()
        .unwrap();
    assert!(!status.status.success(), "without a client certificate");

    // A flag given without its pair is refused before anything is tried.
    let half = coordinator
        .cli(&[
            "status",
            "--tls-ca",
            ca,
            "--tls-client-cert",
            certs.client_cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(2));
    assert!(
        text(&half.stderr).contains("--tls-client-key"),
        "{}",
        text(&half.stderr)
    );

    // HTTPS asks for the client certificate too; the token is still needed
    // beyond loopback only, so here the certificate is all it takes.
    let url = format!("https://127.0.0.1:{http_port}/api/v1/status");
    let answer = https_get(
        &url,
        &certs.ca,
        Some((&certs.client_cert, &certs.client_key)),
        None,
    );
    assert!(answer.starts_with("200 "), "{answer}");
    let answer = https_get(&url, &certs.ca, None, None);
    assert!(
        answer.starts_with("error"),
        "no client certificate: {answer}"
    );
}

#[test]
fn bad_tls_files_stop_the_start_naming_flag_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token(dir.path(), "t");
    let not_pem = dir.path().join("cert.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let output = flotilla(&["coordinator", "start", "--listen", "127.0.0.1:0"])
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--tls-cert")
        .arg(&not_pem)
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = text(&output.stderr);
    assert!(
        said.contains("--tls-cert") && said.contains("cert.txt"),
        "{said}"
    );

    let output = flotilla(&["worker", "join", "127.0.0.1:1"])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--tls-ca")
        .arg(dir.path().join("missing-ca.pem"))
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a worker does not retry for ever on a missing CA"
    );
    let said = text(&output.stderr);
    assert!(
        said.contains("--tls-ca") && said.contains("missing-ca.pem"),
        "{said}"
    );
}

#[test]
fn a_coordinator_beyond_loopback_without_tls_warns_once() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_token(dir.path(), "t");
    let start = |listen: &str| {
        let mut command = flotilla(&["coordinator", "start", "--listen", listen]);
        command
            .arg("--root")
            .arg(
                dir.path()
                    .join(format!("root-{}", listen.replace([':', '.'], "-"))),
            )
            .arg("--token-file")
            .arg(&token_file);
        let mut process = Process::spawn(command);
        process.wait_for_line("coordinator listening");
        process.kill9();
        while let Ok(line) = process.lines.try_recv() {
            process.log.push(line);
        }
        process
            .log
            .iter()
            .filter(|line| line.contains("without TLS"))
            .count()
    };
    assert_eq!(start("0.0.0.0:0"), 1);
    assert_eq!(start("127.0.0.1:0"), 0);
    // The health check needs no token: probes have none.
    let mut command = flotilla(&["coordinator", "start", "--listen", "127.0.0.1:0"]);
    command
        .arg("--root")
        .arg(dir.path().join("root-health"))
        .arg("--token-file")
        .arg(&token_file);
    let mut process = Process::spawn(command);
    let line = process.wait_for_line("coordinator listening");
    let address = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .unwrap()
        .to_string();
    let (code, said) = health(&address, &[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(said.trim(), format!("{address}: serving"));
    let (code, said) = health(&address, &["--service", "flotilla.v1.WorkerService"]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = health(&address, &["--service", "no.such.Service"]);
    assert_eq!(code, 1, "{said}");
}
