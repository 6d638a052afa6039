//! Anthropic Messages request → canonical request (docs/translation.md §5.6).
//!
//! - `system` (string or text blocks, `cache_control` kept) becomes the leading system message.
//! - A user turn's `tool_result` blocks become tool messages placed before the rest of that
//!   turn; images inside a tool result follow as a user message (most vendors take tool results
//!   as text only); `is_error: true` results are prefixed with `Error: `.
//! - Base64 images and PDFs become data URLs, plain-text documents become text.
//! - Assistant `thinking` / `redacted_thinking` blocks are kept as canonical parts, so each
//!   adapter decides (Anthropic replays them, the others leave them out).
//! - `tool_choice` any/tool/none map to required/named/none, `disable_parallel_tool_use` to
//!   `parallel_tool_calls: false`; `thinking.budget_tokens` is kept as the thinking budget,
//!   adaptive thinking is a medium effort; `output_config.format` is a JSON-schema
//!   `response_format`; `metadata.user_id` is the user.
//! - Fields with no canonical meaning stay in `rest` under their Anthropic names, where an
//!   adapter refuses them by name, except the few that change nothing for another vendor.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::{self, Content, ContentPart, FilePart, FunctionCall, FunctionDef, ImageUrl};
use crate::error::GatewayError;

/// Anthropic-only fields that change nothing when the answer comes from another vendor.
const DROPPED_FIELDS: [&str; 4] = [
    "service_tier",
    "inference_geo",
    "context_management",
    "cache_control",
];

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some("messages"))
}

#[derive(Deserialize)]
struct MessagesWire<'a> {
    #[serde(borrow, deserialize_with = "chat::object_list")]
    messages: Vec<MessageWire<'a>>,
    #[serde(default, borrow)]
    system: Option<ContentWire<'a>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default, borrow)]
    stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default, borrow)]
    tools: Option<Vec<ToolWire<'a>>>,
    #[serde(default)]
    tool_choice: Option<ToolChoiceWire>,
    #[serde(default, borrow)]
    metadata: Option<MetadataWire<'a>>,
    #[serde(default)]
    thinking: Option<ThinkingWire>,
    #[serde(default)]
    output_config: Option<OutputConfigWire>,
    #[serde(default)]
    #[allow(dead_code)]
    model: serde::de::IgnoredAny,
    #[serde(default)]
    #[allow(dead_code)]
    stream: serde::de::IgnoredAny,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
struct MessageWire<'a> {
    #[serde(borrow)]
    role: &'a str,
    #[serde(borrow)]
    content: ContentWire<'a>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ContentWire<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Blocks(#[serde(borrow, deserialize_with = "chat::object_list")] Vec<BlockWire<'a>>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockWire<'a> {
    Text {
        #[serde(borrow)]
        text: Cow<'a, str>,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    Image {
        #[serde(borrow)]
        source: SourceWire<'a>,
    },
    Document {
        #[serde(borrow)]
        source: SourceWire<'a>,
        #[serde(default, borrow)]
        title: Option<Cow<'a, str>>,
    },
    ToolUse {
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        #[serde(borrow)]
        tool_use_id: &'a str,
        #[serde(default, borrow)]
        content: Option<ContentWire<'a>>,
        #[serde(default)]
        is_error: Option<bool>,
    },
    Thinking {
        #[serde(borrow)]
        thinking: Cow<'a, str>,
        #[serde(default, borrow)]
        signature: Option<Cow<'a, str>>,
    },
    RedactedThinking {
        #[serde(borrow)]
        data: Cow<'a, str>,
    },
    #[serde(other)]
    Unsupported,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum SourceWire<'a> {
    Base64 {
        #[serde(borrow)]
        media_type: Cow<'a, str>,
        #[serde(borrow)]
        data: Cow<'a, str>,
    },
    Url {
        #[serde(borrow)]
        url: Cow<'a, str>,
    },
    Text {
        #[serde(borrow)]
        data: Cow<'a, str>,
    },
    #[serde(other)]
    Unsupported,
}

#[derive(Deserialize)]
struct ToolWire<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct ToolChoiceWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct MetadataWire<'a> {
    #[serde(default, borrow)]
    user_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct ThinkingWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputConfigWire {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default)]
    format: Option<Value>,
}

fn data_url(media_type: &str, data: &str) -> String {
    format!("data:{media_type};base64,{data}")
}

