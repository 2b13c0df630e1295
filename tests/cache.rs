//! The response cache (ARCHITECTURE.md, "Response cache"), tried as a user
//! would: unmodified programs using the official clients, run by `flotilla
//! run` against a provider (a sim-server that counts the calls it serves),
//! pay once for every answer — across experiments, variations paired by
//! seed, streamed and unstreamed calls, workers and coordinator restarts —
//! and an experiment can be replayed from what it recorded alone.

mod support;

use std::path::{Path, PathBuf};

use support::*;

/// Asks the same question twice (its first and second answers must come
/// back in order), streamed or not, then a follow-up on the first answer.
const ASK: &str = r#"
import json, os, sys
from openai import OpenAI

model, topic, stream = sys.argv[1], sys.argv[2], sys.argv[3] == "stream"
client = OpenAI(max_retries=0)
if os.environ.get("TOKENS_FILE"):
    with open(os.environ["TOKENS_FILE"], "a") as tokens:
        tokens.write(os.environ["OPENAI_API_KEY"] + "\n")

def ask(messages):
    if stream:
        text = ""
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, max_tokens=20):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return text
    return client.chat.completions.create(model=model, messages=messages, max_tokens=20).choices[0].message.content

question = [{"role": "user", "content": f"Say something about {topic}."}]
first, second = ask(question), ask(question)
follow_up = ask(question + [{"role": "assistant", "content": first}, {"role": "user", "content": "And then?"}])
print(json.dumps({"first": first, "second": second, "follow_up": follow_up, "distinct": first != second}))
"#;

/// A providers file whose `remote` provider is the sim-server at `address`.
fn providers_file(dir: &Path, address: &str) -> PathBuf {
    let path = dir.join("providers.yaml");
    std::fs::write(
        &path,
        format!(
            "providers:\n\
             - {{name: remote, api: openai, base_url: 'http://{address}/v1', api_key_env: REMOTE_KEY,\n   \
               prices: {{'sim/sample': {{input: 2, output: 4}}}}}}\n"
        ),
    )
    .unwrap();
    path
}

/// The experiment `name`: topics × {plain, stream} × `runs` repetitions.
fn experiment(dir: &Path, name: &str, topics: &[&str], runs: u32, extra: &str) -> PathBuf {
    std::fs::write(dir.join("ask.py"), ASK).unwrap();
    let python = python_with_clients();
    write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nrun:\n  kind: command\n  command: [{python:?}, ask.py, remote/sim/sample, \"{{topic}}\", \"{{mode}}\"]\n\
             variations:\n  - param: topic\n    values: [{topics}]\n  - param: mode\n    values: [plain, stream]\n\
             runs_per_variation: {runs}\nretries: {{max_attempts: 1}}\n{extra}",
            python = python.display().to_string(),
            topics = topics.join(", "),
        ),
    )
}

/// Where the programs note their run tokens: beside the test's directory.
fn tokens_file(root: &Path) -> PathBuf {
    let dir = root.parent().unwrap();
    dir.with_file_name(format!(
        "{}-tokens.txt",
        dir.file_name().unwrap().to_string_lossy()
    ))
}

const PROVIDER_KEY: &str = "sk-remote-secret-0123456789";

fn run_command(root: &Path, file: &Path, providers: &Path) -> std::process::Command {
    let mut command = flotilla(&["run", "--workers", "2", "--no-progress"]);
    command
        .arg(file)
        .arg("--root")
        .arg(root)
        .arg("--providers")
        .arg(providers)
        .env("REMOTE_KEY", PROVIDER_KEY)
        // Outside the experiment's workdir, which is shipped with it.
        .env("TOKENS_FILE", tokens_file(root));
    command
}

fn run_with(root: &Path, file: &Path, providers: &Path) -> std::process::Output {
    run_ok(&mut run_command(root, file, providers))
}

/// Each run's answers by run id.
fn answers(root: &Path, name: &str) -> Vec<(String, String, String, String)> {
    read_csv(&root.join(name).join("results.csv"))
        .into_iter()
        .map(|row| {
            assert_eq!(row["status"], "succeeded", "{row:?}");
            (
                row["run_id"].clone(),
                row["first"].clone(),
                row["second"].clone(),
                row["follow_up"].clone(),
            )
        })
        .collect()
}

