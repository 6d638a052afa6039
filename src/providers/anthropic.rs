//! Anthropic Messages API (`kind: anthropic`).
//!
//! Translation follows the mapping tables of the reference (§5.1–5.3, 5.8–5.10). Decisions where
//! vendors differ:
//! - All system and developer messages become the top-level `system` blocks, in order.
//! - `max_tokens` is required by Anthropic: `max_completion_tokens`, else `max_tokens`, else
//!   [`DEFAULT_MAX_TOKENS`].
//! - Refused with a 400 naming the parameter (Anthropic cannot honour them and dropping them would
//!   change the answer): `n` > 1, `logprobs`, `top_logprobs`, `logit_bias`, `temperature` > 1,
//!   audio input or output, `file_id` references, non-function tools, unknown fields.
//! - Dropped (no effect on the meaning of the answer, or no Anthropic equivalent): `seed`,
//!   `presence_penalty`, `frequency_penalty`, `store`, `metadata`, `service_tier`,
//!   `prompt_cache_key`, `safety_identifier`, `verbosity`, `user` that looks like an e-mail
//!   (otherwise it becomes `metadata.user_id`), image `detail`, whitespace-only `stop` entries.
//! - `response_format` (json_object / json_schema) is emulated with a forced tool whose input is
//!   returned as the message content, with `finish_reason: "stop"`, also when streamed.
//! - `reasoning_effort` low/medium/high turns on extended thinking with a budget of
//!   1024/2048/4096 tokens (temperature, top_p and top_k are then left out, as Anthropic requires);
//!   thinking text comes back as `reasoning_content`.
//! - Tool-call ids are made to match `^[a-zA-Z0-9_-]+$` by replacing other characters with `_`,
//!   the same way for `tool_calls[].id` and `tool_call_id`, so the pairs stay consistent.

use std::collections::HashSet;

use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::convert::{push_turn, tool_arguments, upstream_message, Turn};
use super::sse::SseEvent;
use super::stream::{SseFrame, SseHandler};
use super::{
    credential_headers, Answer, AttemptTarget, ProbeRequest, ProviderAdapter, StreamFailure,
    StreamReader, StreamSettings, UpstreamRequest,
};
use crate::accounting::Usage;
use crate::chat::{
    self, now_unix, parse_data_url, Content, ContentPart, Event, EventSink, StopReason, ToolCallOut,
};
use crate::config::ProviderKind;
use crate::dialect::anthropic::DEFAULT_VERSION;
use crate::dialect::{ClientRequest, Dialect};
use crate::error::GatewayError;

/// Output budget when the client sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The tool that carries `response_format` answers; reserved so it cannot clash with a user tool.
const JSON_TOOL: &str = "switchyard_json_response";
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Top-level fields with no Anthropic equivalent that do not change what the answer means.
const DROPPED_FIELDS: [&str; 6] = [
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "verbosity",
    "stream_options",
];
/// Anthropic-native fields a client may send through the OpenAI dialect.
const NATIVE_FIELDS: [&str; 2] = ["thinking", "output_config"];

#[derive(Debug, Default)]
pub struct AnthropicAdapter;

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// Makes an id acceptable to Anthropic (`^[a-zA-Z0-9_-]+$`), deterministically.
pub fn sanitize_tool_id(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "toolu_empty".to_string()
    } else {
        clean
    }
}

/// The content blocks of a user message (or of a tool result).
fn user_blocks(content: &Content<'_>) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Text(t) if t.is_empty() => Ok(Vec::new()),
        Content::Text(t) => Ok(vec![json!({"type": "text", "text": t})]),
        Content::Parts(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    ContentPart::Text { text, .. } if text.is_empty() => {}
                    ContentPart::Text {
                        text,
                        cache_control: Some(cache),
                    } => blocks.push(json!({"type": "text", "text": text, "cache_control": cache})),
                    ContentPart::Text { text, .. } => {
                        blocks.push(json!({"type": "text", "text": text}))
                    }
                    ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => {
                        return Err(invalid(
                            "thinking blocks belong to assistant messages",
                            "messages",
                        ))
                    }
                    ContentPart::Refusal { refusal } => {
                        blocks.push(json!({"type": "text", "text": refusal}))
                    }
                    ContentPart::ImageUrl { image_url } => {
                        blocks.push(media_block(&image_url.url)?)
                    }
                    ContentPart::File { file } => {
                        if file.file_id.is_some() {
                            return Err(invalid(
                                "file_id references cannot be sent to provider kind anthropic; send file_data",
                                "messages",
                            ));
                        }
                        let data = file
                            .file_data
                            .as_deref()
                            .ok_or_else(|| invalid("file parts need file_data", "messages"))?;
                        // file_data may be a data URL or bare base64 of a PDF.
                        let (mime, b64) = parse_data_url(data).unwrap_or(("application/pdf", data));
                        if mime != "application/pdf" {
                            return Err(invalid(
                                format!("file type {mime} is not supported by provider kind anthropic (PDF only)"),
                                "messages",
                            ));
                        }
                        blocks.push(json!({"type": "document", "source":
                            {"type": "base64", "media_type": mime, "data": b64}}));
                    }
                    ContentPart::InputAudio { .. } => {
                        return Err(invalid(
                            "audio input is not supported by provider kind anthropic",
                            "messages",
                        ))
                    }
                }
            }
            Ok(blocks)
        }
    }
}

