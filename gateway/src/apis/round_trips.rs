//! A whole answer streamed by an endpoint and put together again is the
//! same answer: what the response cache relies on to serve a recorded
//! answer in the other shape (ARCHITECTURE.md, "Response cache"). Checked
//! with what sim answers never have: several choices, tool calls, refusals,
//! thinking and tool use blocks.

use std::time::Instant;

use serde_json::{json, Value};

use super::{anthropic, ollama, openai, Endpoint};
use crate::call::{Call, Input, Operation};

fn call(operation: Operation, wants_stream_usage: bool) -> Call {
    Call {
        operation,
        model: "p/m".into(),
        input: Input::Conversation(Vec::new()),
        streamed: true,
        wants_stream_usage,
        body: json!({}),
        started: Instant::now(),
        started_at_ms: 0,
    }
}

/// The JSON of each SSE event's data, or of each NDJSON line.
async fn events_of(response: axum::response::Response) -> Vec<Value> {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("data: ").or(Some(line)))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

async fn round_trip<E: Endpoint>(operation: Operation, whole: &Value, usage: bool) -> Value {
    let events = events_of(E::stream(&call(operation, usage), whole)).await;
    assert!(events.len() > 2, "{events:?}");
    E::assemble(&events).expect("put together")
}

#[tokio::test]
async fn openai_chat_with_choices_tool_calls_and_refusals_survives_a_stream() {
    let whole = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 17, "model": "gpt-x",
        "system_fingerprint": "fp_1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Two words here", "refusal": null},
             "logprobs": null, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"x y\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "sum", "arguments": "{}"}}]},
             "logprobs": null, "finish_reason": "tool_calls"},
            {"index": 2, "message": {"role": "assistant", "content": null, "refusal": "I cannot."},
             "logprobs": null, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
    });
    let back = round_trip::<openai::ChatCompletions>(Operation::OpenAiChat, &whole, true).await;
    assert_eq!(back, whole);
}

#[tokio::test]
async fn openai_completions_survive_a_stream() {
    let whole = json!({
        "id": "cmpl-1", "object": "text_completion", "created": 17, "model": "m",
        "choices": [{"text": "a b c", "index": 0, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
    });
    let back = round_trip::<openai::Completions>(Operation::OpenAiCompletions, &whole, true).await;
    assert_eq!(back, whole);
}

#[tokio::test]
async fn anthropic_blocks_of_every_kind_survive_a_stream() {
    let whole = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "Let me see it.", "signature": "sig=="},
            {"type": "text", "text": "Here is the plan."},
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "cats", "n": 3}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 40, "output_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10},
    });
    let back = round_trip::<anthropic::Messages>(Operation::AnthropicMessages, &whole, true).await;
    assert_eq!(back, whole);
}

#[tokio::test]
async fn ollama_chat_and_generate_survive_a_stream() {
    let chat = json!({
        "model": "llama", "created_at": "2026-12-04T00:00:00Z",
        "message": {"role": "assistant", "content": "It is blue.", "thinking": "Sky.",
                    "tool_calls": [{"function": {"name": "paint", "arguments": {"colour": "blue"}}}]},
        "done": true, "done_reason": "stop", "total_duration": 5, "prompt_eval_count": 4, "eval_count": 3,
    });
    let back = round_trip::<ollama::Chat>(Operation::OllamaChat, &chat, false).await;
    assert_eq!(back, chat);
    let generated = json!({
        "model": "llama", "created_at": "2026-12-04T00:00:00Z", "response": "one two",
        "done": true, "done_reason": "stop", "context": [1, 2], "prompt_eval_count": 4, "eval_count": 2,
    });
    let back = round_trip::<ollama::Generate>(Operation::OllamaGenerate, &generated, false).await;
    assert_eq!(back, generated);
}
