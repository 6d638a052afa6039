//! OpenAI and OpenAI-compatible hosts (vLLM, Ollama, Groq, Mistral, DeepSeek, Together, ...).
//!
//! The client already speaks this format, so requests pass through with only `model` and
//! `stream_options` rewritten, and answers pass through byte for byte, except that:
//! - the gateway always asks for stream usage (to count tokens) and drops the usage chunk again
//!   when the client did not ask for it;
//! - chunks with empty `choices` and no usage (Azure's content-filter preamble) are skipped;
//! - tool-call deltas get dense indexes by call id (Ollama omits or repeats `index`), and a
//!   `finish_reason: "stop"` on an answer with tool calls becomes `"tool_calls"` (OpenAI itself
//!   says `stop` when `tool_choice` names a function; clients key on `tool_calls`).
//!
//! [`Quirks`] covers request-side deviations of OpenAI-compatible hosts: `developer` → `system`
//! (most hosts reject `developer`), and for Mistral 9-character alphanumeric tool-call ids and
//! `max_tokens` instead of `max_completion_tokens`.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderValue;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod canonical;

use super::convert::upstream_message;
use super::sse::SseEvent;
use super::stream::{SseFrame, SseHandler};
use super::{
    openai_error_type, push_credentials, Answer, AttemptTarget, KeyScheme, ProbeRequest,
    ProviderAdapter, RenderedAnswer, StreamDecoder, StreamFailure, StreamReader, StreamSettings,
    UpstreamRequest,
};
use crate::accounting::{with_usage_cost, OpenAiUsageWire, Usage};
use crate::config::ProviderKind;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::openai::{ChatRequest, MessagesSummary};
use crate::dialect::raw_object::write_key;
use crate::dialect::{ClientRequest, Dialect};
use crate::error::GatewayError;

pub struct OpenAiAdapter {
    kind: ProviderKind,
    quirks: Quirks,
}

/// Request rewrites some OpenAI-compatible hosts need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Send `developer` messages as `system`.
    pub developer_as_system: bool,
    /// Tool-call ids must be exactly 9 characters of `[a-zA-Z0-9]` (Mistral).
    pub nine_char_tool_ids: bool,
    /// The host knows `max_tokens` but rejects `max_completion_tokens` (Mistral).
    pub legacy_max_tokens: bool,
}

impl Quirks {
    /// The quirks of a host, known by kind and hostname.
    pub fn for_host(kind: ProviderKind, host: &str) -> Quirks {
        if kind != ProviderKind::OpenAiCompatible {
            return Quirks::default();
        }
        let mistral = host == "api.mistral.ai" || host.ends_with(".mistral.ai");
        Quirks {
            developer_as_system: true,
            nine_char_tool_ids: mistral,
            legacy_max_tokens: mistral,
        }
    }
}

/// A deterministic 9-character alphanumeric id for `id` (FNV-1a, base 62), so that a tool call
/// and its result map to the same id in every request of a conversation.
pub fn nine_char_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_string();
    }
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (0..9)
        .map(|_| {
            let c = ALPHABET[(hash % 62) as usize] as char;
            hash /= 62;
            c
        })
        .collect()
}

impl OpenAiAdapter {
    pub fn new(kind: ProviderKind) -> Self {
        Self::with_quirks(kind, Quirks::default())
    }

    pub fn with_quirks(kind: ProviderKind, quirks: Quirks) -> Self {
        OpenAiAdapter { kind, quirks }
    }

    /// The upstream JSON body: the client's fields with the target's `model`, usage requested for
    /// streams, and this host's quirks applied. Without a quirk to apply, the client's fields are
    /// copied as its bytes.
    pub fn request_body(
        &self,
        request: &ChatRequest,
        model: &str,
    ) -> Result<Vec<u8>, GatewayError> {
        let messages = request.messages_summary()?;
        if !needs_quirks(request, messages, self.quirks) {
            return Ok(spliced_body(request, model));
        }
        let rest = apply_quirks(request.rest(), self.quirks);
        let body = OutgoingBody {
            model,
            rest: &rest,
            stream: request.stream,
            stream_options: request.stream.then_some(OutgoingStreamOptions {
                include_usage: true,
                rest: &request.stream_options_rest,
            }),
        };
        serde_json::to_vec(&body)
            .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))
    }

    /// The upstream body for any client: the OpenAI client's own fields, or the canonical
    /// request of another dialect in OpenAI's shape.
    pub fn body_for(&self, request: &ClientRequest, model: &str) -> Result<Vec<u8>, GatewayError> {
        match request {
            ClientRequest::OpenAi(raw) => self.request_body(raw, model),
            _ => canonical::request_body(&request.canonical()?, model, self.kind, self.quirks),
        }
    }

    /// `Content-Type` and `Accept` for a request.
    pub fn content_headers(stream: bool) -> [(http::HeaderName, HeaderValue); 2] {
        [
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                http::header::ACCEPT,
                HeaderValue::from_static(if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                }),
            ),
        ]
    }
}

