//! Every LLM call seen: unmodified programs using the official `openai`
//! Python client, run by `flotilla run`, reach the worker's gateway through
//! their environment alone; each call is answered by a sim model, metered,
//! priced and recorded in the run's calls.jsonl, and the run's cost is the
//! sum of its calls.

mod support;

use std::path::Path;

use support::*;

/// An iterated game against a sim model: three rounds, each a chat call,
/// streamed or not; the metrics are the moves and what the client saw.
const SCENARIO: &str = r#"
import json, os, sys
from openai import OpenAI

model, stream = sys.argv[1], sys.argv[2] == "true"
client = OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the worker
messages = [{"role": "system", "content": "You play an iterated prisoner's dilemma."}]
moves, prompt_tokens = [], 0
my_moves = ["cooperate", "defect", "defect"]
for round_number, mine in enumerate(my_moves, 1):
    messages.append({"role": "user", "content": f"Round {round_number}: I {mine}. Your move?"})
    if stream:
        text = ""
        usage_chunks = 0
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.usage is not None:
                usage_chunks += 1
                prompt_tokens += chunk.usage.prompt_tokens
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        assert usage_chunks == 1, usage_chunks
    else:
        reply = client.chat.completions.create(model=model, messages=messages)
        text = reply.choices[0].message.content
        prompt_tokens += reply.usage.prompt_tokens
    moves.append(text)
    messages.append({"role": "assistant", "content": text})
print(json.dumps({
    "cooperation": moves.count("cooperate") / len(moves),
    "moves": " ".join(moves),
    "prompt_tokens": prompt_tokens,
}))
"#;

/// A program that checks what the gateway refuses, and how.
const REFUSALS: &str = r#"
import json, os
import openai
from openai import OpenAI

client = OpenAI(max_retries=0)
try:
    client.chat.completions.create(model="openrouter/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    unknown = "served"
except openai.NotFoundError as error:
    unknown = error.message
stranger = OpenAI(api_key="not-a-run-token", max_retries=0)
try:
    stranger.chat.completions.create(model="sim/echo", messages=[{"role": "user", "content": "hi"}])
    refused = False
except openai.AuthenticationError:
    refused = True
models = [m.id for m in client.models.list()]
print(json.dumps({"unknown": unknown, "refused": refused, "models": " ".join(models)}))
"#;

/// One program speaking all three APIs with the official clients, configured
/// by the environment alone.
const ALL_APIS: &str = r#"
import json
import anthropic, ollama
from openai import OpenAI

claude = anthropic.Anthropic()
reply = claude.messages.create(model="sim/echo", max_tokens=50, system="Be terse.",
                               messages=[{"role": "user", "content": "hello anthropic"}])
with claude.messages.stream(model="sim/tit-for-tat", max_tokens=50,
                            messages=[{"role": "user", "content": "I defect"}]) as stream:
    streamed_text = "".join(stream.text_stream)
    streamed = stream.get_final_message()
counted = claude.messages.count_tokens(model="sim/echo",
                                       messages=[{"role": "user", "content": "hello anthropic"}])

local = ollama.Client()
chat = local.chat(model="sim/echo", messages=[{"role": "user", "content": "hello ollama"}])
parts = list(local.chat(model="sim/always-defect", messages=[{"role": "user", "content": "x"}], stream=True))
generated = local.generate(model="sim/echo", prompt="generate me")
embedded = local.embed(model="sim/echo", input=["a", "b"])
tags = [model.model for model in local.list().models]

openai_client = OpenAI()
completion = openai_client.completions.create(model="sim/echo", prompt="complete me")
vectors = openai_client.embeddings.create(model="sim/echo", input=["embed me"])

print(json.dumps({
    "anthropic_text": reply.content[0].text,
    "anthropic_tokens": [reply.usage.input_tokens, reply.usage.output_tokens],
    "anthropic_stream": streamed_text,
    "anthropic_stream_output_tokens": streamed.usage.output_tokens,
    "anthropic_counted": counted.input_tokens,
    "ollama_chat": chat.message.content,
    "ollama_eval_count": chat.eval_count,
    "ollama_stream": "".join(part.message.content for part in parts),
    "ollama_stream_done": parts[-1].done,
    "ollama_generate": generated.response,
    "ollama_dimensions": [len(vector) for vector in embedded.embeddings],
    "ollama_tags": " ".join(tags),
    "openai_completion": completion.choices[0].text,
    "openai_embedding_dimensions": len(vectors.data[0].embedding),
}))
"#;

/// Runs `script` once as experiment `name` with `flotilla run` (and `extra`
/// arguments, such as `--providers FILE`) under `dir`; returns its succeeded
/// run's result.json and the run's directory.
fn run_program_once(
    dir: &Path,
    name: &str,
    script: &str,
    extra: &[&std::ffi::OsStr],
) -> (serde_json::Value, std::path::PathBuf) {
    let python = python_with_clients();
    std::fs::write(dir.join(format!("{name}.py")), script).unwrap();
    let file = write_experiment(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nrun:\n  kind: command\n  command: [{:?}, {name}.py]\n",
            python.display().to_string()
        ),
    );
    let root = dir.join("experiments");
    run_ok(
        flotilla(&["run", "--workers", "1"])
            .arg(&file)
            .arg("--root")
            .arg(&root)
            .args(extra),
    );
    let run_dir = root.join(name).join("runs/var-001-run-001");
    let result = read_json(&run_dir.join("result.json"));
    assert_eq!(result["status"], "succeeded", "{result}");
    (result, run_dir)
}

