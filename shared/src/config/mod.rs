//! The experiment file (ARCHITECTURE.md, "Experiments and runs"): parsing, validation with file/line/column
//! errors, and the canonical form whose SHA-256 identifies a submitted config.

mod cases;
mod change;
mod chat;
mod placeholders;

pub use cases::CaseFiles;
pub use change::{compare_configs, ConfigChange};
pub use chat::{ChatMessage, ChatRun, Rule, ScoreRule, DEFAULT_CHAT_MAX_TOKENS};
pub use placeholders::{substitute, BUILTIN_PLACEHOLDERS};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::{CacheMode, CachePolicy};
use crate::tier::{Tier, TierFallback, TierPolicy};
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use crate::pricing::Prices;
use sha2::{Digest, Sha256};

use crate::duration::parse_duration;
use crate::naming::check_experiment_name;

/// A problem in an experiment file, located precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// Dotted path of the field, e.g. `variations[1].values`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// How a run is carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunConfig {
    /// Start a program per run (ARCHITECTURE.md, "Worker session").
    Command {
        command: Vec<String>,
        /// As written in the file: relative to the file's directory unless absolute.
        workdir: String,
        timeout_ms: u64,
        /// Runs once on a worker before its first run of the experiment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        setup: Option<Hook>,
        /// Runs when that worker has no more runs of the experiment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        teardown: Option<Hook>,
    },
    /// Does nothing and succeeds at once, with no metrics and no run directory.
    /// Exists to measure Flotilla's own overhead.
    Noop { timeout_ms: u64 },
    /// Sends rendered messages to a model and scores the answer (no program).
    Chat { timeout_ms: u64, chat: ChatRun },
}

/// A program a worker runs once for the experiment (`run.setup`, `run.teardown`),
/// in the experiment's workdir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub command: Vec<String>,
    pub timeout_ms: u64,
}

/// How long a setup or teardown may take unless the file says otherwise.
pub const DEFAULT_HOOK_TIMEOUT_MS: u64 = 10 * 60 * 1000;

