//! The whole budget usable through faults (ARCHITECTURE.md, invariants 1
//! and 8), tried as a user would: three workers run programs that call a
//! provider (a sim-server) with the official `openai` client under a $2.00
//! budget; one worker is frozen (SIGSTOP) past its lease while its calls are
//! in flight and then thawed, or has its network cut. Workers fence
//! themselves, the coordinator frees what the lost leases were never let
//! spend, and the sweep goes on: what the provider billed stays within the
//! budget, and the budget ends at least 95% used.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

/// `CALLS` calls of 4,000 bytes with `max_tokens: 1`: each costs the same.
const CALLER: &str = r#"
import json, sys
from openai import OpenAI

client = OpenAI(max_retries=0)
calls = int(sys.argv[1])
for _ in range(calls):
    client.chat.completions.create(
        model="remote/sim/echo", max_tokens=1,
        messages=[{"role": "user", "content": "x" * 4000}])
print(json.dumps({"calls": calls}))
"#;

const BUDGET: f64 = 2.00;

fn providers_file(dir: &Path, provider: &str) -> PathBuf {
    let path = dir.join("providers.yaml");
    std::fs::write(
        &path,
        format!(
            "providers:\n\
             - {{name: remote, api: openai, base_url: 'http://{provider}/v1', api_key_env: REMOTE_KEY,\n   \
               prices: {{'sim/echo': {{input: 10, output: 10}}}}}}\n"
        ),
    )
    .unwrap();
    path
}

/// 80 runs of four calls (about $0.01 each): twice what the budget holds.
fn experiment(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("caller.py"), CALLER).unwrap();
    let python = python_with_clients();
    write_experiment(
        dir,
        "fenced.yaml",
        &format!(
            "name: fenced\nrun:\n  kind: command\n  command: [{python:?}, caller.py, \"4\"]\n\
             runs_per_variation: 80\nretries: {{max_attempts: 3}}\ncache: off\n\
             budget: {{total_usd: {BUDGET}, per_run_usd: 0.50}}\n",
            python = python.display().to_string()
        ),
    )
}

/// `worker join` with the providers file, as `prefix` (a network namespace) runs it.
fn worker(
    prefix: &[&str],
    coordinator: &CoordinatorProcess,
    name: &str,
    dir: &Path,
    providers: &Path,
) -> Process {
    let mut command = Command::new(prefix.first().copied().unwrap_or("env"));
    command.args(prefix.iter().skip(1));
    command
        .arg(flotilla_bin())
        .args([
            "worker",
            "join",
            &coordinator.address,
            "--name",
            name,
            "--slots",
            "2",
        ])
        .arg("--token-file")
        .arg(&coordinator.token_file)
        .arg("--work-dir")
        .arg(dir.join(name))
        .arg("--providers")
        .arg(providers)
        .env("REMOTE_KEY", "k");
    let mut process = Process::spawn(command);
    process.wait_for_line("joined");
    process
}

/// What the provider billed: every call it began, at what one call costs.
fn provider_billed(root: &Path, provider: &str, stats: impl Fn(&str) -> serde_json::Value) -> f64 {
    let unit: f64 = rusqlite::Connection::open(root.join("flotilla.db"))
        .unwrap()
        .query_row(
            "SELECT MAX(cost_usd) FROM calls WHERE status = 'succeeded' AND cost_is_worst_case = 0",
            [],
            |row| row.get(0),
        )
        .unwrap();
    stats(provider)["billed"].as_u64().unwrap() as f64 * unit
}

fn spent(status: &serde_json::Value) -> f64 {
    status["experiments"][0]["budget"]["spent_usd"]
        .as_f64()
        .unwrap_or(0.0)
}