/// `{"model":…, <the client's fields>, "stream":true, "stream_options":{…}}`, the client's fields
/// copied as they came; the same JSON as [`OutgoingBody`] without parsing the body.
fn spliced_body(request: &ChatRequest, model: &str) -> Vec<u8> {
    let fields = request.raw_fields();
    let mut out = Vec::with_capacity(fields.text_len() + model.len() + 96);
    out.extend_from_slice(b"{");
    write_key(&mut out, "model");
    push_json(&mut out, model);
    out.push(b',');
    fields.write_fields(&mut out);
    if request.stream {
        out.extend_from_slice(b"\"stream\":true,\"stream_options\":{\"include_usage\":true");
        for (key, value) in &request.stream_options_rest {
            out.push(b',');
            write_key(&mut out, key);
            push_json(&mut out, value);
        }
        out.push(b'}');
    } else {
        // The comma after the last field.
        out.pop();
    }
    out.push(b'}');
    out
}

fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // A string or a `Value` always serialises, and a Vec takes every write.
    let _ = serde_json::to_writer(out, value);
}

/// Whether a quirk changes this request (from the messages' summary: no `Value` is built).
fn needs_quirks(request: &ChatRequest, messages: MessagesSummary, quirks: Quirks) -> bool {
    (quirks.legacy_max_tokens && request.raw_fields().get("max_completion_tokens").is_some())
        || (quirks.developer_as_system && messages.developer_role)
        || (quirks.nine_char_tool_ids && messages.tool_ids)
}