fn experiment(dir: &Path, python: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("scenario.py"), SCENARIO).unwrap();
    write_experiment(
        dir,
        "game.yaml",
        &format!(
            "name: game\nrun:\n  kind: command\n  command: [{python:?}, scenario.py, \"{{model}}\", \"{{stream}}\"]\n\
             variations:\n  - param: model\n    values: [sim/tit-for-tat, sim/always-defect]\n  - param: stream\n    values: [false, true]\n\
             runs_per_variation: 2\nmetrics:\n  - {{name: cooperation, goal: maximize}}\n\
             # Every call metered upstream: streamed and unstreamed calls would share answers.\n\
             cache: off\n",
            python = python.display().to_string()
        ),
    )
}

#[test]
fn openai_client_calls_are_answered_metered_and_recorded_per_run() {
    let python = python_with_clients();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    let file = experiment(dir.path(), &python);
    run_ok(
        flotilla(&["run", "--workers", "2"])
            .arg(&file)
            .arg("--root")
            .arg(&root),
    );
    let rows = read_csv(&root.join("game/results.csv"));
    assert_eq!(rows.len(), 8);
    for row in &rows {
        assert_eq!(row["status"], "succeeded", "{row:?}");
        let expected_moves = match row["model"].as_str() {
            // Tit-for-tat plays our previous move: we cooperate, then defect twice.
            "sim/tit-for-tat" => "cooperate defect defect",
            _ => "defect defect defect",
        };
        assert_eq!(row["moves"], expected_moves, "{row:?}");
        let run_dir = root.join("game/runs").join(&row["run_id"]);
        let calls = calls_of(&run_dir);
        assert_eq!(calls.len(), 3, "one record per call");
        assert!(calls.iter().all(|c| c["provider"] == "sim"
            && c["api"] == "openai"
            && c["status"] == "succeeded"
            && c["cache"] == "off"));
        assert!(calls
            .iter()
            .all(|c| c["streamed"] == (row["stream"] == "true")));
        let metered: f64 = calls.iter().map(|c| c["cost_usd"].as_f64().unwrap()).sum();
        let cost: f64 = row["cost_usd"].parse().unwrap();
        assert!(
            metered > 0.0 && (cost - metered).abs() < 1e-12,
            "run cost {cost} vs calls {metered}"
        );
        let prompt_tokens: u64 = calls
            .iter()
            .map(|c| c["input_tokens"].as_u64().unwrap())
            .sum();
        assert_eq!(
            row["prompt_tokens"],
            prompt_tokens.to_string(),
            "the client saw the metered usage"
        );
    }
    // The same conversation streamed or not costs the same, to the cent and below.
    let cost_of = |model: &str, stream: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r["model"] == model && r["stream"] == stream)
            .map(|r| r["cost_usd"].clone())
            .collect()
    };
    for model in ["sim/tit-for-tat", "sim/always-defect"] {
        assert_eq!(cost_of(model, "true"), cost_of(model, "false"), "{model}");
    }
    let summary = read_json(&root.join("game/batch-summary.json"));
    let total = summary["cost_usd"].as_f64().unwrap();
    assert!(total > 0.0);
    // Every call is a row of the calls table, and the costs file breaks them down.
    assert_eq!(
        count(&root, "SELECT COUNT(*) FROM calls WHERE provider = 'sim'"),
        24
    );
    let costs = read_json(&root.join("game/batch-costs.json"));
    let by_model = costs["by_model"].as_array().unwrap();
    assert_eq!(
        by_model
            .iter()
            .map(|m| (m["model"].as_str().unwrap(), m["calls"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        vec![("always-defect", 12), ("tit-for-tat", 12)]
    );
    let by_provider = &costs["by_provider"][0];
    assert_eq!(
        (
            by_provider["provider"].as_str(),
            by_provider["calls"].as_u64()
        ),
        (Some("sim"), Some(24))
    );
    assert!((by_provider["cost_usd"].as_f64().unwrap() - total).abs() < 1e-12);
}

#[test]
fn the_gateway_refuses_strangers_and_names_what_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = run_program_once(dir.path(), "refusals", REFUSALS, &[]);
    let metrics = &result["metrics"];
    let unknown = metrics["unknown"].as_str().unwrap();
    assert!(
        unknown.contains("unknown provider 'openrouter' in model 'openrouter/gpt-4o'")
            && unknown.contains("this worker serves: sim/always-cooperate"),
        "{unknown}"
    );
    assert_eq!(
        metrics["refused"], true,
        "a key that is no run's token is refused"
    );
    assert!(metrics["models"]
        .as_str()
        .unwrap()
        .contains("sim/tit-for-tat"));
}

#[test]
fn anthropic_and_ollama_clients_and_the_other_openai_endpoints_work_unmodified() {
    let dir = tempfile::tempdir().unwrap();
    let (result, run_dir) = run_program_once(dir.path(), "apis", ALL_APIS, &[]);
    let metrics = &result["metrics"];
    assert_eq!(metrics["anthropic_text"], "hello anthropic");
    // "Be terse." is 3 tokens and "hello anthropic" 4; the echo 4.
    assert_eq!(metrics["anthropic_tokens"], serde_json::json!([7, 4]));
    assert_eq!(metrics["anthropic_stream"], "defect");
    assert_eq!(metrics["anthropic_stream_output_tokens"], 2);
    assert_eq!(metrics["anthropic_counted"], 4);
    assert_eq!(metrics["ollama_chat"], "hello ollama");
    assert_eq!(metrics["ollama_eval_count"], 3);
    assert_eq!(metrics["ollama_stream"], "defect");
    assert_eq!(metrics["ollama_stream_done"], true);
    assert_eq!(metrics["ollama_generate"], "generate me");
    assert_eq!(metrics["ollama_dimensions"], serde_json::json!([16, 16]));
    assert!(metrics["ollama_tags"]
        .as_str()
        .unwrap()
        .contains("sim/judge"));
    assert_eq!(metrics["openai_completion"], "complete me");
    assert_eq!(metrics["openai_embedding_dimensions"], 16);

    let calls = calls_of(&run_dir);
    let by_api = |api: &str| calls.iter().filter(|c| c["api"] == api).count();
    // Token counting is free and not a call; every other request is.
    assert_eq!(
        (by_api("anthropic"), by_api("ollama"), by_api("openai")),
        (2, 4, 2)
    );
    let metered: f64 = calls.iter().map(|c| c["cost_usd"].as_f64().unwrap()).sum();
    assert!((result["cost_usd"].as_f64().unwrap() - metered).abs() < 1e-12);
}

/// Calls to providers of a providers file, here all served by one
/// `flotilla sim-server`: paced under the declared limits, retried after a
/// 429, metered from the provider's usage and priced from the file.
const UPSTREAM: &str = r#"
import json
import anthropic, ollama, openai
from openai import OpenAI

client = OpenAI(max_retries=0)
moves = [client.chat.completions.create(model="remote/sim/tit-for-tat",
         messages=[{"role": "user", "content": f"I {move}"}]).choices[0].message.content
         for move in ["cooperate", "defect", "cooperate"]]

def usage_chunks(**options):
    chunks = list(client.chat.completions.create(model="remote/sim/echo", stream=True,
                  messages=[{"role": "user", "content": "stream me"}], **options))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, sum(1 for c in chunks if c.usage is not None)

plain_text, plain_usage = usage_chunks()
asked_text, asked_usage = usage_chunks(stream_options={"include_usage": True})
# The first answer says no request is left this second: the second call waits for the reset.
paused = [client.chat.completions.create(model="unpaced/sim/always-defect",
          messages=[{"role": "user", "content": "x"}]).choices[0].message.content for _ in range(2)]
# Two calls at once meet the server's concurrency limit: the second gets 429, and the
# gateway waits and retries; the program never sees it.
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(2) as pool:
    retried = list(pool.map(lambda _: client.chat.completions.create(model="unpaced/sim/random",
        messages=[{"role": "user", "content": "y"}]).choices[0].message.content, range(2)))
claude = anthropic.Anthropic(max_retries=0)
said = claude.messages.create(model="claude/sim/echo", max_tokens=20,
                              messages=[{"role": "user", "content": "hi claude"}])
with claude.messages.stream(model="claude/sim/echo", max_tokens=20,
                            messages=[{"role": "user", "content": "stream claude"}]) as stream:
    streamed = "".join(stream.text_stream)
local = ollama.Client()
farm = local.chat(model="farm/sim/echo", messages=[{"role": "user", "content": "hi farm"}])
farm_stream = "".join(p.message.content for p in local.chat(model="farm/sim/echo", stream=True,
                      messages=[{"role": "user", "content": "stream farm"}]))
try:
    client.chat.completions.create(model="claude/sim/echo", messages=[{"role": "user", "content": "x"}])
    wrong_api = None
except openai.BadRequestError as error:
    wrong_api = error.message
try:
    client.chat.completions.create(model="remote/sim/judge", messages=[{"role": "user", "content": "x"}])
    unpriced = None
except openai.BadRequestError as error:
    unpriced = error.message
try:
    client.chat.completions.create(model="gone/sim/echo", messages=[{"role": "user", "content": "x"}])
    unreachable = None
except openai.APIStatusError as error:
    unreachable = [error.status_code, error.message]
print(json.dumps({
    "moves": " ".join(moves), "plain": [plain_text, plain_usage], "asked": [asked_text, asked_usage],
    "paused": " ".join(paused), "retried": len(retried), "claude": said.content[0].text, "claude_input": said.usage.input_tokens,
    "claude_stream": streamed, "farm": farm.message.content, "farm_stream": farm_stream,
    "wrong_api": wrong_api, "unpriced": unpriced, "unreachable": unreachable,
}))
"#;

#[test]
fn calls_to_providers_are_paced_retried_metered_and_priced_from_the_providers_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, address) =
        sim_server(&["--rpm", "60", "--concurrency", "1", "--latency", "300ms"]);
    let providers = dir.path().join("providers.yaml");
    std::fs::write(
        &providers,
        format!(
            "providers:\n\
             - {{name: remote, api: openai, base_url: 'http://{address}/v1', limits: {{rpm: 60}},\n   \
               prices: {{'sim/tit-for-tat': {{input: 3, output: 6}}, 'sim/echo': {{input: 3, output: 6}}}}}}\n\
             - {{name: unpaced, api: openai, base_url: 'http://{address}/v1', prices: {{'sim/always-defect': {{input: 1, output: 1}}, 'sim/random': {{input: 1, output: 1}}}}}}\n\
             - {{name: claude, api: anthropic, base_url: 'http://{address}', prices: {{'sim/echo': {{input: 3, output: 15}}}}}}\n\
             - {{name: farm, api: ollama, base_url: 'http://{address}', prices: {{'sim/echo': {{input: 0, output: 0}}}}}}\n\
             - {{name: gone, api: openai, base_url: 'http://127.0.0.1:1/v1', prices: {{'sim/echo': {{input: 1, output: 1}}}}}}\n"
        ),
    )
    .unwrap();
    let (result, run_dir) = run_program_once(
        dir.path(),
        "upstream",
        UPSTREAM,
        &["--providers".as_ref(), providers.as_os_str()],
    );
    let seen = &result["metrics"];
    assert_eq!(seen["moves"], "cooperate defect cooperate");
    assert_eq!(
        seen["plain"],
        serde_json::json!(["stream me", 0]),
        "no usage chunk unless asked"
    );
    assert_eq!(seen["asked"], serde_json::json!(["stream me", 1]));
    assert_eq!(seen["paused"], "defect defect");
    assert_eq!(seen["retried"], 2);
    assert_eq!(seen["claude"], "hi claude");
    assert_eq!(seen["claude_stream"], "stream claude");
    assert_eq!(seen["farm"], "hi farm");
    assert_eq!(seen["farm_stream"], "stream farm");
    assert!(
        seen["wrong_api"]
            .as_str()
            .unwrap()
            .contains("provider 'claude' speaks the anthropic API"),
        "{seen}"
    );
    // A provider that cannot be reached: retried, then a 502 the client raises.
    assert_eq!(seen["unreachable"][0], 502, "{seen}");
    assert!(
        seen["unreachable"][1]
            .as_str()
            .unwrap()
            .contains("cannot reach provider 'gone'"),
        "{seen}"
    );
    assert!(
        seen["unpriced"]
            .as_str()
            .unwrap()
            .contains("no price is known for remote/sim/judge"),
        "{seen}"
    );

    let calls = calls_of(&run_dir);
    let of = |provider: &str, model: &str| -> Vec<&serde_json::Value> {
        calls
            .iter()
            .filter(|c| c["provider"] == provider && c["model"] == model)
            .collect()
    };
    // Paced under the declared 60 rpm: no call of `remote` met a 429.
    let paced = of("remote", "sim/tit-for-tat");
    assert_eq!(paced.len(), 3);
    assert!(paced.iter().all(|c| c["retries"] == 0), "{paced:?}");
    let paused = of("unpaced", "sim/always-defect");
    assert!(paused.iter().all(|c| c["retries"] == 0), "{paused:?}");
    assert!(
        paused[1]["latency_ms"].as_f64().unwrap() >= 900.0,
        "the second call waited for the reset the first answer announced: {paused:?}"
    );
    let retried = of("unpaced", "sim/random");
    assert!(
        retried
            .iter()
            .map(|c| c["retries"].as_u64().unwrap())
            .sum::<u64>()
            >= 1,
        "{retried:?}"
    );
    // Priced from the provider's usage at the file's prices: input $3, output $6 per million.
    for call in of("remote", "sim/echo") {
        let expected = (call["input_tokens"].as_f64().unwrap() * 3.0
            + call["output_tokens"].as_f64().unwrap() * 6.0)
            / 1e6;
        assert!(
            (call["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-15,
            "{call}"
        );
        assert_eq!(call["cost_is_worst_case"], false);
        assert_eq!(call["streamed"], true);
    }
    let streamed_costs: Vec<f64> = of("remote", "sim/echo")
        .iter()
        .map(|c| c["cost_usd"].as_f64().unwrap())
        .collect();
    assert_eq!(
        streamed_costs[0], streamed_costs[1],
        "asking for the usage chunk costs nothing more"
    );
    assert_eq!(of("claude", "sim/echo").len(), 2);
    assert_eq!(of("farm", "sim/echo").len(), 2);
    assert!(of("farm", "sim/echo").iter().all(|c| c["cost_usd"] == 0.0));
    let gone = of("gone", "sim/echo");
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0]["status"].as_str(), gone[0]["retries"].as_u64()),
        (Some("failed"), Some(4))
    );
    assert_eq!(gone[0]["cost_usd"], 0.0);
    server.kill9();
}