impl RunConfig {
    pub fn timeout(&self) -> Duration {
        match self {
            RunConfig::Command { timeout_ms, .. }
            | RunConfig::Noop { timeout_ms }
            | RunConfig::Chat { timeout_ms, .. } => Duration::from_millis(*timeout_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    pub param: String,
    pub values: Vec<Value>,
    /// Set on an axis of explicit cases: where they came from (a file as
    /// written in the experiment file, or `inline`). Its `param` is `case`
    /// and each value is a case, an object whose fields are params.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<String>,
}

/// The `param` of an axis of cases: a variation's case shows under it, by label.
pub const CASE_AXIS: &str = "case";

impl Axis {
    /// The params one value of this axis sets: itself, or a case's fields.
    pub fn params_of(&self, value: &Value) -> Vec<(String, Value)> {
        match (&self.cases, value) {
            (Some(_), Value::Object(fields)) => fields
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
            _ => vec![(self.param.clone(), value.clone())],
        }
    }

    /// How value `index` is named among the axis values of a variation: the
    /// value itself, or a case's `id` or `name` (else `case-N`).
    pub fn label_of(&self, index: usize) -> Value {
        match self.cases {
            Some(_) => Value::String(cases::label(index, &self.values[index])),
            None => self.values[index].clone(),
        }
    }

    /// The parameter names this axis sets.
    pub fn param_names(&self) -> BTreeSet<&str> {
        match self.cases {
            Some(_) => self
                .values
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|fields| fields.keys().map(String::as_str))
                .collect(),
            None => BTreeSet::from([self.param.as_str()]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub total_usd: f64,
    pub per_run_usd: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retries {
    /// Attempts per run, the first included.
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    Maximize,
    Minimize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSpec {
    pub name: String,
    pub goal: Goal,
    /// `range: [lo, hi]`: every value lies in it, so adaptive sampling can
    /// use the tighter bounded confidence sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
}

/// How an experiment samples (`sampling:`): absent, every variation gets
/// `runs_per_variation` runs; adaptive, runs go to questions still open
/// (ARCHITECTURE.md, "Adaptive sampling").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// A declared metric; its goal says which way is better.
    pub metric: String,
    pub question: SamplingQuestion,
    /// Error rate over the whole family of decisions.
    pub alpha: f64,
    /// Runs per variation before any decision.
    pub min_runs: u32,
}

/// What adaptive sampling decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingQuestion {
    /// Which variation is best: the others are eliminated.
    Best,
    /// Each variation against the baseline; with `min_effect`, differences
    /// smaller than it do not count.
    Baseline { min_effect: Option<f64> },
    /// Every variation's mean to ± `width`.
    Precision { width: f64 },
}

impl SamplingQuestion {
    pub fn name(&self) -> &'static str {
        match self {
            SamplingQuestion::Best => "best",
            SamplingQuestion::Baseline { .. } => "baseline",
            SamplingQuestion::Precision { .. } => "precision",
        }
    }
}

pub const DEFAULT_SAMPLING_ALPHA: f64 = 0.05;
pub const DEFAULT_MIN_RUNS: u32 = 5;

/// A validated experiment. Its serde form is the canonical form that is hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    pub name: String,
    pub description: String,
    pub run: RunConfig,
    pub params: BTreeMap<String, Value>,
    pub variations: Vec<Axis>,
    pub runs_per_variation: u32,
    pub seed: u64,
    pub max_parallel: Option<u32>,
    pub budget: Option<Budget>,
    pub retries: Retries,
    pub continue_on_error: bool,
    pub baseline: Option<BTreeMap<String, Value>>,
    pub metrics: Vec<MetricSpec>,
    /// `run.models`: models the runs use that their parameters do not name
    /// (`provider/model`); runs go only to workers that serve them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Prices of models by the name programs use (`provider/model`); over the
    /// providers file's and the dated table's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Prices>,
    /// How the runs' calls use the response cache (`cache:`); the default
    /// is left out of the canonical form, so older experiments hash alike.
    #[serde(default, skip_serializing_if = "CachePolicy::is_default")]
    pub cache: CachePolicy,
    /// The service tier the runs' calls ask for (`tier:`, `fallback:`);
    /// the default is left out of the canonical form.
    #[serde(default, skip_serializing_if = "TierPolicy::is_default")]
    pub tier: TierPolicy,
    /// Adaptive sampling; `None` (the default, left out of the canonical
    /// form): a fixed `runs_per_variation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_SEED: u64 = 0;

impl ExperimentConfig {
    /// The models a worker must serve to run a run with `params`: the
    /// `ollama/…` values among the parameters (which only workers whose
    /// Ollama has them can serve) and `run.models`.
    pub fn required_models(&self, params: &serde_json::Map<String, Value>) -> BTreeSet<String> {
        let named = params
            .values()
            .filter_map(Value::as_str)
            .filter(|value| value.starts_with("ollama/"));
        let chat = self.chat_models(params);
        named
            .chain(self.models.iter().map(String::as_str))
            .chain(
                chat.iter()
                    .map(String::as_str)
                    .filter(|m| m.starts_with("ollama/")),
            )
            .map(|model| model.strip_suffix(":latest").unwrap_or(model).to_string())
            .collect()
    }

    /// A chat run's model and judges' models, rendered with `params`.
    pub fn chat_models(&self, params: &serde_json::Map<String, Value>) -> Vec<String> {
        let RunConfig::Chat { chat, .. } = &self.run else {
            return Vec::new();
        };
        let lookup = |name: &str| params.get(name).map(crate::grid::value_as_argument);
        std::iter::once(&chat.model)
            .chain(chat.score.iter().filter_map(|rule| match &rule.rule {
                Rule::Judge { model, .. } => Some(model),
                _ => None,
            }))
            .filter_map(|template| substitute(template, lookup).ok())
            .collect()
    }

    /// Every model the experiment names: `provider/model` strings among its
    /// parameters and axis values, and `run.models`.
    pub fn named_models(&self) -> BTreeSet<String> {
        let values = self.params.values().chain(
            self.variations
                .iter()
                .flat_map(|axis| axis.values.iter())
                .flat_map(|value| match value {
                    Value::Object(fields) => fields.values().collect::<Vec<_>>(),
                    other => vec![other],
                }),
        );
        // A chat run's literal model and judges (templates are covered by the params).
        let chat = self.chat_models(&serde_json::Map::new());
        values
            .filter_map(Value::as_str)
            .chain(self.models.iter().map(String::as_str))
            .chain(chat.iter().map(String::as_str))
            .filter(|value| {
                value
                    .split_once('/')
                    .is_some_and(|(p, m)| !p.is_empty() && !m.is_empty() && !p.contains(['.', ' ']))
            })
            .map(str::to_string)
            .collect()
    }

    /// Hosted models the experiment names with no known price: not in its
    /// `prices`, not priced by `priced_elsewhere` (a providers file), and not
    /// in the dated table. Billed providers only: `sim` and `ollama` are free.
    pub fn unpriced_models(&self, priced_elsewhere: impl Fn(&str) -> bool) -> Vec<String> {
        self.named_models()
            .into_iter()
            .filter(|model| {
                let (provider, name) = model.split_once('/').expect("named models have a provider");
                crate::pricing::HOSTED_PROVIDERS.contains(&provider)
                    && !self.prices.contains_key(model)
                    && !priced_elsewhere(model)
                    && crate::pricing::hosted_price(name).is_none()
            })
            .collect()
    }

    /// The canonical JSON form: keys sorted, defaults filled in.
    pub fn canonical_json(&self) -> String {
        // serde_json's map keeps keys sorted, so the same config always
        // serialises to the same bytes.
        serde_json::to_string(&serde_json::to_value(self).expect("config serialises"))
            .expect("value serialises")
    }

    /// SHA-256 of the canonical form, hex-encoded.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.canonical_json().as_bytes()))
    }

    pub fn from_canonical_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Number of runs of the full grid.
    pub fn total_runs(&self) -> u64 {
        let variations: u64 = self
            .variations
            .iter()
            .map(|a| a.values.len() as u64)
            .product();
        variations * u64::from(self.runs_per_variation)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------ raw form

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    run: Spanned<RawRun>,
    #[serde(default)]
    params: BTreeMap<String, Value>,
    #[serde(default)]
    variations: Vec<Spanned<RawAxis>>,
    #[serde(default)]
    runs_per_variation: Option<Spanned<i64>>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    max_parallel: Option<Spanned<i64>>,
    #[serde(default)]
    budget: Option<Spanned<RawBudget>>,
    #[serde(default)]
    retries: Option<RawRetries>,
    #[serde(default)]
    continue_on_error: Option<bool>,
    #[serde(default)]
    baseline: Option<Spanned<BTreeMap<String, Value>>>,
    #[serde(default)]
    metrics: Vec<Spanned<RawMetric>>,
    #[serde(default)]
    prices: Option<Spanned<BTreeMap<String, RawPrices>>>,
    /// `read_write` (the default), `off`, `read_only`, `replay`, or
    /// `{mode: …, max_age: 30d}`.
    #[serde(default)]
    cache: Option<Spanned<Value>>,
    /// `standard` (the default) or `flex`.
    #[serde(default)]
    tier: Option<Spanned<String>>,
    /// With `tier: flex`: `standard` (the default) or `wait`.
    #[serde(default)]
    fallback: Option<Spanned<String>>,
    #[serde(default)]
    sampling: Option<Spanned<RawSampling>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSampling {
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    metric: Option<Spanned<String>>,
    #[serde(default)]
    question: Option<Spanned<String>>,
    #[serde(default)]
    alpha: Option<Spanned<f64>>,
    #[serde(default)]
    min_runs: Option<Spanned<i64>>,
    #[serde(default)]
    width: Option<Spanned<f64>>,
    #[serde(default)]
    min_effect: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrices {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    kind: Spanned<String>,
    #[serde(default)]
    command: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    workdir: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    models: Vec<Spanned<String>>,
    // kind: chat
    #[serde(default)]
    model: Option<Spanned<Value>>,
    #[serde(default)]
    system: Option<Spanned<Value>>,
    #[serde(default)]
    prompt: Option<Spanned<Value>>,
    #[serde(default)]
    messages: Option<Spanned<Value>>,
    #[serde(default)]
    turns: Option<Spanned<Value>>,
    #[serde(default)]
    max_tokens: Option<Spanned<Value>>,
    #[serde(default)]
    temperature: Option<Spanned<Value>>,
    #[serde(default)]
    score: Option<Spanned<Value>>,
    /// `[program, args…]`, or `{command: [...], timeout: 5m}`.
    #[serde(default)]
    setup: Option<Spanned<Value>>,
    #[serde(default)]
    teardown: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAxis {
    #[serde(default)]
    param: Option<Spanned<String>>,
    #[serde(default)]
    values: Option<Spanned<Vec<Spanned<Value>>>>,
    /// A cases file, or an inline list of case objects.
    #[serde(default)]
    cases: Option<Spanned<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    total_usd: Spanned<f64>,
    #[serde(default)]
    per_run_usd: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetries {
    max_attempts: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: Spanned<String>,
    goal: Spanned<String>,
    #[serde(default)]
    range: Option<Spanned<Vec<f64>>>,
}

/// Builds errors that point into one file.
struct Locator<'a> {
    file: &'a str,
}

impl Locator<'_> {
    fn at(
        &self,
        location: &Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: location.line(),
            column: location.column(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses and validates an experiment file at path `file`; cases files it
/// names are read from disk, relative to it.
pub fn parse_experiment(yaml: &str, file: &str) -> Result<ExperimentConfig, ConfigError> {
    let dir = std::path::Path::new(file)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let from_disk = move |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("cannot read {}: {e}", dir.join(name).display()))
    };
    parse_experiment_with(yaml, file, &from_disk)
}

/// Parses and validates an experiment file; `file` is used in error
/// messages, and `case_files` gives the content of the cases files it names.
pub fn parse_experiment_with(
    yaml: &str,
    file: &str,
    case_files: CaseFiles<'_>,
) -> Result<ExperimentConfig, ConfigError> {
    let raw: RawExperiment =
        serde_saphyr::from_str(yaml).map_err(|error| yaml_error(file, yaml, &error))?;
    validate(raw, &Locator { file }, case_files)
}

/// The key written on `line` (1-based) of the file, for errors the YAML
/// library reports without a field name.
fn key_on_line(yaml: &str, line: u64) -> String {
    let Some(text) = yaml.lines().nth(line.saturating_sub(1) as usize) else {
        return String::new();
    };
    let text = text
        .trim_start()
        .trim_start_matches("- ")
        .trim_start_matches('{');
    match text.split_once(':') {
        Some((key, _)) if !key.trim().is_empty() && !key.contains([' ', '"', '\'', '[']) => {
            key.trim().to_string()
        }
        _ => String::new(),
    }
}

fn yaml_error(file: &str, yaml: &str, error: &serde_saphyr::Error) -> ConfigError {
    let location = error.location().unwrap_or(Location::UNKNOWN);
    let message = error.without_snippet().to_string();
    // The library appends its own position; ours is already in front.
    let message = match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message,
    };
    let message = if message.contains("unknown field") {
        message.replace("expected one of", "valid fields are")
    } else {
        match message.as_str() {
            "invalid i64" | "invalid u64" => "expected a whole number".to_string(),
            "invalid f64" => "expected a number".to_string(),
            "expected mapping start" => "expected a mapping (key: value pairs)".to_string(),
            "expected sequence start" => "expected a list".to_string(),
            _ => message,
        }
    };
    let field = if message.contains("unknown field") {
        String::new()
    } else {
        key_on_line(yaml, location.line())
    };
    ConfigError {
        file: file.to_string(),
        line: location.line(),
        column: location.column(),
        field,
        message,
    }
}

/// Checks every section of the raw file and builds the validated config.
fn validate(
    raw: RawExperiment,
    at: &Locator<'_>,
    case_files: CaseFiles<'_>,
) -> Result<ExperimentConfig, ConfigError> {
    check_experiment_name(&raw.name.value).map_err(|m| at.at(&raw.name.referenced, "name", m))?;
    let timeout_ms = validate_timeout(&raw.run.value.timeout, at)?;
    let params = validate_params(raw.params, &raw.run.referenced, at)?;
    let variations = validate_axes(&raw.variations, at, case_files)?;
    let run = validate_run(&raw.run, timeout_ms, &params, &variations, at)?;
    let runs_per_variation = match &raw.runs_per_variation {
        None => 1,
        Some(count) => positive_u32(count, "runs_per_variation", at)?,
    };
    let max_parallel = raw
        .max_parallel
        .as_ref()
        .map(|m| positive_u32(m, "max_parallel", at))
        .transpose()?;
    let max_attempts = match &raw.retries {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(retries) => positive_u32(&retries.max_attempts, "retries.max_attempts", at)?,
    };
    let budget = raw
        .budget
        .as_ref()
        .map(|budget| validate_budget(budget, at))
        .transpose()?;
    let baseline = match &raw.baseline {
        None => None,
        Some(baseline) => {
            check_baseline(&baseline.value, &variations)
                .map_err(|m| at.at(&baseline.referenced, "baseline", m))?;
            Some(baseline.value.clone())
        }
    };
    let metrics = validate_metrics(&raw.metrics, at)?;
    let models = validate_models(&raw.run.value.models, at)?;
    let prices = match raw.prices {
        None => BTreeMap::new(),
        Some(prices) => validate_prices(prices.value, &prices.referenced, at)?,
    };
    let cache = match &raw.cache {
        None => CachePolicy::default(),
        Some(cache) => {
            validate_cache(&cache.value).map_err(|m| at.at(&cache.referenced, "cache", m))?
        }
    };
    let tier = validate_tier(raw.tier.as_ref(), raw.fallback.as_ref(), at)?;
    let sampling = match &raw.sampling {
        None => None,
        Some(sampling) => validate_sampling(
            sampling,
            &metrics,
            &variations,
            runs_per_variation,
            baseline.is_some(),
            at,
        )?,
    };
    Ok(ExperimentConfig {
        name: raw.name.value,
        description: raw.description.unwrap_or_default(),
        run,
        params,
        variations,
        runs_per_variation,
        seed: raw.seed.unwrap_or(DEFAULT_SEED),
        max_parallel,
        budget,
        retries: Retries { max_attempts },
        continue_on_error: raw.continue_on_error.unwrap_or(true),
        baseline,
        metrics,
        models,
        prices,
        cache,
        tier,
        sampling,
    })
}

/// `sampling:`; `mode: fixed` is the same as leaving it out.
fn validate_sampling(
    raw: &Spanned<RawSampling>,
    metrics: &[MetricSpec],
    variations: &[Axis],
    runs_per_variation: u32,
    has_baseline: bool,
    at: &Locator<'_>,
) -> Result<Option<Sampling>, ConfigError> {
    let whole = &raw.referenced;
    let raw = &raw.value;
    match raw.mode.as_ref().map(|m| m.value.as_str()) {
        Some("adaptive") => {}
        None | Some("fixed") => {
            let adaptive_only = [
                ("metric", raw.metric.as_ref().map(|m| &m.referenced)),
                ("question", raw.question.as_ref().map(|m| &m.referenced)),
                ("alpha", raw.alpha.as_ref().map(|m| &m.referenced)),
                ("min_runs", raw.min_runs.as_ref().map(|m| &m.referenced)),
                ("width", raw.width.as_ref().map(|m| &m.referenced)),
                ("min_effect", raw.min_effect.as_ref().map(|m| &m.referenced)),
            ];
            if let Some((field, location)) = adaptive_only
                .into_iter()
                .find_map(|(field, location)| location.map(|l| (field, l)))
            {
                return Err(at.at(
                    location,
                    format!("sampling.{field}"),
                    "applies to mode: adaptive; a fixed sweep gives every variation runs_per_variation runs",
                ));
            }
            return Ok(None);
        }
        Some(other) => {
            return Err(at.at(
                &raw.mode.as_ref().expect("given").referenced,
                "sampling.mode",
                format!("'{other}' is not a sampling mode; valid: fixed, adaptive"),
            ))
        }
    }
    if runs_per_variation < 2 {
        return Err(at.at(
            whole,
            "sampling.mode",
            "adaptive sampling decides from repeated runs of each variation; set runs_per_variation to the most any variation may get (at least 2)",
        ));
    }
    let metric = match &raw.metric {
        Some(metric) => {
            if !metrics.iter().any(|m| m.name == metric.value) {
                let declared: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
                return Err(at.at(
                    &metric.referenced,
                    "sampling.metric",
                    format!(
                        "'{}' is not a declared metric; declared: {}",
                        metric.value,
                        if declared.is_empty() {
                            "none (add it under metrics: with its goal)".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ),
                ));
            }
            metric.value.clone()
        }
        None => match metrics {
            [only] => only.name.clone(),
            _ => return Err(at.at(
                whole,
                "sampling.metric",
                "name the metric that decides (one of metrics:, whose goal gives the direction)",
            )),
        },
    };
    let question_name = raw.question.as_ref().map_or("best", |q| q.value.as_str());
    let question_at = raw.question.as_ref().map_or(whole, |q| &q.referenced);
    let only_for = |field: &str, given: Option<&Location>, question: &str| match given {
        Some(location) if question_name != question => Err(at.at(
            location,
            format!("sampling.{field}"),
            format!("applies to question: {question}"),
        )),
        _ => Ok(()),
    };
    only_for(
        "width",
        raw.width.as_ref().map(|w| &w.referenced),
        "precision",
    )?;
    only_for(
        "min_effect",
        raw.min_effect.as_ref().map(|w| &w.referenced),
        "baseline",
    )?;
    let variation_count: usize = variations.iter().map(|a| a.values.len()).product();
    let question = match question_name {
        "best" | "baseline" if variation_count < 2 => {
            return Err(at.at(
                question_at,
                "sampling.question",
                format!(
                    "question: {question_name} compares variations, and this experiment has one"
                ),
            ))
        }
        "best" => SamplingQuestion::Best,
        "baseline" => {
            if !has_baseline {
                return Err(at.at(
                    question_at,
                    "sampling.question",
                    "question: baseline needs baseline: (one value per axis) to compare against",
                ));
            }
            let min_effect = match &raw.min_effect {
                Some(effect) if !(effect.value.is_finite() && effect.value > 0.0) => {
                    return Err(at.at(
                        &effect.referenced,
                        "sampling.min_effect",
                        "must be a positive difference in the metric's units",
                    ))
                }
                other => other.as_ref().map(|e| e.value),
            };
            SamplingQuestion::Baseline { min_effect }
        }
        "precision" => match &raw.width {
            Some(width) if width.value.is_finite() && width.value > 0.0 => {
                SamplingQuestion::Precision { width: width.value }
            }
            Some(width) => {
                return Err(at.at(
                    &width.referenced,
                    "sampling.width",
                    "must be a positive half-width in the metric's units",
                ))
            }
            None => return Err(at.at(
                question_at,
                "sampling.width",
                "question: precision needs width: the half-width each mean's interval should reach",
            )),
        },
        other => {
            return Err(at.at(
                question_at,
                "sampling.question",
                format!("'{other}' is not a question; valid: best, baseline, precision"),
            ))
        }
    };
    let alpha = match &raw.alpha {
        None => DEFAULT_SAMPLING_ALPHA,
        Some(alpha) if alpha.value > 0.0 && alpha.value < 0.5 => alpha.value,
        Some(alpha) => {
            return Err(at.at(
                &alpha.referenced,
                "sampling.alpha",
                format!(
                    "{} is no error rate; give one between 0 and 0.5, such as 0.05",
                    alpha.value
                ),
            ))
        }
    };
    let min_runs = match &raw.min_runs {
        None => DEFAULT_MIN_RUNS.min(runs_per_variation),
        Some(min) if min.value >= 2 && min.value <= i64::from(runs_per_variation) => min.value as u32,
        Some(min) => {
            return Err(at.at(
                &min.referenced,
                "sampling.min_runs",
                format!(
                    "must be from 2 to runs_per_variation ({runs_per_variation}), the most any variation gets; got {}",
                    min.value
                ),
            ))
        }
    };
    Ok(Some(Sampling {
        metric,
        question,
        alpha,
        min_runs,
    }))
}

/// `tier:` and `fallback:`; a fallback only means something for `tier: flex`.
fn validate_tier(
    tier: Option<&Spanned<String>>,
    fallback: Option<&Spanned<String>>,
    at: &Locator<'_>,
) -> Result<TierPolicy, ConfigError> {
    let tier_value = match tier {
        None => Tier::Standard,
        Some(tier) => Tier::parse(&tier.value).ok_or_else(|| {
            at.at(
                &tier.referenced,
                "tier",
                format!(
                    "'{}' is not a service tier; valid: {}",
                    tier.value,
                    Tier::SPELLINGS
                ),
            )
        })?,
    };
    let fallback_value = match fallback {
        None => TierFallback::default(),
        Some(fallback) => {
            let value = TierFallback::parse(&fallback.value).ok_or_else(|| {
                at.at(
                    &fallback.referenced,
                    "fallback",
                    format!(
                        "'{}' is no fallback for a refused flex call; valid: {}",
                        fallback.value,
                        TierFallback::SPELLINGS
                    ),
                )
            })?;
            if tier_value != Tier::Flex {
                return Err(at.at(
                    &fallback.referenced,
                    "fallback",
                    "fallback says what a call refused by the flex tier does; it needs tier: flex",
                ));
            }
            value
        }
    };
    Ok(TierPolicy {
        tier: tier_value,
        fallback: fallback_value,
    })
}

/// `cache:`: a mode, or `{mode, max_age}`.
fn validate_cache(raw: &Value) -> Result<CachePolicy, String> {
    // YAML reads a bare `off` as false.
    let mode = |text: &Value| match text.as_str().and_then(CacheMode::parse) {
        Some(mode) => Ok(mode),
        None if *text == Value::Bool(false) => Ok(CacheMode::Off),
        None => Err(format!(
            "'{}' is not a cache mode; valid: {}",
            text.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.to_string()),
            CacheMode::SPELLINGS
        )),
    };
    match raw {
        Value::String(_) | Value::Bool(false) => Ok(CachePolicy {
            mode: mode(raw)?,
            max_age_ms: None,
        }),
        Value::Object(fields) => {
            if let Some(unknown) = fields
                .keys()
                .find(|k| !["mode", "max_age"].contains(&k.as_str()))
            {
                return Err(format!(
                    "unknown field '{unknown}'; valid fields are mode, max_age"
                ));
            }
            let mode = fields
                .get("mode")
                .map(mode)
                .transpose()?
                .unwrap_or_default();
            let max_age_ms = match fields.get("max_age") {
                None => None,
                Some(Value::String(text)) => {
                    let age = parse_duration(text).map_err(|m| format!("max_age: {m}"))?;
                    if age.is_zero() {
                        return Err("max_age must be longer than 0s (or left out: any age)".into());
                    }
                    Some(age.as_millis() as u64)
                }
                Some(other) => {
                    return Err(format!(
                        "max_age must be a duration such as 30d or 12h, got {other}"
                    ))
                }
            };
            if max_age_ms.is_some() && !mode.reads() {
                return Err(
                    "max_age needs a mode that reads the cache (read_write, read_only or replay)"
                        .into(),
                );
            }
            Ok(CachePolicy { mode, max_age_ms })
        }
        other => Err(format!(
            "expected a mode ({}) or {{mode: …, max_age: 30d}}, got {other}",
            CacheMode::SPELLINGS
        )),
    }
}

/// `prices`: dollars per million tokens by `provider/model`.
fn validate_prices(
    raw: BTreeMap<String, RawPrices>,
    location: &Location,
    at: &Locator<'_>,
) -> Result<BTreeMap<String, Prices>, ConfigError> {
    raw.into_iter()
        .map(|(model, price)| {
            if !model.contains('/') {
                return Err(at.at(
                    location,
                    format!("prices.{model}"),
                    "name the model as provider/model, as programs call it",
                ));
            }
            let cached = price.cached_input.unwrap_or(price.input);
            if [price.input, price.output, cached]
                .iter()
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                return Err(at.at(
                    location,
                    format!("prices.{model}"),
                    "input, output and cached_input are non-negative dollars per million tokens",
                ));
            }
            Ok((model, Prices::new(price.input, price.output, cached)))
        })
        .collect()
}

/// `run.models`: each `provider/model`.
fn validate_models(raw: &[Spanned<String>], at: &Locator<'_>) -> Result<Vec<String>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(index, model)| match model.value.split_once('/') {
            Some((provider, name)) if !provider.is_empty() && !name.is_empty() => {
                Ok(model.value.clone())
            }
            _ => Err(at.at(
                &model.referenced,
                format!("run.models[{index}]"),
                format!(
                    "'{}' is not provider/model (e.g. ollama/llama3.2 or openrouter/openai/gpt-4o)",
                    model.value
                ),
            )),
        })
        .collect()
}

/// `run.timeout` in milliseconds (default 10 minutes).
fn validate_timeout(
    timeout: &Option<Spanned<String>>,
    at: &Locator<'_>,
) -> Result<u64, ConfigError> {
    let timeout = match timeout {
        None => DEFAULT_TIMEOUT,
        Some(text) => {
            let timeout = parse_duration(&text.value)
                .map_err(|m| at.at(&text.referenced, "run.timeout", m))?;
            if timeout.is_zero() {
                return Err(at.at(&text.referenced, "run.timeout", "must be longer than 0s"));
            }
            timeout
        }
    };
    Ok(timeout.as_millis() as u64)
}

/// `params`: names checked; the location is the run's, as a map's keys carry none.
fn validate_params(
    raw: BTreeMap<String, Value>,
    location: &Location,
    at: &Locator<'_>,
) -> Result<BTreeMap<String, Value>, ConfigError> {
    let mut params = BTreeMap::new();
    for (name, value) in raw {
        check_param_name(&name).map_err(|m| at.at(location, format!("params.{name}"), m))?;
        params.insert(name, value);
    }
    Ok(params)
}

/// An axis of cases: an inline list of objects, or a file of them.
fn validate_cases_axis(
    cases: &Spanned<Value>,
    field: &str,
    at: &Locator<'_>,
    case_files: CaseFiles<'_>,
) -> Result<Axis, ConfigError> {
    let field = format!("{field}.cases");
    let (source, located) = match &cases.value {
        Value::String(path) => {
            let content = case_files(path).map_err(|m| at.at(&cases.referenced, &field, m))?;
            let located = cases::read_file(path, &content).map_err(|mut error| {
                // `cases[2]` in the file is `variations[1].cases[2]` of the experiment.
                if let Some(rest) = error.field.strip_prefix("cases") {
                    error.field = format!("{field}{rest}");
                }
                error
            })?;
            (path.clone(), located)
        }
        Value::Array(list) => {
            let located = list.iter().map(|case| (0, case.clone())).collect();
            ("inline".to_string(), located)
        }
        other => {
            return Err(at.at(
                &cases.referenced,
                &field,
                format!(
                "must be a file of cases (.jsonl, .csv or .yaml) or a list of objects, got {other}"
            ),
            ))
        }
    };
    let in_file = if source == "inline" {
        at.file
    } else {
        source.as_str()
    };
    cases::validate(in_file, &field, &located).map_err(|mut error| {
        // Inline cases are located at the axis in the experiment file.
        if error.line == 0 && source == "inline" {
            error.line = cases.referenced.line();
            error.column = cases.referenced.column();
        }
        error
    })?;
    Ok(Axis {
        param: CASE_AXIS.to_string(),
        values: located.into_iter().map(|(_, case)| case).collect(),
        cases: Some(source),
    })
}

/// `run.setup` or `run.teardown`: a program and its arguments, or
/// `{command: [...], timeout: 5m}`.
fn validate_hook(raw: &Spanned<Value>, field: &str, at: &Locator<'_>) -> Result<Hook, ConfigError> {
    let shape = || {
        at.at(
            &raw.referenced,
            field,
            "must be a program and its arguments, e.g. [\"python3\", \"prepare.py\"], or {command: [...], timeout: 5m}",
        )
    };
    let (command, timeout) = match &raw.value {
        Value::Array(_) => (&raw.value, None),
        Value::Object(fields) => {
            if let Some(unknown) = fields.keys().find(|k| *k != "command" && *k != "timeout") {
                return Err(at.at(
                    &raw.referenced,
                    format!("{field}.{unknown}"),
                    "unknown field; valid fields are command and timeout",
                ));
            }
            (
                fields.get("command").ok_or_else(shape)?,
                fields.get("timeout"),
            )
        }
        _ => return Err(shape()),
    };
    let command: Vec<String> = command
        .as_array()
        .ok_or_else(shape)?
        .iter()
        .map(|part| part.as_str().map(String::from))
        .collect::<Option<_>>()
        .ok_or_else(shape)?;
    if command
        .first()
        .is_none_or(|program| program.trim().is_empty())
    {
        return Err(at.at(&raw.referenced, field, "must name a program to run"));
    }
    let timeout_ms = match timeout {
        None => DEFAULT_HOOK_TIMEOUT_MS,
        Some(Value::String(text)) => crate::duration::parse_duration(text)
            .map_err(|m| at.at(&raw.referenced, format!("{field}.timeout"), m))?
            .as_millis() as u64,
        Some(_) => {
            return Err(at.at(
                &raw.referenced,
                format!("{field}.timeout"),
                "must be a duration such as 90s or 5m",
            ))
        }
    };
    Ok(Hook {
        command,
        timeout_ms,
    })
}

/// `variations`: one axis per parameter, each with distinct values, and at
/// most one axis of cases.
fn validate_axes(
    raw: &[Spanned<RawAxis>],
    at: &Locator<'_>,
    case_files: CaseFiles<'_>,
) -> Result<Vec<Axis>, ConfigError> {
    let mut variations = Vec::new();
    let mut axis_names = BTreeSet::new();
    for (index, axis) in raw.iter().enumerate() {
        let field = format!("variations[{index}]");
        let (param, values) = match (&axis.value.param, &axis.value.values, &axis.value.cases) {
            (None, None, Some(cases)) => {
                let axis = validate_cases_axis(cases, &field, at, case_files)?;
                if !axis_names.insert(CASE_AXIS.to_string()) {
                    return Err(at.at(&cases.referenced, format!("{field}.cases"), "an experiment has at most one axis of cases"));
                }
                variations.push(axis);
                continue;
            }
            (Some(param), Some(values), None) => (param, values),
            _ => {
                return Err(at.at(
                    &axis.referenced,
                    field,
                    "an axis is either `param` with `values` (e.g. {param: temperature, values: [0.2, 0.8]}) or `cases` (a .jsonl, .csv or .yaml file, or a list of objects)",
                ))
            }
        };
        check_param_name(&param.value)
            .map_err(|m| at.at(&param.referenced, format!("{field}.param"), m))?;
        if !axis_names.insert(param.value.clone()) {
            return Err(at.at(
                &param.referenced,
                format!("{field}.param"),
                format!(
                    "'{}' already has an axis; each parameter can vary on one axis only",
                    param.value
                ),
            ));
        }
        if values.value.is_empty() {
            return Err(at.at(
                &values.referenced,
                format!("{field}.values"),
                "an axis needs at least one value",
            ));
        }
        let mut seen = BTreeSet::new();
        for (value_index, value) in values.value.iter().enumerate() {
            let canonical = value.value.to_string();
            if !seen.insert(canonical.clone()) {
                return Err(at.at(
                    &value.referenced,
                    format!("{field}.values[{value_index}]"),
                    format!("duplicate value {canonical}; values on an axis must be distinct"),
                ));
            }
        }
        variations.push(Axis {
            param: param.value.clone(),
            values: values.value.iter().map(|v| v.value.clone()).collect(),
            cases: None,
        });
    }
    Ok(variations)
}

/// `run`: its kind and what that kind needs.
fn validate_run(
    raw: &Spanned<RawRun>,
    timeout_ms: u64,
    params: &BTreeMap<String, Value>,
    axes: &[Axis],
    at: &Locator<'_>,
) -> Result<RunConfig, ConfigError> {
    match raw.value.kind.value.as_str() {
        "command" => validate_command_run(raw, timeout_ms, params, axes, at),
        "chat" => {
            let mut known: BTreeSet<&str> = params.keys().map(String::as_str).collect();
            known.extend(axes.iter().flat_map(Axis::param_names));
            known.extend(BUILTIN_PLACEHOLDERS.iter().copied());
            chat::validate(raw, timeout_ms, &known, at)
        }
        "noop" => {
            if let Some(command) = &raw.value.command {
                return Err(at.at(&command.referenced, "run.command", "a noop run takes no command; use kind: command"));
            }
            Ok(RunConfig::Noop { timeout_ms })
        }
        other => Err(at.at(
            &raw.value.kind.referenced,
            "run.kind",
            format!("unknown run kind '{other}'; valid kinds are command (run a program), chat (send messages to a model and score the answer) and noop (measure overhead)"),
        )),
    }
}

fn validate_command_run(
    raw: &Spanned<RawRun>,
    timeout_ms: u64,
    params: &BTreeMap<String, Value>,
    axes: &[Axis],
    at: &Locator<'_>,
) -> Result<RunConfig, ConfigError> {
    let Some(command) = &raw.value.command else {
        return Err(at.at(
            &raw.referenced,
            "run.command",
            "a command run needs `command`, the program and its arguments as a list, e.g. [\"python3\", \"scenario.py\", \"--rounds\", \"{rounds}\"]",
        ));
    };
    if command.value.is_empty() || command.value[0].value.trim().is_empty() {
        return Err(at.at(
            &command.referenced,
            "run.command",
            "must name a program to run",
        ));
    }
    let mut known: BTreeSet<&str> = params.keys().map(String::as_str).collect();
    known.extend(axes.iter().flat_map(Axis::param_names));
    known.extend(BUILTIN_PLACEHOLDERS.iter().copied());
    for (arg_index, argument) in command.value.iter().enumerate() {
        placeholders::check(&argument.value, &known)
            .map_err(|m| at.at(&argument.referenced, format!("run.command[{arg_index}]"), m))?;
    }
    let workdir = raw
        .value
        .workdir
        .as_ref()
        .map(|w| w.value.clone())
        .unwrap_or_else(|| ".".to_string());
    if workdir.trim().is_empty() {
        let location = raw
            .value
            .workdir
            .as_ref()
            .map(|w| w.referenced)
            .unwrap_or(raw.referenced);
        return Err(at.at(&location, "run.workdir", "must be a directory path, e.g. ."));
    }
    let hook = |raw: &Option<Spanned<Value>>, name: &str| {
        raw.as_ref()
            .map(|raw| validate_hook(raw, &format!("run.{name}"), at))
            .transpose()
    };
    Ok(RunConfig::Command {
        command: command.value.iter().map(|a| a.value.clone()).collect(),
        workdir,
        timeout_ms,
        setup: hook(&raw.value.setup, "setup")?,
        teardown: hook(&raw.value.teardown, "teardown")?,
    })
}

fn validate_budget(budget: &Spanned<RawBudget>, at: &Locator<'_>) -> Result<Budget, ConfigError> {
    let total = &budget.value.total_usd;
    if !(total.value.is_finite() && total.value > 0.0) {
        return Err(at.at(
            &total.referenced,
            "budget.total_usd",
            "must be a positive number of dollars",
        ));
    }
    if let Some(per_run) = &budget.value.per_run_usd {
        if !(per_run.value.is_finite() && per_run.value > 0.0 && per_run.value <= total.value) {
            return Err(at.at(
                &per_run.referenced,
                "budget.per_run_usd",
                format!(
                    "must be a positive number of dollars no larger than total_usd ({})",
                    total.value
                ),
            ));
        }
    }
    Ok(Budget {
        total_usd: total.value,
        per_run_usd: budget.value.per_run_usd.as_ref().map(|p| p.value),
    })
}

fn validate_metrics(
    raw: &[Spanned<RawMetric>],
    at: &Locator<'_>,
) -> Result<Vec<MetricSpec>, ConfigError> {
    let mut metrics = Vec::new();
    let mut metric_names = BTreeSet::new();
    for (index, metric) in raw.iter().enumerate() {
        let name = &metric.value.name;
        if name.value.trim().is_empty() {
            return Err(at.at(
                &name.referenced,
                format!("metrics[{index}].name"),
                "must not be empty",
            ));
        }
        if !metric_names.insert(name.value.clone()) {
            return Err(at.at(
                &name.referenced,
                format!("metrics[{index}].name"),
                format!("metric '{}' is declared twice", name.value),
            ));
        }
        let goal = match metric.value.goal.value.as_str() {
            "maximize" => Goal::Maximize,
            "minimize" => Goal::Minimize,
            other => {
                return Err(at.at(
                    &metric.value.goal.referenced,
                    format!("metrics[{index}].goal"),
                    format!("unknown goal '{other}'; valid goals are maximize and minimize"),
                ))
            }
        };
        let range = match &metric.value.range {
            None => None,
            Some(range) => match range.value[..] {
                [low, high] if low.is_finite() && high.is_finite() && low < high => {
                    Some([low, high])
                }
                _ => {
                    return Err(at.at(
                        &range.referenced,
                        format!("metrics[{index}].range"),
                        "must be [lowest, highest], two numbers with the lowest first",
                    ))
                }
            },
        };
        metrics.push(MetricSpec {
            name: name.value.clone(),
            goal,
            range,
        });
    }
    Ok(metrics)
}

fn positive_u32(value: &Spanned<i64>, field: &str, at: &Locator<'_>) -> Result<u32, ConfigError> {
    u32::try_from(value.value)
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            at.at(
                &value.referenced,
                field,
                format!(
                    "must be a whole number from 1 to {}, not {}",
                    u32::MAX,
                    value.value
                ),
            )
        })
}

fn check_param_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !name.starts_with('.')
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid parameter name; use letters, digits, '_', '-' and '.' (for dotted names such as actors.regulator.model)"
        ))
    }
}

fn check_baseline(baseline: &BTreeMap<String, Value>, axes: &[Axis]) -> Result<(), String> {
    for (param, value) in baseline {
        let Some(axis) = axes.iter().find(|a| &a.param == param) else {
            let names: Vec<&str> = axes.iter().map(|a| a.param.as_str()).collect();
            return Err(format!(
                "'{param}' is not an axis; the baseline names one value for each axis: {}",
                names.join(", ")
            ));
        };
        let labels: Vec<Value> = (0..axis.values.len()).map(|i| axis.label_of(i)).collect();
        if !labels.contains(value) {
            return Err(format!(
                "{value} is not a value of axis '{param}'; valid values are {}",
                Value::from(labels)
            ));
        }
    }
    let missing: Vec<&str> = axes
        .iter()
        .filter(|a| !baseline.contains_key(&a.param))
        .map(|a| a.param.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the baseline must name a value for every axis; missing: {}",
            missing.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
