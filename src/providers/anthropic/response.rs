//! Anthropic `message` answers → canonical answers (docs/translation.md §5.2, §5.8, §5.9).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::JSON_TOOL;
use crate::accounting::Usage;
use crate::chat::{self, now_unix, StopReason, ToolCallOut};
use crate::providers::{Answer, StreamFailure};

/// The canonical stop reason for an Anthropic `stop_reason` (docs/translation.md §5.8).
pub fn finish_reason(stop_reason: Option<&str>, has_tool_calls: bool) -> StopReason {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => StopReason::MaxTokens,
        Some("tool_use") => StopReason::ToolUse,
        Some("refusal") => StopReason::ContentFilter,
        _ if has_tool_calls => StopReason::ToolUse,
        Some("stop_sequence") => StopReason::StopSequence,
        _ => StopReason::EndTurn,
    }
}

#[derive(Deserialize)]
struct MessageWire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<BlockWire>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: UsageWire,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockWire {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(super) struct UsageWire {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl UsageWire {
    /// Anthropic's input excludes cached tokens; OpenAI's prompt includes them (docs/translation.md
    /// §5.9).
    pub(super) fn to_usage(self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0)
                + cache_read
                + self.cache_creation_input_tokens.unwrap_or(0),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cache_read,
            reasoning_tokens: 0,
            cache_write_tokens: self.cache_creation_input_tokens.unwrap_or(0),
        }
    }

    /// Stream usage is cumulative: later values replace earlier ones, field by field.
    pub(super) fn merge_into(self, usage: &mut UsageWire) {
        if self.input_tokens.is_some_and(|n| n > 0) {
            usage.input_tokens = self.input_tokens;
        }
        if self.output_tokens.is_some() {
            usage.output_tokens = self.output_tokens;
        }
        if self.cache_creation_input_tokens.is_some() {
            usage.cache_creation_input_tokens = self.cache_creation_input_tokens;
        }
        if self.cache_read_input_tokens.is_some() {
            usage.cache_read_input_tokens = self.cache_read_input_tokens;
        }
    }
}

/// A `message` answer: passed on as it is for Anthropic clients (its usage read), else as a
/// canonical answer. The `response_format` emulation's tool input becomes the text.
pub(super) fn decode(body: Bytes, native: bool) -> Result<Answer, StreamFailure> {
    let message: MessageWire = serde_json::from_slice(&body).map_err(|e| {
        StreamFailure::Malformed(format!("answer is not an Anthropic message: {e}"))
    })?;
    let usage = message.usage.to_usage();
    if native {
        return Ok(Answer::Native {
            body,
            usage: Some(usage),
        });
    }
    let mut choice = chat::Choice::default();
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut json_answer = None;
    for block in message.content {
        match block {
            BlockWire::Text { text: t } => text.push_str(&t),
            BlockWire::Thinking {
                thinking,
                signature,
            } => {
                reasoning.push_str(&thinking);
                choice.reasoning_signature = signature;
            }
            BlockWire::ToolUse { id, name, input } if name == JSON_TOOL => {
                json_answer = Some((id, input.to_string()));
            }
            BlockWire::ToolUse { id, name, input } => choice.tool_calls.push(ToolCallOut {
                id,
                name,
                arguments: input.to_string(),
            }),
            BlockWire::Other => {}
        }
    }
    let stop = message.stop_reason.as_deref();
    choice.finish_reason = match json_answer {
        Some((_, answer)) => {
            text.push_str(&answer);
            if stop == Some("tool_use") && choice.tool_calls.is_empty() {
                StopReason::EndTurn
            } else {
                finish_reason(stop, !choice.tool_calls.is_empty())
            }
        }
        None => finish_reason(stop, !choice.tool_calls.is_empty()),
    };
    choice.content = (!text.is_empty() || choice.tool_calls.is_empty()).then_some(text);
    choice.reasoning = (!reasoning.is_empty()).then_some(reasoning);
    Ok(Answer::Chat(chat::Response {
        id: message.id,
        created: now_unix(),
        model: message.model,
        choices: vec![choice],
        usage,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn golden_response_with_tool_call_and_cache_usage() {
        let decoded = client_answer_openai(Bytes::from_static(
            fixture!("response_tool_use.anthropic.json").as_bytes(),
        ))
        .unwrap();
        let got: Value = json(&normalise(std::str::from_utf8(&decoded.body).unwrap()));
        assert_eq!(got, json(fixture!("response_tool_use.openai.json")));
        let u = decoded.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens), (582, 100));
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("end_turn"), false).openai(), "stop");
        assert_eq!(finish_reason(Some("stop_sequence"), false).openai(), "stop");
        assert_eq!(finish_reason(Some("max_tokens"), false).openai(), "length");
        assert_eq!(
            finish_reason(Some("model_context_window_exceeded"), false).openai(),
            "length"
        );
        assert_eq!(finish_reason(Some("tool_use"), true).openai(), "tool_calls");
        assert_eq!(
            finish_reason(Some("refusal"), false).openai(),
            "content_filter"
        );
        assert_eq!(finish_reason(Some("pause_turn"), false).openai(), "stop");
        assert_eq!(finish_reason(Some("something_new"), false).openai(), "stop");
    }
}