/// A user-side media or text block as a canonical part.
fn user_part<'a>(block: BlockWire<'a>) -> Result<ContentPart<'a>, GatewayError> {
    Ok(match block {
        BlockWire::Text {
            text,
            cache_control,
        } => ContentPart::Text {
            text,
            cache_control,
        },
        BlockWire::Image { source } => ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: match source {
                    SourceWire::Base64 { media_type, data } => {
                        Cow::Owned(data_url(&media_type, &data))
                    }
                    SourceWire::Url { url } => url,
                    _ => return Err(invalid("image sources must be base64 or url")),
                },
                detail: None,
            },
        },
        BlockWire::Document { source, title } => match source {
            SourceWire::Base64 { media_type, data } => ContentPart::File {
                file: FilePart {
                    filename: Some(title.unwrap_or(Cow::Borrowed("document.pdf"))),
                    file_data: Some(Cow::Owned(data_url(&media_type, &data))),
                    file_id: None,
                },
            },
            SourceWire::Text { data } => ContentPart::Text {
                text: data,
                cache_control: None,
            },
            _ => {
                return Err(invalid(
                    "document sources must be base64 or text for this model",
                ))
            }
        },
        BlockWire::ToolUse { .. } => {
            return Err(invalid("tool_use blocks belong to assistant turns"))
        }
        BlockWire::Thinking { .. } | BlockWire::RedactedThinking { .. } => {
            return Err(invalid("thinking blocks belong to assistant turns"))
        }
        BlockWire::ToolResult { .. } => return Err(invalid("misplaced tool_result block")),
        BlockWire::Unsupported => return Err(unsupported_block()),
    })
}

fn unsupported_block() -> GatewayError {
    invalid("content block type not supported for this model (supported: text, image, document, tool_use, tool_result, thinking, redacted_thinking)")
}

/// A tool result's content as the tool message's content, plus the images it carried.
fn tool_result<'a>(
    content: Option<ContentWire<'a>>,
    is_error: bool,
) -> Result<(Content<'a>, Vec<ContentPart<'a>>), GatewayError> {
    let mut text: Cow<'a, str> = Cow::Borrowed("");
    let mut images = Vec::new();
    match content {
        None => {}
        Some(ContentWire::Text(t)) => text = t,
        Some(ContentWire::Blocks(blocks)) => {
            let mut joined = String::new();
            for block in blocks {
                match user_part(block)? {
                    ContentPart::Text { text: t, .. } => {
                        if !joined.is_empty() {
                            joined.push('\n');
                        }
                        joined.push_str(&t);
                    }
                    other => images.push(other),
                }
            }
            text = Cow::Owned(joined);
        }
    }
    if is_error {
        text = Cow::Owned(format!("Error: {text}"));
    }
    Ok((Content::Text(text), images))
}

fn tool_choice(choice: &ToolChoiceWire) -> Result<Value, GatewayError> {
    Ok(match choice.kind.as_str() {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => match &choice.name {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(GatewayError::invalid(
                    "tool_choice of type tool needs a name",
                    Some("tool_choice"),
                ))
            }
        },
        other => {
            return Err(GatewayError::invalid(
                format!("unknown tool_choice type '{other}'"),
                Some("tool_choice"),
            ))
        }
    })
}

