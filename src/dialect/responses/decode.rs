//! Responses API request → canonical request (docs/translation.md §5.11).
//!
//! - `instructions` becomes the leading system message; `input` (a string is one user message)
//!   follows the stored conversation of `previous_response_id`, item by item:
//!   - `message` items (typed or not) with `input_text`/`input_image`/`input_file` parts, and
//!     assistant `output_text`/`refusal` parts;
//!   - `function_call` items become tool calls of the assistant turn, `function_call_output`
//!     items tool messages (images of an output follow as a user message, as most vendors take
//!     tool results as text only);
//!   - `reasoning` items become thinking of the assistant turn, their `encrypted_content` its
//!     signature (the gateway's own answers carry Anthropic's signature there);
//!   - consecutive assistant-side items (reasoning, assistant message, function calls) are one
//!     assistant turn, as they were one answer.
//! - Function tools map to chat's function tools; other tool types (web search, file search,
//!   computer use, MCP, ...) are refused by name, as is a `tool_choice` naming them.
//! - `max_output_tokens`, `temperature`, `top_p`, `top_logprobs`, `parallel_tool_calls`, `user`,
//!   `safety_identifier` keep their meaning; `reasoning.effort` is the reasoning effort;
//!   `text.format` (json_schema, json_object) is the response format.
//! - Fields that only shape OpenAI's own service (`metadata`, `include`, `truncation`,
//!   `service_tier`, `prompt_cache_key`, `stream_options`, `text.verbosity`, reasoning summaries)
//!   change nothing for another vendor and are dropped; any other field stays in `rest`, where
//!   an adapter refuses it by name.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::{self, Content, ContentPart, FilePart, FunctionCall, FunctionDef, ImageUrl};
use crate::error::GatewayError;

/// Fields the gateway handles itself or that change nothing for another vendor.
const DROPPED_FIELDS: [&str; 12] = [
    "model",
    "stream",
    "store",
    "previous_response_id",
    "background",
    "metadata",
    "include",
    "truncation",
    "service_tier",
    "prompt_cache_key",
    "stream_options",
    "conversation",
];

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::invalid(message, Some("input"))
}

#[derive(Deserialize)]
struct RequestWire<'a> {
    #[serde(default, borrow)]
    input: Option<InputWire<'a>>,
    #[serde(default, borrow)]
    instructions: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tools: Option<Vec<ToolWire<'a>>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_logprobs: Option<u64>,
    #[serde(default)]
    reasoning: Option<ReasoningWire>,
    #[serde(default)]
    text: Option<TextWire>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    safety_identifier: Option<Cow<'a, str>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// One input item. Messages may come without `type` (OpenAI's "easy input message").
#[derive(Deserialize)]
struct ItemWire<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<MessageContentWire<'a>>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    output: Option<MessageContentWire<'a>>,
    #[serde(default, borrow)]
    summary: Option<Vec<TextPartWire<'a>>>,
    #[serde(default, borrow)]
    encrypted_content: Option<Cow<'a, str>>,
}

