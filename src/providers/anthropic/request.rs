//! Canonical request → Anthropic Messages request (docs/translation.md §5.1).

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::{
    invalid, AnthropicAdapter, DEFAULT_MAX_TOKENS, DROPPED_FIELDS, IMAGE_TYPES, JSON_TOOL,
    NATIVE_FIELDS,
};
use crate::chat::{self, parse_data_url, Content, ContentPart};
use crate::error::GatewayError;
use crate::providers::convert::{
    answered_call, push_tool_result, push_turn, require_turns, tool_arguments, tool_call_text,
    tool_result_text, unsupported_role, Turn,
};

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
                        blocks.push(json!({"type": "text", "text": text}));
                    }
                    ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => {
                        return Err(invalid(
                            "thinking blocks belong to assistant messages",
                            "messages",
                        ))
                    }
                    ContentPart::Refusal { refusal } => {
                        blocks.push(json!({"type": "text", "text": refusal}));
                    }
                    ContentPart::ImageUrl { image_url } => {
                        blocks.push(media_block(&image_url.url)?);
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
    // Anthropic refuses tool_use/tool_result blocks in a request that defines no tools; the
    // history's calls and results then go as text. (With tools and `tool_choice: "none"` the
    // blocks stay: Anthropic has a "none" choice.)
    let declares_tools = params.tools.as_ref().is_some_and(|t| !t.is_empty());
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    // Tool-call ids of the latest assistant turn that still await their results.
    let mut open_calls: HashSet<String> = HashSet::new();
    for message in &params.messages {
        match &*message.role {
            "system" | "developer" => match &message.content {
                // Text parts stay separate blocks, so their cache breakpoints stay in place.
                Some(content @ Content::Parts(_)) => system.extend(user_blocks(content)?),
                Some(Content::Text(text)) if !text.is_empty() => {
                    system.push(json!({"type": "text", "text": text}));
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
                    blocks.push(if declares_tools {
                        json!({"type": "tool_use", "id": id,
                               "name": call.function.name, "input": input})
                    } else {
                        let text =
                            tool_call_text(&id, &call.function.name, &call.function.arguments);
                        json!({"type": "text", "text": text})
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
                let content = message.text();
                if declares_tools {
                    let block =
                        json!({"type": "tool_result", "tool_use_id": id, "content": content});
                    push_tool_result(&mut turns, block, |b| b["type"] == "tool_result");
                } else {
                    let text = tool_result_text(&id, &content);
                    push_turn(
                        &mut turns,
                        "user",
                        vec![json!({"type": "text", "text": text})],
                    );
                }
            }
            other => return Err(unsupported_role(other)),
        }
    }
    require_turns(&turns)?;
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
        for (key, _) in &params.rest {
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

        let budget = match (params.thinking_budget, params.reasoning_effort.as_deref()) {
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

        if let Some(user) = params
            .user
            .as_deref()
            .filter(|u| !u.contains('@') && !u.is_empty())
        {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::config::Secret;
    use crate::dialect::ClientRequest;
    use crate::providers::{AttemptTarget, Endpoint, ProviderAdapter};

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

    /// Anthropic refuses tool blocks in a request that defines no tools ("Requests which
    /// include tool_use or tool_result blocks must define tools"): the history goes as text.
    #[test]
    fn tool_history_without_tools_goes_as_text() {
        let mut request = json(fixture!("request_tool_history.openai.json"));
        request.as_object_mut().unwrap().remove("tools");
        let body = body_for(request).unwrap();
        assert!(body.get("tools").is_none());
        let text = body["messages"].to_string();
        assert!(
            !text.contains("tool_use") && !text.contains("tool_result"),
            "{text}"
        );
        assert_eq!(
            body["messages"][1]["content"],
            serde_json::json!([
                {"type": "text", "text": "[tool call call_a1: get_weather({\"city\":\"Paris\"})]"},
                {"type": "text", "text": "[tool call functions_get_weather_1: get_weather({})]"}
            ])
        );
        assert_eq!(
            body["messages"][2]["content"][0]["text"],
            "[tool result call_a1: {\"temp_c\":18}]"
        );
        // With tools and tool_choice "none", the blocks stay: Anthropic has a "none" choice.
        let mut none = json(fixture!("request_tool_history.openai.json"));
        none["tool_choice"] = serde_json::json!("none");
        let body = body_for(none).unwrap();
        assert_eq!(body["tool_choice"]["type"], "none");
        assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
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
                {"role": "tool", "tool_call_id": "a", "content": "r"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]}))
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