/// An image (or PDF) given as a data URL or an https URL.
fn media_block(url: &str) -> Result<Value, GatewayError> {
    if let Some((mime, data)) = parse_data_url(url) {
        if mime == "application/pdf" {
            return Ok(json!({"type": "document", "source":
                {"type": "base64", "media_type": mime, "data": data}}));
        }
        if !IMAGE_TYPES.contains(&mime) {
            return Err(invalid(
                format!("image type {mime} is not supported by provider kind anthropic (jpeg, png, gif, webp)"),
                "messages",
            ));
        }
        return Ok(json!({"type": "image", "source":
            {"type": "base64", "media_type": mime, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(invalid(
        "image_url must be a data URL or an http(s) URL",
        "messages",
    ))
}

/// The `system` blocks and the alternating turns of a conversation.
fn build_messages(params: &chat::Request<'_>) -> Result<(Vec<Value>, Vec<Turn>), GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    // Tool-call ids of the latest assistant turn that still await their results.
    let mut open_calls: HashSet<String> = HashSet::new();
    for message in &params.messages {
        match message.role {
            "system" | "developer" => match &message.content {
                // Text parts stay separate blocks, so their cache breakpoints stay in place.
                Some(content @ Content::Parts(_)) => system.extend(user_blocks(content)?),
                Some(Content::Text(text)) if !text.is_empty() => {
                    system.push(json!({"type": "text", "text": text}))
                }
                _ => {}
            },
            "user" => {
                let blocks = match &message.content {
                    Some(c) => user_blocks(c)?,
                    None => Vec::new(),
                };
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                if let Some(content) = &message.content {
                    // Signed thinking is replayed first and unmodified, as Anthropic requires.
                    if let Content::Parts(parts) = content {
                        for part in parts {
                            match part {
                                ContentPart::Thinking {
                                    thinking,
                                    signature: Some(signature),
                                } if !signature.is_empty() => blocks.push(json!({
                                    "type": "thinking", "thinking": thinking, "signature": signature})),
                                ContentPart::RedactedThinking { data } => blocks
                                    .push(json!({"type": "redacted_thinking", "data": data})),
                                _ => {}
                            }
                        }
                    }
                    let text = content.text();
                    // Anthropic rejects empty text blocks.
                    if !text.is_empty() {
                        blocks.push(json!({"type": "text", "text": text}));
                    }
                }
                open_calls.clear();
                for call in message.tool_calls.iter().flatten() {
                    let input = tool_arguments(&call.function.arguments)?;
                    let id = sanitize_tool_id(&call.id);
                    open_calls.insert(id.clone());
                    blocks.push(json!({"type": "tool_use", "id": id,
                                       "name": call.function.name, "input": input}));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let raw_id = message
                    .tool_call_id
                    .ok_or_else(|| invalid("tool messages need a tool_call_id", "messages"))?;
                let id = sanitize_tool_id(raw_id);
                if !open_calls.remove(&id) {
                    return Err(invalid(
                        format!("tool message for '{raw_id}' does not answer a tool call of the preceding assistant message"),
                        "messages",
                    ));
                }
                let content = message
                    .content
                    .as_ref()
                    .map(Content::text)
                    .unwrap_or_default();
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                // Tool results must lead their user turn, before any text that follows them.
                match turns.last_mut() {
                    Some((role, blocks)) if *role == "user" => {
                        let at = blocks
                            .iter()
                            .take_while(|b| b["type"] == "tool_result")
                            .count();
                        blocks.insert(at, block);
                    }
                    _ => turns.push(("user", vec![block])),
                }
            }
            other => {
                return Err(invalid(
                    format!("unsupported message role '{other}'"),
                    "messages",
                ))
            }
        }
    }
    if turns.is_empty() {
        return Err(invalid(
            "the conversation needs at least one user or assistant message with content",
            "messages",
        ));
    }
    Ok((system, turns))
}

fn tool_choice(choice: &Value) -> Result<Value, GatewayError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            "none" => Ok(json!({"type": "none"})),
            other => Err(invalid(
                format!("unknown tool_choice '{other}'"),
                "tool_choice",
            )),
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice must name a function", "tool_choice"))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(invalid(
            "tool_choice must be a string or an object",
            "tool_choice",
        )),
    }
}

/// The schema a `response_format` asks for, if any.
fn response_schema(format: &Value) -> Result<Option<Value>, GatewayError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(
            json!({"type": "object", "additionalProperties": true}),
        )),
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            Ok(Some(schema))
        }
        Some(other) => Err(invalid(
            format!("response_format type '{other}' is not supported"),
            "response_format",
        )),
    }
}