/// A string or a list: `input`, a message's `content`, a call's `output`. Read in one pass:
/// serde's untagged enums buffer the whole value first, which for `input` is most of the
/// request.
enum TextOr<'a, T> {
    Text(Cow<'a, str>),
    List(Vec<T>),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for TextOr<'a, T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a, T>(std::marker::PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<'a, T> {
            type Value = TextOr<'a, T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                // Items and parts are objects: their derived types would also take arrays.
                while let Some(chat::ObjectOnly(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(TextOr::List(items))
            }
        }
        d.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

type InputWire<'a> = TextOr<'a, ItemWire<'a>>;
type MessageContentWire<'a> = TextOr<'a, PartWire<'a>>;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PartWire<'a> {
    InputText {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    OutputText {
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    Refusal {
        #[serde(borrow)]
        refusal: Cow<'a, str>,
    },
    InputImage {
        #[serde(default, borrow)]
        image_url: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        detail: Option<Cow<'a, str>>,
    },
    InputFile {
        #[serde(default, borrow)]
        file_data: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        file_id: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        filename: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        file_url: Option<Cow<'a, str>>,
    },
    #[serde(other)]
    Unsupported,
}

#[derive(Deserialize)]
struct TextPartWire<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolWire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    description: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct ReasoningWire {
    #[serde(default)]
    effort: Option<String>,
}

#[derive(Deserialize)]
struct TextWire {
    #[serde(default)]
    format: Option<Value>,
}

/// A user-side part as a canonical part.
fn input_part(part: PartWire<'_>) -> Result<ContentPart<'_>, GatewayError> {
    Ok(match part {
        PartWire::InputText { text } | PartWire::OutputText { text } => ContentPart::Text {
            text,
            cache_control: None,
        },
        PartWire::Refusal { refusal } => ContentPart::Refusal { refusal },
        PartWire::InputImage {
            image_url, detail, ..
        } => match image_url {
            Some(url) => ContentPart::ImageUrl {
                image_url: ImageUrl { url, detail },
            },
            None => {
                return Err(invalid(
                    "input_image needs an image_url (a URL or a data URL); file ids of OpenAI's Files API do not reach other vendors",
                ))
            }
        },
        PartWire::InputFile {
            file_data,
            file_id,
            filename,
            file_url,
        } => {
            if file_url.is_some() {
                return Err(invalid(
                    "input_file with a file_url is not supported; send file_data",
                ));
            }
            ContentPart::File {
                file: FilePart {
                    filename,
                    file_data,
                    file_id,
                },
            }
        }
        PartWire::Unsupported => {
            return Err(invalid(
                "content part type not supported (supported: input_text, input_image, input_file, output_text, refusal)",
            ))
        }
    })
}

/// Builds the canonical messages item by item, joining assistant-side items into turns.
#[derive(Default)]
struct Turns<'a> {
    messages: Vec<chat::Message<'a>>,
}

impl<'a> Turns<'a> {
    /// The assistant message the next assistant-side item belongs to.
    fn assistant(&mut self) -> &mut chat::Message<'a> {
        let continues = self.messages.last().is_some_and(|m| m.role == "assistant");
        if !continues {
            self.messages.push(chat::Message {
                role: "assistant".into(),
                ..chat::Message::default()
            });
        }
        let last = self.messages.len() - 1;
        &mut self.messages[last]
    }

    /// The parts of the current assistant turn (whose content is only ever parts).
    fn assistant_parts(&mut self) -> &mut Vec<ContentPart<'a>> {
        let message = self.assistant();
        let content = message
            .content
            .get_or_insert_with(|| Content::Parts(Vec::new()));
        if let Content::Text(text) = content {
            let text = std::mem::take(text);
            *content = Content::Parts(vec![ContentPart::Text {
                text,
                cache_control: None,
            }]);
        }
        match content {
            Content::Parts(parts) => parts,
            Content::Text(_) => unreachable!("assistant content was made parts just above"),
        }
    }

    fn item(&mut self, item: ItemWire<'a>) -> Result<(), GatewayError> {
        let kind = item.kind.as_deref().unwrap_or("message");
        match kind {
            "message" => self.message(item),
            "function_call" => {
                let (Some(call_id), Some(name)) = (item.call_id, item.name) else {
                    return Err(invalid("function_call items need call_id and name"));
                };
                let call = chat::ToolCall {
                    id: call_id,
                    function: FunctionCall {
                        name,
                        arguments: item.arguments.unwrap_or(Cow::Borrowed("{}")),
                    },
                };
                self.assistant().tool_calls.get_or_insert_with(Vec::new).push(call);
                Ok(())
            }
            "function_call_output" => {
                let Some(call_id) = item.call_id else {
                    return Err(invalid("function_call_output items need a call_id"));
                };
                let mut text: Cow<'a, str> = Cow::Borrowed("");
                let mut media = Vec::new();
                match item.output {
                    None => {}
                    Some(TextOr::Text(t)) => text = t,
                    Some(TextOr::List(parts)) => {
                        let mut joined = String::new();
                        for part in parts {
                            match input_part(part)? {
                                ContentPart::Text { text, .. } => {
                                    if !joined.is_empty() {
                                        joined.push('\n');
                                    }
                                    joined.push_str(&text);
                                }
                                other => media.push(other),
                            }
                        }
                        text = Cow::Owned(joined);
                    }
                }
                self.messages.push(chat::Message {
                    role: "tool".into(),
                    content: Some(Content::Text(text)),
                    tool_call_id: Some(call_id),
                    ..chat::Message::default()
                });
                if !media.is_empty() {
                    self.messages.push(chat::Message {
                        role: "user".into(),
                        content: Some(Content::Parts(media)),
                        ..chat::Message::default()
                    });
                }
                Ok(())
            }
            "reasoning" => {
                let text: Vec<Cow<'a, str>> = item
                    .summary
                    .into_iter()
                    .flatten()
                    .map(|p| p.text)
                    .collect();
                let thinking = match text.len() {
                    0 => Cow::Borrowed(""),
                    1 => text.into_iter().next().unwrap_or_default(),
                    _ => Cow::Owned(text.join("\n\n")),
                };
                let signature = item.encrypted_content;
                // Reasoning with neither text nor signature carries nothing to replay.
                if !thinking.is_empty() || signature.is_some() {
                    self.assistant_parts().push(ContentPart::Thinking {
                        thinking,
                        signature,
                    });
                }
                Ok(())
            }
            other => Err(invalid(format!(
                "input item type '{other}' is not supported (supported: message, function_call, function_call_output, reasoning)"
            ))),
        }
    }

    fn message(&mut self, item: ItemWire<'a>) -> Result<(), GatewayError> {
        let role = item.role.unwrap_or(Cow::Borrowed("user"));
        let role: Cow<'a, str> = match role.as_ref() {
            "user" | "system" | "assistant" => role,
            // The canonical model calls both system; vendors without a developer role get it.
            "developer" => Cow::Borrowed("system"),
            other => {
                return Err(invalid(format!(
                    "unexpected role '{other}' (roles: user, assistant, system, developer)"
                )))
            }
        };
        let content = match item.content {
            None => return Err(invalid("message items need content")),
            Some(TextOr::Text(text)) => Content::Text(text),
            Some(TextOr::List(parts)) => Content::Parts(
                parts
                    .into_iter()
                    .map(input_part)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if role == "assistant" {
            let parts = self.assistant_parts();
            match content {
                Content::Text(text) => parts.push(ContentPart::Text {
                    text,
                    cache_control: None,
                }),
                Content::Parts(more) => parts.extend(more),
            }
            return Ok(());
        }
        self.messages.push(chat::Message {
            role,
            content: Some(content),
            ..chat::Message::default()
        });
        Ok(())
    }
}

fn tool_choice(choice: Value) -> Result<Value, GatewayError> {
    let refuse = |what: String| {
        GatewayError::invalid(
            format!("tool_choice {what} is not supported: only function tools reach other vendors"),
            Some("tool_choice"),
        )
    };
    match choice {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(Value::String(mode))
        }
        Value::Object(object) => match (object.get("type"), object.get("name")) {
            (Some(Value::String(kind)), Some(Value::String(name))) if kind == "function" => {
                Ok(json!({"type": "function", "function": {"name": name}}))
            }
            (Some(Value::String(kind)), _) => Err(refuse(format!("of type '{kind}'"))),
            _ => Err(refuse("without a type".into())),
        },
        other => Err(refuse(other.to_string())),
    }
}

/// `text.format` as chat's `response_format`.
fn response_format(format: Value) -> Result<Option<Value>, GatewayError> {
    let bad = |why: &str| GatewayError::invalid(format!("text.format {why}"), Some("text"));
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            schema.insert(
                "name".into(),
                format.get("name").cloned().unwrap_or(json!("output")),
            );
            for key in ["description", "schema", "strict"] {
                if let Some(value) = format.get(key) {
                    schema.insert(key.into(), value.clone());
                }
            }
            if !schema.contains_key("schema") {
                return Err(bad("of type json_schema needs a schema"));
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(bad(&format!("type '{other}' is not supported"))),
        None => Err(bad("needs a type")),
    }
}

/// Decodes a Responses body, after the stored conversation `history` (a JSON array of items),
/// into the canonical request.
pub fn canonical<'a>(
    body: &'a [u8],
    history: Option<&'a [u8]>,
    stream: bool,
) -> Result<chat::Request<'a>, GatewayError> {
    let wire: RequestWire = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid(format!("invalid request: {e}"), None))?;
    let mut turns = Turns::default();
    if let Some(instructions) = wire.instructions {
        turns.messages.push(chat::Message {
            role: "system".into(),
            content: Some(Content::Text(instructions)),
            ..chat::Message::default()
        });
    }
    if let Some(history) = history {
        let items: Vec<ItemWire> = serde_json::from_slice(history).map_err(|e| {
            GatewayError::Internal(format!("stored conversation is not a list of items: {e}"))
        })?;
        for item in items {
            turns.item(item)?;
        }
    }
    match wire.input {
        None => {}
        Some(TextOr::Text(text)) => turns.messages.push(chat::Message {
            role: "user".into(),
            content: Some(Content::Text(text)),
            ..chat::Message::default()
        }),
        Some(TextOr::List(items)) => {
            for item in items {
                turns.item(item)?;
            }
        }
    }
    if turns.messages.iter().all(|m| m.role == "system") {
        return Err(invalid("input must hold at least one message"));
    }

    let tools = match wire.tools {
        None => None,
        Some(tools) => Some(
            tools
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    if t.kind != "function" {
                        return Err(GatewayError::invalid(
                            format!(
                                "tools[{i}]: tool type '{}' is not supported by this gateway; only function tools are",
                                t.kind
                            ),
                            Some("tools"),
                        ));
                    }
                    let name = t.name.ok_or_else(|| {
                        GatewayError::invalid(
                            format!("tools[{i}].name: Field required"),
                            Some("tools"),
                        )
                    })?;
                    Ok(chat::Tool {
                        kind: "function".into(),
                        function: Some(FunctionDef {
                            name,
                            description: t.description,
                            parameters: t.parameters,
                            strict: t.strict,
                        }),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let tool_choice = wire
        .tool_choice
        .filter(|v| !v.is_null())
        .map(tool_choice)
        .transpose()?;
    let response_format = match wire.text.and_then(|t| t.format) {
        Some(format) => response_format(format)?,
        None => None,
    };
    let mut rest = wire.rest;
    for key in DROPPED_FIELDS {
        rest.shift_remove(key);
    }
    // `null` is how SDKs say "not set".
    rest.retain(|_, v| !v.is_null());

    Ok(chat::Request {
        stream,
        messages: turns.messages,
        tools,
        tool_choice,
        parallel_tool_calls: wire.parallel_tool_calls,
        response_format,
        max_completion_tokens: wire.max_output_tokens,
        temperature: wire.temperature,
        top_p: wire.top_p,
        top_logprobs: wire.top_logprobs,
        user: wire.user,
        safety_identifier: wire.safety_identifier,
        reasoning_effort: wire.reasoning.and_then(|r| r.effort).map(Cow::Owned),
        rest,
        ..chat::Request::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: Value) -> Result<String, GatewayError> {
        let text = body.to_string();
        canonical(text.as_bytes(), None, false).map(|r| format!("{r:?}"))
    }

    #[test]
    fn a_string_input_with_instructions_is_a_system_and_a_user_message() {
        let body = json!({"model": "m", "input": "Hello", "instructions": "Be brief.",
            "max_output_tokens": 64, "temperature": 0.3, "reasoning": {"effort": "low", "summary": "auto"},
            "metadata": {"a": "b"}, "store": true, "include": ["reasoning.encrypted_content"]})
        .to_string();
        let req = canonical(body.as_bytes(), None, true).unwrap();
        assert!(req.stream);
        assert_eq!(req.messages.len(), 2);
        assert_eq!(req.messages[0].role, "system");
        assert_eq!(req.messages[0].text(), "Be brief.");
        assert_eq!(req.messages[1].role, "user");
        assert_eq!(req.messages[1].text(), "Hello");
        assert_eq!(req.max_output_tokens(), Some(64));
        assert_eq!(req.temperature, Some(0.3));
        assert_eq!(req.reasoning_effort.as_deref(), Some("low"));
        assert!(req.rest.is_empty(), "{:?}", req.rest);
    }

    #[test]
    fn items_become_turns_with_tool_calls_results_and_thinking() {
        let history = json!([
            {"role": "user", "content": "Weather in SF?"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need the tool."}], "encrypted_content": "sig-1"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"SF\"}"},
            {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "get_time", "arguments": "{}"}
        ])
        .to_string();
        let body = json!({"model": "m", "input": [
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "function_call_output", "call_id": "call_2", "output": [
                {"type": "input_text", "text": "noon"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Answer in Celsius."}]}
        ]})
        .to_string();
        let req = canonical(body.as_bytes(), Some(history.as_bytes()), false).unwrap();
        let roles: Vec<&str> = req.messages.iter().map(|m| m.role.as_ref()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "tool", "user", "system"]
        );
        let assistant = &req.messages[1];
        let Some(Content::Parts(parts)) = &assistant.content else {
            panic!("assistant parts: {assistant:?}");
        };
        assert!(
            matches!(&parts[0], ContentPart::Thinking { thinking, signature: Some(s) }
            if thinking == "Need the tool." && s == "sig-1")
        );
        assert!(matches!(&parts[1], ContentPart::Text { text, .. } if text == "Checking."));
        let calls = assistant.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].function.arguments, "{\"city\":\"SF\"}");
        assert_eq!(req.messages[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(req.messages[2].text(), "18C");
        assert_eq!(req.messages[3].text(), "noon");
        assert!(matches!(&req.messages[4].content, Some(Content::Parts(p))
            if matches!(&p[0], ContentPart::ImageUrl { .. })));
        assert_eq!(req.messages[5].text(), "Answer in Celsius.");
    }

    #[test]
    fn tools_choice_and_format_map_to_chat() {
        let body = json!({"model": "m", "input": "x",
            "tools": [{"type": "function", "name": "f", "description": "d",
                       "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": false,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true},
                     "verbosity": "low"}})
        .to_string();
        let req = canonical(body.as_bytes(), None, false).unwrap();
        let tool = &req.tools.as_ref().unwrap()[0];
        let function = tool.function.as_ref().unwrap();
        assert_eq!(
            (tool.kind.as_ref(), function.name.as_ref()),
            ("function", "f")
        );
        assert_eq!(function.parameters, Some(json!({"type": "object"})));
        assert_eq!(
            req.tool_choice,
            Some(json!({"type": "function", "function": {"name": "f"}}))
        );
        assert_eq!(req.parallel_tool_calls, Some(false));
        assert_eq!(
            req.response_format,
            Some(json!({"type": "json_schema", "json_schema":
                {"name": "out", "schema": {"type": "object"}, "strict": true}}))
        );
    }

    #[test]
    fn refuses_what_other_vendors_cannot_do_naming_it() {
        let cases = [
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "web_search",
            ),
            (
                json!({"input": "x", "tool_choice": {"type": "file_search"}}),
                "file_search",
            ),
            (
                json!({"input": [{"type": "item_reference", "id": "x"}]}),
                "item_reference",
            ),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
                "file ids",
            ),
            (
                json!({"input": [{"role": "critic", "content": "x"}]}),
                "critic",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
                "schema",
            ),
            (json!({"input": []}), "at least one message"),
            // An item, or a part, as an array: derived types would take them.
            (json!({"input": [["user", "x"]]}), "expected an object"),
            (
                json!({"input": [{"role": "user", "content": [["input_text", "x"]]}]}),
                "expected an object",
            ),
        ];
        for (body, named) in cases {
            let err = decode(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.status(), 400, "{body}");
            assert!(err.to_string().contains(named), "{body}: {err}");
        }
    }

    #[test]
    fn unknown_fields_stay_for_adapters_to_refuse() {
        let body = json!({"input": "x", "max_tool_calls": 3, "top_logprobs": null});
        let text = body.to_string();
        let req = canonical(text.as_bytes(), None, false).unwrap();
        assert_eq!(req.rest.keys().collect::<Vec<_>>(), ["max_tool_calls"]);
    }
}