#[test]
fn an_edited_experiment_pays_only_for_the_calls_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let (_server, address) = sim_server(&["--latency", "200ms"]);
    let providers = providers_file(dir.path(), &address);

    // 2 topics × 2 seeds; plain and streamed runs of one seed ask the same
    // calls, at the same moment on two workers: one upstream call each.
    let first = experiment(dir.path(), "first", &["cats", "dogs"], 2, "");
    run_with(&root, &first, &providers);
    let upstream = sim_server_served(&address);
    assert_eq!(
        upstream,
        2 * 2 * 3,
        "three distinct calls per topic and seed"
    );
    let recorded = answers(&root, "first");
    for (run, first, second, _) in &recorded {
        assert_ne!(first, second, "{run}: the second asking is a second sample");
    }
    let by_seed = |rows: &[(String, String, String, String)], a: &str, b: &str| {
        let find = |id: &str| rows.iter().find(|r| r.0 == id).unwrap().clone();
        let (a, b) = (find(a), find(b));
        (a.1 == b.1) && (a.2 == b.2) && (a.3 == b.3)
    };
    // var-001 (cats, plain) and var-002 (cats, stream) are paired by seed.
    assert!(by_seed(&recorded, "var-001-run-001", "var-002-run-001"));
    assert!(by_seed(&recorded, "var-001-run-002", "var-002-run-002"));
    assert!(!by_seed(&recorded, "var-001-run-001", "var-001-run-002"));

    // The same experiment under another name: nothing upstream, the same answers.
    let again = experiment(dir.path(), "again", &["cats", "dogs"], 2, "");
    run_with(&root, &again, &providers);
    assert_eq!(sim_server_served(&address), upstream);
    assert_eq!(answers(&root, "again"), recorded);
    let calls = calls_of(&root.join("again/runs/var-002-run-001"));
    assert_eq!(calls.len(), 3);
    for call in &calls {
        assert_eq!(call["cache"], "hit", "{call}");
        assert_eq!(call["cost_usd"], 0.0);
        assert!(call["would_cost_usd"].as_f64().unwrap() > 0.0);
        assert_eq!(call["cached_from"]["experiment"], "first");
        assert!(call["streamed"].as_bool().unwrap());
    }
    let costs = read_json(&root.join("again/batch-costs.json"));
    assert_eq!(costs["cache"]["hits"], 24);
    assert!(costs["cache"]["saved_usd"].as_f64().unwrap() > 0.0);
    let report = std::fs::read_to_string(root.join("again/analysis/analysis-report.md")).unwrap();
    assert!(
        report.contains("24 of 24 calls answered from the cache, recorded "),
        "{report}"
    );
    // One more repetition: only its calls go upstream.
    let more = experiment(dir.path(), "more", &["cats", "dogs"], 3, "");
    run_with(&root, &more, &providers);
    assert_eq!(sim_server_served(&address), upstream + 2 * 3);
    let extended = answers(&root, "more");
    for row in &recorded {
        assert!(extended.contains(row), "{row:?} is answered as before");
    }

    // Another axis value: only its runs' calls go upstream.
    let changed = experiment(dir.path(), "changed", &["cats", "birds"], 3, "");
    run_with(&root, &changed, &providers);
    assert_eq!(sim_server_served(&address), upstream + 2 * 3 + 3 * 3);
}