fn thinking_budget(effort: &str) -> Result<Option<u64>, GatewayError> {
    match effort {
        "none" | "minimal" => Ok(None),
        "low" => Ok(Some(1024)),
        "medium" => Ok(Some(2048)),
        "high" | "xhigh" | "max" => Ok(Some(4096)),
        other => Err(invalid(
            format!("unknown reasoning_effort '{other}'"),
            "reasoning_effort",
        )),
    }
}

impl AnthropicAdapter {
    /// The Anthropic request body for a canonical request.
    pub fn request_body(params: &chat::Request<'_>, model: &str) -> Result<Value, GatewayError> {
        if params.n.is_some_and(|n| n > 1) {
            return Err(invalid(
                "n > 1 is not supported by provider kind anthropic",
                "n",
            ));
        }
        if params.logprobs == Some(true) {
            return Err(invalid(
                "logprobs are not supported by provider kind anthropic",
                "logprobs",
            ));
        }
        if params.top_logprobs.is_some() {
            return Err(invalid(
                "top_logprobs is not supported by provider kind anthropic",
                "top_logprobs",
            ));
        }
        if params.logit_bias.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                "logit_bias is not supported by provider kind anthropic",
                "logit_bias",
            ));
        }
        for (key, _) in params.rest.iter() {
            let key = key.as_str();
            if key == "audio" || key == "modalities" {
                return Err(GatewayError::invalid(
                    format!("{key} is not supported by provider kind anthropic"),
                    None,
                ));
            }
            if !DROPPED_FIELDS.contains(&key) && !NATIVE_FIELDS.contains(&key) {
                return Err(GatewayError::invalid(
                    format!("parameter '{key}' is not supported by provider kind anthropic"),
                    None,
                ));
            }
        }

        let (system, turns) = build_messages(params)?;
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        let mut max_tokens = params.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
        if !system.is_empty() {
            body.insert("system".into(), Value::Array(system));
        }
        body.insert(
            "messages".into(),
            turns
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        );

        let budget = match (params.thinking_budget, params.reasoning_effort) {
            (Some(budget), _) => Some(budget),
            (None, Some(effort)) => thinking_budget(effort)?,
            (None, None) => None,
        };
        if let Some(budget) = budget {
            // The budget counts against max_tokens, as reasoning tokens count against OpenAI's
            // max_completion_tokens; it must leave room for an answer.
            if max_tokens <= budget {
                max_tokens = budget + DEFAULT_MAX_TOKENS;
            }
            body.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
        } else {
            if let Some(t) = params.temperature {
                if !(0.0..=1.0).contains(&t) {
                    return Err(invalid(
                        "temperature must be between 0 and 1 for provider kind anthropic",
                        "temperature",
                    ));
                }
                body.insert("temperature".into(), json!(t));
            }
            if let Some(p) = params.top_p {
                body.insert("top_p".into(), json!(p));
            }
            if let Some(k) = params.top_k {
                body.insert("top_k".into(), json!(k));
            }
        }
        body.insert("max_tokens".into(), json!(max_tokens));

        let stops: Vec<&str> = params
            .stop_sequences()?
            .into_iter()
            .filter(|s| !s.trim().is_empty())
            .collect();
        if !stops.is_empty() {
            body.insert("stop_sequences".into(), json!(stops));
        }

        let mut tools = Vec::new();
        for tool in params.tools.iter().flatten() {
            let Some(function) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
                return Err(invalid(
                    format!(
                        "tool type '{}' is not supported by provider kind anthropic",
                        tool.kind
                    ),
                    "tools",
                ));
            };
            let mut t = json!({
                "name": function.name,
                "input_schema": function.parameters.clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = &function.description {
                t["description"] = json!(d);
            }
            tools.push(t);
        }
        let mut choice = match &params.tool_choice {
            Some(c) if !tools.is_empty() => Some(tool_choice(c)?),
            _ => None,
        };
        if budget.is_some()
            && choice
                .as_ref()
                .is_some_and(|c| c["type"] == "any" || c["type"] == "tool")
        {
            return Err(invalid(
                "provider kind anthropic cannot force a tool call while reasoning_effort is set; use tool_choice auto or none",
                "tool_choice",
            ));
        }
        if let Some(schema) = match &params.response_format {
            Some(f) => response_schema(f)?,
            None => None,
        } {
            tools.push(json!({
                "name": JSON_TOOL,
                "description": "Respond with the final answer as JSON matching this schema.",
                "input_schema": schema,
            }));
            // Forcing a tool is not allowed while thinking; the model is then asked, not forced.
            choice = Some(if budget.is_some() {
                json!({"type": "auto"})
            } else {
                json!({"type": "tool", "name": JSON_TOOL})
            });
        }
        if params.parallel_tool_calls == Some(false) && !tools.is_empty() {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if c["type"] != "none" {
                c["disable_parallel_tool_use"] = json!(true);
            }
        }
        if !tools.is_empty() {
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(c) = choice {
            body.insert("tool_choice".into(), c);
        }

        if let Some(user) = params.user.filter(|u| !u.contains('@') && !u.is_empty()) {
            body.insert("metadata".into(), json!({"user_id": user}));
        }
        for key in NATIVE_FIELDS {
            if let Some(v) = params.rest.get(key) {
                body.insert(key.into(), v.clone());
            }
        }
        if params.stream {
            body.insert("stream".into(), json!(true));
        }
        Ok(Value::Object(body))
    }
}

