//! `kind: chat` runs: no program — the worker sends rendered messages to the
//! variation's model through its own gateway (metered, rate-limited and held
//! to the budget like any call) and scores the answer by rules.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{placeholders, ConfigError, Locator, RawRun, Spanned};

/// Output tokens a chat call may produce unless `max_tokens` says otherwise.
pub const DEFAULT_CHAT_MAX_TOKENS: u64 = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRun {
    /// `provider/model`, a template (`{model}`).
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The opening messages, templates.
    pub messages: Vec<ChatMessage>,
    /// Follow-up user messages, each sent after the model's previous answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<String>,
    pub max_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub score: Vec<ScoreRule>,
}

impl ChatRun {
    /// The model and the opening messages (system first), rendered with
    /// `render` (a template and, for judges, the answer judged).
    pub fn opening(
        &self,
        render: impl Fn(&str) -> Result<String, String>,
    ) -> Result<(String, Vec<Value>), String> {
        let model = render(&self.model)?;
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(serde_json::json!({"role": "system", "content": render(system)?}));
        }
        for message in &self.messages {
            messages.push(
                serde_json::json!({"role": message.role, "content": render(&message.content)?}),
            );
        }
        Ok((model, messages))
    }

    /// The body a chat run posts to its gateway's `/v1/chat/completions`:
    /// the same for every run of the same conversation, so that the response
    /// cache knows it again (and `flotilla validate` can look it up).
    pub fn request_body(&self, model: &str, messages: &[Value]) -> Value {
        let mut body = serde_json::json!({"model": model, "messages": messages, "max_tokens": self.max_tokens});
        if let Some(temperature) = self.temperature {
            body["temperature"] = serde_json::json!(temperature);
        }
        body
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// One metric from the final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRule {
    pub metric: String,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The answer, trimmed, equals the rendered text: a boolean.
    Exact(String),
    /// The answer contains the rendered text: a boolean.
    Contains(String),
    /// The rendered pattern matches: a boolean; with a capture group, what
    /// the first group captured (a number when it reads as one).
    Regex(String),
    /// The answer is JSON; the value at the dotted path — or, with `equals`,
    /// whether it is that value.
    JsonField {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        equals: Option<Value>,
    },
    /// A judge model rates the answer 0–10 by the rendered rubric (`{output}` is the answer).
    Judge { model: String, rubric: String },
}

/// Placeholders a chat run's templates may use beyond the params.
const OUTPUT: &str = "output";

pub(super) fn validate(
    raw: &Spanned<RawRun>,
    timeout_ms: u64,
    known: &BTreeSet<&str>,
    at: &Locator<'_>,
) -> Result<super::RunConfig, ConfigError> {
    let run = &raw.value;
    let here = &raw.referenced;
    if run.command.is_some() {
        return Err(at.at(
            here,
            "run.command",
            "a chat run takes no command: it sends `messages` (or `prompt`) to `model`",
        ));
    }
    let text =
        |value: &Option<Spanned<Value>>, field: &str| -> Result<Option<String>, ConfigError> {
            match value {
                None => Ok(None),
                Some(Spanned {
                    value: Value::String(text),
                    ..
                }) => Ok(Some(text.clone())),
                Some(other) => Err(at.at(
                    &other.referenced,
                    format!("run.{field}"),
                    "must be a string",
                )),
            }
        };
    let model = text(&run.model, "model")?.ok_or_else(|| {
        at.at(
            here,
            "run.model",
            "a chat run needs `model`, e.g. \"{model}\" or sim/echo",
        )
    })?;
    let system = text(&run.system, "system")?;
    let prompt = text(&run.prompt, "prompt")?;
    let messages: Vec<ChatMessage> = match (&run.messages, prompt) {
        (Some(_), Some(_)) => {
            return Err(at.at(here, "run.prompt", "give `messages` or `prompt`, not both"))
        }
        (None, None) => {
            return Err(at.at(
                here,
                "run.messages",
                "a chat run needs `messages` (a list of {role, content}) or `prompt`",
            ))
        }
        (None, Some(prompt)) => vec![ChatMessage {
            role: "user".into(),
            content: prompt,
        }],
        (Some(messages), None) => serde_json::from_value(messages.value.clone()).map_err(|_| {
            at.at(
                &messages.referenced,
                "run.messages",
                "must be a list of {role: user|assistant|system, content: text}",
            )
        })?,
    };
    if let Some(bad) = messages
        .iter()
        .position(|m| !matches!(m.role.as_str(), "user" | "assistant" | "system"))
    {
        return Err(at.at(
            here,
            format!("run.messages[{bad}].role"),
            "must be user, assistant or system",
        ));
    }
    let turns: Vec<String> = match &run.turns {
        None => Vec::new(),
        Some(turns) => serde_json::from_value(turns.value.clone()).map_err(|_| {
            at.at(
                &turns.referenced,
                "run.turns",
                "must be a list of follow-up messages (text)",
            )
        })?,
    };
    let max_tokens = match &run.max_tokens {
        None => DEFAULT_CHAT_MAX_TOKENS,
        Some(value) => value.value.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            at.at(
                &value.referenced,
                "run.max_tokens",
                "must be a whole number of tokens, at least 1",
            )
        })?,
    };
    let temperature = match &run.temperature {
        None => None,
        Some(value) => Some(
            value
                .value
                .as_f64()
                .filter(|t| (0.0..=2.0).contains(t))
                .ok_or_else(|| {
                    at.at(
                        &value.referenced,
                        "run.temperature",
                        "must be a number from 0 to 2",
                    )
                })?,
        ),
    };
    let score = match &run.score {
        None => Vec::new(),
        Some(score) => score_rules(score, at)?,
    };
    // Every template names known params; rules may also name {output}.
    let mut with_output = known.clone();
    with_output.insert(OUTPUT);
    let mut templates: Vec<(String, &str, &BTreeSet<&str>)> =
        vec![("run.model".into(), model.as_str(), known)];
    if let Some(system) = &system {
        templates.push(("run.system".into(), system, known));
    }
    for (index, message) in messages.iter().enumerate() {
        templates.push((
            format!("run.messages[{index}].content"),
            &message.content,
            known,
        ));
    }
    for (index, turn) in turns.iter().enumerate() {
        templates.push((format!("run.turns[{index}]"), turn, known));
    }
    for (index, rule) in score.iter().enumerate() {
        let field = format!("run.score[{index}]");
        match &rule.rule {
            Rule::Exact(t) | Rule::Contains(t) | Rule::Regex(t) => {
                templates.push((field, t, &with_output))
            }
            Rule::JsonField { .. } => {}
            Rule::Judge { model, rubric } => {
                templates.push((format!("{field}.judge.model"), model, known));
                templates.push((format!("{field}.judge.rubric"), rubric, &with_output));
            }
        }
    }
    for (field, template, names) in templates {
        placeholders::check(template, names).map_err(|m| at.at(here, field, m))?;
    }
    Ok(super::RunConfig::Chat {
        timeout_ms,
        chat: ChatRun {
            model,
            system,
            messages,
            turns,
            max_tokens,
            temperature,
            score,
        },
    })
}