/// A copy of the request fields with the quirks applied.
fn apply_quirks(rest: &Map<String, Value>, quirks: Quirks) -> Map<String, Value> {
    let mut out = rest.clone();
    if quirks.legacy_max_tokens {
        if let Some(v) = out.shift_remove("max_completion_tokens") {
            out.insert("max_tokens".into(), v);
        }
    }
    if let Some(Value::Array(msgs)) = out.get_mut("messages") {
        for m in msgs.iter_mut() {
            if quirks.developer_as_system
                && m.get("role").and_then(Value::as_str) == Some("developer")
            {
                m["role"] = Value::String("system".into());
            }
            if quirks.nine_char_tool_ids {
                if let Some(Value::String(id)) = m.get_mut("tool_call_id") {
                    *id = nine_char_id(id);
                }
                if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                    for call in calls {
                        if let Some(Value::String(id)) = call.get_mut("id") {
                            *id = nine_char_id(id);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The upstream body: the client's fields with the gateway's `model` and `stream_options`.
#[derive(Serialize)]
struct OutgoingBody<'a> {
    model: &'a str,
    #[serde(flatten)]
    rest: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutgoingStreamOptions<'a>>,
}

#[derive(Serialize)]
struct OutgoingStreamOptions<'a> {
    include_usage: bool,
    #[serde(flatten)]
    rest: &'a Map<String, Value>,
}

impl ProviderAdapter for OpenAiAdapter {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn native_dialect(&self) -> Option<Dialect> {
        Some(Dialect::OpenAi)
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = self.body_for(request, target.upstream_model)?;
        let mut headers = Vec::with_capacity(4 + target.extra_headers.len());
        headers.extend(Self::content_headers(request.stream()));
        push_credentials(&mut headers, target, KeyScheme::Bearer)?;
        Ok(UpstreamRequest {
            path_and_query: format!("{}/chat/completions", target.endpoint.base_path),
            headers,
            body: Bytes::from(body),
        })
    }

    fn build_embeddings(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut headers = Vec::with_capacity(3 + target.extra_headers.len());
        headers.extend(Self::content_headers(false));
        push_credentials(&mut headers, target, KeyScheme::Bearer)?;
        Ok(UpstreamRequest {
            path_and_query: format!("{}/embeddings", target.endpoint.base_path),
            headers,
            body: Bytes::from(request.body_with_model(target.upstream_model)?),
        })
    }

    fn decode_embeddings(
        &self,
        _request: &EmbeddingsRequest,
        _model: &str,
        body: Bytes,
    ) -> Result<RenderedAnswer, StreamFailure> {
        decode_openai_embeddings(body)
    }

    fn decode_response(&self, body: Bytes, native: bool) -> Result<Answer, StreamFailure> {
        if native {
            decode_openai_response(body)
        } else {
            canonical::decode_response(&body).map(Answer::Chat)
        }
    }

    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let mut headers = Vec::new();
        push_credentials(&mut headers, target, KeyScheme::Bearer).ok()?;
        Some(ProbeRequest {
            path_and_query: format!("{}/models", target.endpoint.base_path),
            headers,
            endpoint: None,
        })
    }

    fn stream_decoder(&self, native: bool, settings: StreamSettings) -> StreamReader {
        if native {
            StreamReader::Native(openai_stream_decoder(settings))
        } else {
            StreamReader::Events(Box::new(SseFrame::new(canonical::StreamDecoder::default())))
        }
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        decode_openai_error(Some(provider), status, body, retry_after)
    }
}

/// Checks a JSON answer, reads its usage and passes it on, rewriting it only when a choice with
/// tool calls says `finish_reason: "stop"`.
pub fn decode_openai_response(body: Bytes) -> Result<Answer, StreamFailure> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default)]
        usage: Option<OpenAiUsageWire>,
        #[serde(default, borrow)]
        choices: Option<Vec<ChoiceProbe<'a>>>,
    }
    #[derive(Deserialize)]
    struct ChoiceProbe<'a> {
        #[serde(default, borrow)]
        finish_reason: Option<Cow<'a, str>>,
        #[serde(default)]
        message: Option<MessageProbe>,
    }
    #[derive(Deserialize)]
    struct MessageProbe {
        #[serde(default)]
        tool_calls: Option<Vec<IgnoredAny>>,
    }
    let probe: Probe = serde_json::from_slice(&body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not JSON: {e}")))?;
    let Some(choices) = probe.choices else {
        return Err(StreamFailure::Malformed("answer has no choices".into()));
    };
    let usage = probe.usage.map(Usage::from);
    let stop_with_tools = choices.iter().any(|c| {
        c.finish_reason.as_deref() == Some("stop")
            && c.message
                .as_ref()
                .and_then(|m| m.tool_calls.as_ref())
                .is_some_and(|t| !t.is_empty())
    });
    if !stop_with_tools {
        return Ok(Answer::Native { usage, body });
    }
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not JSON: {e}")))?;
    if let Some(Value::Array(choices)) = value.get_mut("choices") {
        for c in choices {
            let has_tools = c["message"]["tool_calls"]
                .as_array()
                .is_some_and(|t| !t.is_empty());
            if has_tools && c["finish_reason"] == "stop" {
                c["finish_reason"] = Value::String("tool_calls".into());
            }
        }
    }
    Ok(Answer::Native {
        usage,
        body: crate::providers::convert::json_bytes(&value),
    })
}

/// Checks an OpenAI embeddings answer and reads its usage; the body passes on unchanged.
pub fn decode_openai_embeddings(body: Bytes) -> Result<RenderedAnswer, StreamFailure> {
    #[derive(Deserialize)]
    struct Probe {
        data: Vec<IgnoredAny>,
        #[serde(default)]
        usage: Option<OpenAiUsageWire>,
    }
    let probe: Probe = serde_json::from_slice(&body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not an embeddings list: {e}")))?;
    let _ = probe.data;
    Ok(RenderedAnswer {
        usage: probe.usage.map(Usage::from),
        body,
    })
}

/// `{"error": {...}}` as OpenAI and most compatible hosts send it.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorWire,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorWire {
    Object {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        code: Option<Value>,
        #[serde(default)]
        param: Option<Value>,
    },
    Text(String),
}

