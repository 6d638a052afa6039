//! Google Gemini API (`kind: gemini`): `generateContent` and `streamGenerateContent?alt=sse`.
//!
//! Translation follows the reference (§3, §5.4, §5.5, §5.8–5.10). Decisions:
//! - System and developer messages become `systemInstruction`, in order; consecutive turns of
//!   one role are merged, and empty parts are never sent (Gemini rejects them).
//! - Tool results need the function *name*, which OpenAI tool messages lack: it is looked up from
//!   the assistant tool call with the same id; an unknown id is a 400.
//! - Gemini 3 requires the `thoughtSignature` of a function call when the call is replayed. The
//!   signature is carried inside the OpenAI tool-call id (`call_<hex>_ts_<signature>`) and put back
//!   when the client replays the call, so no state is kept in the gateway.
//! - JSON schemas (tool parameters, `response_format`) are reduced to Gemini's OpenAPI subset:
//!   `$ref`/`$defs` inlined, `anyOf` with `null` and type lists become `nullable`, `const` becomes
//!   `enum`, unsupported keywords are removed.
//! - Refused with a 400 naming the parameter: `logit_bias`, `n` > 1 with `stream`, audio output,
//!   `file_id`, non-function tools, more than 5 `stop` sequences, unknown fields.
//! - Dropped (no Gemini equivalent, no effect on the answer's meaning): `parallel_tool_calls`,
//!   `user`, `safety_identifier`, `store`, `metadata`, `service_tier`, `prompt_cache_key`,
//!   `verbosity`, image `detail`.
//! - Streams have no closing event; a stream that ends before any `finishReason` is a failure.
//!   Old models repeat `finishReason` on every chunk, so the finish chunk is written at the end.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::convert::{push_turn, tool_arguments, Turn};
use super::output::{completion_body, now_unix, ChoiceOut, ChunkWriter};
use super::sse::SseEvent;
use super::stream::{EventTranslator, SseTranslator};
use super::{
    credential_headers, AttemptTarget, DecodedResponse, ProbeRequest, ProviderAdapter,
    StreamDecoder, StreamFailure, StreamSettings, UpstreamRequest,
};
use crate::accounting::Usage;
use crate::config::ProviderKind;
use crate::dialect::openai::{parse_data_url, ChatParams, ChatRequest, Content, ContentPart};
use crate::error::GatewayError;

const MAX_STOP_SEQUENCES: usize = 5;
/// Separates a synthesized call id from the thought signature it carries.
const SIGNATURE_MARK: &str = "_ts_";
const DROPPED_FIELDS: [&str; 5] = [
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "verbosity",
];

#[derive(Debug, Default)]
pub struct GeminiAdapter;

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// A new OpenAI tool-call id, carrying the call's thought signature when it has one.
fn synthesize_call_id(signature: Option<&str>) -> String {
    match signature {
        Some(sig) if !sig.is_empty() => {
            format!("call_{:08x}{SIGNATURE_MARK}{sig}", fastrand::u32(..))
        }
        _ => format!("call_{:08x}", fastrand::u32(..)),
    }
}

/// The thought signature a tool-call id carries, if it is one of ours.
fn signature_of(id: &str) -> Option<&str> {
    id.split_once(SIGNATURE_MARK)
        .map(|(_, sig)| sig)
        .filter(|s| !s.is_empty())
}

/// Guesses a media type from a URL's extension (Gemini needs one for `fileData`).
fn mime_from_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("pdf") => "application/pdf",
        Some("mp3") => "audio/mp3",
        Some("wav") => "audio/wav",
        _ => "image/jpeg",
    }
}

fn user_parts(content: &Content<'_>) -> Result<Vec<Value>, GatewayError> {
    match content {
        Content::Text(t) if t.is_empty() => Ok(Vec::new()),
        Content::Text(t) => Ok(vec![json!({"text": t})]),
        Content::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    ContentPart::Text { text } | ContentPart::Refusal { refusal: text } => {
                        if !text.is_empty() {
                            out.push(json!({"text": text}));
                        }
                    }
                    ContentPart::ImageUrl { image_url } => {
                        let url = image_url.url.as_ref();
                        match parse_data_url(url) {
                            Some((mime, data)) => {
                                out.push(json!({"inlineData": {"mimeType": mime, "data": data}}))
                            }
                            None if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://") => {
                                out.push(json!({"fileData": {"mimeType": mime_from_url(url), "fileUri": url}}))
                            }
                            None => {
                                return Err(invalid(
                                    "image_url must be a data URL or an http(s) URL",
                                    "messages",
                                ))
                            }
                        }
                    }
                    ContentPart::File { file } => {
                        if file.file_id.is_some() {
                            return Err(invalid(
                                "file_id references cannot be sent to provider kind gemini; send file_data",
                                "messages",
                            ));
                        }
                        let data = file
                            .file_data
                            .as_deref()
                            .ok_or_else(|| invalid("file parts need file_data", "messages"))?;
                        let (mime, b64) = parse_data_url(data).unwrap_or(("application/pdf", data));
                        out.push(json!({"inlineData": {"mimeType": mime, "data": b64}}));
                    }
                    ContentPart::InputAudio { input_audio } => {
                        let data = input_audio
                            .get("data")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid("input_audio needs data", "messages"))?;
                        let format = input_audio
                            .get("format")
                            .and_then(Value::as_str)
                            .unwrap_or("wav");
                        out.push(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}));
                    }
                }
            }
            Ok(out)
        }
    }
}

