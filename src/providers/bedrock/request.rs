//! Canonical request → Bedrock Converse request (`/model/{id}/converse[-stream]`).
//!
//! - System and developer messages become `system` text blocks, in order.
//! - Images and PDFs (data URLs) become `image` / `document` blocks with base64 `bytes`; URLs
//!   cannot be fetched by Converse and are refused.
//! - Tool results become `toolResult` blocks leading the next user turn; ids are made to match
//!   `^[a-zA-Z0-9_-]+$` the same way on both sides of a call. Converse refuses tool blocks
//!   without declared tools: when the request declares none (no `tools`, or `tool_choice:
//!   "none"`, which Converse cannot express), past calls and results are sent as text.
//! - `max_tokens`, `temperature`, `top_p` and `stop` go into `inferenceConfig`; `top_k` and, for
//!   Anthropic models, thinking go into `additionalModelRequestFields`.
//! - Refused with a 400 naming the parameter: `n` > 1, `logprobs`, `logit_bias`,
//!   `response_format`, audio, reasoning on non-Anthropic models, unknown fields.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::chat::{self, parse_data_url, Content, ContentPart};
use crate::error::GatewayError;
use crate::providers::anthropic::sanitize_tool_id;
use crate::providers::convert::{
    answered_call, push_tool_result, push_turn, require_turns, tool_arguments, tool_call_text,
    tool_result_text, unsupported_role, Turn,
};

/// Fields with no Converse equivalent that change nothing about the answer.
const DROPPED_FIELDS: [&str; 8] = [
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "verbosity",
    "stream_options",
    "safety_identifier",
    "seed",
];

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

fn media(url: &str) -> Result<Value, GatewayError> {
    let Some((mime, data)) = parse_data_url(url) else {
        return Err(invalid(
            "provider kind bedrock takes images and documents as base64 data URLs only",
            "messages",
        ));
    };
    Ok(match mime {
        "image/jpeg" | "image/png" | "image/gif" | "image/webp" => {
            json!({"image": {"format": &mime[6..], "source": {"bytes": data}}})
        }
        "application/pdf" => {
            json!({"document": {"format": "pdf", "name": "document", "source": {"bytes": data}}})
        }
        other => {
            return Err(invalid(
                format!("media type {other} is not supported by provider kind bedrock"),
                "messages",
            ))
        }
    })
}

fn user_blocks(content: &Content<'_>) -> Result<Vec<Value>, GatewayError> {
    let parts = match content {
        Content::Text(t) if t.is_empty() => return Ok(Vec::new()),
        Content::Text(t) => return Ok(vec![json!({"text": t})]),
        Content::Parts(parts) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            ContentPart::Text { text, .. } | ContentPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    out.push(json!({"text": text}));
                }
            }
            ContentPart::ImageUrl { image_url } => out.push(media(&image_url.url)?),
            ContentPart::File { file } => match &file.file_data {
                Some(data) => out.push(media(data)?),
                None => return Err(invalid("file parts need file_data", "messages")),
            },
            ContentPart::InputAudio { .. } => {
                return Err(invalid(
                    "audio input is not supported by provider kind bedrock",
                    "messages",
                ))
            }
            ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => {}
        }
    }
    Ok(out)
}

