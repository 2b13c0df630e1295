//! Chat runs (ARCHITECTURE.md, "Worker session"): the worker renders the
//! experiment's messages with the run's parameters, sends them to the model
//! through its own gateway (so the calls are metered, rate-limited and held
//! to the budget like a program's), feeds each answer back before the next
//! turn, and scores the final answer by the experiment's rules. The run's
//! directory keeps the conversation (`conversation.json`) and the answer.

use std::time::Instant;

use flotilla_shared::clock::now_ms;
use flotilla_shared::config::{substitute, ChatRun, Rule};
use flotilla_shared::grid::value_as_argument;
use flotilla_shared::run::{Assignment, Outcome, RunResult, ShippedFile};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::RunContext;

/// What the model said to one request, and what it took.
struct Reply {
    text: String,
    input_tokens: u64,
    output_tokens: u64,
    latency_ms: f64,
}

pub async fn execute(
    assignment: Assignment,
    chat: &ChatRun,
    context: &RunContext,
    cancel: oneshot::Receiver<()>,
) -> RunResult {
    let started_at_ms = now_ms();
    let started = Instant::now();
    let mut result = RunResult::failed(&assignment, String::new(), started_at_ms);
    let token = match super::open_gateway_run(&assignment, context) {
        Ok(token) => token,
        Err(error) => {
            result.error = error;
            return result;
        }
    };
    let conversation = tokio::select! {
        outcome = converse(&assignment, chat, context, &token) => Some(outcome),
        _ = tokio::time::sleep(assignment.timeout) => None,
        _ = cancel => {
            result.outcome = Outcome::Cancelled;
            result.error = "cancelled".into();
            let _ = context.gateway.state.runs.close(&token);
            return result;
        }
    };
    let (calls, budget_stop) = context.gateway.state.runs.close(&token);
    result.duration_s = started.elapsed().as_secs_f64();
    match conversation {
        None => {
            result.error = format!(
                "timed out after {}",
                flotilla_shared::duration::format_duration(assignment.timeout)
            );
            result.timed_out = true;
        }
        Some(Err((error, files))) => {
            result.error = error;
            result.files = files;
        }
        Some(Ok((metrics, files))) => {
            result.outcome = Outcome::Succeeded;
            result.metrics_json = Some(Value::Object(metrics).to_string());
            result.files = files;
        }
    }
    super::add_calls(&mut result, calls);
    if let Some(metrics) = result.metrics_json.as_mut() {
        // The cost is known once the calls are closed.
        if let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(metrics) {
            map.insert("cost".into(), json!(result.cost_usd.unwrap_or(0.0)));
            *metrics = Value::Object(map).to_string();
        }
    }
    super::apply_budget_stop(&mut result, budget_stop);
    result
}

type Files = Vec<ShippedFile>;