#[test]
fn a_replay_needs_no_provider_and_old_or_missing_answers_are_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let (server, address) = sim_server(&[]);
    let providers = providers_file(dir.path(), &address);
    let first = experiment(dir.path(), "first", &["cats"], 1, "");
    run_with(&root, &first, &providers);
    let recorded = answers(&root, "first");
    drop(server);

    // The provider is gone: recorded calls replay, the others fail, free.
    let replayed = experiment(
        dir.path(),
        "replayed",
        &["cats", "dogs"],
        1,
        "cache: replay\n",
    );
    run_command(&root, &replayed, &providers).output().unwrap();
    let rows = read_csv(&root.join("replayed/results.csv"));
    for row in &rows {
        let run = &row["run_id"];
        if row["topic"] == "cats" {
            assert_eq!(row["status"], "succeeded", "{row:?}");
            let same = recorded
                .iter()
                .any(|r| r.1 == row["first"] && r.2 == row["second"]);
            assert!(same, "{run} replays the recorded answers");
        } else {
            assert_eq!(row["status"], "failed", "{row:?}");
            let stderr =
                std::fs::read_to_string(root.join("replayed/runs").join(run).join("stderr.log"))
                    .unwrap();
            assert!(
                stderr.contains("cache: replay answers only from the cache")
                    && stderr.contains("remote/sim/sample")
                    && stderr.contains(&format!("in run {run} of replayed")),
                "{stderr}"
            );
            let calls = calls_of(&root.join("replayed/runs").join(run));
            assert_eq!(calls[0]["status"], "failed");
            assert_eq!(calls[0]["cost_usd"], 0.0);
        }
        assert_eq!(
            row["cost_usd"].parse::<f64>().unwrap_or(0.0),
            0.0,
            "{row:?}"
        );
    }

    // Answers older than max_age are not used: everything goes upstream again.
    let (_server, address) = sim_server(&[]);
    let providers = providers_file(dir.path(), &address);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let aged = experiment(
        dir.path(),
        "aged",
        &["cats"],
        1,
        "cache: {mode: read_write, max_age: 1s}\n",
    );
    run_with(&root, &aged, &providers);
    assert_eq!(
        sim_server_served(&address),
        3,
        "three distinct calls, none young enough"
    );
    let fresh = experiment(dir.path(), "fresh", &["cats"], 1, "cache: {max_age: 1h}\n");
    run_with(&root, &fresh, &providers);
    assert_eq!(
        sim_server_served(&address),
        3,
        "answers an hour old are used"
    );

    // Prompts and answers are stored; the provider's key and run tokens nowhere.
    let tokens = std::fs::read_to_string(tokens_file(&root)).unwrap();
    std::fs::remove_file(tokens_file(&root)).unwrap();
    let mut secrets: Vec<&str> = tokens.lines().collect();
    assert!(secrets.len() >= 6 && secrets.iter().all(|t| t.starts_with("flotilla-run-")));
    secrets.push(PROVIDER_KEY);
    let mut scanned = 0;
    let mut cache_holds_prompts = false;
    for file in files_under(&root) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(!text.contains(secret), "{} holds {secret}", file.display());
        }
        // Recorded answers may still be in the write-ahead log, not yet checkpointed.
        if file
            .file_name()
            .is_some_and(|n| n == "cache.db" || n == "cache.db-wal")
        {
            cache_holds_prompts |= text.contains("Say something about cats");
        }
        scanned += 1;
    }
    assert!(scanned > 20 && cache_holds_prompts);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A chat experiment over the built-in sim: two items, two repetitions.
fn chat_experiment(dir: &Path, name: &str, score: &str) -> PathBuf {
    write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nrun:\n  kind: chat\n  model: sim/echo\n  prompt: \"Repeat {{word}}.\"\n  max_tokens: 16\n  score:\n{score}\
             variations:\n  - param: word\n    values: [alpha, beta]\nruns_per_variation: 2\n"
        ),
    )
}