/// `score`: a list of `{metric: NAME, RULE: …}` with one of exact, contains,
/// regex, json_field, judge.
fn score_rules(raw: &Spanned<Value>, at: &Locator<'_>) -> Result<Vec<ScoreRule>, ConfigError> {
    let here = &raw.referenced;
    let Value::Array(rules) = &raw.value else {
        return Err(at.at(
            here,
            "run.score",
            "must be a list of rules, e.g. [{metric: correct, contains: \"{answer}\"}]",
        ));
    };
    let mut out = Vec::new();
    let mut metrics = BTreeSet::new();
    for (index, rule) in rules.iter().enumerate() {
        let field = format!("run.score[{index}]");
        let object = rule
            .as_object()
            .ok_or_else(|| at.at(here, &field, "must be {metric: NAME, RULE: …}"))?;
        let metric = object
            .get("metric")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                at.at(
                    here,
                    format!("{field}.metric"),
                    "each rule needs `metric`, the name it scores",
                )
            })?
            .to_string();
        if !metrics.insert(metric.clone()) {
            return Err(at.at(
                here,
                format!("{field}.metric"),
                format!("'{metric}' is scored twice"),
            ));
        }
        let kinds: Vec<&String> = object.keys().filter(|k| *k != "metric").collect();
        let [kind] = kinds.as_slice() else {
            return Err(at.at(
                here,
                &field,
                "each rule has `metric` and one of exact, contains, regex, json_field, judge",
            ));
        };
        let value = &object[kind.as_str()];
        let as_text = || {
            value
                .as_str()
                .map(String::from)
                .ok_or_else(|| at.at(here, format!("{field}.{kind}"), "must be a string"))
        };
        let rule = match kind.as_str() {
            "exact" => Rule::Exact(as_text()?),
            "contains" => Rule::Contains(as_text()?),
            "regex" => Rule::Regex(as_text()?),
            "json_field" => match value {
                Value::String(path) => Rule::JsonField {
                    path: path.clone(),
                    equals: None,
                },
                Value::Object(fields) => Rule::JsonField {
                    path: fields
                        .get("path")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            at.at(
                                here,
                                format!("{field}.json_field.path"),
                                "must be a dotted path, e.g. answer.value",
                            )
                        })?
                        .to_string(),
                    equals: fields.get("equals").cloned(),
                },
                _ => {
                    return Err(at.at(
                        here,
                        format!("{field}.json_field"),
                        "must be a path, or {path, equals}",
                    ))
                }
            },
            "judge" => {
                let model = value.get("model").and_then(Value::as_str);
                let rubric = value.get("rubric").and_then(Value::as_str);
                match (model, rubric) {
                    (Some(model), Some(rubric)) => Rule::Judge { model: model.into(), rubric: rubric.into() },
                    _ => return Err(at.at(here, format!("{field}.judge"), "needs `model` (the judge) and `rubric` (a template; {output} is the answer)")),
                }
            }
            other => {
                return Err(at.at(
                    here,
                    format!("{field}.{other}"),
                    "unknown rule; valid rules are exact, contains, regex, json_field, judge",
                ))
            }
        };
        out.push(ScoreRule { metric, rule });
    }
    Ok(out)
}
