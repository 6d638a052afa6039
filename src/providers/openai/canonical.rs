//! OpenAI Chat Completions for clients of another dialect: the canonical request as an OpenAI
//! body, and OpenAI answers and chunks as canonical ones (docs/translation.md §5.6, §5.7).
//!
//! Decisions:
//! - `max_tokens` goes as `max_completion_tokens` to OpenAI and Azure, as `max_tokens` to
//!   compatible hosts (most do not know the newer name); `top_k` only to compatible hosts.
//! - A thinking budget becomes `reasoning_effort` (≤ 2048 low, ≤ 8192 medium, else high) for
//!   compatible hosts and for OpenAI's reasoning models (`o1`, `o3`, `o4`, `gpt-5` families);
//!   other OpenAI models reject the field, so there it is left out.
//! - Thinking blocks of earlier turns are not sent (only their vendor can read them).
//! - Fields with no OpenAI meaning are refused by name.
//! - `reasoning_content` (and `reasoning`, as some hosts name it) comes back as reasoning.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{decode_openai_error, nine_char_id, Quirks};
use crate::accounting::{OpenAiUsageWire, Usage};
use crate::chat::{
    self, now_unix, Content, ContentPart, Event, EventSink, StopReason, ToolCallOut,
};
use crate::config::ProviderKind;
use crate::error::GatewayError;
use crate::providers::convert::unsupported_role;
use crate::providers::sse::SseEvent;
use crate::providers::stream::SseHandler;
use crate::providers::StreamFailure;

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> GatewayError {
    GatewayError::invalid(message, param)
}

/// OpenAI models that take `reasoning_effort`.
fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5"].iter().any(|p| m.starts_with(p))
}

fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=2048 => "low",
        2049..=8192 => "medium",
        _ => "high",
    }
}

fn user_content(content: &Content<'_>) -> Result<Value, GatewayError> {
    let parts = match content {
        Content::Text(t) => return Ok(json!(t)),
        Content::Parts(parts) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        out.push(match part {
            ContentPart::Text { text, .. } | ContentPart::Refusal { refusal: text } => {
                json!({"type": "text", "text": text})
            }
            ContentPart::ImageUrl { image_url } => {
                let mut image = json!({"url": image_url.url});
                if let Some(detail) = &image_url.detail {
                    image["detail"] = json!(detail);
                }
                json!({"type": "image_url", "image_url": image})
            }
            ContentPart::InputAudio { input_audio } => {
                json!({"type": "input_audio", "input_audio": input_audio})
            }
            ContentPart::File { file } => {
                let mut f = Map::new();
                if let Some(name) = &file.filename {
                    f.insert("filename".into(), json!(name));
                }
                if let Some(data) = &file.file_data {
                    f.insert("file_data".into(), json!(data));
                }
                if let Some(id) = &file.file_id {
                    f.insert("file_id".into(), json!(id));
                }
                json!({"type": "file", "file": f})
            }
            ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => continue,
        });
    }
    Ok(Value::Array(out))
}