/// A tool result's content as a `functionResponse.response` object.
fn function_response(content: Option<&Content<'_>>) -> Value {
    let text = content.map(Content::text).unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => json!({"output": v}),
        Err(_) => json!({"output": text}),
    }
}

/// `systemInstruction` parts and the alternating `contents`.
fn build_contents(params: &ChatParams<'_>) -> Result<(Vec<Value>, Vec<Turn>), GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    // Function names of all calls seen so far, by OpenAI tool-call id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in &params.messages {
        match message.role {
            "system" | "developer" => {
                let text = message
                    .content
                    .as_ref()
                    .map(Content::text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
            }
            "user" => {
                let parts = match &message.content {
                    Some(c) => user_parts(c)?,
                    None => Vec::new(),
                };
                push_turn(&mut turns, "user", parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(content) = &message.content {
                    let text = content.text();
                    if !text.is_empty() {
                        parts.push(json!({"text": text}));
                    }
                }
                for call in message.tool_calls.iter().flatten() {
                    let args = tool_arguments(&call.function.arguments)?;
                    call_names.insert(call.id.as_ref(), call.function.name.as_ref());
                    let mut part =
                        json!({"functionCall": {"name": call.function.name, "args": args}});
                    if let Some(sig) = signature_of(&call.id) {
                        part["thoughtSignature"] = json!(sig);
                    }
                    parts.push(part);
                }
                push_turn(&mut turns, "model", parts);
            }
            "tool" => {
                let id = message
                    .tool_call_id
                    .ok_or_else(|| invalid("tool messages need a tool_call_id", "messages"))?;
                let name = call_names.get(id).ok_or_else(|| {
                    invalid(
                        format!("tool message for '{id}' does not answer any earlier tool call"),
                        "messages",
                    )
                })?;
                let part = json!({"functionResponse": {
                    "name": name,
                    "response": function_response(message.content.as_ref()),
                }});
                push_turn(&mut turns, "user", vec![part]);
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

/// Keywords of Gemini's OpenAPI-subset `Schema` that pass through unchanged.
const SCHEMA_KEEP: [&str; 14] = [
    "format",
    "description",
    "nullable",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "propertyOrdering",
    "enum",
];

/// Reduces a JSON Schema to what Gemini accepts (§3.6), inlining local `$ref`s from `defs`.
pub fn sanitize_schema(schema: &Value) -> Value {
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    sanitize_node(schema, &defs, 0)
}

fn sanitize_node(node: &Value, defs: &Value, depth: usize) -> Value {
    // Recursive $refs cannot be inlined; cut them off rather than loop forever.
    if depth > 16 {
        return json!({"type": "OBJECT"});
    }
    let Value::Object(obj) = node else {
        return node.clone();
    };
    if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        let target = defs
            .get(name)
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        return sanitize_node(&target, defs, depth + 1);
    }
    let mut out = Map::new();
    let mut nullable = obj
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    // anyOf / oneOf: a null branch means nullable; a single remaining branch is inlined.
    let branches = obj
        .get("anyOf")
        .or_else(|| obj.get("oneOf"))
        .and_then(Value::as_array);
    if let Some(branches) = branches {
        let non_null: Vec<&Value> = branches
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        nullable |= non_null.len() < branches.len();
        if non_null.len() == 1 {
            let mut inner = sanitize_node(non_null[0], defs, depth + 1);
            if nullable {
                inner["nullable"] = json!(true);
            }
            if let Some(d) = obj.get("description") {
                inner["description"] = d.clone();
            }
            return inner;
        }
        out.insert(
            "anyOf".into(),
            non_null
                .iter()
                .map(|b| sanitize_node(b, defs, depth + 1))
                .collect(),
        );
    }

    match obj.get("type") {
        Some(Value::String(t)) if t != "null" => {
            out.insert("type".into(), json!(t.to_ascii_uppercase()));
        }
        Some(Value::Array(types)) => {
            let real: Vec<&str> = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            nullable |= real.len() < types.len();
            if let Some(first) = real.first() {
                out.insert("type".into(), json!(first.to_ascii_uppercase()));
            }
        }
        _ => {}
    }
    for key in SCHEMA_KEEP {
        if let Some(v) = obj.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(c) = obj.get("const") {
        out.insert("enum".into(), json!([c]));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        let props: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), sanitize_node(v, defs, depth + 1)))
            .collect();
        out.insert("properties".into(), Value::Object(props));
    }
    if let Some(required) = obj.get("required") {
        out.insert("required".into(), required.clone());
    }
    if let Some(items) = obj.get("items") {
        out.insert("items".into(), sanitize_node(items, defs, depth + 1));
    }
    if nullable {
        out.insert("nullable".into(), json!(true));
    }
    Value::Object(out)
}

fn tool_config(choice: &Value) -> Result<Value, GatewayError> {
    let config = match choice {
        Value::String(s) => match s.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => {
                return Err(invalid(
                    format!("unknown tool_choice '{other}'"),
                    "tool_choice",
                ))
            }
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice must name a function", "tool_choice"))?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        _ => {
            return Err(invalid(
                "tool_choice must be a string or an object",
                "tool_choice",
            ))
        }
    };
    Ok(json!({"functionCallingConfig": config}))
}

fn thinking_config(effort: &str) -> Result<Value, GatewayError> {
    let budget = match effort {
        "none" => return Ok(json!({"thinkingBudget": 0})),
        "minimal" | "low" => 1024,
        "medium" => 8192,
        "high" | "xhigh" | "max" => 24576,
        other => {
            return Err(invalid(
                format!("unknown reasoning_effort '{other}'"),
                "reasoning_effort",
            ))
        }
    };
    Ok(json!({"thinkingBudget": budget, "includeThoughts": true}))
}

impl GeminiAdapter {
    /// The Gemini request body for `request`.
    pub fn request_body(request: &ChatRequest) -> Result<Value, GatewayError> {
        let params = ChatParams::from_request(request)?;
        if params.logit_bias.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                "logit_bias is not supported by provider kind gemini",
                "logit_bias",
            ));
        }
        for (key, value) in params.rest.iter() {
            let key = key.as_str();
            if key == "modalities" && value.to_string().contains("audio") || key == "audio" {
                return Err(GatewayError::invalid(
                    "audio output is not supported by provider kind gemini",
                    None,
                ));
            }
            if !DROPPED_FIELDS.contains(&key) && key != "modalities" {
                return Err(GatewayError::invalid(
                    format!("parameter '{key}' is not supported by provider kind gemini"),
                    None,
                ));
            }
        }
        let (system, turns) = build_contents(&params)?;
        let mut body = Map::new();
        if !system.is_empty() {
            body.insert("systemInstruction".into(), json!({"parts": system}));
        }
        body.insert(
            "contents".into(),
            turns
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        );

        let mut declarations = Vec::new();
        for tool in params.tools.iter().flatten() {
            let Some(function) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
                return Err(invalid(
                    format!(
                        "tool type '{}' is not supported by provider kind gemini",
                        tool.kind
                    ),
                    "tools",
                ));
            };
            let mut decl = json!({"name": function.name});
            if let Some(d) = &function.description {
                decl["description"] = json!(d);
            }
            // A function without parameters must not send an empty object schema.
            let has_params = function.parameters.as_ref().is_some_and(|p| {
                p.get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|o| !o.is_empty())
                    || p.get("$ref").is_some()
                    || p.get("anyOf").is_some()
            });
            if let (true, Some(p)) = (has_params, &function.parameters) {
                decl["parameters"] = sanitize_schema(p);
            }
            declarations.push(decl);
        }
        if !declarations.is_empty() {
            body.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
            if let Some(choice) = &params.tool_choice {
                body.insert("toolConfig".into(), tool_config(choice)?);
            }
        }

        let mut generation = Map::new();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                generation.insert(k.into(), v);
            }
        };
        set("temperature", params.temperature.map(|v| json!(v)));
        set("topP", params.top_p.map(|v| json!(v)));
        set("topK", params.top_k.map(|v| json!(v)));
        set(
            "maxOutputTokens",
            params.max_output_tokens().map(|v| json!(v)),
        );
        set("seed", params.seed.map(|v| json!(v)));
        set("presencePenalty", params.presence_penalty.map(|v| json!(v)));
        set(
            "frequencyPenalty",
            params.frequency_penalty.map(|v| json!(v)),
        );
        if params.logprobs == Some(true) {
            set("responseLogprobs", Some(json!(true)));
            set("logprobs", params.top_logprobs.map(|v| json!(v)));
        }
        let stops = params.stop_sequences()?;
        if stops.len() > MAX_STOP_SEQUENCES {
            return Err(invalid(
                format!("provider kind gemini accepts at most {MAX_STOP_SEQUENCES} stop sequences"),
                "stop",
            ));
        }
        if !stops.is_empty() {
            set("stopSequences", Some(json!(stops)));
        }
        if let Some(n) = params.n.filter(|n| *n > 1) {
            if request.stream {
                return Err(invalid(
                    "n > 1 cannot be streamed from provider kind gemini",
                    "n",
                ));
            }
            set("candidateCount", Some(json!(n)));
        }
        if let Some(format) = &params.response_format {
            match format.get("type").and_then(Value::as_str) {
                None | Some("text") => {}
                Some("json_object") => set("responseMimeType", Some(json!("application/json"))),
                Some("json_schema") => {
                    set("responseMimeType", Some(json!("application/json")));
                    if let Some(schema) = format.get("json_schema").and_then(|s| s.get("schema")) {
                        set("responseSchema", Some(sanitize_schema(schema)));
                    }
                }
                Some(other) => {
                    return Err(invalid(
                        format!("response_format type '{other}' is not supported"),
                        "response_format",
                    ))
                }
            }
        }
        if let Some(effort) = params.reasoning_effort {
            set("thinkingConfig", Some(thinking_config(effort)?));
        }
        if !generation.is_empty() {
            body.insert("generationConfig".into(), Value::Object(generation));
        }
        Ok(Value::Object(body))
    }
}

