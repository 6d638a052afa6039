//! Rendering canonical answers as OpenAI: whole `chat.completion` bodies ([`response_body`]) and
//! `chat.completion.chunk` SSE events ([`StreamEncoder`] over [`ChunkWriter`]).
//!
//! Every chunk of one answer shares `id`, `created` and `model`, as OpenAI's do. When the client
//! asked for `stream_options.include_usage`, every chunk carries `"usage": null` and the usage
//! arrives in one extra chunk with empty `choices` before `[DONE]`; otherwise no usage at all.

use serde::Serialize;
use serde_json::Value;

use crate::accounting::{round_usd, Usage};
use crate::chat::{self, now_unix, Event};
use crate::config::Price;

/// A `chat.completion` object.
pub fn response_body(response: &chat::Response) -> bytes::Bytes {
    let body = Completion {
        id: &response.id,
        object: "chat.completion",
        created: response.created,
        model: &response.model,
        choices: response
            .choices
            .iter()
            .enumerate()
            .map(|(index, c)| CompletionChoice {
                index,
                message: CompletionMessage {
                    role: "assistant",
                    // OpenAI sends null content when the answer is only tool calls.
                    content: match (&c.content, c.tool_calls.is_empty()) {
                        (Some(text), _) => Some(text),
                        (None, true) => Some(""),
                        (None, false) => None,
                    },
                    refusal: None,
                    reasoning_content: c.reasoning.as_deref(),
                    tool_calls: c
                        .tool_calls
                        .iter()
                        .map(|call| CompletionToolCall {
                            id: &call.id,
                            kind: "function",
                            function: CompletionFunction {
                                name: &call.name,
                                arguments: &call.arguments,
                            },
                        })
                        .collect(),
                },
                logprobs: None,
                finish_reason: c.finish_reason.openai(),
            })
            .collect(),
        usage: response.usage.openai(),
    };
    // Only strings and numbers: serializing cannot fail.
    bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A `chat.completion`, written field by field in OpenAI's order.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<CompletionChoice<'a>>,
    usage: crate::accounting::OpenAiUsageOut,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: usize,
    message: CompletionMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<CompletionToolCall<'a>>,
}

#[derive(Serialize)]
struct CompletionToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CompletionFunction<'a>,
}

#[derive(Serialize)]
struct CompletionFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// Canonical stream events to OpenAI chunks.
pub struct StreamEncoder {
    writer: ChunkWriter,
    /// The answering target's price: the usage chunk carries the cost.
    price: Option<Price>,
}

impl StreamEncoder {
    pub fn new(include_usage: bool, price: Option<Price>) -> Self {
        StreamEncoder {
            writer: ChunkWriter::new(
                format!("chatcmpl-{:016x}", fastrand::u64(..)),
                now_unix(),
                String::new(),
                include_usage,
            ),
            price,
        }
    }
}

impl crate::dialect::StreamEncoder for StreamEncoder {
    fn encode(&mut self, event: Event<'_>, out: &mut Vec<u8>) {
        let w = &mut self.writer;
        match event {
            Event::Identity { id, model } => w.set_identity(id, model),
            Event::Start { choice } => w.role(out, choice),
            Event::Text { choice, text } => w.content(out, choice, text),
            Event::Reasoning { choice, text } => w.reasoning(out, choice, text),
            // OpenAI has no place for a thinking signature.
            Event::ReasoningSignature { .. } => {}
            Event::ToolCallStart {
                choice,
                index,
                id,
                name,
                arguments,
            } => w.tool_call_start(out, choice, index, id, name, arguments),
            Event::ToolCallArguments {
                choice,
                index,
                fragment,
            } => w.tool_call_arguments(out, choice, index, fragment),
            Event::Finish { choice, reason } => w.finish(out, choice, reason.openai()),
            Event::End { usage } => {
                let cost = usage.zip(self.price.as_ref()).map(|(u, p)| u.cost(p));
                w.end(out, usage, cost);
            }
        }
    }
}

pub struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [Choice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

/// One delta; absent fields are omitted, as in OpenAI's stream.
#[derive(Serialize, Default)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    /// Thinking / reasoning text (DeepSeek's and vLLM's field name, which SDKs pass through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
pub struct ToolCallDelta<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta<'a>,
}

#[derive(Serialize)]
pub struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

impl ChunkWriter {
    pub fn new(id: String, created: u64, model: String, include_usage: bool) -> Self {
        ChunkWriter {
            id,
            created,
            model,
            include_usage,
        }
    }