/// The OpenAI body for a canonical request.
pub fn request_body(
    req: &chat::Request<'_>,
    model: &str,
    kind: ProviderKind,
    quirks: Quirks,
) -> Result<Vec<u8>, GatewayError> {
    if let Some(key) = req.rest.keys().next() {
        return Err(invalid(
            format!("parameter '{key}' is not supported by provider kind {kind}"),
            None,
        ));
    }
    let id = |id: &str| {
        if quirks.nine_char_tool_ids {
            nine_char_id(id)
        } else {
            id.to_string()
        }
    };
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let message = match &*m.role {
            "system" | "developer" => {
                let role = if m.role == "developer" && !quirks.developer_as_system {
                    "developer"
                } else {
                    "system"
                };
                json!({"role": role, "content": m.text()})
            }
            "user" => json!({"role": "user", "content": match &m.content {
                Some(c) => user_content(c)?,
                None => json!(""),
            }}),
            "assistant" => {
                let text = m.text();
                let mut message = json!({"role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
                    message["tool_calls"] = calls
                        .iter()
                        .map(|c| {
                            json!({"id": id(&c.id), "type": "function",
                                   "function": {"name": c.function.name, "arguments": c.function.arguments}})
                        })
                        .collect();
                }
                message
            }
            "tool" => json!({
                "role": "tool",
                "tool_call_id": id(m.tool_call_id.as_deref().unwrap_or("")),
                "content": m.text(),
            }),
            other => return Err(unsupported_role(other)),
        };
        messages.push(message);
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        let mut out = Vec::with_capacity(tools.len());
        for tool in tools {
            let Some(f) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
                return Err(invalid(
                    format!(
                        "tool type '{}' is not supported by provider kind {kind}",
                        tool.kind
                    ),
                    Some("tools"),
                ));
            };
            let mut function = json!({"name": f.name});
            if let Some(d) = &f.description {
                function["description"] = json!(d);
            }
            if let Some(p) = &f.parameters {
                function["parameters"] = p.clone();
            }
            if let Some(strict) = f.strict {
                function["strict"] = json!(strict);
            }
            out.push(json!({"type": "function", "function": function}));
        }
        body.insert("tools".into(), Value::Array(out));
        if let Some(choice) = &req.tool_choice {
            body.insert("tool_choice".into(), choice.clone());
        }
        if let Some(parallel) = req.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), json!(parallel));
        }
    }
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            body.insert(key.into(), v);
        }
    };
    set("response_format", req.response_format.clone());
    set("stop", req.stop.clone());
    let compatible = kind == ProviderKind::OpenAiCompatible;
    let max_key = if compatible || quirks.legacy_max_tokens {
        "max_tokens"
    } else {
        "max_completion_tokens"
    };
    set(max_key, req.max_output_tokens().map(Value::from));
    set("temperature", req.temperature.map(Value::from));
    set("top_p", req.top_p.map(Value::from));
    if compatible {
        set("top_k", req.top_k.map(Value::from));
    }
    set("n", req.n.map(Value::from));
    set("seed", req.seed.map(Value::from));
    set("logprobs", req.logprobs.map(Value::from));
    set("top_logprobs", req.top_logprobs.map(Value::from));
    set("presence_penalty", req.presence_penalty.map(Value::from));
    set("frequency_penalty", req.frequency_penalty.map(Value::from));
    set("logit_bias", req.logit_bias.clone());
    set("user", req.user.as_deref().map(Value::from));
    set(
        "safety_identifier",
        req.safety_identifier.as_deref().map(Value::from),
    );
    let effort = req
        .thinking_budget
        .map(effort_for_budget)
        .or(req.reasoning_effort.as_deref());
    if compatible || is_reasoning_model(model) {
        set("reasoning_effort", effort.map(Value::from));
    }
    if req.stream {
        set("stream", Some(json!(true)));
        set("stream_options", Some(json!({"include_usage": true})));
    }
    serde_json::to_vec(&Value::Object(body))
        .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))
}

#[derive(Deserialize)]
struct CompletionWire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Option<Vec<ChoiceWire>>,
    #[serde(default)]
    usage: Option<OpenAiUsageWire>,
}