#[test]
fn an_experiment_prices_its_models_and_unpriced_hosted_models_are_refused() {
    let python = python_with_clients();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("experiments");
    std::fs::write(
        dir.path().join("once.py"),
        "import json\nfrom openai import OpenAI\nr = OpenAI().chat.completions.create(model='sim/echo', messages=[{'role': 'user', 'content': 'price me'}])\nprint(json.dumps({'ok': True}))\n",
    )
    .unwrap();
    // The experiment's own price for sim/echo replaces the sim's: $1 per input token.
    let priced = write_experiment(
        dir.path(),
        "priced.yaml",
        &format!(
            "name: priced\nrun:\n  kind: command\n  command: [{:?}, once.py]\nprices:\n  sim/echo: {{input: 1000000, output: 0}}\n",
            python.display().to_string()
        ),
    );
    run_ok(
        flotilla(&["run", "--workers", "1"])
            .arg(&priced)
            .arg("--root")
            .arg(&root),
    );
    let call = calls_of(&root.join("priced/runs/var-001-run-001")).remove(0);
    assert_eq!(call["cost_usd"].as_f64(), call["input_tokens"].as_f64());

    // A hosted model nobody has a price for is refused before anything runs.
    let unpriced = write_experiment(
        dir.path(),
        "unpriced.yaml",
        "name: unpriced\nrun:\n  kind: command\n  command: [/bin/true]\n\
         variations:\n  - param: model\n    values: [openai/gpt-4o-mini, openai/gpt-9-turbo]\n",
    );
    let refused = flotilla(&["run"])
        .arg(&unpriced)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("no price is known for openai/gpt-9-turbo")
            && !stderr.contains("gpt-4o-mini,"),
        "{stderr}"
    );
    // Priced in the experiment file, it runs.
    let fixed = std::fs::read_to_string(&unpriced).unwrap()
        + "prices:\n  openai/gpt-9-turbo: {input: 5, output: 15}\n";
    std::fs::write(&unpriced, fixed).unwrap();
    run_ok(
        flotilla(&["run", "--workers", "1"])
            .arg(&unpriced)
            .arg("--root")
            .arg(&root),
    );
}