impl ProviderAdapter for GeminiAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = target.upstream_model.trim_start_matches("models/");
        if model.is_empty() || model.contains(['/', '?', '#', ' ']) {
            return Err(invalid(
                format!("'{model}' is not a valid Gemini model name"),
                "model",
            ));
        }
        let body = Self::request_body(request)?;
        let path_and_query = if request.stream {
            format!(
                "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
                target.endpoint.base_path
            )
        } else {
            format!(
                "{}/v1beta/models/{model}:generateContent",
                target.endpoint.base_path
            )
        };
        let mut headers = Vec::with_capacity(3 + target.extra_headers.len());
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        // A header, never `?key=`: URLs end up in logs.
        headers.extend(credential_headers(
            target,
            http::HeaderName::from_static("x-goog-api-key"),
            |k| k.to_string(),
        )?);
        Ok(UpstreamRequest {
            path_and_query,
            headers,
            body: Bytes::from(body.to_string()),
        })
    }

    fn decode_response(&self, body: Bytes) -> Result<DecodedResponse, StreamFailure> {
        let response: ResponseWire = serde_json::from_slice(&body).map_err(|e| {
            StreamFailure::Malformed(format!("answer is not a Gemini response: {e}"))
        })?;
        let usage = response
            .usage_metadata
            .map(UsageWire::to_usage)
            .unwrap_or_default();
        let mut choices = Vec::new();
        for candidate in &response.candidates {
            let mut choice = ChoiceOut::default();
            let mut text = String::new();
            let mut reasoning = String::new();
            for part in candidate.content.iter().flat_map(|c| &c.parts) {
                if let Some(call) = &part.function_call {
                    choice.tool_calls.push((
                        synthesize_call_id(part.thought_signature.as_deref()),
                        call.name.clone(),
                        call.args
                            .as_ref()
                            .map_or_else(|| "{}".to_string(), Value::to_string),
                    ));
                } else if let Some(t) = &part.text {
                    if part.thought {
                        reasoning.push_str(t);
                    } else {
                        text.push_str(t);
                    }
                }
            }
            choice.finish_reason = finish_reason(
                candidate.finish_reason.as_deref(),
                !choice.tool_calls.is_empty(),
            )
            .to_string();
            choice.content = (!text.is_empty() || choice.tool_calls.is_empty()).then_some(text);
            choice.reasoning = (!reasoning.is_empty()).then_some(reasoning);
            choices.push(choice);
        }
        if choices.is_empty() {
            if response.prompt_feedback.is_none() {
                return Err(StreamFailure::Malformed("answer has no candidates".into()));
            }
            // A blocked prompt: one empty choice that says so.
            choices.push(ChoiceOut {
                content: None,
                finish_reason: "content_filter".into(),
                ..ChoiceOut::default()
            });
        }
        let id = response
            .response_id
            .map(|id| format!("chatcmpl-{id}"))
            .unwrap_or_else(|| format!("chatcmpl-{:016x}", fastrand::u64(..)));
        let body = completion_body(
            &id,
            now_unix(),
            response.model_version.as_deref().unwrap_or("gemini"),
            &choices,
            &usage,
        );
        Ok(DecodedResponse {
            body,
            usage: Some(usage),
        })
    }

    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let headers = credential_headers(
            target,
            http::HeaderName::from_static("x-goog-api-key"),
            |k| k.to_string(),
        )
        .ok()?;
        Some(ProbeRequest {
            path_and_query: format!("{}/v1beta/models?pageSize=1", target.endpoint.base_path),
            headers,
        })
    }

    fn stream_decoder(&self, settings: StreamSettings) -> Box<dyn StreamDecoder> {
        Box::new(SseTranslator::new(GeminiStreamDecoder {
            writer: ChunkWriter::new(
                format!("chatcmpl-{:016x}", fastrand::u64(..)),
                now_unix(),
                "gemini".to_string(),
                settings.include_usage,
            ),
            candidates: Vec::new(),
            usage: None,
            blocked: false,
            identified: false,
        }))
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        decode_gemini_error(Some(provider), status, body, retry_after)
    }
}