#[test]
fn answers_outlive_a_coordinator_killed_between_record_and_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let token_file = write_token(dir.path(), "cache-token");
    let mut coordinator = CoordinatorProcess::start(&root, &token_file, "127.0.0.1:0", "5s");
    let worker = coordinator.join_worker("w1", 2, &dir.path().join("w1"));
    let first = chat_experiment(
        dir.path(),
        "first",
        "    - {metric: exact, contains: alpha}\n",
    );
    run_ok(
        coordinator
            .cli(&["submit", "--wait", "--no-progress"])
            .arg(&first),
    );
    let status = coordinator.status_json("first");
    assert_eq!(status["experiments"][0]["cache"]["calls"], 4, "{status}");
    assert_eq!(status["experiments"][0]["cache"]["hits"], 0, "{status}");
    coordinator.process.kill9();
    drop(worker);

    let coordinator = CoordinatorProcess::start(&root, &token_file, "127.0.0.1:0", "5s");
    let _worker = coordinator.join_worker("w2", 2, &dir.path().join("w2"));
    // Only the scoring changed: every answer comes back for nothing.
    let rescored = chat_experiment(
        dir.path(),
        "rescored",
        "    - {metric: exact, regex: \"^Repeat\"}\n",
    );
    run_ok(
        coordinator
            .cli(&["submit", "--wait", "--no-progress"])
            .arg(&rescored),
    );
    let status = coordinator.status_json("rescored");
    let cache = &status["experiments"][0]["cache"];
    assert_eq!(
        (cache["calls"].as_u64(), cache["hits"].as_u64()),
        (Some(4), Some(4)),
        "{status}"
    );
    assert!(cache["saved_usd"].as_f64().unwrap() > 0.0);
    for row in read_csv(&root.join("rescored/results.csv")) {
        assert_eq!(row["exact"], "true", "{row:?}");
        assert_eq!(
            row["cost_usd"].parse::<f64>().unwrap_or(0.0),
            0.0,
            "{row:?}"
        );
        let calls = calls_of(&root.join("rescored/runs").join(&row["run_id"]));
        assert_eq!(calls[0]["cached_from"]["experiment"], "first");
    }
    // `flotilla validate` knows which planned calls are recorded, here and on the coordinator.
    let planned = run_ok(flotilla(&["validate", "--root"]).arg(&root).arg(&rescored));
    assert!(
        text(&planned.stdout).contains("cache: 4 of the 4 planned calls are recorded"),
        "{}",
        text(&planned.stdout)
    );
    let wider = write_experiment(
        dir.path(),
        "wider.yaml",
        &std::fs::read_to_string(&rescored)
            .unwrap()
            .replace("[alpha, beta]", "[alpha, gamma]")
            .replace("runs_per_variation: 2", "runs_per_variation: 3"),
    );
    let planned = run_ok(coordinator.cli(&["validate"]).arg(&wider));
    let said = text(&planned.stdout);
    assert!(
        said.contains("cache: 2 of the 6 planned calls are recorded"),
        "{said}"
    );
    assert!(
        said.contains("cache: 4 answers recorded under the seeds of 2 of the 3 repetitions"),
        "{said}"
    );
    // `flotilla cache` says what is held and saved, and prunes.
    let stats = run_ok(flotilla(&["cache", "stats", "--json", "--root"]).arg(&root));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["entries"], 4, "{stats}");
    assert_eq!(stats["recorded"][0]["model"], "sim/echo");
    let saved = stats["served"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["experiment"] == "rescored")
        .unwrap();
    assert_eq!(saved["hits"], 4);
    let refused = flotilla(&["cache", "prune", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("say what to prune"),
        "{}",
        text(&refused.stderr)
    );
    let pruned = run_ok(
        flotilla(&[
            "cache",
            "prune",
            "--experiment",
            "first",
            "--model",
            "sim/echo",
            "--root",
        ])
        .arg(&root),
    );
    assert!(
        text(&pruned.stdout).contains("pruned 4 answers"),
        "{}",
        text(&pruned.stdout)
    );
    let stats = run_ok(flotilla(&["cache", "stats", "--json", "--root"]).arg(&root));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["entries"], 0, "{stats}");
}

/// The same question through three more endpoints, streamed or not.
const SHAPES: &str = r#"
import json, sys
import anthropic, ollama
from openai import OpenAI

stream = sys.argv[1] == "stream"
question = [{"role": "user", "content": "Name a colour."}]
claude = anthropic.Anthropic(max_retries=0)
if stream:
    with claude.messages.stream(model="claude/sim/sample", max_tokens=20, messages=question) as events:
        text = "".join(events.text_stream)
        message = events.get_final_message()
else:
    message = claude.messages.create(model="claude/sim/sample", max_tokens=20, messages=question)
    text = message.content[0].text
assert text == message.content[0].text, (text, message)
farm = ollama.Client()
if stream:
    said = "".join(part["message"]["content"] for part in farm.chat(model="farm/sim/sample", messages=question, stream=True))
else:
    said = farm.chat(model="farm/sim/sample", messages=question)["message"]["content"]
openai = OpenAI(max_retries=0)
if stream:
    completed = "".join(c.choices[0].text for c in openai.completions.create(
        model="remote/sim/sample", prompt="Name a colour.", max_tokens=20, stream=True) if c.choices)
else:
    completed = openai.completions.create(model="remote/sim/sample", prompt="Name a colour.", max_tokens=20).choices[0].text
print(json.dumps({"anthropic": text, "anthropic_tokens": message.usage.output_tokens,
                  "ollama": said, "completion": completed}))
"#;

