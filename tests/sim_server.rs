//! `flotilla sim-server` as the official clients see a provider: the three
//! APIs without run tokens, deterministic answers, and 429 with Retry-After
//! and rate-limit headers over its limits.

mod support;

use std::process::Command;

use support::*;

const CLIENTS: &str = r#"
import json, sys
import anthropic, ollama, openai

base = sys.argv[1]
strict = openai.OpenAI(base_url=base + "/v1", api_key="any", max_retries=0)
first = strict.chat.completions.with_raw_response.create(
    model="sim/tit-for-tat", messages=[{"role": "user", "content": "I defect"}])
answer = first.parse().choices[0].message.content
try:
    strict.chat.completions.create(model="sim/tit-for-tat", messages=[{"role": "user", "content": "again"}])
    limited = None
except openai.RateLimitError as error:
    limited = {"retry_after": error.response.headers.get("retry-after"),
               "remaining": error.response.headers.get("x-ratelimit-remaining-requests")}
# The client honours Retry-After and gets through on its own.
patient = openai.OpenAI(base_url=base + "/v1", api_key="any", max_retries=3)
later = patient.chat.completions.create(model="sim/tit-for-tat", messages=[{"role": "user", "content": "I cooperate"}])
claude = anthropic.Anthropic(base_url=base, api_key="any").messages.create(
    model="sim/echo", max_tokens=20, messages=[{"role": "user", "content": "hello"}])
# Limits are per model, as providers have them: another model is not limited.
local = ollama.Client(host=base).chat(model="sim/always-defect", messages=[{"role": "user", "content": "hi"}])
print(json.dumps({
    "answer": answer,
    "limit_header": first.headers.get("x-ratelimit-limit-requests"),
    "limited": limited,
    "later": later.choices[0].message.content,
    "anthropic": claude.content[0].text,
    "ollama": local.message.content,
}))
"#;

#[test]
fn official_clients_get_answers_and_rate_limits_from_the_sim_server() {
    let python = python_with_clients();
    let (mut server, address) = sim_server(&["--rpm", "60"]);
    let output = run_ok(
        Command::new(&python)
            .args(["-c", CLIENTS])
            .arg(format!("http://{address}")),
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["answer"], "defect");
    assert_eq!(seen["limit_header"], "60");
    assert_eq!(seen["limited"]["retry_after"], "1", "{seen}");
    assert_eq!(seen["limited"]["remaining"], "0");
    assert_eq!(seen["later"], "cooperate");
    assert_eq!(seen["anthropic"], "hello");
    assert_eq!(seen["ollama"], "defect");
    server.kill9();
}