/// OpenAI `finish_reason` for a Gemini `finishReason` (§5.8).
pub fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    if has_tool_calls {
        return "tool_calls";
    }
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "LANGUAGE"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => "content_filter",
        _ => "stop",
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    /// `streamGenerateContent` without `alt=sse` wraps errors in an array. Tried first: serde
    /// would also read an array as the fields of `One`, in order.
    Many(Vec<ErrorEnvelope>),
    One(ErrorEnvelope),
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorWire,
}

#[derive(Deserialize)]
struct ErrorWire {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Maps a Gemini error (HTTP body or in-stream object) to the client's error (§5.10).
pub fn decode_gemini_error(
    provider: Option<&str>,
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
) -> GatewayError {
    let parsed = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody::One(e)) => Some(e.error),
        Ok(ErrorBody::Many(mut list)) if !list.is_empty() => Some(list.swap_remove(0).error),
        _ => None,
    };
    let (message, grpc) = match parsed {
        Some(e) => (e.message, e.status),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            ((!text.is_empty()).then_some(text), None)
        }
    };
    // In a stream the HTTP status was 200; the gRPC status says what happened.
    let status = match (status, grpc.as_deref()) {
        (200, Some("RESOURCE_EXHAUSTED")) => 429,
        (200, Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION")) => 400,
        (200, Some("UNAVAILABLE")) => 503,
        (200, Some("DEADLINE_EXCEEDED")) => 504,
        (200, _) => 500,
        (s, _) => s,
    };
    let kind = match grpc.as_deref() {
        Some("RESOURCE_EXHAUSTED") => "rate_limit_error",
        _ => super::openai_error_type(status),
    };
    let code = match grpc.as_deref() {
        Some("RESOURCE_EXHAUSTED") => Some("rate_limit_exceeded".to_string()),
        Some("NOT_FOUND") => Some("model_not_found".to_string()),
        other => other.map(str::to_string),
    };
    let name = provider.unwrap_or("the provider");
    let message = if status == 401
        || status == 403
        || message.as_deref().is_some_and(|m| m.contains("API key"))
    {
        format!("provider '{name}' rejected the gateway's credentials (HTTP {status})")
    } else {
        let text = message.unwrap_or_else(|| format!("upstream answered HTTP {status}"));
        match provider {
            Some(p) => format!("{p}: {text}"),
            None => text,
        }
    };
    GatewayError::Upstream {
        status,
        message,
        kind: kind.to_string(),
        code,
        param: None,
        retry_after,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseWire {
    #[serde(default)]
    candidates: Vec<CandidateWire>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
    #[serde(default)]
    usage_metadata: Option<UsageWire>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateWire {
    #[serde(default)]
    content: Option<ContentWire>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize)]
struct ContentWire {
    #[serde(default)]
    parts: Vec<PartWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartWire {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<FunctionCallWire>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Deserialize)]
struct FunctionCallWire {
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "camelCase")]
struct UsageWire {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl UsageWire {
    /// Thoughts are output the client pays for: they count as completion tokens (§5.9).
    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            cached_tokens: self.cached_content_token_count,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

/// Per-candidate stream state.
#[derive(Default, Clone)]
struct CandidateState {
    started: bool,
    tools: u32,
    finish: Option<String>,
}

struct GeminiStreamDecoder {
    writer: ChunkWriter,
    candidates: Vec<CandidateState>,
    usage: Option<UsageWire>,
    blocked: bool,
    identified: bool,
}

impl EventTranslator for GeminiStreamDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        self.handle(event, out)
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.blocked && self.candidates.is_empty() {
            self.writer.role(out, 0);
            self.writer.finish(out, 0, "content_filter");
        } else {
            // Gemini has no closing event: a finishReason is the only sign the answer is whole.
            if self.candidates.is_empty() || self.candidates.iter().any(|c| c.finish.is_none()) {
                return Err(StreamFailure::Truncated);
            }
            for (i, c) in self.candidates.iter().enumerate() {
                self.writer.finish(
                    out,
                    i as u32,
                    finish_reason(c.finish.as_deref(), c.tools > 0),
                );
            }
        }
        let usage = self.usage();
        self.writer.end(out, usage.as_ref());
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(UsageWire::to_usage)
    }
}

impl GeminiStreamDecoder {
    fn handle(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let response: ResponseWire = serde_json::from_str(data).map_err(|e| {
            StreamFailure::Malformed(format!("chunk is not a Gemini response: {e}"))
        })?;
        if response.error.is_some() {
            return Err(StreamFailure::Upstream(Box::new(decode_gemini_error(
                None,
                200,
                data.as_bytes(),
                None,
            ))));
        }
        if !self.identified {
            self.identified = true;
            let id = response
                .response_id
                .as_deref()
                .map(|id| format!("chatcmpl-{id}"));
            self.writer
                .set_identity(id.as_deref(), response.model_version.as_deref());
        }
        if let Some(u) = response.usage_metadata {
            // Usage may repeat on several chunks: the last one is the total.
            self.usage = Some(u);
        }
        if response.candidates.is_empty() && response.prompt_feedback.is_some() {
            self.blocked = true;
        }
        for candidate in response.candidates {
            let index = candidate.index.unwrap_or(0);
            let slot = index as usize;
            if self.candidates.len() <= slot {
                self.candidates.resize(slot + 1, CandidateState::default());
            }
            if !self.candidates[slot].started {
                self.candidates[slot].started = true;
                self.writer.role(out, index);
            }
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    let tool_index = self.candidates[slot].tools;
                    self.candidates[slot].tools += 1;
                    let id = synthesize_call_id(part.thought_signature.as_deref());
                    let args = call
                        .args
                        .map_or_else(|| "{}".to_string(), |a| a.to_string());
                    self.writer
                        .tool_call_start(out, index, tool_index, &id, &call.name, &args);
                } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                    if part.thought {
                        self.writer.reasoning(out, index, &text);
                    } else {
                        self.writer.content(out, index, &text);
                    }
                }
            }
            if let Some(reason) = candidate.finish_reason {
                self.candidates[slot].finish = Some(reason);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::providers::Endpoint;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/gemini/", $name))
        };
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn request(v: Value) -> ChatRequest {
        ChatRequest::parse(v.to_string().as_bytes()).unwrap()
    }

    fn normalise_created(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find("\"created\":") {
            out.push_str(&rest[..pos]);
            out.push_str("\"created\":0");
            rest = rest[pos + 10..].trim_start_matches(|c: char| c.is_ascii_digit());
        }
        out.push_str(rest);
        out
    }

    fn stream(
        input: &str,
        include_usage: bool,
        piece: usize,
    ) -> (Result<(), StreamFailure>, String, Option<Usage>) {
        let mut d = GeminiAdapter.stream_decoder(StreamSettings { include_usage });
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(piece) {
            if let Err(e) = d.push(c, &mut out) {
                return (Err(e), String::from_utf8(out).unwrap(), d.usage());
            }
        }
        let r = d.finish(&mut out);
        (
            r,
            normalise_created(&String::from_utf8(out).unwrap()),
            d.usage(),
        )
    }

    #[test]
    fn golden_request_with_tools_history_and_signatures() {
        let req = ChatRequest::parse(fixture!("request_tools.openai.json").as_bytes()).unwrap();
        let ep = Endpoint::from_url(
            &url::Url::parse("https://generativelanguage.googleapis.com").unwrap(),
        )
        .unwrap();
        let key = Secret::new("g-key");
        let out = GeminiAdapter
            .build_request(
                &req,
                &AttemptTarget {
                    upstream_model: "gemini-2.5-flash",
                    endpoint: &ep,
                    api_key: Some(&key),
                    extra_headers: &[],
                },
            )
            .unwrap();
        assert_eq!(
            out.path_and_query,
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        let key_header = out
            .headers
            .iter()
            .find(|(n, _)| n == "x-goog-api-key")
            .unwrap();
        assert_eq!(key_header.1, "g-key");
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body, json(fixture!("request_tools.gemini.json")));
    }

    #[test]
    fn streaming_uses_sse_endpoint() {
        let mut v = json(fixture!("request_tools.openai.json"));
        v["stream"] = json!(true);
        let ep = Endpoint::from_url(
            &url::Url::parse("https://generativelanguage.googleapis.com").unwrap(),
        )
        .unwrap();
        let out = GeminiAdapter
            .build_request(
                &request(v),
                &AttemptTarget {
                    upstream_model: "models/gemini-2.5-pro",
                    endpoint: &ep,
                    api_key: None,
                    extra_headers: &[],
                },
            )
            .unwrap();
        assert_eq!(
            out.path_and_query,
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert!(!out.path_and_query.contains("key="));
    }

    #[test]
    fn golden_text_response_with_thoughts_and_usage() {
        let decoded = GeminiAdapter
            .decode_response(Bytes::from_static(
                fixture!("response_text.gemini.json").as_bytes(),
            ))
            .unwrap();
        let got = json(&normalise_created(
            std::str::from_utf8(&decoded.body).unwrap(),
        ));
        assert_eq!(got, json(fixture!("response_text.openai.json")));
    }

    #[test]
    fn function_call_response_gets_ids_tool_calls_and_signature_round_trip() {
        let answer = r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "find_theaters", "args": {"movie": "Barbie"}}, "thoughtSignature": "c2lnLTE="}, {"functionCall": {"name": "noargs"}}], "role": "model"}, "finishReason": "STOP", "index": 0}]}"#;
        let decoded = GeminiAdapter.decode_response(Bytes::from(answer)).unwrap();
        let v: Value = serde_json::from_slice(&decoded.body).unwrap();
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(calls[0]["function"]["arguments"], "{\"movie\":\"Barbie\"}");
        assert_eq!(calls[1]["function"]["arguments"], "{}");
        let id = calls[0]["id"].as_str().unwrap();
        assert_ne!(id, calls[1]["id"].as_str().unwrap());
        assert_eq!(signature_of(id), Some("c2lnLTE="));
        // Replaying the call sends the signature back.
        let replay = GeminiAdapter::request_body(&request(json!({"model": "g", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "find_theaters", "arguments": "{\"movie\":\"Barbie\"}"}}]},
            {"role": "tool", "tool_call_id": id, "content": "none"}]})))
        .unwrap();
        assert_eq!(
            replay["contents"][1]["parts"][0]["thoughtSignature"],
            "c2lnLTE="
        );
    }

    #[test]
    fn golden_stream_with_crlf_and_repeated_finish_reason() {
        for piece in [1, 7, 4096] {
            let (r, out, usage) = stream(fixture!("stream_text.gemini.sse"), true, piece);
            r.unwrap();
            assert_eq!(out, fixture!("stream_text.openai.sse"), "piece {piece}");
            assert_eq!(usage.unwrap().total(), 47);
        }
    }

    #[test]
    fn streamed_function_calls_get_dense_indexes_and_tool_calls_finish() {
        let (r, out, usage) = stream(fixture!("stream_function_call.gemini.sse"), false, 13);
        r.unwrap();
        let events: Vec<Value> = out
            .split("\n\n")
            .filter(|e| e.starts_with("data: {"))
            .map(|e| serde_json::from_str(&e[6..]).unwrap())
            .collect();
        let calls: Vec<&Value> = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0]["index"].clone(), calls[1]["index"].clone()),
            (json!(0), json!(1))
        );
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(signature_of(calls[0]["id"].as_str().unwrap()), Some("c2ln"));
        assert_eq!(
            events.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
        let u = usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (20, 15, 5)
        );
    }

    #[test]
    fn stream_without_finish_reason_is_truncated_and_errors_fail_it() {
        let first_event = fixture!("stream_text.gemini.sse")
            .split("\r\n\r\n")
            .next()
            .unwrap();
        assert!(matches!(
            stream(&format!("{first_event}\r\n\r\n"), false, 5).0,
            Err(StreamFailure::Truncated)
        ));
        let error = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"index\": 0}]}\n\ndata: {\"error\": {\"code\": 429, \"message\": \"Resource has been exhausted\", \"status\": \"RESOURCE_EXHAUSTED\"}}\n\n";
        match stream(error, false, 8).0 {
            Err(StreamFailure::Upstream(e)) => {
                assert_eq!(e.status(), 429);
                assert_eq!(e.openai_type(), "rate_limit_error");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            stream("data: {oops\n\n", false, 3).0,
            Err(StreamFailure::Malformed(_))
        ));
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_answer() {
        let blocked = r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},"modelVersion":"gemini-2.5-flash"}"#;
        let decoded = GeminiAdapter.decode_response(Bytes::from(blocked)).unwrap();
        let v: Value = serde_json::from_slice(&decoded.body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        let (r, out, _) = stream(&format!("data: {blocked}\n\n"), false, 10);
        r.unwrap();
        assert!(out.contains("\"finish_reason\":\"content_filter\""));
    }

    #[test]
    fn schema_is_reduced_to_gemini_subset() {
        let schema = json!({"$schema": "x", "type": "object", "additionalProperties": false, "title": "T",
            "properties": {
                "a": {"type": ["string", "null"], "examples": ["x"]},
                "b": {"const": "fixed"},
                "c": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                "d": {"anyOf": [{"type": "integer"}, {"type": "string"}]}
            },
            "$defs": {"item": {"type": "object", "properties": {"n": {"type": "number", "default": 1}}}}});
        assert_eq!(
            sanitize_schema(&schema),
            json!({"type": "OBJECT", "properties": {
                "a": {"type": "STRING", "nullable": true},
                "b": {"enum": ["fixed"]},
                "c": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}}},
                "d": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]}
            }})
        );
        // A self-referencing schema terminates.
        let recursive = json!({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"});
        let _ = sanitize_schema(&recursive);
    }

    #[test]
    fn refusals_and_tool_result_name_lookup() {
        let base = |extra: Value| {
            let mut v = json!({"model": "g", "messages": [{"role": "user", "content": "x"}]});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            GeminiAdapter::request_body(&request(v))
        };
        assert_eq!(
            base(json!({"logit_bias": {"1": 2}})).unwrap_err().param(),
            Some("logit_bias")
        );
        assert_eq!(
            base(json!({"n": 2, "stream": true})).unwrap_err().param(),
            Some("n")
        );
        assert_eq!(
            base(json!({"stop": ["a", "b", "c", "d", "e", "f"]}))
                .unwrap_err()
                .param(),
            Some("stop")
        );
        assert_eq!(base(json!({"whatever": 1})).unwrap_err().status(), 400);
        assert_eq!(
            base(json!({"n": 2})).unwrap()["generationConfig"]["candidateCount"],
            2
        );
        let ok = base(json!({"parallel_tool_calls": false, "user": "u", "store": true, "reasoning_effort": "low",
                              "response_format": {"type": "json_object"}})).unwrap();
        assert_eq!(
            ok["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            1024
        );
        assert_eq!(
            ok["generationConfig"]["responseMimeType"],
            "application/json"
        );
        let err = GeminiAdapter::request_body(&request(json!({"model": "g", "messages": [
            {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]})))
        .unwrap_err();
        assert_eq!(err.param(), Some("messages"));
        let empty = GeminiAdapter::request_body(&request(json!({"model": "g", "messages": [
            {"role": "user", "content": ""}, {"role": "user", "content": [{"type": "text", "text": ""}]}]})));
        assert!(empty.is_err(), "no empty parts may be sent");
    }

    #[test]
    fn errors_map_per_status_and_never_leak_keys() {
        let e = decode_gemini_error(Some("gemini"), 429, br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#, Some("20".into()));
        assert_eq!(
            (e.status(), e.openai_type(), e.openai_code()),
            (429, "rate_limit_error", Some("rate_limit_exceeded"))
        );
        assert_eq!(e.retry_after(), Some("20"));
        let e = decode_gemini_error(Some("gemini"), 400, br#"[{"error":{"code":400,"message":"Please ensure that the number of function response parts is equal to the number of function call parts","status":"INVALID_ARGUMENT"}}]"#, None);
        assert_eq!(e.status(), 400);
        assert!(e.to_string().starts_with("gemini: Please ensure"));
        let e = decode_gemini_error(Some("gemini"), 400, br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#, None);
        assert!(e.to_string().contains("rejected the gateway's credentials"));
        let e = decode_gemini_error(Some("gemini"), 503, b"upstream connect error", None);
        assert_eq!(e.openai_type(), "server_error");
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("STOP"), false), "stop");
        assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
        assert_eq!(finish_reason(Some("MAX_TOKENS"), false), "length");
        assert_eq!(finish_reason(Some("SAFETY"), false), "content_filter");
        assert_eq!(finish_reason(Some("RECITATION"), false), "content_filter");
        assert_eq!(
            finish_reason(Some("MALFORMED_FUNCTION_CALL"), false),
            "stop"
        );
        assert_eq!(finish_reason(Some("FUTURE_REASON"), false), "stop");
        assert_eq!(finish_reason(None, false), "stop");
    }
}