/// Waits for the experiment to end and checks the promise: the provider
/// billed no more than the budget, and the budget was used to ≥ 95%.
fn check_the_budget(coordinator: &CoordinatorProcess, billed: impl Fn() -> f64) {
    wait_until("the experiment to end", || {
        coordinator.status_json("fenced")["experiments"][0]["state"] != "running"
    });
    let status = coordinator.status_json("fenced");
    let experiment = &status["experiments"][0];
    assert_eq!(experiment["state"], "budget_exhausted", "{status}");
    let billed = billed();
    assert!(billed <= BUDGET + 1e-9, "the provider billed ${billed}");
    let spent = spent(&status);
    // The ledger shows what the lost leases freed.
    let ledger = run_ok(flotilla(&["ledger", "fenced", "--json", "--root"]).arg(&coordinator.root));
    let ledger: serde_json::Value = serde_json::from_slice(&ledger.stdout).unwrap();
    assert!(
        spent >= 0.95 * BUDGET,
        "only ${spent} of ${BUDGET} was used: {}; ledger: {ledger}",
        experiment["budget"]
    );
    assert_eq!(ledger["outstanding_usd"], 0.0, "{ledger}");
}

fn signal(process: &Process, signal: &str) {
    let pid = process.child.id().to_string();
    let status = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_worker_frozen_past_its_lease_fences_itself_and_the_budget_is_used_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let (_provider, address) = sim_server(&["--latency", "300ms"]);
    let providers = providers_file(dir.path(), &address);
    let coordinator = CoordinatorProcess::start(&root, &token, "127.0.0.1:0", "2s");
    let file = experiment(dir.path());
    let _w1 = worker(&[], &coordinator, "w1", dir.path(), &providers);
    let mut frozen = worker(&[], &coordinator, "w2", dir.path(), &providers);
    let _w3 = worker(&[], &coordinator, "w3", dir.path(), &providers);
    run_ok(coordinator.cli(&["submit"]).arg(&file));
    wait_until("a third of the budget to be spent", || {
        spent(&coordinator.status_json("fenced")) >= BUDGET / 3.0
    });
    // Frozen with its runs' calls in flight (each takes 300 ms), for three
    // lease timeouts: the coordinator gives its runs to the others.
    wait_until("w2 to have calls in flight", || {
        let status = coordinator.status_json("fenced");
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "w2" && w["running"].as_u64().unwrap_or(0) > 0)
    });
    signal(&frozen, "-STOP");
    std::thread::sleep(Duration::from_secs(6));
    signal(&frozen, "-CONT");
    frozen.wait_for_line("longer than the spend lease");
    let mut coordinator = coordinator;
    let expired = coordinator
        .process
        .wait_for_line("worker missed its heartbeats past the lease timeout");
    assert!(expired.contains("w2"), "{expired}");
    check_the_budget(&coordinator, || {
        provider_billed(&root, &address, sim_server_stats)
    });
}

/// Two network namespaces of the test's own joined by a veth pair: the
/// coordinator, the provider and two workers in one, a third worker in the
/// other, whose link the test cuts. Removed on drop.
struct Network {
    near: String,
    far: String,
    far_link: String,
    /// The near side's address on the link: the coordinator and provider listen there.
    near_address: String,
}

