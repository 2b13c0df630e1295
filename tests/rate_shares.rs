//! Provider limits hold for the whole cluster (ARCHITECTURE.md, invariant 6):
//! two workers calling one provider get shares of its declared limit that sum
//! to it, so together they call no faster than the limit — where each worker
//! pacing itself at the whole limit would call twice as fast.

mod support;

use support::*;

/// Ten calls to the provider's sim/echo, one after the other.
const CALLER: &str = r#"
import json
from openai import OpenAI

client = OpenAI()
for i in range(10):
    client.chat.completions.create(model="remote/sim/echo", max_tokens=4,
                                   messages=[{"role": "user", "content": f"call {i}"}])
print(json.dumps({"calls": 10}))
"#;

#[test]
fn workers_share_a_providers_limit_instead_of_each_using_all_of_it() {
    let dir = tempfile::tempdir().unwrap();
    // The provider itself would take far more: what paces is the declared limit.
    let (_server, address) = sim_server(&["--rpm", "60000"]);
    let providers = dir.path().join("providers.yaml");
    std::fs::write(
        &providers,
        format!(
            "providers:\n  - {{name: remote, api: openai, base_url: 'http://{address}/v1', limits: {{rpm: 600}},\n    \
             prices: {{'sim/echo': {{input: 1, output: 1}}}}}}\n"
        ),
    )
    .unwrap();
    let python = python_with_clients();
    std::fs::write(dir.path().join("caller.py"), CALLER).unwrap();
    let file = write_experiment(
        dir.path(),
        "shared.yaml",
        &format!(
            "name: shared\nrun:\n  kind: command\n  command: [{:?}, caller.py]\nruns_per_variation: 6\n",
            python.display().to_string()
        ),
    );
    let root = dir.path().join("experiments");
    run_ok(
        flotilla(&["run", "--workers", "2", "--slots", "3"])
            .arg(&file)
            .arg("--root")
            .arg(&root)
            .arg("--providers")
            .arg(&providers),
    );
    let calls: Vec<serde_json::Value> = (1..=6)
        .flat_map(|repetition| {
            calls_of(&root.join(format!("shared/runs/var-001-run-{repetition:03}")))
        })
        .collect();
    assert_eq!(calls.len(), 60);
    // 600 a minute is one call per 100 ms for the cluster. A call ends as it
    // is answered (the provider answers at once), so the k-th end comes at
    // least (k - slack) × 100 ms after the first; the slack covers each
    // worker's first call and the moment shares are split anew. A loaded
    // machine only makes calls later, never sooner.
    let mut ends: Vec<f64> = calls
        .iter()
        .map(|c| c["started_at_ms"].as_f64().unwrap() + c["latency_ms"].as_f64().unwrap())
        .collect();
    ends.sort_by(f64::total_cmp);
    for (k, end) in ends.iter().enumerate() {
        let least = (k as f64 - 4.0) * 100.0 - 10.0;
        assert!(
            end - ends[0] >= least,
            "call {k} ended {:.0} ms after the first: faster than 600 a minute",
            end - ends[0]
        );
    }
    // Both workers took part.
    let workers: std::collections::BTreeSet<String> = read_csv(&root.join("shared/results.csv"))
        .into_iter()
        .map(|row| row["worker"].clone())
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
}