#[test]
fn cached_answers_come_back_in_the_shape_each_official_client_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let (_server, address) = sim_server(&["--latency", "100ms"]);
    let providers = dir.path().join("providers.yaml");
    std::fs::write(
        &providers,
        format!(
            "providers:\n\
             - {{name: remote, api: openai, base_url: 'http://{address}/v1', api_key_env: REMOTE_KEY, prices: {{'sim/sample': {{input: 2, output: 4}}}}}}\n\
             - {{name: claude, api: anthropic, base_url: 'http://{address}', api_key_env: REMOTE_KEY, prices: {{'sim/sample': {{input: 3, output: 15}}}}}}\n\
             - {{name: farm, api: ollama, base_url: 'http://{address}', prices: {{'sim/sample': {{input: 0, output: 0}}}}}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("shapes.py"), SHAPES).unwrap();
    let python = python_with_clients();
    let file = |name: &str| {
        write_experiment(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nrun:\n  kind: command\n  command: [{python:?}, shapes.py, \"{{mode}}\"]\n\
                 variations:\n  - param: mode\n    values: [stream, plain]\nruns_per_variation: 2\nretries: {{max_attempts: 1}}\n",
                python = python.display().to_string()
            ),
        )
    };
    let rows_of = |name: &str| {
        let mut rows = read_csv(&root.join(name).join("results.csv"));
        for row in &mut rows {
            assert_eq!(row["status"], "succeeded", "{row:?}");
            row.retain(|k, _| {
                [
                    "run_id",
                    "anthropic",
                    "anthropic_tokens",
                    "ollama",
                    "completion",
                ]
                .contains(&k.as_str())
            });
        }
        rows
    };
    run_with(&root, &file("first"), &providers);
    let served = sim_server_served(&address);
    assert_eq!(served, 2 * 3, "three calls per seed, shared by both shapes");
    let first = rows_of("first");
    // Paired by seed, the streamed and the whole run got the same answers.
    for repetition in ["run-001", "run-002"] {
        let pair: Vec<_> = first
            .iter()
            .filter(|r| r["run_id"].ends_with(repetition))
            .collect();
        let strip = |row: &std::collections::BTreeMap<String, String>| {
            let mut row = row.clone();
            row.remove("run_id");
            row
        };
        assert_eq!(strip(pair[0]), strip(pair[1]), "{pair:?}");
    }
    run_with(&root, &file("again"), &providers);
    assert_eq!(sim_server_served(&address), served, "nothing upstream");
    assert_eq!(rows_of("again"), first);
}

#[test]
fn only_successful_answers_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let config = dir.path().join("sim.yaml");
    std::fs::write(
        &config,
        "models: [{name: broken, answers: echo, error_rate: 1.0}]\n",
    )
    .unwrap();
    let (_server, address) = sim_server(&["--config", config.to_str().unwrap()]);
    let providers = dir.path().join("providers.yaml");
    std::fs::write(
        &providers,
        format!(
            "providers:\n  - {{name: remote, api: openai, base_url: 'http://{address}/v1', prices: {{'broken': {{input: 1, output: 1}}}}}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fail.py"),
        "import json\nimport openai\nclient = openai.OpenAI(max_retries=0)\ntry:\n    client.chat.completions.create(model='remote/broken', messages=[{'role': 'user', 'content': 'hi'}])\n    status = 200\nexcept openai.APIStatusError as error:\n    status = error.status_code\nprint(json.dumps({'answered_with': status}))\n",
    )
    .unwrap();
    let python = python_with_clients();
    let file = write_experiment(
        dir.path(),
        "failing.yaml",
        &format!(
            "name: failing\nrun:\n  kind: command\n  command: [{:?}, fail.py]\n",
            python.display().to_string()
        ),
    );
    run_ok(
        flotilla(&["run", "--no-progress"])
            .arg(&file)
            .arg("--root")
            .arg(&root)
            .arg("--providers")
            .arg(&providers),
    );
    let row = &read_csv(&root.join("failing/results.csv"))[0];
    assert_eq!(row["status"], "succeeded", "{row:?}");
    assert_eq!(
        row["answered_with"], "500",
        "the provider's error reached the program: {row:?}"
    );
    let calls = calls_of(&root.join("failing/runs/var-001-run-001"));
    assert_eq!(
        (calls[0]["status"].as_str(), calls[0]["cache"].as_str()),
        (Some("failed"), Some("miss"))
    );
    let stats = run_ok(flotilla(&["cache", "stats", "--json", "--root"]).arg(&root));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        stats["entries"], 0,
        "an error is never an answer to replay: {stats}"
    );
}