/// Decodes an Anthropic Messages body into the canonical request.
pub fn canonical(body: &[u8], stream: bool) -> Result<chat::Request<'_>, GatewayError> {
    let wire: MessagesWire = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid(format!("invalid request: {e}"), None))?;
    let mut messages = Vec::with_capacity(wire.messages.len() + 1);
    match wire.system {
        None => {}
        Some(ContentWire::Text(text)) => messages.push(chat::Message {
            role: "system".into(),
            content: Some(Content::Text(text)),
            ..chat::Message::default()
        }),
        Some(ContentWire::Blocks(blocks)) => {
            let parts = blocks
                .into_iter()
                .map(|b| match b {
                    BlockWire::Text { .. } => user_part(b),
                    _ => Err(GatewayError::invalid(
                        "system blocks must be text",
                        Some("system"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            messages.push(chat::Message {
                role: "system".into(),
                content: Some(Content::Parts(parts)),
                ..chat::Message::default()
            });
        }
    }
    for message in wire.messages {
        match (message.role, message.content) {
            ("user", ContentWire::Text(text)) => messages.push(chat::Message {
                role: "user".into(),
                content: Some(Content::Text(text)),
                ..chat::Message::default()
            }),
            ("user", ContentWire::Blocks(blocks)) => {
                let mut parts = Vec::new();
                let mut result_images = Vec::new();
                for block in blocks {
                    match block {
                        BlockWire::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                        } => {
                            let (content, images) =
                                tool_result(content, is_error.unwrap_or(false))?;
                            result_images.extend(images);
                            messages.push(chat::Message {
                                role: "tool".into(),
                                content: Some(content),
                                tool_call_id: Some(tool_use_id.into()),
                                ..chat::Message::default()
                            });
                        }
                        other => parts.push(user_part(other)?),
                    }
                }
                result_images.extend(parts);
                if !result_images.is_empty() {
                    messages.push(chat::Message {
                        role: "user".into(),
                        content: Some(Content::Parts(result_images)),
                        ..chat::Message::default()
                    });
                }
            }
            ("assistant", ContentWire::Text(text)) => messages.push(chat::Message {
                role: "assistant".into(),
                content: Some(Content::Text(text)),
                ..chat::Message::default()
            }),
            ("assistant", ContentWire::Blocks(blocks)) => {
                let mut parts = Vec::new();
                let mut calls = Vec::new();
                for block in blocks {
                    match block {
                        BlockWire::Text { text, .. } => parts.push(ContentPart::Text {
                            text,
                            cache_control: None,
                        }),
                        BlockWire::Thinking {
                            thinking,
                            signature,
                        } => parts.push(ContentPart::Thinking {
                            thinking,
                            signature,
                        }),
                        BlockWire::RedactedThinking { data } => {
                            parts.push(ContentPart::RedactedThinking { data });
                        }
                        BlockWire::ToolUse { id, name, input } => calls.push(chat::ToolCall {
                            id,
                            function: FunctionCall {
                                name,
                                arguments: Cow::Owned(match input {
                                    Value::Null => "{}".to_string(),
                                    v => v.to_string(),
                                }),
                            },
                        }),
                        BlockWire::Unsupported => return Err(unsupported_block()),
                        _ => {
                            return Err(invalid(
                                "assistant turns may hold text, tool_use and thinking blocks",
                            ))
                        }
                    }
                }
                messages.push(chat::Message {
                    role: "assistant".into(),
                    content: (!parts.is_empty()).then_some(Content::Parts(parts)),
                    tool_calls: (!calls.is_empty()).then_some(calls),
                    ..chat::Message::default()
                });
            }
            (other, _) => {
                return Err(invalid(format!(
                    "unexpected role '{other}': messages are user or assistant turns"
                )))
            }
        }
    }

    let tools = wire.tools.map(|tools| {
        tools
            .into_iter()
            .map(|t| {
                let kind = match t.kind {
                    None | Some("custom") => "function",
                    Some(server_tool) => server_tool,
                };
                chat::Tool {
                    kind: kind.into(),
                    function: Some(FunctionDef {
                        name: t.name,
                        description: t.description,
                        parameters: t.input_schema,
                        strict: t.strict,
                    }),
                }
            })
            .collect()
    });

    let mut thinking_budget = None;
    let mut reasoning_effort = None;
    match wire.thinking {
        Some(t) if t.kind == "enabled" => {
            thinking_budget = Some(t.budget_tokens.ok_or_else(|| {
                GatewayError::invalid("thinking.budget_tokens: Field required", Some("thinking"))
            })?);
        }
        Some(t) if t.kind == "adaptive" => reasoning_effort = Some("medium"),
        Some(t) if t.kind == "disabled" => {}
        Some(t) => {
            return Err(GatewayError::invalid(
                format!("unknown thinking type '{}'", t.kind),
                Some("thinking"),
            ))
        }
        None => {}
    }
    let mut response_format = None;
    if let Some(config) = wire.output_config {
        if reasoning_effort.is_none() && thinking_budget.is_none() {
            reasoning_effort = match config.effort.as_deref() {
                Some("low") => Some("low"),
                Some("medium") => Some("medium"),
                Some("high" | "xhigh" | "max") => Some("high"),
                _ => None,
            };
        }
        if let Some(format) = config.format {
            if format["type"] != "json_schema" {
                return Err(GatewayError::invalid(
                    "output_config.format must be of type json_schema",
                    Some("output_config"),
                ));
            }
            response_format = Some(json!({
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": format["schema"], "strict": true},
            }));
        }
    }
    let parallel_tool_calls = wire
        .tool_choice
        .as_ref()
        .and_then(|c| c.disable_parallel_tool_use)
        .filter(|disabled| *disabled)
        .map(|_| false);
    let tool_choice = wire.tool_choice.as_ref().map(tool_choice).transpose()?;
    let mut rest = wire.rest;
    for key in DROPPED_FIELDS {
        rest.shift_remove(key);
    }

    Ok(chat::Request {
        stream,
        thinking_budget,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        stop: wire.stop_sequences.map(|s| {
            Value::Array(
                s.into_iter()
                    .map(|s| Value::String(s.into_owned()))
                    .collect(),
            )
        }),
        max_tokens: wire.max_tokens,
        temperature: wire.temperature,
        top_p: wire.top_p,
        top_k: wire.top_k,
        user: wire.metadata.and_then(|m| m.user_id).map(Into::into),
        reasoning_effort: reasoning_effort.map(Into::into),
        rest,
        ..chat::Request::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: Value) -> Result<(), GatewayError> {
        let text = body.to_string();
        canonical(text.as_bytes(), false).map(|_| ())
    }

    #[test]
    fn system_tools_results_and_thinking_map_to_canonical() {
        let body = json!({
            "model": "m", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}], "is_error": true},
                    {"type": "text", "text": "and tomorrow?"}]}
            ],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "service_tier": "auto"
        })
        .to_string();
        let req = canonical(body.as_bytes(), true).unwrap();
        assert!(req.stream);
        assert_eq!(req.thinking_budget, Some(2048));
        assert_eq!(req.max_tokens, Some(100));
        assert_eq!(req.user.as_deref(), Some("u-1"));
        assert_eq!(req.stop, Some(json!(["END"])));
        assert_eq!(req.tool_choice, Some(json!("required")));
        assert_eq!(req.parallel_tool_calls, Some(false));
        assert!(req.rest.is_empty(), "{:?}", req.rest);
        let roles: Vec<&str> = req.messages.iter().map(|m| &*m.role).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        match &req.messages[0].content {
            Some(Content::Parts(parts)) => assert!(matches!(
                &parts[0],
                ContentPart::Text { text, cache_control: Some(_) } if text == "Be terse."
            )),
            other => panic!("{other:?}"),
        }
        match &req.messages[1].content {
            Some(Content::Parts(parts)) => assert!(matches!(
                &parts[1],
                ContentPart::ImageUrl { image_url } if image_url.url == "data:image/png;base64,iVBO"
            )),
            other => panic!("{other:?}"),
        }
        let assistant = &req.messages[2];
        let calls = assistant.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].id, "toolu_1");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        assert!(matches!(
            &assistant.content,
            Some(Content::Parts(p)) if matches!(&p[0], ContentPart::Thinking { signature: Some(s), .. } if s == "sig")
        ));
        assert_eq!(req.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert!(matches!(&req.messages[3].content, Some(Content::Text(t)) if t == "Error: 18C"));
        let tools = req.tools.as_ref().unwrap();
        assert_eq!(tools[0].kind, "function");
    }

    #[test]
    fn choices_thinking_and_structured_output() {
        let body =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tool_choice": {"type": "tool", "name": "f"}, "thinking": {"type": "adaptive"},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}})
            .to_string();
        let req = canonical(body.as_bytes(), false).unwrap();
        assert_eq!(
            req.tool_choice,
            Some(json!({"type": "function", "function": {"name": "f"}}))
        );
        assert_eq!(req.reasoning_effort.as_deref(), Some("medium"));
        assert_eq!(
            req.response_format.unwrap()["json_schema"]["schema"],
            json!({"type": "object"})
        );
    }

    #[test]
    fn refuses_what_has_no_canonical_form() {
        let base = |messages: Value| json!({"model": "m", "max_tokens": 5, "messages": messages});
        for bad in [
            base(json!([{"role": "system", "content": "x"}])),
            base(
                json!([{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]),
            ),
            base(json!([{"role": "user", "content": [{"type": "mystery"}]}])),
            // A message, or a block, as an array: derived types would take them.
            base(json!([["user", "hi"]])),
            base(json!([{"role": "user", "content": [["text", "hi"]]}])),
            base(
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]),
            ),
            json!({"model": "m", "max_tokens": 5, "messages": [], "tool_choice": {"type": "sometimes"}}),
            json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "enabled"}}),
        ] {
            let err = decode(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(err.status(), 400);
        }
        // Unknown fields stay, named, for the adapter to refuse.
        let body =
            json!({"model": "m", "max_tokens": 5, "messages": [], "mcp_servers": []}).to_string();
        let req = canonical(body.as_bytes(), false).unwrap();
        assert!(req.rest.contains_key("mcp_servers"));
    }
}