impl ProviderAdapter for AnthropicAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn native_dialect(&self) -> Option<Dialect> {
        Some(Dialect::Anthropic)
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut headers = Vec::with_capacity(4 + target.extra_headers.len());
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        let body = match request {
            // The client's own bytes: thinking signatures, cache_control and newer fields
            // reach Anthropic exactly as sent.
            ClientRequest::Anthropic(raw) => {
                headers.push((
                    http::HeaderName::from_static("anthropic-version"),
                    raw.version
                        .clone()
                        .unwrap_or(HeaderValue::from_static(DEFAULT_VERSION)),
                ));
                if let Some(beta) = &raw.beta {
                    headers.push((
                        http::HeaderName::from_static("anthropic-beta"),
                        beta.clone(),
                    ));
                }
                raw.body_with_model(target.upstream_model)
            }
            _ => {
                let body = Self::request_body(&request.canonical()?, target.upstream_model)?;
                headers.push((
                    http::HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(DEFAULT_VERSION),
                ));
                Bytes::from(body.to_string())
            }
        };
        headers.extend(credential_headers(
            target,
            http::HeaderName::from_static("x-api-key"),
            |k| k.to_string(),
        )?);
        Ok(UpstreamRequest {
            path_and_query: format!("{}/v1/messages", target.endpoint.base_path),
            headers,
            body,
        })
    }

    fn decode_response(&self, body: Bytes, native: bool) -> Result<Answer, StreamFailure> {
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

    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let mut headers = vec![(
            http::HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(DEFAULT_VERSION),
        )];
        headers.extend(
            credential_headers(target, http::HeaderName::from_static("x-api-key"), |k| {
                k.to_string()
            })
            .ok()?,
        );
        Some(ProbeRequest {
            path_and_query: format!("{}/v1/models", target.endpoint.base_path),
            headers,
        })
    }

    fn stream_decoder(&self, native: bool, _settings: StreamSettings) -> StreamReader {
        if native {
            return StreamReader::Native(Box::new(SseFrame::new(AnthropicPassthrough::default())));
        }
        StreamReader::Events(Box::new(SseFrame::new(AnthropicStreamDecoder {
            blocks: Vec::new(),
            next_tool: 0,
            saw_tool: false,
            finish: None,
            usage: Usage::default(),
            wire: UsageWire::default(),
            saw_usage: false,
            stopped: false,
        })))
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        decode_anthropic_error(Some(provider), status, body, retry_after)
    }
}

/// The canonical stop reason for an Anthropic `stop_reason` (§5.8).
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
struct ErrorEnvelope {
    #[serde(default)]
    error: Option<ErrorWire>,
}