fn scalar_to_string(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Maps an OpenAI-format error answer to the client's error, keeping the upstream's message.
/// `provider` prefixes the message; stream decoders pass `None` and the caller adds it.
pub fn decode_openai_error(
    provider: Option<&str>,
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
) -> GatewayError {
    let (message, kind, code, param) = match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope {
            error:
                ErrorWire::Object {
                    message,
                    kind,
                    code,
                    param,
                },
        }) => (
            message,
            kind,
            scalar_to_string(code),
            scalar_to_string(param),
        ),
        Ok(ErrorEnvelope {
            error: ErrorWire::Text(message),
        }) => (Some(message), None, None, None),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            ((!text.is_empty()).then_some(text), None, None, None)
        }
    };
    // A provider's auth failure is about the gateway's key for it; its message may quote part of
    // that key, so it is replaced rather than passed on.
    let message = upstream_message(provider, status, message);
    GatewayError::Upstream {
        status,
        message,
        kind: kind.unwrap_or_else(|| openai_error_type(status).to_string()),
        code,
        param,
        retry_after,
    }
}

pub struct OpenAiStreamDecoder {
    settings: StreamSettings,
    usage: Option<Usage>,
    done: bool,
    /// Dense tool index by call id, per choice index.
    tool_ids: Vec<(u64, String, u64)>,
    /// The last tool index used per choice, for fragments that carry no id.
    last_tool: Vec<(u64, u64)>,
}

/// The parts of a chunk the gateway looks at; everything else passes through untouched.
#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<OpenAiUsageWire>,
    #[serde(default)]
    error: Option<Value>,
}

