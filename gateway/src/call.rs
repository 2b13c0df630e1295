//! A call as every API reads it, what it gets back, and why it may get
//! nothing. A leaf: the APIs, the pipeline, the sim and the relay to
//! providers all speak these types, and this module imports none of them.

use std::time::Instant;

use serde_json::Value;

pub use flotilla_shared::calls::Api;
pub use flotilla_shared::pricing::Usage;

use crate::metering::spend::BudgetRefusal;
use crate::providers::routing::UnknownModel;

/// Output tokens assumed for a call that sets no cap, for its worst case; the
/// gateway sets this cap on calls that have none, so the worst case holds.
pub const OUTPUT_BOUND: u64 = 4096;

/// Which request of which API a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    AnthropicMessages,
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
}

impl Operation {
    pub fn api(self) -> Api {
        match self {
            Operation::OpenAiChat | Operation::OpenAiCompletions | Operation::OpenAiEmbeddings => {
                Api::Openai
            }
            Operation::AnthropicMessages => Api::Anthropic,
            Operation::OllamaChat | Operation::OllamaGenerate | Operation::OllamaEmbed => {
                Api::Ollama
            }
        }
    }

    /// The path after a provider's base URL (OpenAI's base ends in /v1).
    pub fn path(self) -> &'static str {
        match self {
            Operation::OpenAiChat => "/chat/completions",
            Operation::OpenAiCompletions => "/completions",
            Operation::OpenAiEmbeddings => "/embeddings",
            Operation::AnthropicMessages => "/v1/messages",
            Operation::OllamaChat => "/api/chat",
            Operation::OllamaGenerate => "/api/generate",
            Operation::OllamaEmbed => "/api/embed",
        }
    }

    pub fn embeds(self) -> bool {
        matches!(self, Operation::OpenAiEmbeddings | Operation::OllamaEmbed)
    }

    /// Whether a request with `body` is answered as a stream.
    pub fn streams(self, body: &Value) -> bool {
        let asked = body.get("stream").and_then(Value::as_bool);
        match self.api() {
            // Ollama streams unless told not to.
            Api::Ollama => !self.embeds() && asked.unwrap_or(true),
            _ => asked.unwrap_or(false),
        }
    }

    /// The output cap the request sets; embeddings produce no output tokens.
    pub fn output_cap(self, body: &Value) -> Option<u64> {
        let field = |pointer: &str| body.pointer(pointer).and_then(Value::as_u64);
        if self.embeds() {
            return Some(0);
        }
        match self.api() {
            Api::Openai => field("/max_completion_tokens").or_else(|| field("/max_tokens")),
            Api::Anthropic => field("/max_tokens"),
            Api::Ollama => field("/options/num_predict"),
        }
    }
}

/// What a request asks of a model.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A conversation to continue: (role, text) pairs in order, a system
    /// prompt first as `system`.
    Conversation(Vec<(String, String)>),
    /// Texts to embed.
    Texts(Vec<String>),
}

/// A call as every API reads it.
#[derive(Debug)]
pub struct Call {
    pub operation: Operation,
    /// The model as the program named it (`provider/model`).
    pub model: String,
    pub input: Input,
    pub streamed: bool,
    /// Whether the program asked for a stream's usage chunk (OpenAI's
    /// `stream_options.include_usage`; the other APIs always send usage).
    pub wants_stream_usage: bool,
    /// The request as the program sent it: what a provider of its API gets.
    pub body: Value,
    pub started: Instant,
    pub started_at_ms: i64,
}

impl Call {
    /// A call arriving now.
    pub fn new(operation: Operation, model: String, input: Input, body: Value) -> Self {
        let wants_stream_usage = operation.api() != Api::Openai
            || body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        Call {
            operation,
            model,
            input,
            streamed: operation.streams(&body),
            wants_stream_usage,
            body,
            started: Instant::now(),
            started_at_ms: flotilla_shared::clock::now_ms(),
        }
    }

    pub fn api(&self) -> Api {
        self.operation.api()
    }

    /// The output cap the call runs under: its own, else the bound.
    pub fn output_cap(&self) -> u64 {
        self.operation
            .output_cap(&self.body)
            .unwrap_or(OUTPUT_BOUND)
    }
}

/// What a call answered here (by a sim model) got back; a provider's answer
/// is relayed as the provider sent it instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Text {
        text: String,
        usage: Usage,
    },
    Vectors {
        vectors: Vec<Vec<f32>>,
        usage: Usage,
    },
}

impl Answer {
    pub fn usage(&self) -> &Usage {
        match self {
            Answer::Text { usage, .. } | Answer::Vectors { usage, .. } => usage,
        }
    }
}

/// Why a request gets no answer; each API says it in its own error shape
/// (`apis::refuse`).
#[derive(Debug)]
pub enum Refusal {
    /// The key is no live run's token (ARCHITECTURE.md, invariant 5).
    Unauthorized,
    /// The request cannot be read, for the reason given.
    BadRequest(String),
    UnknownModel(UnknownModel),
    /// The run may not spend the call's worst case (ARCHITECTURE.md, invariant 1).
    OverBudget(BudgetRefusal),
    /// The call cannot go to its provider, for the reason given.
    Unservable(String),
    /// The provider could not be reached.
    Unreachable(String),
    /// Over a limit the sim-server enforces as a provider would.
    RateLimited(String),
    /// A server error the sim-server simulates.
    ServerError(String),
    /// The flex tier has no capacity for the call now ("resource
    /// unavailable"), as the sim-server simulates it; not billed.
    NoCapacity(String),
    /// `cache: replay` and the cache has no answer for the call.
    NotRecorded(String),
    /// The worker's spend lease ran out (ARCHITECTURE.md, invariant 8).
    Fenced(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unauthorized => write!(
                f,
                "this key is not the token of a run that is running on this worker"
            ),
            Refusal::UnknownModel(unknown) => write!(f, "{unknown}"),
            Refusal::OverBudget(refusal) => write!(f, "{refusal}"),
            Refusal::BadRequest(why)
            | Refusal::Unservable(why)
            | Refusal::Unreachable(why)
            | Refusal::RateLimited(why)
            | Refusal::ServerError(why)
            | Refusal::NoCapacity(why)
            | Refusal::NotRecorded(why)
            | Refusal::Fenced(why) => write!(f, "{why}"),
        }
    }
}