#[derive(Deserialize)]
struct ErrorWire {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Maps an Anthropic error (HTTP body or stream `error` event) to the client's error (§5.10).
pub fn decode_anthropic_error(
    provider: Option<&str>,
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
) -> GatewayError {
    let (kind, message) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error: Some(e) }) => (e.kind, e.message),
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            (None, (!text.is_empty()).then_some(text))
        }
    };
    // Overloaded (529, or the error event after a 200) is a server-side condition that OpenAI
    // clients retry; 529 itself is not a status they know.
    let status = match (status, kind.as_deref()) {
        (529, _) | (_, Some("overloaded_error")) => 503,
        (200, Some("rate_limit_error")) => 429,
        (200, Some("api_error")) | (200, None) => 500,
        (200, Some("invalid_request_error")) => 400,
        (s, _) => s,
    };
    let (openai_kind, code) = match kind.as_deref() {
        Some("rate_limit_error") => ("rate_limit_error", Some("rate_limit_exceeded")),
        Some("overloaded_error") => ("server_error", Some("overloaded")),
        Some("invalid_request_error") => ("invalid_request_error", None),
        Some("not_found_error") => ("invalid_request_error", Some("model_not_found")),
        Some("authentication_error") => ("authentication_error", Some("invalid_api_key")),
        Some("permission_error") => ("permission_error", None),
        Some("request_too_large") => ("invalid_request_error", Some("request_too_large")),
        Some("timeout_error") => ("timeout", None),
        _ => (super::openai_error_type(status), None),
    };
    let message = upstream_message(provider, status, message);
    GatewayError::Upstream {
        status,
        message,
        kind: openai_kind.to_string(),
        code: code.map(str::to_string).or(kind),
        param: None,
        retry_after,
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
struct UsageWire {
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
    /// Anthropic's input excludes cached tokens; OpenAI's prompt includes them (§5.9).
    fn to_usage(self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0)
                + cache_read
                + self.cache_creation_input_tokens.unwrap_or(0),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cache_read,
            reasoning_tokens: 0,
        }
    }

    /// Stream usage is cumulative: later values replace earlier ones, field by field.
    fn merge_into(self, usage: &mut UsageWire) {
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

/// What the stream decoder knows about each content block, by Anthropic's block index.
#[derive(Clone)]
enum OpenBlock {
    Text,
    Thinking,
    /// A tool call with its dense OpenAI tool index, and whether any argument text was sent.
    Tool(u32, bool),
    /// The `response_format` tool: its input is streamed as content.
    JsonAnswer,
    Other,
}

struct AnthropicStreamDecoder {
    blocks: Vec<OpenBlock>,
    next_tool: u32,
    saw_tool: bool,
    finish: Option<StopReason>,
    usage: Usage,
    /// Cumulative usage as Anthropic reports it, merged event by event.
    wire: UsageWire,
    saw_usage: bool,
    stopped: bool,
}

/// The parts of a stream event the decoder reads.
#[derive(Deserialize)]
struct EventWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    message: Option<StartMessageWire>,
    #[serde(default)]
    content_block: Option<BlockStartWire>,
    #[serde(default)]
    delta: Option<DeltaWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct StartMessageWire {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct BlockStartWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct DeltaWire {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

impl<'s> SseHandler<dyn EventSink + 's> for AnthropicStreamDecoder {
    fn event(
        &mut self,
        event: SseEvent,
        sink: &mut (dyn EventSink + 's),
    ) -> Result<(), StreamFailure> {
        self.handle(event, sink)
    }

    /// Anthropic closes every stream with `message_stop`; without it the answer was cut.
    fn end(&mut self, _sink: &mut (dyn EventSink + 's)) -> Result<(), StreamFailure> {
        if self.stopped {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then_some(self.usage)
    }
}

impl AnthropicStreamDecoder {
    fn handle(&mut self, event: SseEvent, sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        if self.stopped {
            return Ok(());
        }
        if event.event.as_deref() == Some("ping") || event.data.trim().is_empty() {
            return Ok(());
        }
        let in_stream_error = || {
            StreamFailure::Upstream(Box::new(decode_anthropic_error(
                None,
                200,
                event.data.as_bytes(),
                None,
            )))
        };
        let ev: EventWire = match serde_json::from_str(&event.data) {
            Ok(ev) => ev,
            Err(_) if event.event.as_deref() == Some("error") => return Err(in_stream_error()),
            Err(e) => return Err(StreamFailure::Malformed(format!("event is not JSON: {e}"))),
        };
        if ev.kind == "error" {
            return Err(in_stream_error());
        }
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = ev.message {
                    sink.emit(Event::Identity {
                        id: m.id.as_deref(),
                        model: m.model.as_deref(),
                    });
                    if let Some(u) = m.usage {
                        u.merge_into(&mut self.wire);
                        self.saw_usage = true;
                    }
                }
                sink.emit(Event::Start { choice: 0 });
            }
            "content_block_start" => {
                let index = ev.index.unwrap_or(self.blocks.len());
                let block = match ev.content_block {
                    Some(b) if b.kind == "tool_use" && b.name.as_deref() == Some(JSON_TOOL) => {
                        OpenBlock::JsonAnswer
                    }
                    Some(b) if b.kind == "tool_use" => {
                        let tool_index = self.next_tool;
                        self.next_tool += 1;
                        self.saw_tool = true;
                        sink.emit(Event::ToolCallStart {
                            choice: 0,
                            index: tool_index,
                            id: b.id.as_deref().unwrap_or(""),
                            name: b.name.as_deref().unwrap_or(""),
                            arguments: "",
                        });
                        OpenBlock::Tool(tool_index, false)
                    }
                    Some(b) if b.kind == "text" => {
                        if let Some(t) = b.text.filter(|t| !t.is_empty()) {
                            sink.emit(Event::Text {
                                choice: 0,
                                text: &t,
                            });
                        }
                        OpenBlock::Text
                    }
                    Some(b) if b.kind == "thinking" => OpenBlock::Thinking,
                    _ => OpenBlock::Other,
                };
                if self.blocks.len() <= index {
                    self.blocks.resize(index + 1, OpenBlock::Other);
                }
                self.blocks[index] = block;
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else { return Ok(()) };
                let block = ev
                    .index
                    .and_then(|i| self.blocks.get(i))
                    .cloned()
                    .unwrap_or(OpenBlock::Other);
                match (delta.kind.as_deref(), block) {
                    (Some("text_delta"), _) => {
                        if let Some(t) = delta.text.filter(|t| !t.is_empty()) {
                            sink.emit(Event::Text {
                                choice: 0,
                                text: &t,
                            });
                        }
                    }
                    (Some("thinking_delta"), _) => {
                        if let Some(t) = delta.thinking.filter(|t| !t.is_empty()) {
                            sink.emit(Event::Reasoning {
                                choice: 0,
                                text: &t,
                            });
                        }
                    }
                    (Some("signature_delta"), _) => {
                        if let Some(s) = delta.signature.filter(|s| !s.is_empty()) {
                            sink.emit(Event::ReasoningSignature {
                                choice: 0,
                                signature: &s,
                            });
                        }
                    }
                    (Some("input_json_delta"), OpenBlock::Tool(tool_index, _)) => {
                        if let Some(j) = delta.partial_json.filter(|j| !j.is_empty()) {
                            sink.emit(Event::ToolCallArguments {
                                choice: 0,
                                index: tool_index,
                                fragment: &j,
                            });
                            if let Some(i) = ev.index {
                                self.blocks[i] = OpenBlock::Tool(tool_index, true);
                            }
                        }
                    }
                    (Some("input_json_delta"), OpenBlock::JsonAnswer) => {
                        if let Some(j) = delta.partial_json.filter(|j| !j.is_empty()) {
                            sink.emit(Event::Text {
                                choice: 0,
                                text: &j,
                            });
                        }
                    }
                    // citations_delta and future kinds carry nothing canonical.
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A tool called without arguments streams none; clients parse the arguments
                // they accumulated, and "" is not JSON.
                if let Some(OpenBlock::Tool(tool_index, false)) =
                    ev.index.and_then(|i| self.blocks.get(i))
                {
                    sink.emit(Event::ToolCallArguments {
                        choice: 0,
                        index: *tool_index,
                        fragment: "{}",
                    });
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    u.merge_into(&mut self.wire);
                    self.saw_usage = true;
                }
                let stop = ev.delta.and_then(|d| d.stop_reason);
                self.finish = Some(match stop.as_deref() {
                    // The JSON-answer tool was the only "tool": the answer is plain content.
                    Some("tool_use") if !self.saw_tool => StopReason::EndTurn,
                    other => finish_reason(other, self.saw_tool),
                });
            }
            "message_stop" => {
                self.stopped = true;
                self.usage = self.wire.to_usage();
                sink.emit(Event::Finish {
                    choice: 0,
                    reason: self.finish.unwrap_or(if self.saw_tool {
                        StopReason::ToolUse
                    } else {
                        StopReason::EndTurn
                    }),
                });
                sink.emit(Event::End {
                    usage: Some(&self.usage),
                });
            }
            // ping and event types added later carry nothing to translate.
            _ => {}
        }
        if self.saw_usage {
            self.usage = self.wire.to_usage();
        }
        Ok(())
    }
}

/// An Anthropic stream for an Anthropic client: every event goes on as Anthropic framed it,
/// while usage, the closing `message_stop` and in-stream errors are watched. An error event is
/// not forwarded but reported, so that it can still fail over before the first byte, or end the
/// stream with the gateway's own error event (which names the provider) after it.
#[derive(Default)]
pub struct AnthropicPassthrough {
    wire: UsageWire,
    saw_usage: bool,
    stopped: bool,
}

/// What the relay reads of each event.
#[derive(Deserialize)]
struct RelayEventWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<StartMessageWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

impl SseHandler<Vec<u8>> for AnthropicPassthrough {
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        let name = event.event.as_deref();
        let error = || {
            StreamFailure::Upstream(Box::new(decode_anthropic_error(
                None,
                200,
                event.data.as_bytes(),
                None,
            )))
        };
        if name == Some("error") {
            return Err(error());
        }
        if let Ok(ev) = serde_json::from_str::<RelayEventWire>(&event.data) {
            let usage = match ev.kind.as_str() {
                "error" => return Err(error()),
                "message_start" => ev.message.and_then(|m| m.usage),
                "message_delta" => ev.usage,
                "message_stop" => {
                    self.stopped = true;
                    None
                }
                _ => None,
            };
            if let Some(u) = usage {
                u.merge_into(&mut self.wire);
                self.saw_usage = true;
            }
        }
        if let Some(name) = name {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(event.data.as_bytes());
        out.extend_from_slice(b"\n\n");
        Ok(())
    }

    /// Anthropic closes every stream with `message_stop`; without it the answer was cut.
    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.stopped {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then(|| self.wire.to_usage())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::dialect::openai::ChatRequest;
    use crate::providers::{client_answer, client_stream, Endpoint};

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/anthropic/", $name))
        };
    }

    fn request(body: &str) -> ChatRequest {
        ChatRequest::parse(body.as_bytes()).unwrap()
    }

    fn body_for(openai: Value) -> Result<Value, GatewayError> {
        AnthropicAdapter::request_body(
            &request(&openai.to_string()).canonical()?,
            "claude-sonnet-4-5",
        )
    }

    fn client_answer_openai(
        body: Bytes,
    ) -> Result<crate::providers::RenderedAnswer, StreamFailure> {
        client_answer(&AnthropicAdapter, body, Dialect::OpenAi)
    }

    #[allow(dead_code)]
    fn client_stream_openai(settings: StreamSettings) -> Box<dyn crate::providers::StreamDecoder> {
        client_stream(&AnthropicAdapter, Dialect::OpenAi, settings)
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    /// `created` is the wall clock; everything else must match byte for byte.
    fn normalise(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find("\"created\":") {
            out.push_str(&rest[..pos]);
            out.push_str("\"created\":0");
            rest = &rest[pos + 10..];
            rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out.push_str(rest);
        out
    }

    fn stream(
        input: &str,
        include_usage: bool,
        piece: usize,
    ) -> (Result<(), StreamFailure>, String, Option<Usage>) {
        let mut d = client_stream(
            &AnthropicAdapter,
            Dialect::OpenAi,
            StreamSettings { include_usage },
        );
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(piece) {
            if let Err(e) = d.push(c, &mut out) {
                return (Err(e), String::from_utf8(out).unwrap(), d.usage());
            }
        }
        let r = d.finish(&mut out);
        (r, normalise(&String::from_utf8(out).unwrap()), d.usage())
    }

    #[test]
    fn golden_request_multimodal_with_tools() {
        let req = request(fixture!("request_multimodal_tools.openai.json"));
        let ep =
            Endpoint::from_url(&url::Url::parse("https://api.anthropic.com").unwrap()).unwrap();
        let key = Secret::new("sk-ant");
        let out = AnthropicAdapter
            .build_request(
                &ClientRequest::OpenAi(req),
                &AttemptTarget {
                    upstream_model: "claude-sonnet-4-5",
                    endpoint: &ep,
                    api_key: Some(&key),
                    extra_headers: &[],
                },
            )
            .unwrap();
        assert_eq!(out.path_and_query, "/v1/messages");
        let header = |n: &str| {
            out.headers
                .iter()
                .find(|(h, _)| h == n)
                .map(|(_, v)| v.to_str().unwrap())
        };
        assert_eq!(header("x-api-key"), Some("sk-ant"));
        assert_eq!(header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(header("authorization"), None);
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            body,
            json(fixture!("request_multimodal_tools.anthropic.json"))
        );
    }

    #[test]
    fn golden_request_tool_history_merges_results_and_sanitises_ids() {
        let body = body_for(json(fixture!("request_tool_history.openai.json"))).unwrap();
        assert_eq!(body, json(fixture!("request_tool_history.anthropic.json")));
    }

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
    fn golden_streams_whatever_the_read_boundaries() {
        for (input, expected) in [
            (
                fixture!("stream_text.anthropic.sse"),
                fixture!("stream_text.openai.sse"),
            ),
            (
                fixture!("stream_tools.anthropic.sse"),
                fixture!("stream_tools.openai.sse"),
            ),
        ] {
            for piece in [1, 7, 64, 100_000] {
                let (r, out, _) = stream(input, true, piece);
                r.unwrap();
                assert_eq!(out, expected, "piece size {piece}");
            }
            let crlf = input.replace('\n', "\r\n");
            assert_eq!(stream(&crlf, true, 5).1, expected, "CRLF framing");
        }
    }

    #[test]
    fn stream_usage_takes_the_cumulative_message_delta_values() {
        // message_start says 0 input tokens; message_delta has the real figure (rig#2236).
        let (_, _, usage) = stream(fixture!("stream_tools.anthropic.sse"), false, 50);
        let u = usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (472, 89));
    }

    #[test]
    fn stream_without_message_stop_is_truncated() {
        let full = fixture!("stream_text.anthropic.sse");
        let cut = &full[..full.find("event: message_stop").unwrap()];
        assert!(matches!(
            stream(cut, true, 9).0,
            Err(StreamFailure::Truncated)
        ));
    }

    #[test]
    fn error_event_after_200_fails_the_stream_with_overloaded() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\nevent: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        match stream(input, false, 11).0 {
            Err(StreamFailure::Upstream(e)) => {
                assert_eq!(e.status(), 503);
                assert_eq!(e.to_string(), "Overloaded");
                assert_eq!(e.openai_code(), Some("overloaded"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_response_format_is_emulated_with_a_forced_tool() {
        let body = body_for(serde_json::json!({"model": "c", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}))
        .unwrap();
        assert_eq!(
            body["tool_choice"],
            serde_json::json!({"type": "tool", "name": JSON_TOOL})
        );
        assert_eq!(
            body["tools"][0]["input_schema"]["properties"]["a"]["type"],
            "integer"
        );

        let answer = r#"{"id":"m","model":"c","content":[{"type":"tool_use","id":"t","name":"switchyard_json_response","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let decoded = client_answer_openai(Bytes::from(answer)).unwrap();
        let v: Value = serde_json::from_slice(&decoded.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());

        let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
                 data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"switchyard_json_response\",\"input\":{}}}\n\n\
                 data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n\
                 data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n\
                 data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\n\
                 data: {\"type\":\"message_stop\"}\n\n";
        let (r, out, _) = stream(s, false, 13);
        r.unwrap();
        assert!(out.contains(r#""delta":{"content":"{\"a\":"}"#), "{out}");
        assert!(out.contains(r#""finish_reason":"stop""#), "{out}");
        assert!(!out.contains("tool_calls"), "{out}");
    }

    #[test]
    fn refuses_what_anthropic_cannot_honour() {
        let base = |extra: Value| {
            let mut v =
                serde_json::json!({"model": "c", "messages": [{"role": "user", "content": "x"}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            body_for(v)
        };
        for (extra, param) in [
            (serde_json::json!({"n": 2}), Some("n")),
            (serde_json::json!({"logprobs": true}), Some("logprobs")),
            (
                serde_json::json!({"logit_bias": {"1": 5}}),
                Some("logit_bias"),
            ),
            (serde_json::json!({"temperature": 1.5}), Some("temperature")),
            (serde_json::json!({"some_unknown": 1}), None),
        ] {
            let err = base(extra.clone()).unwrap_err();
            assert_eq!(err.status(), 400, "{extra}");
            assert_eq!(err.param(), param, "{extra}");
        }
        // Harmless ones are dropped.
        let ok =
            base(serde_json::json!({"seed": 1, "presence_penalty": 0.5, "store": true, "n": 1}))
                .unwrap();
        assert!(ok.get("seed").is_none() && ok.get("store").is_none());
    }

    #[test]
    fn tool_message_must_answer_a_preceding_call() {
        let err = body_for(serde_json::json!({"model": "c", "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_9", "content": "r"}]}))
        .unwrap_err();
        assert_eq!(err.param(), Some("messages"));
        assert!(err.to_string().contains("call_9"));
    }

    #[test]
    fn bad_arguments_and_media_are_refused_cleanly() {
        let with_args = |args: &str| {
            body_for(serde_json::json!({"model": "c", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": args}}]},
                {"role": "tool", "tool_call_id": "a", "content": "r"}]}))
        };
        assert_eq!(
            with_args("{}").unwrap()["messages"][1]["content"][0]["input"],
            serde_json::json!({})
        );
        assert!(with_args("{not json").is_err());
        assert!(with_args("[1]").is_err());
        let image = |url: &str| {
            body_for(
                serde_json::json!({"model": "c", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}]}),
            )
        };
        let webp = image("data:image/webp;charset=utf-8;base64,AAAA").unwrap();
        assert_eq!(
            webp["messages"][0]["content"][0]["source"]["media_type"],
            "image/webp"
        );
        let pdf = image("data:application/pdf;base64,JVBERi0=").unwrap();
        assert_eq!(pdf["messages"][0]["content"][0]["type"], "document");
        assert_eq!(
            image("data:image/bmp;base64,Qk0=").unwrap_err().status(),
            400
        );
    }

    #[test]
    fn reasoning_effort_turns_on_thinking_and_drops_sampling() {
        let body = body_for(
            serde_json::json!({"model": "c", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "medium", "temperature": 0.3, "max_completion_tokens": 1000}),
        )
        .unwrap();
        assert_eq!(
            body["thinking"],
            serde_json::json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert!(body.get("temperature").is_none());
        assert!(body["max_tokens"].as_u64().unwrap() > 2048);
        let thinking = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
            data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
            data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n\
            data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n\
            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n\
            data: {\"type\":\"message_stop\"}\n\n";
        let (r, out, _) = stream(thinking, false, 17);
        r.unwrap();
        assert!(
            out.contains(r#""reasoning_content":"Let me think""#),
            "{out}"
        );
        assert!(!out.contains("abc"));
    }

    #[test]
    fn errors_map_per_status_and_type() {
        let e = decode_anthropic_error(
            Some("anthropic"),
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            None,
        );
        assert_eq!((e.status(), e.openai_type()), (503, "server_error"));
        let e = decode_anthropic_error(
            Some("anthropic"),
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
            Some("12".into()),
        );
        assert_eq!(
            (e.status(), e.openai_code(), e.retry_after()),
            (429, Some("rate_limit_exceeded"), Some("12"))
        );
        assert_eq!(e.to_string(), "anthropic: slow down");
        let e = decode_anthropic_error(Some("anthropic"), 400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#, None);
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("prompt is too long"));
        let e = decode_anthropic_error(Some("anthropic"), 401, br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key sk-ant-123"}}"#, None);
        assert!(!e.to_string().contains("sk-ant"));
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

    #[test]
    fn tool_without_arguments_streams_an_empty_object() {
        let s = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
                 data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"now\",\"input\":{}}}\n\n\
                 data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
                 data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
                 data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\n\
                 data: {\"type\":\"message_stop\"}\n\n";
        let (r, out, _) = stream(s, false, 10);
        r.unwrap();
        let args: String = out
            .split("\n\n")
            .filter(|e| e.starts_with("data: {"))
            .filter_map(|e| serde_json::from_str::<Value>(&e[6..]).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(args, "{}");
    }

    #[test]
    fn thinking_cannot_force_tools_and_emails_stay_private() {
        let err = body_for(
            serde_json::json!({"model": "c", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "high", "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "f"}}]}),
        )
        .unwrap_err();
        assert_eq!(err.param(), Some("tool_choice"));
        let body = body_for(serde_json::json!({"model": "c", "user": "jane@example.com",
            "messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "late rule"},
                         {"role": "assistant", "content": "ok"}]}))
        .unwrap();
        assert!(body.get("metadata").is_none());
        // A system message in the middle of the conversation joins the system blocks.
        assert_eq!(
            body["system"],
            serde_json::json!([{"type": "text", "text": "late rule"}])
        );
        assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    }
}
