//! Rendering canonical answers as Anthropic Messages: the `message` object and the SSE event
//! sequence (docs/translation.md §5.7).
//!
//! Streams follow Anthropic's order exactly: `message_start`, `ping`, then per content block
//! `content_block_start`, its deltas and `content_block_stop`, then `message_delta` with the stop
//! reason and usage, and `message_stop`. Blocks never interleave: a new kind of content (text,
//! thinking, a tool call) closes the open block first. `message_delta` waits for the end of the
//! upstream stream, because vendors report usage last. Reasoning from other vendors becomes a
//! `thinking` block with an empty signature (only Anthropic can sign thinking).

use serde::Serialize;
use serde_json::{json, Value};

use crate::accounting::{round_usd, Usage};
use crate::chat::{self, Event, StopReason};
use crate::config::Price;

/// Anthropic ids start with `msg_`; other vendors' ids are prefixed.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else if id.is_empty() {
        format!("msg_{:024x}", fastrand::u128(..))
    } else {
        format!("msg_{id}")
    }
}

/// Anthropic's usage: its `input_tokens` exclude the cached ones (docs/translation.md §5.9).
fn usage_json(usage: &Usage) -> Value {
    let cached = usage.cached_tokens.min(usage.prompt_tokens);
    json!({
        "input_tokens": usage.prompt_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
    })
}

/// A tool call's JSON arguments as the `input` object; text that is not a JSON object (a
/// vendor's broken call) becomes `{}`, as the streamed form would fail to parse anyway.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            if !arguments.trim().is_empty() {
                log::warn!("tool call arguments are not a JSON object; sent as {{}}");
            }
            json!({})
        }
    }
}

/// A `message` object for the first choice of `response`.
pub fn response_body(response: &chat::Response) -> bytes::Bytes {
    let default = chat::Choice::default();
    let choice = response.choices.first().unwrap_or(&default);
    let mut content = Vec::new();
    if let Some(thinking) = &choice.reasoning {
        content.push(json!({"type": "thinking", "thinking": thinking,
            "signature": choice.reasoning_signature.as_deref().unwrap_or("")}));
    }
    if let Some(text) = choice.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in &choice.tool_calls {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
            "input": tool_input(&call.arguments)}));
    }
    let body = json!({
        "id": message_id(&response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": choice.finish_reason.anthropic(),
        "stop_sequence": null,
        "usage": usage_json(&response.usage),
    });
    crate::chat::json_bytes(&body)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by its canonical index.
    Tool(u32),
}

/// Canonical stream events to Anthropic SSE events.
#[derive(Default)]
pub struct StreamEncoder {
    /// The answering target's price: `message_delta.usage` carries the cost.
    price: Option<Price>,
    id: String,
    model: String,
    started: bool,
    /// The open content block and its Anthropic index.
    open: Option<(Block, u32)>,
    next_index: u32,
    stop: Option<StopReason>,
}

fn event(out: &mut Vec<u8>, name: &str, data: &impl Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serialising plain structs of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

// The per-chunk events as borrowed structs: no `Value`s, no copies of the text.

#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: Delta<'a>,
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

/// Serialises as `{}`: a tool call's input before its JSON arrives.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: ContentBlock<'a>,
}

impl StreamEncoder {
    pub fn new(price: Option<Price>) -> Self {
        StreamEncoder {
            price,
            ..StreamEncoder::default()
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "type": "message_start",
            "message": {
                "id": message_id(&self.id), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        });
        event(out, "message_start", &message);
        event(out, "ping", &json!({"type": "ping"}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &BlockStop {
                    kind: "content_block_stop",
                    index,
                },
            );
        }
    }

    /// Makes `block` the open block, closing another one first; returns its Anthropic index.
    /// `content_block` is only built when a block starts.
    fn open<'a>(
        &mut self,
        out: &mut Vec<u8>,
        block: Block,
        content_block: impl FnOnce() -> ContentBlock<'a>,
    ) -> u32 {
        if let Some((open, index)) = self.open {
            if open == block {
                return index;
            }
        }
        self.start(out);
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((block, index));
        event(
            out,
            "content_block_start",
            &BlockStart {
                kind: "content_block_start",
                index,
                content_block: content_block(),
            },
        );
        index
    }

    fn delta(out: &mut Vec<u8>, index: u32, delta: Delta<'_>) {
        event(
            out,
            "content_block_delta",
            &BlockDelta {
                kind: "content_block_delta",
                index,
                delta,
            },
        );
    }
}