impl Network {
    /// Why not, where the machine allows no namespaces.
    fn create() -> Result<Network, String> {
        let id = std::process::id() % 100_000;
        let subnet = 10 + id % 200;
        let network = Network {
            near: format!("fl-near-{id}"),
            far: format!("fl-far-{id}"),
            far_link: format!("flf{id}"),
            near_address: format!("10.250.{subnet}.1"),
        };
        let (near, far, far_link) = (&network.near, &network.far, &network.far_link);
        let near_link = format!("fln{id}");
        let steps = [
            format!("netns add {near}"),
            format!("netns add {far}"),
            format!("link add {near_link} type veth peer name {far_link}"),
            format!("link set {near_link} netns {near}"),
            format!("link set {far_link} netns {far}"),
            format!("-n {near} addr add 10.250.{subnet}.1/30 dev {near_link}"),
            format!("-n {far} addr add 10.250.{subnet}.2/30 dev {far_link}"),
            format!("-n {near} link set {near_link} up"),
            format!("-n {far} link set {far_link} up"),
            format!("-n {near} link set lo up"),
            format!("-n {far} link set lo up"),
        ];
        for step in steps {
            let output = Command::new("ip")
                .args(step.split_whitespace())
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))?;
            if !output.status.success() {
                return Err(format!("ip {step} failed: {}", text(&output.stderr)));
            }
        }
        Ok(network)
    }

    fn link(&self, state: &str) {
        let status = Command::new("ip")
            .args(["-n", &self.far, "link", "set", &self.far_link, state])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in [&self.near, &self.far] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

#[test]
fn a_worker_whose_network_is_cut_fences_itself_and_the_budget_is_used_to_the_end() {
    if !system_tool("ip", &["-V"], "iproute2") {
        return;
    }
    let network = match Network::create() {
        Ok(network) => network,
        Err(why) => {
            eprintln!(
                "skipped: this machine allows no network namespaces of the test's own ({why})"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "s3cret");
    let root = dir.path().join("root");
    let near = ["ip", "netns", "exec", network.near.as_str()];
    let far = ["ip", "netns", "exec", network.far.as_str()];
    let host = network.near_address.clone();
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &network.near])
        .arg(flotilla_bin())
        .args([
            "sim-server",
            "--listen",
            &format!("{host}:0"),
            "--latency",
            "300ms",
        ]);
    let mut provider = Process::spawn(command);
    let line = provider.wait_for_line("sim-server listening");
    let address = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))
        .unwrap()
        .to_string();
    let providers = providers_file(dir.path(), &address);
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &network.near])
        .arg(flotilla_bin())
        .args([
            "coordinator",
            "start",
            "--listen",
            &format!("{host}:0"),
            "--lease-timeout",
            "2s",
        ])
        .arg("--root")
        .arg(&root)
        .arg("--token-file")
        .arg(&token);
    let coordinator = CoordinatorProcess::listening(Process::spawn(command), &root, &token);
    let in_near = |args: &[&str]| {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &network.near]);
        command.arg(flotilla_bin()).args(args);
        command
            .arg("--coordinator")
            .arg(&coordinator.address)
            .arg("--token-file")
            .arg(&token);
        command
    };
    let status = || -> serde_json::Value {
        let output = run_ok(&mut in_near(&["status", "fenced", "--json"]));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let file = experiment(dir.path());
    let _w1 = worker(&near, &coordinator, "w1", dir.path(), &providers);
    let _w2 = worker(&near, &coordinator, "w2", dir.path(), &providers);
    let mut cut_off = worker(&far, &coordinator, "w3", dir.path(), &providers);
    run_ok(in_near(&["submit"]).arg(&file));
    wait_until("a third of the budget to be spent", || {
        spent(&status()) >= BUDGET / 3.0
    });
    network.link("down");
    std::thread::sleep(Duration::from_secs(6));
    network.link("up");
    cut_off.wait_for_line("longer than the spend lease");
    wait_until("the experiment to end", || {
        status()["experiments"][0]["state"] != "running"
    });
    let final_status = status();
    let experiment = &final_status["experiments"][0];
    assert_eq!(experiment["state"], "budget_exhausted", "{final_status}");
    let stats = |address: &str| -> serde_json::Value {
        let output = Command::new("ip")
            .args(["netns", "exec", &network.near, "python3", "-c"])
            .arg(format!(
                "import urllib.request; print(urllib.request.urlopen('http://{address}/stats').read().decode())"
            ))
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let billed = provider_billed(&root, &address, stats);
    assert!(billed <= BUDGET + 1e-9, "the provider billed ${billed}");
    let spent = spent(&final_status);
    assert!(
        spent >= 0.95 * BUDGET,
        "only ${spent} of ${BUDGET} was used"
    );
}