/// The whole exchange: opening messages, then each turn; then the scores.
async fn converse(
    assignment: &Assignment,
    chat: &ChatRun,
    context: &RunContext,
    token: &str,
) -> Result<(Map<String, Value>, Files), (String, Files)> {
    let params: Map<String, Value> = serde_json::from_str(&assignment.params_json)
        .map_err(|e| (format!("params are not a JSON object: {e}"), Vec::new()))?;
    let render = |template: &str, output: Option<&str>| {
        substitute(template, |name| {
            params
                .get(name)
                .map(value_as_argument)
                .or_else(|| {
                    (name == "output")
                        .then(|| output.map(String::from))
                        .flatten()
                })
                .or_else(|| match name {
                    "seed" => Some(assignment.seed.to_string()),
                    "run_id" => Some(assignment.run.run_id()),
                    "variation" => Some(assignment.run.variation.to_string()),
                    "repetition" => Some(assignment.run.repetition.to_string()),
                    "attempt" => Some(assignment.attempt.to_string()),
                    _ => None,
                })
        })
    };
    let no_files = |error: String| (error, Vec::new());
    let (model, mut messages) = chat
        .opening(|template| render(template, None))
        .map_err(no_files)?;
    let (mut input_tokens, mut output_tokens, mut latency_ms) = (0u64, 0u64, 0f64);
    let mut answer = String::new();
    let follow_ups = std::iter::once(None).chain(chat.turns.iter().map(Some));
    for turn in follow_ups {
        if let Some(turn) = turn {
            messages
                .push(json!({"role": "user", "content": render(turn, None).map_err(no_files)?}));
        }
        let reply = ask(context, token, &model, &messages, chat)
            .await
            .map_err(|e| (e, vec![conversation_file(&model, &messages)]))?;
        input_tokens += reply.input_tokens;
        output_tokens += reply.output_tokens;
        latency_ms += reply.latency_ms;
        answer = reply.text;
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    let mut files = vec![
        conversation_file(&model, &messages),
        ShippedFile {
            path: "answer.txt".into(),
            content: answer.clone().into_bytes(),
        },
    ];
    let mut metrics = Map::new();
    for rule in &chat.score {
        let value = match &rule.rule {
            Rule::Judge { model, rubric } => {
                let judge = render(model, Some(&answer)).map_err(|e| (e, files.clone()))?;
                let rubric = render(rubric, Some(&answer)).map_err(|e| (e, files.clone()))?;
                let asked = vec![json!({"role": "user", "content": rubric})];
                let verdict = ask(context, token, &judge, &asked, chat)
                    .await
                    .map_err(|e| (format!("the judge {judge}: {e}"), files.clone()))?;
                files.push(ShippedFile {
                    path: format!("judge-{}.txt", rule.metric),
                    content: verdict.text.clone().into_bytes(),
                });
                judge_score(&verdict.text)
                    .map_err(|e| (format!("score {}: {e}", rule.metric), files.clone()))?
            }
            other => score(other, &answer, |t| render(t, Some(&answer)))
                .map_err(|e| (format!("score {}: {e}", rule.metric), files.clone()))?,
        };
        metrics.insert(rule.metric.clone(), value);
    }
    metrics.insert("input_tokens".into(), json!(input_tokens));
    metrics.insert("output_tokens".into(), json!(output_tokens));
    metrics.insert("latency_ms".into(), json!(latency_ms));
    Ok((metrics, files))
}

fn conversation_file(model: &str, messages: &[Value]) -> ShippedFile {
    ShippedFile {
        path: "conversation.json".into(),
        content: serde_json::to_vec_pretty(&json!({"model": model, "messages": messages}))
            .unwrap_or_default(),
    }
}

/// One chat completion through this worker's gateway, with the run's token.
async fn ask(
    context: &RunContext,
    token: &str,
    model: &str,
    messages: &[Value],
    chat: &ChatRun,
) -> Result<Reply, String> {
    let body = chat.request_body(model, messages);
    let started = Instant::now();
    let response = context
        .gateway
        .state
        .http
        .post(format!(
            "http://{}/v1/chat/completions",
            context.gateway.address
        ))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("the gateway could not be reached: {e}"))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("the answer could not be read ({status}): {e}"))?;
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the answer is not JSON ({status}): {e}"))?;
    if !status.is_success() {
        let message = answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(format!("{model} answered {status}: {message}"));
    }
    let number = |pointer: &str| answer.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    Ok(Reply {
        text: answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        input_tokens: number("/usage/prompt_tokens"),
        output_tokens: number("/usage/completion_tokens"),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// A rule other than `judge`, on the final answer.
fn score(
    rule: &Rule,
    answer: &str,
    render: impl Fn(&str) -> Result<String, String>,
) -> Result<Value, String> {
    Ok(match rule {
        Rule::Exact(expected) => Value::Bool(answer.trim() == render(expected)?.trim()),
        Rule::Contains(expected) => Value::Bool(answer.contains(&render(expected)?)),
        Rule::Regex(pattern) => {
            let pattern = render(pattern)?;
            let regex = regex::Regex::new(&pattern)
                .map_err(|e| format!("'{pattern}' is not a valid regular expression: {e}"))?;
            if regex.captures_len() > 1 {
                let captured = regex
                    .captures(answer)
                    .and_then(|c| c.get(1))
                    .map(|m| m.as_str().to_string());
                match captured {
                    None => Value::Null,
                    Some(text) => text
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite())
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                }
            } else {
                Value::Bool(regex.is_match(answer))
            }
        }
        Rule::JsonField { path, equals } => {
            let document: Value = serde_json::from_str(answer.trim())
                .map_err(|e| format!("the answer is not JSON: {e}"))?;
            let found = path
                .split('.')
                .try_fold(&document, |value, key| match value {
                    Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                    other => other.get(key),
                })
                .cloned()
                .unwrap_or(Value::Null);
            match equals {
                Some(expected) => Value::Bool(&found == expected),
                None => found,
            }
        }
        Rule::Judge { .. } => unreachable!("judges are asked by the caller"),
    })
}

/// A judge's verdict: the whole answer must be a number from 0 to 10.
fn judge_score(verdict: &str) -> Result<Value, String> {
    verdict
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|score| (0.0..=10.0).contains(score))
        .map(Value::from)
        .ok_or_else(|| {
            format!(
                "the judge's answer is not a score from 0 to 10: {:?}",
                verdict
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(template: &str) -> Result<String, String> {
        Ok(template.replace("{answer}", "42"))
    }

    #[test]
    fn rules_score_the_answer() {
        assert_eq!(
            score(&Rule::Exact("{answer}".into()), " 42\n", plain).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            score(&Rule::Contains("{answer}".into()), "it is 42.", plain).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            score(&Rule::Regex(r"\b{answer}\b".into()), "x 420", plain).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(
            score(&Rule::Regex(r"score: (\d+)".into()), "score: 7", plain).unwrap(),
            json!(7.0)
        );
        let field = Rule::JsonField {
            path: "a.b.1".into(),
            equals: None,
        };
        assert_eq!(
            score(&field, r#"{"a": {"b": [1, 5]}}"#, plain).unwrap(),
            json!(5)
        );
        let equals = Rule::JsonField {
            path: "ok".into(),
            equals: Some(json!(true)),
        };
        assert_eq!(
            score(&equals, r#"{"ok": true}"#, plain).unwrap(),
            Value::Bool(true)
        );
        assert!(score(&equals, "not json", plain)
            .unwrap_err()
            .contains("not JSON"));
        assert!(score(&Rule::Regex("(".into()), "x", plain)
            .unwrap_err()
            .contains("not a valid regular expression"));
    }

    #[test]
    fn a_judge_must_answer_a_score_from_0_to_10() {
        assert_eq!(judge_score(" 7\n").unwrap(), json!(7.0));
        assert_eq!(judge_score("10").unwrap(), json!(10.0));
        assert!(judge_score("11").is_err());
        assert!(judge_score("I'd say 7")
            .unwrap_err()
            .contains("\"I'd say 7\""));
    }
}
