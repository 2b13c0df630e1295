//! Half-price tiers (ARCHITECTURE.md, "Gateway"), tried as a user would: a
//! program calls a provider with the official `openai` client and never
//! mentions a tier; the experiment says `tier: flex`. The provider is a
//! sim-server that offers the model at the flex tier (slower, refusing a
//! share of calls for capacity); the providers file prices it at both tiers.
//! The gateway asks for flex, prices each call at the tier its answer
//! reports, falls back to standard or waits as the experiment says, and the
//! outputs show spend by tier and what flex saved.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// Unstreamed and streamed calls to a model offered at flex, and one to a
/// model that is not; prints the tier each answer said served it.
const CALLER: &str = r#"
import json
from openai import OpenAI

client = OpenAI(max_retries=0)
tiers = []
for number in range(CALLS):
    words = f"question {number} " * 20
    if number % 3 == 2:
        chunks = list(client.chat.completions.create(
            model="remote/small", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": words}]))
        tiers.append(chunks[-1].service_tier)
    else:
        answer = client.chat.completions.create(
            model="remote/small", messages=[{"role": "user", "content": words}])
        tiers.append(answer.service_tier)
plain = client.chat.completions.create(model="remote/plain", messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"tiers": tiers, "plain_tier": plain.service_tier}))
"#;

const CALLS: usize = 12;
/// Dollars per million tokens at each tier.
const STANDARD: (f64, f64) = (2.0, 4.0);
const FLEX: (f64, f64) = (1.0, 2.0);

fn sim_server_config(dir: &Path) -> PathBuf {
    let path = dir.join("sim.yaml");
    std::fs::write(
        &path,
        "models:\n\
         - {name: small, answers: echo, latency: 5ms,\n   \
            flex: {latency: 30ms, latency_max: 60ms, refusal_rate: 0.4}}\n\
         - {name: plain, answers: echo}\n",
    )
    .unwrap();
    path
}

fn providers_file(dir: &Path, address: &str) -> PathBuf {
    let path = dir.join("providers.yaml");
    std::fs::write(
        &path,
        format!(
            "providers:\n\
             - name: remote\n  api: openai\n  base_url: 'http://{address}/v1'\n  \
               prices:\n    small: {{input: {}, output: {}}}\n    plain: {{input: {}, output: {}}}\n  \
               tiers:\n    flex:\n      small: {{input: {}, output: {}}}\n",
            STANDARD.0, STANDARD.1, STANDARD.0, STANDARD.1, FLEX.0, FLEX.1
        ),
    )
    .unwrap();
    path
}

/// Runs the caller once as experiment `name` with `tier_lines` added; returns
/// what the program saw and the calls it made.
fn run_caller(
    dir: &Path,
    name: &str,
    tier_lines: &str,
    providers: &Path,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let python = python_with_clients();
    std::fs::write(
        dir.join("caller.py"),
        CALLER.replace("CALLS", &CALLS.to_string()),
    )
    .unwrap();
    let file = write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nrun:\n  kind: command\n  command: [{:?}, caller.py]\ncache: off\n{tier_lines}",
            python.display().to_string()
        ),
    );
    let root = dir.join("experiments");
    run_ok(
        flotilla(&["run", "--workers", "1"])
            .arg(&file)
            .arg("--root")
            .arg(&root)
            .arg("--providers")
            .arg(providers),
    );
    let run_dir = root.join(name).join("runs/var-001-run-001");
    let result = read_json(&run_dir.join("result.json"));
    assert_eq!(result["status"], "succeeded", "{result}");
    (result["metrics"].clone(), calls_of(&run_dir))
}