impl crate::dialect::StreamEncoder for StreamEncoder {
    fn encode(&mut self, ev: Event<'_>, out: &mut Vec<u8>) {
        match ev {
            Event::Identity { id, model } => {
                if let Some(id) = id {
                    self.id = id.to_string();
                }
                if let Some(model) = model {
                    self.model = model.to_string();
                }
            }
            Event::Start { choice: 0 } => self.start(out),
            // Anthropic has one answer per message; other choices are not asked for.
            Event::Start { .. } => {}
            Event::Text { choice: 0, text } => {
                let index = self.open(out, Block::Text, || ContentBlock::Text { text: "" });
                Self::delta(out, index, Delta::Text { text });
            }
            Event::Reasoning { choice: 0, text } => {
                let index = self.open(out, Block::Thinking, || ContentBlock::Thinking {
                    thinking: "",
                    signature: "",
                });
                Self::delta(out, index, Delta::Thinking { thinking: text });
            }
            Event::ReasoningSignature {
                choice: 0,
                signature,
            } => {
                if let Some((Block::Thinking, index)) = self.open {
                    Self::delta(out, index, Delta::Signature { signature });
                }
            }
            Event::ToolCallStart {
                choice: 0,
                index: call,
                id,
                name,
                arguments,
            } => {
                // A call always opens its own block, even right after another call.
                self.start(out);
                self.close(out);
                let index = self.open(out, Block::Tool(call), || ContentBlock::ToolUse {
                    id,
                    name,
                    input: Empty {},
                });
                if !arguments.is_empty() {
                    Self::delta(
                        out,
                        index,
                        Delta::InputJson {
                            partial_json: arguments,
                        },
                    );
                }
            }
            Event::ToolCallArguments {
                choice: 0,
                index: call,
                fragment,
            } => match self.open {
                Some((Block::Tool(open_call), index)) if open_call == call => Self::delta(
                    out,
                    index,
                    Delta::InputJson {
                        partial_json: fragment,
                    },
                ),
                // Anthropic blocks cannot interleave: a fragment of a call whose block closed
                // has nowhere to go.
                _ => log::warn!("arguments of tool call {call} arrived after its block closed"),
            },
            Event::Finish { choice: 0, reason } => {
                self.stop = Some(reason);
                self.close(out);
            }
            Event::End { usage } => {
                self.start(out);
                self.close(out);
                let mut usage_out = usage_json(&usage.copied().unwrap_or_default());
                if let (Some(u), Some(p)) = (usage, &self.price) {
                    usage_out["cost"] = json!(round_usd(u.cost(p)));
                }
                event(
                    out,
                    "message_delta",
                    &json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": self.stop.unwrap_or_default().anthropic(), "stop_sequence": null},
                        "usage": usage_out,
                    }),
                );
                event(out, "message_stop", &json!({"type": "message_stop"}));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::StreamEncoder as _;

    fn events(out: &[u8]) -> Vec<(String, Value)> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.trim_start_matches("event: ").to_string(),
                    serde_json::from_str(data.trim_start_matches("data: ")).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn text_then_parallel_tools_in_anthropic_order() {
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        let usage = Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
            cached_tokens: 2,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        };
        for ev in [
            Event::Identity {
                id: Some("chatcmpl-1"),
                model: Some("gpt-4o"),
            },
            Event::Start { choice: 0 },
            Event::Reasoning {
                choice: 0,
                text: "hm",
            },
            Event::Text {
                choice: 0,
                text: "Checking",
            },
            Event::Text {
                choice: 0,
                text: ".",
            },
            Event::ToolCallStart {
                choice: 0,
                index: 0,
                id: "call_a",
                name: "w",
                arguments: "",
            },
            Event::ToolCallArguments {
                choice: 0,
                index: 0,
                fragment: "{\"city\":",
            },
            Event::ToolCallArguments {
                choice: 0,
                index: 0,
                fragment: "\"Paris\"}",
            },
            Event::ToolCallStart {
                choice: 0,
                index: 1,
                id: "call_b",
                name: "w",
                arguments: "{}",
            },
            Event::Finish {
                choice: 0,
                reason: StopReason::ToolUse,
            },
            Event::End {
                usage: Some(&usage),
            },
        ] {
            enc.encode(ev, &mut out);
        }
        let evs = events(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[0].1["message"]["id"], "msg_chatcmpl-1");
        assert_eq!(evs[0].1["message"]["model"], "gpt-4o");
        assert_eq!(evs[2].1["content_block"]["type"], "thinking");
        assert_eq!(evs[5].1["index"], 1);
        assert_eq!(evs[9].1["content_block"]["id"], "call_a");
        assert_eq!(evs[9].1["index"], 2);
        assert_eq!(evs[13].1["content_block"]["id"], "call_b");
        assert_eq!(evs[14].1["delta"]["partial_json"], "{}");
        assert_eq!(evs[16].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            evs[16].1["usage"],
            json!({"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2, "output_tokens": 5})
        );
    }

    #[test]
    fn an_empty_answer_still_opens_and_closes_the_message() {
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        enc.encode(Event::End { usage: None }, &mut out);
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["message_start", "ping", "message_delta", "message_stop"]
        );
    }

    #[test]
    fn response_has_thinking_text_and_tool_use_blocks() {
        let response = chat::Response {
            id: "resp-1".into(),
            created: 1,
            model: "gemini-2.5-pro".into(),
            choices: vec![chat::Choice {
                content: Some("Sure.".into()),
                reasoning: Some("think".into()),
                reasoning_signature: None,
                tool_calls: vec![chat::ToolCallOut {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }],
                finish_reason: StopReason::ToolUse,
            }],
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                ..Usage::default()
            },
        };
        let v: Value = serde_json::from_slice(&response_body(&response)).unwrap();
        assert_eq!(
            v,
            json!({"id": "msg_resp-1", "type": "message", "role": "assistant", "model": "gemini-2.5-pro",
                "content": [{"type": "thinking", "thinking": "think", "signature": ""},
                            {"type": "text", "text": "Sure."},
                            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 4}})
        );
    }
}