    /// Adopts the vendor's message id and model once they are known (they come in its first event).
    pub fn set_identity(&mut self, id: Option<&str>, model: Option<&str>) {
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            self.id = id.to_string();
        }
        if let Some(model) = model.filter(|s| !s.is_empty()) {
            self.model = model.to_string();
        }
    }

    fn write(&self, out: &mut Vec<u8>, choices: &[Choice<'_>], usage: Option<Value>) {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage: match usage {
                Some(u) => Some(u),
                None if self.include_usage => Some(Value::Null),
                None => None,
            },
        };
        out.extend_from_slice(b"data: ");
        // Serialising plain structs of strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &chunk);
        out.extend_from_slice(b"\n\n");
    }

    /// A chunk with one choice carrying `delta`.
    pub fn delta(&self, out: &mut Vec<u8>, index: u32, delta: Delta<'_>) {
        self.write(
            out,
            &[Choice {
                index,
                delta,
                logprobs: None,
                finish_reason: None,
            }],
            None,
        );
    }

    /// The opening chunk: `{"role":"assistant","content":""}`.
    pub fn role(&self, out: &mut Vec<u8>, index: u32) {
        self.delta(
            out,
            index,
            Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            },
        );
    }

    pub fn content(&self, out: &mut Vec<u8>, index: u32, text: &str) {
        self.delta(
            out,
            index,
            Delta {
                content: Some(text),
                ..Delta::default()
            },
        );
    }

    pub fn reasoning(&self, out: &mut Vec<u8>, index: u32, text: &str) {
        self.delta(
            out,
            index,
            Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
        );
    }

    /// The first fragment of a tool call: id, name and empty (or whole) arguments.
    pub fn tool_call_start(
        &self,
        out: &mut Vec<u8>,
        index: u32,
        tool_index: u32,
        id: &str,
        name: &str,
        arguments: &str,
    ) {
        self.delta(
            out,
            index,
            Delta {
                tool_calls: Some([ToolCallDelta {
                    index: tool_index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments,
                    },
                }]),
                ..Delta::default()
            },
        );
    }

    /// A later fragment of a tool call's arguments.
    pub fn tool_call_arguments(
        &self,
        out: &mut Vec<u8>,
        index: u32,
        tool_index: u32,
        fragment: &str,
    ) {
        self.delta(
            out,
            index,
            Delta {
                tool_calls: Some([ToolCallDelta {
                    index: tool_index,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments: fragment,
                    },
                }]),
                ..Delta::default()
            },
        );
    }

    /// The closing chunk of one choice: empty delta and its finish reason.
    pub fn finish(&self, out: &mut Vec<u8>, index: u32, reason: &str) {
        self.write(
            out,
            &[Choice {
                index,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(reason),
            }],
            None,
        );
    }

    /// The usage chunk (only when the client asked for it, with the cost when known) and
    /// `[DONE]`.
    pub fn end(&self, out: &mut Vec<u8>, usage: Option<&Usage>, cost: Option<f64>) {
        if self.include_usage {
            let mut usage = usage.copied().unwrap_or_default().openai_json();
            if let Some(cost) = cost {
                usage["cost"] = Value::from(round_usd(cost));
            }
            self.write(out, &[], Some(usage));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_body_has_openai_fields_in_openai_order() {
        let response = chat::Response {
            id: "msg_1".into(),
            created: 7,
            model: "claude".into(),
            choices: vec![
                chat::Choice {
                    content: Some("Hi \"there\"".into()),
                    reasoning: Some("think".into()),
                    finish_reason: chat::StopReason::EndTurn,
                    ..Default::default()
                },
                chat::Choice {
                    tool_calls: vec![chat::ToolCallOut {
                        id: "toolu_1".into(),
                        name: "get_weather".into(),
                        arguments: "{\"city\":\"Paris\"}".into(),
                    }],
                    finish_reason: chat::StopReason::ToolUse,
                    ..Default::default()
                },
                chat::Choice::default(),
            ],
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 2,
                reasoning_tokens: 1,
                cache_write_tokens: 0,
            },
        };
        let body = response_body(&response);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            concat!(
                r#"{"id":"msg_1","object":"chat.completion","created":7,"model":"claude","choices":["#,
                r#"{"index":0,"message":{"role":"assistant","content":"Hi \"there\"","refusal":null,"#,
                r#""reasoning_content":"think"},"logprobs":null,"finish_reason":"stop"},"#,
                r#"{"index":1,"message":{"role":"assistant","content":null,"refusal":null,"#,
                r#""tool_calls":[{"id":"toolu_1","type":"function","function":{"name":"get_weather","#,
                r#""arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"},"#,
                r#"{"index":2,"message":{"role":"assistant","content":"","refusal":null},"#,
                r#""logprobs":null,"finish_reason":"stop"}],"#,
                r#""usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"#,
                r#""prompt_tokens_details":{"cached_tokens":2},"#,
                r#""completion_tokens_details":{"reasoning_tokens":1}}}"#
            )
        );
    }

    #[test]
    fn chunks_match_openai_framing() {
        let w = ChunkWriter::new("msg_1".into(), 7, "claude".into(), true);
        let mut out = Vec::new();
        w.role(&mut out, 0);
        w.tool_call_start(&mut out, 0, 0, "toolu_1", "get_weather", "");
        w.tool_call_arguments(&mut out, 0, 0, "{\"a\":");
        w.finish(&mut out, 0, "tool_calls");
        w.end(
            &mut out,
            Some(&Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                ..Usage::default()
            }),
            Some(0.25),
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\n\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines[0],
            r#"data: {"id":"msg_1","object":"chat.completion.chunk","created":7,"model":"claude","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#
        );
        assert_eq!(
            lines[1],
            r#"data: {"id":"msg_1","object":"chat.completion.chunk","created":7,"model":"claude","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#
        );
        assert_eq!(
            lines[2],
            r#"data: {"id":"msg_1","object":"chat.completion.chunk","created":7,"model":"claude","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#
        );
        assert!(lines[3].contains(r#""delta":{},"logprobs":null,"finish_reason":"tool_calls""#));
        assert!(
            lines[4].contains(
                r#""choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5"#
            ),
            "{}",
            lines[4]
        );
        assert_eq!(lines[5], "data: [DONE]");
    }

    #[test]
    fn no_usage_fields_unless_asked() {
        let w = ChunkWriter::new("x".into(), 1, "m".into(), false);
        let mut out = Vec::new();
        w.content(&mut out, 0, "hi");
        w.end(&mut out, None, None);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("usage"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