#[derive(Deserialize)]
struct ChoiceWire {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    message: Option<MessageWire>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageWire {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallWire>>,
}

#[derive(Deserialize)]
struct ToolCallWire {
    #[serde(default)]
    id: String,
    #[serde(default)]
    function: FunctionWire,
}

#[derive(Deserialize, Default)]
struct FunctionWire {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

/// A `chat.completion` as a canonical answer.
pub fn decode_response(body: &[u8]) -> Result<chat::Response, StreamFailure> {
    let wire: CompletionWire = serde_json::from_slice(body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not JSON: {e}")))?;
    let Some(mut choices) = wire.choices else {
        return Err(StreamFailure::Malformed("answer has no choices".into()));
    };
    choices.sort_by_key(|c| c.index.unwrap_or(0));
    let choices = choices
        .into_iter()
        .map(|c| {
            let message = c.message.unwrap_or(MessageWire {
                content: None,
                reasoning_content: None,
                reasoning: None,
                refusal: None,
                tool_calls: None,
            });
            let tool_calls: Vec<ToolCallOut> = message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(|t| ToolCallOut {
                    id: t.id,
                    name: t.function.name,
                    arguments: t.function.arguments,
                })
                .collect();
            chat::Choice {
                finish_reason: StopReason::from_openai(
                    c.finish_reason.as_deref(),
                    !tool_calls.is_empty(),
                ),
                content: message.content.or(message.refusal),
                reasoning: message.reasoning_content.or(message.reasoning),
                reasoning_signature: None,
                tool_calls,
            }
        })
        .collect();
    Ok(chat::Response {
        id: wire.id,
        created: wire.created.unwrap_or_else(now_unix),
        model: wire.model,
        choices,
        usage: wire.usage.map(Usage::from).unwrap_or_default(),
    })
}

#[derive(Deserialize)]
struct ChunkWire<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Vec<ChunkChoiceWire<'a>>,
    #[serde(default)]
    usage: Option<OpenAiUsageWire>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoiceWire<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: Option<DeltaWire<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaWire<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<ToolDeltaWire<'a>>,
}

#[derive(Deserialize)]
struct ToolDeltaWire<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDeltaWire<'a>>,
}

#[derive(Deserialize)]
struct FunctionDeltaWire<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// Per-choice stream state.
#[derive(Default, Clone)]
struct ChoiceState {
    started: bool,
    finished: bool,
    /// Call ids in order: a call's position is its dense index.
    calls: Vec<String>,
    /// The call that fragments without an id belong to.
    current_call: Option<u32>,
}

/// An OpenAI-format stream (OpenAI, Azure, compatible hosts, the mock) as canonical events.
#[derive(Default)]
pub struct StreamDecoder {
    identified: bool,
    choices: Vec<ChoiceState>,
    usage: Option<Usage>,
    done: bool,
}

/// The most choices a stream may name (OpenAI's `n` limit is 128).
const MAX_CHOICES: usize = 128;

impl StreamDecoder {
    fn choice(&mut self, index: u32) -> Result<&mut ChoiceState, StreamFailure> {
        let slot = index as usize;
        if slot >= MAX_CHOICES {
            return Err(StreamFailure::Malformed(format!(
                "choice index {index} is out of range"
            )));
        }
        if self.choices.len() <= slot {
            self.choices.resize(slot + 1, ChoiceState::default());
        }
        Ok(&mut self.choices[slot])
    }
}

impl<'s> SseHandler<dyn EventSink + 's> for StreamDecoder {
    fn event(
        &mut self,
        event: SseEvent,
        sink: &mut (dyn EventSink + 's),
    ) -> Result<(), StreamFailure> {
        if self.done {
            return Ok(());
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            for (i, c) in self.choices.iter().enumerate() {
                if c.started && !c.finished {
                    sink.emit(Event::Finish {
                        choice: i as u32,
                        reason: StopReason::from_openai(None, !c.calls.is_empty()),
                    });
                }
            }
            sink.emit(Event::End {
                usage: self.usage.as_ref(),
            });
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: ChunkWire = serde_json::from_str(data)
            .map_err(|e| StreamFailure::Malformed(format!("chunk is not JSON: {e}")))?;
        if chunk.error.is_some() || event.event.as_deref() == Some("error") {
            let body = match &chunk.error {
                Some(error) => serde_json::to_vec(&json!({ "error": error })).unwrap_or_default(),
                None => data.as_bytes().to_vec(),
            };
            return Err(StreamFailure::Upstream(Box::new(decode_openai_error(
                None, 500, &body, None,
            ))));
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(Usage::from(u));
        }
        // Azure opens with a choice-less chunk with empty id and model: it names nothing.
        let id = chunk.id.as_deref().filter(|s| !s.is_empty());
        let model = chunk.model.as_deref().filter(|s| !s.is_empty());
        if !self.identified && (id.is_some() || model.is_some()) {
            self.identified = true;
            sink.emit(Event::Identity { id, model });
        }
        for c in &chunk.choices {
            let index = c.index;
            let state = self.choice(index)?;
            if !state.started {
                state.started = true;
                sink.emit(Event::Start { choice: index });
            }
            if let Some(delta) = &c.delta {
                if let Some(t) = delta
                    .reasoning_content
                    .as_deref()
                    .or(delta.reasoning.as_deref())
                {
                    if !t.is_empty() {
                        sink.emit(Event::Reasoning {
                            choice: index,
                            text: t,
                        });
                    }
                }
                if let Some(t) = delta.content.as_deref().or(delta.refusal.as_deref()) {
                    if !t.is_empty() {
                        sink.emit(Event::Text {
                            choice: index,
                            text: t,
                        });
                    }
                }
                for call in &delta.tool_calls {
                    let function = call.function.as_ref();
                    let arguments = function.and_then(|f| f.arguments.as_deref()).unwrap_or("");
                    let known = call
                        .id
                        .as_deref()
                        .and_then(|id| state.calls.iter().position(|c| c == id));
                    match (call.id.as_deref(), known) {
                        (Some(id), None) if !id.is_empty() => {
                            let dense = state.calls.len() as u32;
                            state.calls.push(id.to_string());
                            state.current_call = Some(dense);
                            sink.emit(Event::ToolCallStart {
                                choice: index,
                                index: dense,
                                id,
                                name: function.and_then(|f| f.name.as_deref()).unwrap_or(""),
                                arguments,
                            });
                        }
                        _ => {
                            // A fragment: of the call with its id, else the current one
                            // (Ollama repeats or omits `index`), else by `index`.
                            let dense = known
                                .map(|k| k as u32)
                                .or(state.current_call)
                                .or(call.index)
                                .unwrap_or(0);
                            if !arguments.is_empty() {
                                sink.emit(Event::ToolCallArguments {
                                    choice: index,
                                    index: dense,
                                    fragment: arguments,
                                });
                            }
                        }
                    }
                }
            }
            if let Some(reason) = c.finish_reason.as_deref() {
                let state = self.choice(index)?;
                state.finished = true;
                let has_calls = !state.calls.is_empty();
                sink.emit(Event::Finish {
                    choice: index,
                    reason: StopReason::from_openai(Some(reason), has_calls),
                });
            }
        }
        Ok(())
    }

    fn end(&mut self, _sink: &mut (dyn EventSink + 's)) -> Result<(), StreamFailure> {
        if self.done {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::anthropic::MessagesRequest;
    use crate::providers::stream::SseFrame;
    use crate::providers::EventDecoder;

    fn anthropic(body: Value) -> MessagesRequest {
        MessagesRequest::parse(
            crate::providers::convert::json_bytes(&body),
            &http::HeaderMap::new(),
        )
        .unwrap()
    }

    fn openai_body(req: &MessagesRequest, model: &str, kind: ProviderKind) -> Value {
        let canonical = req.canonical().unwrap();
        serde_json::from_slice(&request_body(&canonical, model, kind, Quirks::default()).unwrap())
            .unwrap()
    }

    #[test]
    fn anthropic_request_becomes_openai_body() {
        let req = anthropic(json!({
            "model": "m", "max_tokens": 300, "stream": true, "system": "Be terse.",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]}],
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 4000},
            "temperature": 0.5, "top_k": 3, "metadata": {"user_id": "u"}, "stop_sequences": ["X"]
        }));
        let body = openai_body(&req, "gpt-4o", ProviderKind::OpenAi);
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}],
                "tool_choice": "auto", "parallel_tool_calls": false,
                "stop": ["X"], "max_completion_tokens": 300, "temperature": 0.5, "user": "u",
                "stream": true, "stream_options": {"include_usage": true}
            })
        );
        // Compatible hosts get max_tokens, top_k and the effort.
        let compat = openai_body(&req, "llama", ProviderKind::OpenAiCompatible);
        assert_eq!(compat["max_tokens"], 300);
        assert_eq!(compat["top_k"], 3);
        assert_eq!(compat["reasoning_effort"], "medium");
        assert_eq!(
            openai_body(&req, "o3-mini", ProviderKind::OpenAi)["reasoning_effort"],
            "medium"
        );
    }

    #[test]
    fn unknown_fields_and_server_tools_are_refused_by_name() {
        let req = anthropic(json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}], "mcp_servers": []}));
        let err = request_body(
            &req.canonical().unwrap(),
            "m",
            ProviderKind::OpenAi,
            Quirks::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("'mcp_servers'"), "{err}");
        let req = anthropic(json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}));
        let err = request_body(
            &req.canonical().unwrap(),
            "m",
            ProviderKind::OpenAi,
            Quirks::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("web_search_20250305"), "{err}");
    }

    #[test]
    fn response_with_tool_calls_and_reasoning() {
        let r = decode_response(br#"{"id":"c1","created":5,"model":"gpt","choices":[{"index":0,
            "message":{"role":"assistant","content":null,"reasoning_content":"hm","tool_calls":[
            {"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":7,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}}"#)
        .unwrap();
        assert_eq!(r.choices[0].finish_reason, StopReason::ToolUse);
        assert_eq!(r.choices[0].reasoning.as_deref(), Some("hm"));
        assert_eq!(r.choices[0].tool_calls[0].name, "f");
        assert_eq!(r.usage.cached_tokens, 3);
        assert!(decode_response(b"{}").is_err());
    }

    fn stream(chunks: &[&str]) -> (Result<(), StreamFailure>, Vec<String>) {
        let mut d = SseFrame::new(StreamDecoder::default());
        let mut events: Vec<String> = Vec::new();
        for c in chunks {
            if let Err(e) = d.push(c.as_bytes(), &mut events) {
                return (Err(e), events);
            }
        }
        (d.finish(&mut events), events)
    }

    #[test]
    fn stream_splits_combined_chunks_and_numbers_tools_by_id() {
        let (r, events) = stream(&[
            "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            // Ollama: a second call, again at index 0, with its own id.
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"x\\\":1}\"}}]},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\n",
            "data: [DONE]\n\n",
        ]);
        r.unwrap();
        assert_eq!(
            events,
            vec![
                "Identity { id: Some(\"c\"), model: Some(\"gpt\") }",
                "Start { choice: 0 }",
                "Text { choice: 0, text: \"Hi\" }",
                "ToolCallStart { choice: 0, index: 0, id: \"a\", name: \"f\", arguments: \"\" }",
                "ToolCallArguments { choice: 0, index: 0, fragment: \"{}\" }",
                "ToolCallStart { choice: 0, index: 1, id: \"b\", name: \"g\", arguments: \"{\\\"x\\\":1}\" }",
                "Finish { choice: 0, reason: ToolUse }",
                "End { usage: Some(Usage { prompt_tokens: 4, completion_tokens: 3, cached_tokens: 0, reasoning_tokens: 0, cache_write_tokens: 0 }) }",
            ]
        );
    }

    #[test]
    fn stream_errors_and_truncation() {
        let (r, _) =
            stream(&["data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n"]);
        assert!(matches!(r, Err(StreamFailure::Upstream(_))));
        let (r, _) = stream(&[
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n",
        ]);
        assert!(matches!(r, Err(StreamFailure::Truncated)));
        let (r, _) = stream(&["data: {\"choices\":[{\"index\":999,\"delta\":{}}]}\n\n"]);
        assert!(matches!(r, Err(StreamFailure::Malformed(_))));
    }
}