/// The Converse body for `params`, sent to `model`.
pub fn body(params: &chat::Request<'_>, model: &str) -> Result<Value, GatewayError> {
    if params.n.is_some_and(|n| n > 1) {
        return Err(invalid(
            "n > 1 is not supported by provider kind bedrock",
            "n",
        ));
    }
    if params.logprobs == Some(true) {
        return Err(invalid(
            "logprobs are not supported by provider kind bedrock",
            "logprobs",
        ));
    }
    if params.logit_bias.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "logit_bias is not supported by provider kind bedrock",
            "logit_bias",
        ));
    }
    if params
        .response_format
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(invalid(
            "response_format is not supported by provider kind bedrock",
            "response_format",
        ));
    }
    if let Some(key) = params
        .rest
        .keys()
        .find(|k| !DROPPED_FIELDS.contains(&k.as_str()))
    {
        return Err(GatewayError::invalid(
            format!("parameter '{key}' is not supported by provider kind bedrock"),
            None,
        ));
    }

    // Converse refuses toolUse/toolResult blocks unless a toolConfig declares tools, and has no
    // tool choice "none". Without declared tools (none given, or "none") the history's tool
    // calls and results go as text: the model reads what happened and cannot call a tool.
    let declares_tools = params.tools.as_ref().is_some_and(|t| !t.is_empty())
        && !matches!(&params.tool_choice, Some(Value::String(s)) if s == "none");
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut open_calls: HashSet<String> = HashSet::new();
    for message in &params.messages {
        match &*message.role {
            "system" | "developer" => {
                let text = message.text();
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
            }
            "user" => {
                let blocks = match &message.content {
                    Some(c) => user_blocks(c)?,
                    None => Vec::new(),
                };
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = message.text();
                if !text.is_empty() {
                    blocks.push(json!({"text": text}));
                }
                open_calls.clear();
                for call in message.tool_calls.iter().flatten() {
                    let id = sanitize_tool_id(&call.id);
                    let input = tool_arguments(&call.function.arguments)?;
                    blocks.push(if declares_tools {
                        json!({"toolUse": {"toolUseId": id, "name": call.function.name,
                                           "input": input}})
                    } else {
                        json!({"text": tool_call_text(&id, &call.function.name, &call.function.arguments)})
                    });
                    open_calls.insert(id);
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let id = answered_call(
                    message.tool_call_id.as_deref(),
                    &mut open_calls,
                    sanitize_tool_id,
                )?;
                let text = message.text();
                if declares_tools {
                    let block =
                        json!({"toolResult": {"toolUseId": id, "content": [{"text": text}]}});
                    push_tool_result(&mut turns, block, |b| b.get("toolResult").is_some());
                } else {
                    push_turn(
                        &mut turns,
                        "user",
                        vec![json!({"text": tool_result_text(&id, &text)})],
                    );
                }
            }
            other => return Err(unsupported_role(other)),
        }
    }
    require_turns(&turns)?;

    let mut body = Map::new();
    body.insert(
        "messages".into(),
        turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(max) = params.max_output_tokens() {
        inference.insert("maxTokens".into(), json!(max));
    }
    if let Some(t) = params.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = params.top_p {
        inference.insert("topP".into(), json!(p));
    }
    let stops: Vec<&str> = params
        .stop_sequences()?
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    if !stops.is_empty() {
        inference.insert("stopSequences".into(), json!(stops));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }

    let mut additional = Map::new();
    if let Some(k) = params.top_k {
        additional.insert("top_k".into(), json!(k));
    }
    let budget = params
        .thinking_budget
        .or(match params.reasoning_effort.as_deref() {
            None | Some("none") => None,
            Some("minimal" | "low") => Some(1024),
            Some("medium") => Some(2048),
            Some(_) => Some(4096),
        });
    if let Some(budget) = budget {
        if !model.contains("anthropic.") {
            return Err(invalid(
                "reasoning is only supported for Anthropic models on provider kind bedrock",
                "reasoning_effort",
            ));
        }
        additional.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
    }

    let mut tools = Vec::new();
    for tool in params.tools.iter().flatten() {
        let Some(f) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
            return Err(invalid(
                format!(
                    "tool type '{}' is not supported by provider kind bedrock",
                    tool.kind
                ),
                "tools",
            ));
        };
        let mut spec = json!({"name": f.name, "inputSchema": {"json": f.parameters.clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}))}});
        if let Some(d) = &f.description {
            spec["description"] = json!(d);
        }
        tools.push(json!({ "toolSpec": spec }));
    }
    if !tools.is_empty() {
        let mut config = json!({ "tools": tools });
        match &params.tool_choice {
            None => {}
            Some(Value::String(s)) if s == "auto" => config["toolChoice"] = json!({"auto": {}}),
            Some(Value::String(s)) if s == "required" => config["toolChoice"] = json!({"any": {}}),
            // Converse has no "none": the tools are not offered at all.
            Some(Value::String(s)) if s == "none" => config = Value::Null,
            Some(Value::Object(o)) => match o.get("function").and_then(|f| f.get("name")) {
                Some(name) => config["toolChoice"] = json!({"tool": {"name": name}}),
                None => return Err(invalid("tool_choice names no function", "tool_choice")),
            },
            Some(_) => return Err(invalid("unsupported tool_choice", "tool_choice")),
        }
        if !config.is_null() {
            body.insert("toolConfig".into(), config);
        }
    }
    Ok(Value::Object(body))
}