fn cost_at(prices: (f64, f64), call: &serde_json::Value) -> f64 {
    (call["input_tokens"].as_f64().unwrap() * prices.0
        + call["output_tokens"].as_f64().unwrap() * prices.1)
        / 1e6
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// Every call priced at the tier its answer reported, with what flex saved.
fn assert_priced_by_tier(calls: &[serde_json::Value]) {
    for call in calls {
        let cost = call["cost_usd"].as_f64().unwrap();
        let standard = cost_at(STANDARD, call);
        match call["tier"].as_str().unwrap() {
            "flex" => {
                assert!(close(cost, cost_at(FLEX, call)), "{call}");
                assert!(
                    close(call["tier_saved_usd"].as_f64().unwrap(), standard - cost),
                    "{call}"
                );
            }
            "standard" => {
                assert!(close(cost, standard), "{call}");
                assert_eq!(call["tier_saved_usd"].as_f64().unwrap(), 0.0, "{call}");
            }
            other => panic!("unknown tier {other}: {call}"),
        }
    }
}

#[test]
fn flex_calls_are_priced_at_the_tier_that_served_them_and_fall_back_or_wait_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, address) =
        sim_server(&["--config", sim_server_config(dir.path()).to_str().unwrap()]);
    let providers = providers_file(dir.path(), &address);
    let small = |calls: &[serde_json::Value]| -> Vec<serde_json::Value> {
        calls
            .iter()
            .filter(|c| c["model"] == "small")
            .cloned()
            .collect()
    };

    // Standard: nothing asks for flex, nothing is refused.
    let (seen, calls) = run_caller(dir.path(), "standard", "", &providers);
    assert!(
        seen["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.is_null()),
        "{seen}"
    );
    assert!(calls.iter().all(|c| c["tier"] == "standard"), "{calls:?}");
    assert_priced_by_tier(&calls);
    assert_eq!(sim_server_stats(&address)["billed_flex"], 0);

    // Flex, falling back to standard on a refusal.
    let (seen, calls) = run_caller(dir.path(), "fallback", "tier: flex\n", &providers);
    let stats = sim_server_stats(&address);
    let flexed = small(&calls);
    assert_eq!(flexed.len(), CALLS);
    assert_priced_by_tier(&calls);
    let refused = stats["refused_flex"].as_u64().unwrap();
    let fell_back: Vec<_> = flexed.iter().filter(|c| c["tier"] == "standard").collect();
    assert!(
        refused > 0 && !fell_back.is_empty(),
        "a refusal share of 0.4 over {CALLS} calls refuses some: {stats}"
    );
    assert_eq!(
        fell_back.len() as u64,
        refused,
        "each refused call fell back once"
    );
    assert!(
        fell_back.iter().all(|c| c["tier_refusals"] == 1),
        "{fell_back:?}"
    );
    assert_eq!(
        stats["billed_flex"].as_u64().unwrap(),
        (CALLS - fell_back.len()) as u64
    );
    // The program saw, unchanged, which tier served each call.
    for (call, tier) in flexed.iter().zip(seen["tiers"].as_array().unwrap()) {
        let expected = if call["tier"] == "flex" {
            serde_json::json!("flex")
        } else {
            serde_json::Value::Null
        };
        assert_eq!(*tier, expected, "{seen}");
    }
    let plain: Vec<_> = calls.iter().filter(|c| c["model"] == "plain").collect();
    assert_eq!(plain.len(), 1);
    assert_eq!(
        plain[0]["tier"], "standard",
        "not offered at flex: asked as sent"
    );
    assert!(seen["plain_tier"].is_null(), "{seen}");

    let root = dir.path().join("experiments");
    let costs = read_json(&root.join("fallback/batch-costs.json"));
    let by_tier = costs["by_tier"].as_array().unwrap();
    let line = |tier: &str| by_tier.iter().find(|l| l["tier"] == tier).unwrap().clone();
    let flex_calls: Vec<_> = calls.iter().filter(|c| c["tier"] == "flex").collect();
    assert_eq!(line("flex")["calls"], flex_calls.len());
    assert_eq!(line("standard")["calls"], calls.len() - flex_calls.len());
    let saved: f64 = flex_calls
        .iter()
        .map(|c| c["tier_saved_usd"].as_f64().unwrap())
        .sum();
    assert!(saved > 0.0);
    assert!(
        close(costs["tiers"]["saved_usd"].as_f64().unwrap(), saved),
        "{costs}"
    );
    assert_eq!(costs["tiers"]["flex_refusals"], refused);
    assert_eq!(costs["tiers"]["fell_back_to_standard"], fell_back.len());
    let report =
        std::fs::read_to_string(root.join("fallback/analysis/analysis-report.md")).unwrap();
    assert!(
        report.contains(&format!(
            "The flex tier served {} of {} calls",
            flex_calls.len(),
            calls.len()
        )),
        "{report}"
    );
    assert!(report.contains("fell back to standard"), "{report}");

    // Flex, waiting for capacity: every call is served at flex in the end.
    let before = sim_server_stats(&address)["refused_flex"].as_u64().unwrap();
    let (seen, calls) = run_caller(
        dir.path(),
        "waiting",
        "tier: flex\nfallback: wait\n",
        &providers,
    );
    let refused = sim_server_stats(&address)["refused_flex"].as_u64().unwrap() - before;
    let waited = small(&calls);
    assert!(waited.iter().all(|c| c["tier"] == "flex"), "{waited:?}");
    assert!(
        seen["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t == "flex"),
        "{seen}"
    );
    assert_priced_by_tier(&calls);
    let counted: u64 = waited
        .iter()
        .map(|c| c["tier_refusals"].as_u64().unwrap())
        .sum();
    assert!(refused > 0, "some calls waited");
    assert_eq!(counted, refused, "every refusal was waited out and counted");
}

#[test]
fn a_fallback_without_flex_and_an_unknown_tier_are_refused_with_where_and_what_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_experiment(
        dir.path(),
        "wrong.yaml",
        "name: wrong\nrun: {kind: noop}\ntier: cheap\n",
    );
    let output = flotilla(&["validate"]).arg(&file).output().unwrap();
    let said = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("tier") && said.contains("valid: standard, flex"),
        "{said}"
    );
    let alone = write_experiment(
        dir.path(),
        "alone.yaml",
        "name: alone\nrun: {kind: noop}\nfallback: wait\n",
    );
    let output = flotilla(&["validate"]).arg(&alone).output().unwrap();
    assert!(text(&output.stderr).contains("needs tier: flex"));
    let flex = write_experiment(
        dir.path(),
        "flex.yaml",
        "name: flex\nrun: {kind: noop}\ntier: flex\nfallback: wait\n",
    );
    let output = run_ok(flotilla(&["validate"]).arg(&flex));
    let said = text(&output.stdout);
    assert!(
        said.contains("tier: flex") && said.contains("waits and asks the flex tier again"),
        "{said}"
    );
}