impl SseHandler<Vec<u8>> for OpenAiStreamDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        self.handle(event, out)
    }

    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFailure> {
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

/// The decoder of an OpenAI-format stream (OpenAI, Azure, compatible hosts).
pub fn openai_stream_decoder(settings: StreamSettings) -> Box<dyn StreamDecoder> {
    Box::new(SseFrame::new(OpenAiStreamDecoder::new(settings)))
}

impl OpenAiStreamDecoder {
    pub fn new(settings: StreamSettings) -> Self {
        OpenAiStreamDecoder {
            settings,
            usage: None,
            done: false,
            tool_ids: Vec::new(),
            last_tool: Vec::new(),
        }
    }

    /// Gives tool-call deltas dense indexes by id and turns `stop` into `tool_calls` once tool
    /// calls were seen. Returns the rewritten chunk, or `None` when it is already right.
    fn normalise_tools(&mut self, data: &str) -> Option<String> {
        let mut chunk: Value = serde_json::from_str(data).ok()?;
        let mut changed = false;
        for choice in chunk.get_mut("choices")?.as_array_mut()? {
            let choice_index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            if let Some(Value::Array(calls)) = choice.pointer_mut("/delta/tool_calls") {
                for call in calls {
                    let id = call.get("id").and_then(Value::as_str).map(str::to_string);
                    let index = match id {
                        Some(id) => match self
                            .tool_ids
                            .iter()
                            .find(|(c, known, _)| *c == choice_index && *known == id)
                        {
                            Some((_, _, i)) => *i,
                            None => {
                                let next = self
                                    .tool_ids
                                    .iter()
                                    .filter(|(c, _, _)| *c == choice_index)
                                    .count() as u64;
                                self.tool_ids.push((choice_index, id, next));
                                next
                            }
                        },
                        None => self
                            .last_tool
                            .iter()
                            .find(|(c, _)| *c == choice_index)
                            .map(|(_, i)| *i)
                            .or_else(|| call.get("index").and_then(Value::as_u64))
                            .unwrap_or(0),
                    };
                    match self.last_tool.iter_mut().find(|(c, _)| *c == choice_index) {
                        Some(entry) => entry.1 = index,
                        None => self.last_tool.push((choice_index, index)),
                    }
                    if call.get("index").and_then(Value::as_u64) != Some(index) {
                        call["index"] = Value::from(index);
                        changed = true;
                    }
                }
            }
            let saw_tools = self.last_tool.iter().any(|(c, _)| *c == choice_index);
            if saw_tools && choice.get("finish_reason").and_then(Value::as_str) == Some("stop") {
                choice["finish_reason"] = Value::String("tool_calls".into());
                changed = true;
            }
        }
        changed.then(|| chunk.to_string())
    }

    fn handle(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.done {
            return Ok(());
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let probe: ChunkProbe = serde_json::from_str(data)
            .map_err(|e| StreamFailure::Malformed(format!("chunk is not JSON: {e}")))?;
        if let Some(error) = probe.error {
            let body =
                serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default();
            return Err(StreamFailure::Upstream(Box::new(decode_openai_error(
                None, 500, &body, None,
            ))));
        }
        if event.event.as_deref() == Some("error") {
            return Err(StreamFailure::Upstream(Box::new(decode_openai_error(
                None,
                500,
                data.as_bytes(),
                None,
            ))));
        }
        let no_choices = probe.choices.as_ref().is_some_and(|c| c.is_empty());
        match probe.usage {
            Some(u) => {
                self.usage = Some(Usage::from(u));
                // The gateway asked for usage on the client's behalf; the client gets that chunk
                // only if it asked too.
                if no_choices && !self.settings.include_usage {
                    return Ok(());
                }
            }
            // Azure opens with a choice-less chunk of content-filter results; clients that index
            // choices[0] crash on it.
            None if no_choices => return Ok(()),
            None => {}
        }
        let touches_tools = data.contains("\"tool_calls\"")
            || (!self.last_tool.is_empty() && data.contains("\"stop\""));
        let rewritten = if touches_tools {
            self.normalise_tools(data)
        } else {
            None
        };
        let priced = match (&self.usage, &self.settings.price) {
            // The usage chunk carries the answer's cost, as OpenRouter's do.
            (Some(u), Some(price)) if no_choices => with_usage_cost(data.as_bytes(), u.cost(price))
                .and_then(|b| String::from_utf8(b).ok()),
            _ => None,
        };
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(
            priced
                .as_deref()
                .or(rewritten.as_deref())
                .unwrap_or(data)
                .as_bytes(),
        );
        out.extend_from_slice(b"\n\n");
        Ok(())
    }
}

impl std::fmt::Debug for OpenAiAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenAiAdapter({})", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::providers::test_support::stream_as_openai;
    use crate::providers::Endpoint;
    use serde_json::json;

    fn endpoint() -> Endpoint {
        Endpoint::from_url(&url::Url::parse("https://api.example.com/v1/").unwrap()).unwrap()
    }

    fn build(body: Value) -> (UpstreamRequest, Value) {
        let req = ChatRequest::parse(body.to_string().as_bytes()).unwrap();
        let key = Secret::new("sk-provider");
        let ep = endpoint();
        let out = OpenAiAdapter::new(ProviderKind::OpenAi)
            .build_request(
                &ClientRequest::OpenAi(req),
                &AttemptTarget {
                    upstream_model: "gpt-4o-mini-2024",
                    endpoint: &ep,
                    api_key: Some(&key),
                    extra_headers: &[],
                },
            )
            .unwrap();
        let json: Value = serde_json::from_slice(&out.body).unwrap();
        (out, json)
    }

    #[test]
    fn request_keeps_fields_and_order_and_swaps_model_and_key() {
        let (out, body) = build(json!({
            "model": "public", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "tools": [{"type": "function", "function": {"name": "f"}}],
            "models": ["x"], "future_field": 1
        }));
        assert_eq!(out.path_and_query, "/v1/chat/completions");
        assert_eq!(
            body,
            json!({"model": "gpt-4o-mini-2024", "messages": [{"role": "user", "content": "hi"}],
                   "temperature": 0.2, "tools": [{"type": "function", "function": {"name": "f"}}],
                   "future_field": 1})
        );
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["model", "messages", "temperature", "tools", "future_field"]
        );
        let auth = out
            .headers
            .iter()
            .find(|(n, _)| n == http::header::AUTHORIZATION)
            .unwrap();
        assert_eq!(auth.1, "Bearer sk-provider");
    }

    #[test]
    fn streaming_requests_always_ask_for_usage() {
        let (_, body) = build(json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
            "stream_options": {"include_obfuscation": false}
        }));
        assert_eq!(body["stream"], true);
        assert_eq!(
            body["stream_options"],
            json!({"include_usage": true, "include_obfuscation": false})
        );
    }

    /// The upstream body as `OutgoingBody` writes it from the parsed fields.
    fn value_path_body(req: &ChatRequest, model: &str) -> Vec<u8> {
        serde_json::to_vec(&OutgoingBody {
            model,
            rest: req.rest(),
            stream: req.stream,
            stream_options: req.stream.then_some(OutgoingStreamOptions {
                include_usage: true,
                rest: &req.stream_options_rest,
            }),
        })
        .unwrap()
    }

    #[test]
    fn spliced_body_is_the_clients_bytes_with_the_gateways_fields() {
        let text = r#"{ "messages" : [ {"role":"user","content":"caf\u00e9 \"x\""} ],
            "model":"public", "temperature": 0.50, "stream":true, "models":["b"],
            "stream_options":{"include_usage":false,"include_obfuscation":false},
            "provider":{"order":["p"]}, "k\"ey":1, "temperature": 0.7 }"#;
        let req = ChatRequest::parse(text.as_bytes()).unwrap();
        let body = OpenAiAdapter::new(ProviderKind::OpenAi)
            .request_body(&req, "up/\"m\"")
            .unwrap();
        // Values keep their bytes (spacing, escapes, `0.50`); a repeated key keeps its first
        // place and last value; the gateway's own fields are dropped or rewritten.
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"model":"up/\"m\"","messages":[ {"role":"user","content":"caf\u00e9 \"x\""} ],"temperature":0.7,"k\"ey":1,"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#
        );
        for text in [
            text,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"n":2}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"model":"m"}"#,
        ] {
            let req = ChatRequest::parse(text.as_bytes()).unwrap();
            let spliced: Value = serde_json::from_slice(&spliced_body(&req, "u")).unwrap();
            let parsed: Value = serde_json::from_slice(&value_path_body(&req, "u")).unwrap();
            assert_eq!(spliced, parsed, "{text}");
            let order = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(order(&spliced), order(&parsed), "{text}");
        }
    }

    #[test]
    fn quirks_are_looked_for_only_where_they_apply() {
        let quirks = Quirks::for_host(ProviderKind::OpenAiCompatible, "api.mistral.ai");
        let needs_with = |text: &str, quirks| {
            let req = ChatRequest::parse(text.as_bytes()).unwrap();
            needs_quirks(&req, req.messages_summary().unwrap(), quirks)
        };
        let needs = |text: &str| needs_with(text, quirks);
        assert!(!needs(
            r#"{"model":"m","messages":[{"role":"user","content":"developer"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"developer","content":"x"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"\u0064eveloper","content":"x"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"a","content":"x"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"user"}],"max_completion_tokens":5}"#
        ));
        assert!(!needs(r#"{"model":"m","messages":[{"role":5}]}"#));
        assert!(!needs_with(
            r#"{"model":"m","messages":[{"role":"developer"}]}"#,
            Quirks::default()
        ));
        // A message that is not an object is refused before anything is sent.
        let req = ChatRequest::parse(br#"{"model":"m","messages":["hi"]}"#).unwrap();
        let err = OpenAiAdapter::new(ProviderKind::OpenAi)
            .request_body(&req, "u")
            .unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("messages")));
    }

    const STREAM: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
        : keep-alive\n\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
        data: [DONE]\n\n";

    fn run(
        include_usage: bool,
        input: &str,
        piece: usize,
    ) -> (Result<(), StreamFailure>, String, Option<Usage>) {
        let adapter = OpenAiAdapter::new(ProviderKind::OpenAi);
        stream_as_openai(&adapter, input, include_usage, piece, str::to_owned)
    }

    #[test]
    fn stream_passes_chunks_and_counts_usage() {
        for piece in [1, 5, 64, 4096] {
            let (r, out, usage) = run(true, STREAM, piece);
            r.unwrap();
            let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
            assert_eq!(events.len(), 5, "{out}");
            assert!(events[3].contains("\"choices\":[]"));
            assert_eq!(events[4], "data: [DONE]");
            let u = usage.unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
                (9, 2, 4)
            );
        }
    }

    #[test]
    fn usage_chunk_is_dropped_when_the_client_did_not_ask() {
        let (r, out, usage) = run(false, STREAM, 7);
        r.unwrap();
        assert!(!out.contains("\"choices\":[]"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(usage.unwrap().total(), 11);
    }

    #[test]
    fn stream_without_done_is_truncated() {
        let cut = &STREAM[..STREAM.find("data: [DONE]").unwrap()];
        assert!(matches!(
            run(true, cut, 10).0,
            Err(StreamFailure::Truncated)
        ));
        // A final [DONE] without its blank line is still a complete stream.
        let no_blank = STREAM.trim_end();
        run(true, no_blank, 10).0.unwrap();
    }

    #[test]
    fn error_inside_a_stream_fails_it() {
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        let (r, out, _) = run(true, s, 3);
        match r {
            Err(StreamFailure::Upstream(e)) => assert!(e.to_string().contains("overloaded")),
            other => panic!("{other:?}"),
        }
        assert!(out.contains("\"content\":\"a\""));
        assert!(matches!(
            run(true, "data: {not json\n\n", 3).0,
            Err(StreamFailure::Malformed(_))
        ));
    }

    #[test]
    fn errors_keep_the_upstream_message_but_never_credentials() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let e = decode_openai_error(Some("openai"), 429, body, Some("3".into()));
        assert_eq!(e.status(), 429);
        assert_eq!(e.to_string(), "openai: Rate limit reached");
        assert_eq!(e.openai_code(), Some("rate_limit_exceeded"));
        assert_eq!(e.retry_after(), Some("3"));
        let e = decode_openai_error(
            Some("openai"),
            401,
            br#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz"}}"#,
            None,
        );
        assert!(!e.to_string().contains("sk-abc"), "{e}");
        let e = decode_openai_error(Some("local"), 502, b"<html>bad gateway</html>", None);
        assert_eq!(e.openai_type(), "server_error");
        assert!(e.to_string().contains("bad gateway"));
    }

    fn compat(host: &str) -> OpenAiAdapter {
        OpenAiAdapter::with_quirks(
            ProviderKind::OpenAiCompatible,
            Quirks::for_host(ProviderKind::OpenAiCompatible, host),
        )
    }

    #[test]
    fn compatible_hosts_get_developer_as_system_and_mistral_ids() {
        let req = ChatRequest::parse(
            json!({"model": "m", "max_completion_tokens": 50, "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_abcdefghijklmnop", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_abcdefghijklmnop", "content": "ok"}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let body: Value =
            serde_json::from_slice(&compat("localhost").request_body(&req, "m").unwrap()).unwrap();
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["max_completion_tokens"], 50);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["id"],
            "call_abcdefghijklmnop"
        );

        let body: Value =
            serde_json::from_slice(&compat("api.mistral.ai").request_body(&req, "m").unwrap())
                .unwrap();
        let id = body["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
        assert_eq!(id.len(), 9);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            body["messages"][2]["tool_call_id"], id,
            "call and result must keep the same id"
        );
        assert_eq!(body["max_tokens"], 50);
        assert!(body.get("max_completion_tokens").is_none());

        // OpenAI itself takes the request unchanged.
        let body: Value = serde_json::from_slice(
            &OpenAiAdapter::new(ProviderKind::OpenAi)
                .request_body(&req, "m")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(body["messages"][0]["role"], "developer");
    }

    #[test]
    fn ollama_style_tool_deltas_get_dense_indexes_and_tool_calls_finish() {
        // Two parallel calls both sent with index 0 (distinct ids), argument fragments without
        // index, then finish_reason "stop" (ollama#7881).
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let input = [
            chunk(json!({"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"function": {"arguments": "{\"x\":1}"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}), Value::Null),
            chunk(json!({}), json!("stop")),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let (r, out, _) = run(false, &input, 9);
        r.unwrap();
        let events: Vec<Value> = out
            .split("\n\n")
            .filter(|e| e.starts_with("data: {"))
            .map(|e| serde_json::from_str(&e[6..]).unwrap())
            .collect();
        let index = |i: usize| events[i]["choices"][0]["delta"]["tool_calls"][0]["index"].clone();
        assert_eq!(
            (index(0), index(1), index(2)),
            (json!(0), json!(0), json!(1))
        );
        assert_eq!(events[3]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn named_tool_choice_stop_becomes_tool_calls_in_json_answers() {
        let body = json!({"id": "x", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]});
        let native_body = |body: Bytes| match decode_openai_response(body).unwrap() {
            Answer::Native { body, .. } => body,
            Answer::Chat(_) => panic!("an OpenAI answer passes through"),
        };
        let v: Value = serde_json::from_slice(&native_body(Bytes::from(body.to_string()))).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        // Plain answers pass through byte for byte.
        let plain = Bytes::from(completion_text());
        assert_eq!(native_body(plain.clone()), plain);
    }

    fn completion_text() -> String {
        r#"{"id":"x","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.to_string()
    }
}
