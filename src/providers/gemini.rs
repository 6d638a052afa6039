//! Google Gemini API (`kind: gemini`): `generateContent` and `streamGenerateContent?alt=sse`.
//!
//! Translation follows the reference (§3, §5.4, §5.5, §5.8–5.10). Decisions:
//! - System and developer messages become `systemInstruction`, in order; consecutive turns of
//!   one role are merged, and empty parts are never sent (Gemini rejects them).
//! - Tool results need the function *name*, which OpenAI tool messages lack: it is looked up from
//!   the assistant tool call with the same id; an unknown id is a 400.
//! - Gemini 3 requires the `thoughtSignature` of a function call when the call is replayed. The
//!   signature is carried inside the OpenAI tool-call id (`call_<8 hex>_ts_<signature>`) and put
//!   back when the client replays the call, so no state is kept in the gateway. A replayed model
//!   turn whose calls carry no signature at all (history from another provider) gets Google's
//!   documented `skip_thought_signature_validator` stand-in when the model is Gemini 3 or later.
//! - JSON schemas (tool parameters, `response_format`) are reduced to Gemini's OpenAPI subset:
//!   `$ref`/`$defs` inlined, `anyOf` with `null` and type lists become `nullable`, `const` becomes
//!   `enum`, unsupported keywords, string formats and non-string enums are removed. Recursive
//!   `$ref`s cannot be expressed and are refused, as are schemas that inlining would blow up.
//! - Refused with a 400 naming the parameter: `logit_bias`, `n` > 1 with `stream`, `audio` and
//!   `modalities` with audio, `file_id`, non-function tools, more than 5 `stop` sequences,
//!   `input_audio` other than wav/mp3, unknown fields (named in the message).
//! - Dropped (no Gemini equivalent, no effect on the answer's meaning): `parallel_tool_calls`,
//!   `user`, `safety_identifier`, `store`, `metadata`, `service_tier`, `prompt_cache_key`,
//!   `stream_options` (the gateway writes the usage chunk itself), `verbosity`, image `detail`.
//! - Not translated back: `logprobs` are requested from Gemini but answers carry
//!   `"logprobs": null`.
//! - Streams have no closing event; a stream that ends before any `finishReason` is a failure.
//!   Old models repeat `finishReason` on every chunk, so the finish chunk is written at the end.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderValue;
use serde::de::IgnoredAny;
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
use crate::dialect::ClientRequest;
use crate::error::GatewayError;

const MAX_STOP_SEQUENCES: usize = 5;
/// Gemini's `candidateCount` limit; a stream naming a higher index is not Gemini's.
const MAX_CANDIDATES: usize = 8;
/// Separates a synthesized call id from the thought signature it carries.
const SIGNATURE_MARK: &str = "_ts_";
/// Google's documented stand-in for a signature that was never issued (calls replayed from
/// another model's history); Gemini 3 otherwise rejects the request.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";
/// Bytes of `$defs` one schema may inline: a few hundred bytes of nested references would
/// otherwise expand into gigabytes.
const MAX_INLINED_BYTES: usize = 2 * 1024 * 1024;
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

/// The thought signature a tool-call id carries, if it is one of ours: ids from other vendors
/// may contain `_ts_` too, and a garbled signature is itself a 400 from Gemini.
fn signature_of(id: &str) -> Option<&str> {
    let (random, sig) = id.strip_prefix("call_")?.split_once(SIGNATURE_MARK)?;
    (random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit()) && !sig.is_empty())
        .then_some(sig)
}

/// Whether the model validates thought signatures on replayed calls (Gemini 3 and later).
fn validates_signatures(model: &str) -> bool {
    let Some(version) = model.strip_prefix("gemini-") else {
        return false;
    };
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().is_ok_and(|m| m >= 3)
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
        Some("heif") => "image/heif",
        Some("pdf") => "application/pdf",
        Some("mp3") => "audio/mp3",
        Some("wav") => "audio/wav",
        _ => "image/jpeg",
    }
}

fn user_parts(content: &Content<'_>) -> Result<Vec<Value>, GatewayError> {
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
            // Another vendor's thinking means nothing to Gemini.
            ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => {}
            ContentPart::ImageUrl { image_url } => {
                let url = image_url.url.as_ref();
                if let Some((mime, data)) = parse_data_url(url) {
                    out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                } else if ["https://", "http://", "gs://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    out.push(json!({"fileData": {"mimeType": mime_from_url(url), "fileUri": url}}));
                } else {
                    return Err(invalid(
                        "image_url must be a base64 data URL or an http(s) URL",
                        "messages",
                    ));
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
                // OpenAI's file parts are PDFs; bare base64 is accepted as one.
                let (mime, b64) = parse_data_url(data).unwrap_or(("application/pdf", data));
                out.push(json!({"inlineData": {"mimeType": mime, "data": b64}}));
            }
            ContentPart::InputAudio { input_audio } => {
                let data = input_audio
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("input_audio needs data", "messages"))?;
                let mime = match input_audio.get("format").and_then(Value::as_str) {
                    Some("wav") => "audio/wav",
                    Some("mp3") => "audio/mp3",
                    _ => return Err(invalid("input_audio format must be wav or mp3", "messages")),
                };
                out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
            }
        }
    }
    Ok(out)
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
fn build_contents(params: &chat::Request<'_>) -> Result<(Vec<Value>, Vec<Turn>), GatewayError> {
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

/// Gives the first call of each model turn that carries no signature at all the stand-in.
/// Turns with a signature are left alone: of parallel calls only the first one carries it.
fn fill_missing_signatures(turns: &mut [Turn]) {
    for (role, parts) in turns.iter_mut() {
        if *role != "model" || parts.iter().any(|p| p.get("thoughtSignature").is_some()) {
            continue;
        }
        if let Some(first_call) = parts.iter_mut().find(|p| p.get("functionCall").is_some()) {
            first_call["thoughtSignature"] = json!(SKIP_SIGNATURE);
        }
    }
}

/// Keywords of Gemini's OpenAPI-subset `Schema` that pass through unchanged.
const SCHEMA_KEEP: [&str; 12] = [
    "description",
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
    "nullable",
];

/// Reduces a JSON Schema to what Gemini accepts (§3.6), inlining local `$ref`s. `param` names
/// the request field the schema came from, for the 400 when it cannot be expressed.
pub fn sanitize_schema(schema: &Value, param: &'static str) -> Result<Value, GatewayError> {
    let mut sanitizer = Sanitizer {
        defs: ["$defs", "definitions"]
            .iter()
            .find_map(|k| schema.get(k).and_then(Value::as_object)),
        expanding: Vec::new(),
        inlined: HashMap::new(),
        inlined_bytes: 0,
        param,
    };
    sanitizer.node(schema)
}

struct Sanitizer<'a> {
    defs: Option<&'a Map<String, Value>>,
    /// The `$ref`s being inlined, outermost first: meeting one again means recursion.
    expanding: Vec<&'a str>,
    /// Each definition sanitised once, with its size in bytes.
    inlined: HashMap<&'a str, (Value, usize)>,
    /// Bytes inlined so far, counting every use of a definition.
    inlined_bytes: usize,
    param: &'static str,
}

impl<'a> Sanitizer<'a> {
    fn node(&mut self, node: &'a Value) -> Result<Value, GatewayError> {
        let Value::Object(obj) = node else {
            return Ok(node.clone());
        };
        // Schemas this node takes keywords from: its `$ref`, its `allOf` members and a lone
        // non-null `anyOf` branch. Its own keywords (a description at the point of use, say)
        // win over theirs.
        let mut inherited = Vec::new();
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            inherited.push(self.reference(reference)?);
        }
        for member in obj
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            inherited.push(self.node(member)?);
        }
        let mut own = Map::new();
        let mut nullable = obj.get("nullable").and_then(Value::as_bool) == Some(true);
        let branches = obj
            .get("anyOf")
            .or_else(|| obj.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(branches) = branches {
            let is_null = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
            let real: Vec<&Value> = branches.iter().filter(|b| !is_null(b)).collect();
            nullable |= real.len() < branches.len();
            match real.as_slice() {
                [] => {}
                [only] => inherited.push(self.node(only)?),
                many => {
                    let mut sanitized = Vec::with_capacity(many.len());
                    for branch in many {
                        sanitized.push(self.node(branch)?);
                    }
                    own.insert("anyOf".into(), Value::Array(sanitized));
                }
            }
        }

        match obj.get("type") {
            Some(Value::String(t)) if t == "null" => nullable = true,
            Some(Value::String(t)) => {
                own.insert("type".into(), json!(t.to_ascii_uppercase()));
            }
            Some(Value::Array(types)) => {
                let real: Vec<String> = types
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|t| *t != "null")
                    .map(str::to_ascii_uppercase)
                    .collect();
                nullable |= real.len() < types.len();
                match real.as_slice() {
                    [] => {}
                    [only] => {
                        own.insert("type".into(), json!(only));
                    }
                    // With properties or items, those say which of the types is meant.
                    _ if obj.contains_key("properties") => {
                        own.insert("type".into(), json!("OBJECT"));
                    }
                    _ if obj.contains_key("items") => {
                        own.insert("type".into(), json!("ARRAY"));
                    }
                    // Scalars of several types: a union keeps them all.
                    many => {
                        let any: Vec<Value> = many.iter().map(|t| json!({"type": t})).collect();
                        own.insert("anyOf".into(), Value::Array(any));
                    }
                }
            }
            _ => {}
        }
        for key in SCHEMA_KEEP {
            if let Some(v) = obj.get(key) {
                own.insert(key.into(), v.clone());
            }
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            let mut sanitized = Map::with_capacity(props.len());
            for (name, schema) in props {
                sanitized.insert(name.clone(), self.node(schema)?);
            }
            own.insert("properties".into(), Value::Object(sanitized));
        }
        if let Some(required) = obj.get("required") {
            own.insert("required".into(), required.clone());
        }
        if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
            let items = self.node(items)?;
            own.insert("items".into(), items);
        }
        if let Some(values) = obj.get("enum") {
            own.insert("enum".into(), values.clone());
        }
        if let Some(value) = obj.get("const") {
            own.insert("enum".into(), json!([value]));
        }
        if let Some(format) = obj.get("format") {
            own.insert("format".into(), format.clone());
        }
        if nullable {
            own.insert("nullable".into(), json!(true));
        }
        for schema in inherited {
            merge_into(&mut own, schema);
        }
        Ok(Value::Object(fit_gemini_rules(own)))
    }

    fn reference(&mut self, reference: &'a str) -> Result<Value, GatewayError> {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"));
        let Some((name, target)) = name.and_then(|n| Some((n, self.defs?.get(n)?))) else {
            return Err(invalid(
                format!("schema $ref '{reference}' does not name an entry of the schema's $defs"),
                self.param,
            ));
        };
        if let Some(size) = self.inlined.get(name).map(|(_, size)| *size) {
            self.charge(size)?;
            if let Some((schema, _)) = self.inlined.get(name) {
                return Ok(schema.clone());
            }
        }
        if self.expanding.contains(&name) {
            return Err(invalid(
                format!("recursive schema $ref '{reference}' cannot be expressed in Gemini's schema subset"),
                self.param,
            ));
        }
        self.expanding.push(name);
        let result = self.node(target);
        self.expanding.pop();
        let schema = result?;
        let size = schema.to_string().len();
        self.charge(size)?;
        self.inlined.insert(name, (schema.clone(), size));
        Ok(schema)
    }

    fn charge(&mut self, bytes: usize) -> Result<(), GatewayError> {
        self.inlined_bytes += bytes;
        if self.inlined_bytes > MAX_INLINED_BYTES {
            return Err(invalid(
                format!("schema is too large for provider kind gemini once its $refs are inlined (over {MAX_INLINED_BYTES} bytes)"),
                self.param,
            ));
        }
        Ok(())
    }
}

/// Adds `from`'s keywords to `into` (which keeps its own); properties and required lists of
/// both are combined, as `allOf` means all of them hold.
fn merge_into(into: &mut Map<String, Value>, from: Value) {
    let Value::Object(from) = from else { return };
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(mine)), Value::Object(theirs)) if key == "properties" => {
                for (k, v) in theirs {
                    mine.entry(k).or_insert(v);
                }
            }
            (Some(Value::Array(mine)), Value::Array(theirs)) if key == "required" => {
                for v in theirs {
                    if !mine.contains(&v) {
                        mine.push(v);
                    }
                }
            }
            (Some(_), _) => {}
            (None, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Gemini's checks beyond keyword names, each one a 400 seen in the wild: `properties` and
/// `required` only on OBJECT, required names must exist, `enum` only of strings on STRING,
/// `format` only the few it knows per type.
fn fit_gemini_rules(mut node: Map<String, Value>) -> Map<String, Value> {
    if !node.contains_key("type") && !node.contains_key("anyOf") {
        let inferred = if node.contains_key("properties") {
            Some("OBJECT")
        } else if node.contains_key("items") {
            Some("ARRAY")
        } else if node.contains_key("enum") {
            Some("STRING")
        } else {
            None
        };
        if let Some(t) = inferred {
            node.insert("type".into(), json!(t));
        }
    }
    let kind = node.get("type").and_then(Value::as_str).map(str::to_string);
    let kind = kind.as_deref();
    if kind != Some("OBJECT") {
        node.remove("properties");
        node.remove("required");
        node.remove("propertyOrdering");
    }
    if kind != Some("ARRAY") {
        node.remove("items");
    }
    let known: Vec<String> = match node.get("properties") {
        Some(Value::Object(props)) => props.keys().cloned().collect(),
        _ => Vec::new(),
    };
    if let Some(Value::Array(required)) = node.get_mut("required") {
        required.retain(|r| r.as_str().is_some_and(|r| known.iter().any(|k| k == r)));
    }
    if node
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        node.remove("required");
    }
    let strings_only = node
        .get("enum")
        .and_then(Value::as_array)
        .is_some_and(|values| !values.is_empty() && values.iter().all(Value::is_string));
    if kind != Some("STRING") || !strings_only {
        // A number enum cannot become strings without changing the arguments' types.
        node.remove("enum");
    }
    let format_ok = matches!(
        (kind, node.get("format").and_then(Value::as_str)),
        (Some("STRING"), Some("enum" | "date-time"))
            | (Some("INTEGER"), Some("int32" | "int64"))
            | (Some("NUMBER"), Some("float" | "double"))
    );
    if !format_ok {
        node.remove("format");
    }
    node
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

/// Refuses the fields Gemini cannot honour and any field this adapter does not know.
fn check_fields(params: &chat::Request<'_>) -> Result<(), GatewayError> {
    if params.logit_bias.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "logit_bias is not supported by provider kind gemini",
            "logit_bias",
        ));
    }
    for (key, value) in params.rest.iter() {
        match key.as_str() {
            "audio" if !value.is_null() => {
                return Err(invalid(
                    "audio output is not supported by provider kind gemini",
                    "audio",
                ))
            }
            "modalities" => {
                if value
                    .as_array()
                    .is_some_and(|m| m.iter().any(|v| v != "text"))
                {
                    return Err(invalid(
                        "provider kind gemini only answers with text modalities",
                        "modalities",
                    ));
                }
            }
            "audio" => {}
            k if DROPPED_FIELDS.contains(&k) => {}
            k => {
                return Err(GatewayError::invalid(
                    format!("parameter '{k}' is not supported by provider kind gemini"),
                    None,
                ))
            }
        }
    }
    Ok(())
}

impl GeminiAdapter {
    /// The Gemini request body for a canonical request, sent to `model`.
    pub fn request_body(params: &chat::Request<'_>, model: &str) -> Result<Value, GatewayError> {
        check_fields(params)?;
        let (system, mut turns) = build_contents(params)?;
        if validates_signatures(model) {
            fill_missing_signatures(&mut turns);
        }
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
            if let Some(p) = &function.parameters {
                let parameters = sanitize_schema(p, "tools")?;
                // A function without parameters sends none: an empty object schema is noise.
                let has_params = parameters
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|o| !o.is_empty())
                    || parameters.get("anyOf").is_some();
                if has_params {
                    decl["parameters"] = parameters;
                }
            }
            declarations.push(decl);
        }
        if !declarations.is_empty() {
            body.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
            if let Some(choice) = params.tool_choice.as_ref().filter(|c| !c.is_null()) {
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
            if params.stream {
                return Err(invalid(
                    "n > 1 cannot be streamed from provider kind gemini",
                    "n",
                ));
            }
            set("candidateCount", Some(json!(n)));
        }
        if let Some(format) = params.response_format.as_ref().filter(|f| !f.is_null()) {
            match format.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some("json_object") => set("responseMimeType", Some(json!("application/json"))),
                Some("json_schema") => {
                    set("responseMimeType", Some(json!("application/json")));
                    if let Some(schema) = format.get("json_schema").and_then(|s| s.get("schema")) {
                        set(
                            "responseSchema",
                            Some(sanitize_schema(schema, "response_format")?),
                        );
                    }
                }
                other => {
                    return Err(invalid(
                        format!(
                            "response_format type '{}' is not supported",
                            other.unwrap_or("(none)")
                        ),
                        "response_format",
                    ))
                }
            }
        }
        match (params.thinking_budget, params.reasoning_effort) {
            (Some(budget), _) => set(
                "thinkingConfig",
                Some(json!({"thinkingBudget": budget, "includeThoughts": true})),
            ),
            (None, Some(effort)) => set("thinkingConfig", Some(thinking_config(effort)?)),
            (None, None) => {}
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
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = target.upstream_model.trim_start_matches("models/");
        if model.is_empty() || model.contains(['/', '?', '#', ' ', ':']) {
            return Err(invalid(
                format!("'{model}' is not a valid Gemini model name"),
                "model",
            ));
        }
        let body = Self::request_body(&request.canonical()?, model)?;
        let method = if request.stream() {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let path_and_query = format!(
            "{}/v1beta/models/{model}:{method}",
            target.endpoint.base_path
        );
        let mut headers = Vec::with_capacity(2 + target.extra_headers.len());
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

    fn decode_response(&self, body: Bytes, _native: bool) -> Result<Answer, StreamFailure> {
        let response: ResponseWire = serde_json::from_slice(&body).map_err(|e| {
            StreamFailure::Malformed(format!("answer is not a Gemini response: {e}"))
        })?;
        let usage = response
            .usage_metadata
            .map(UsageWire::to_usage)
            .unwrap_or_default();
        let mut candidates = response.candidates;
        // Choices are numbered by position; Gemini numbers candidates itself.
        candidates.sort_by_key(|c| c.index.unwrap_or(0));
        let mut choices = Vec::with_capacity(candidates.len().max(1));
        for candidate in candidates {
            let mut choice = chat::Choice::default();
            let mut text = String::new();
            let mut reasoning = String::new();
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    choice.tool_calls.push(ToolCallOut {
                        id: synthesize_call_id(part.thought_signature.as_deref()),
                        name: call.name,
                        arguments: call
                            .args
                            .map_or_else(|| "{}".to_string(), |a| a.to_string()),
                    });
                } else if let Some(t) = part.text {
                    if part.thought {
                        reasoning.push_str(&t);
                    } else {
                        text.push_str(&t);
                    }
                }
            }
            choice.finish_reason = finish_reason(
                candidate.finish_reason.as_deref(),
                !choice.tool_calls.is_empty(),
            );
            choice.content = (!text.is_empty() || choice.tool_calls.is_empty()).then_some(text);
            choice.reasoning = (!reasoning.is_empty()).then_some(reasoning);
            choices.push(choice);
        }
        if choices.is_empty() {
            if !response.prompt_feedback.is_some_and(|f| f.blocked()) {
                return Err(StreamFailure::Malformed("answer has no candidates".into()));
            }
            // A blocked prompt: one empty choice that says so.
            choices.push(chat::Choice {
                content: None,
                finish_reason: StopReason::ContentFilter,
                ..chat::Choice::default()
            });
        }
        let id = response
            .response_id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("chatcmpl-{:016x}", fastrand::u64(..)));
        Ok(Answer::Chat(chat::Response {
            id,
            created: now_unix(),
            model: response
                .model_version
                .unwrap_or_else(|| "gemini".to_string()),
            choices,
            usage,
        }))
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

    fn stream_decoder(&self, _native: bool, _settings: StreamSettings) -> StreamReader {
        StreamReader::Events(Box::new(SseFrame::new(GeminiStreamDecoder {
            candidates: Vec::new(),
            usage: None,
            blocked: false,
            identified: false,
        })))
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

/// The canonical stop reason for a Gemini `finishReason` (§5.8).
pub fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> StopReason {
    if has_tool_calls {
        return StopReason::ToolUse;
    }
    match reason {
        Some("MAX_TOKENS") => StopReason::MaxTokens,
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
        ) => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
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
    /// The HTTP status, also inside a stream that began with 200.
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
    /// The gRPC status name (`RESOURCE_EXHAUSTED`, ...).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

/// One `google.rpc` detail; only `ErrorInfo.reason` and `RetryInfo.retryDelay` are read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    retry_delay: Option<String>,
}

/// HTTP status for a gRPC status name, for errors reported inside a stream.
fn grpc_http_status(status: &str) -> u16 {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "RESOURCE_EXHAUSTED" => 429,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

/// `RetryInfo.retryDelay` (`"39s"`, `"1.5s"`) as whole `Retry-After` seconds, rounded up.
fn retry_delay_seconds(delay: &str) -> Option<String> {
    let secs: f64 = delay.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| (secs.ceil() as u64).to_string())
}

/// Maps a Gemini error (HTTP body or in-stream object) to the client's error (§5.10). `status`
/// is the HTTP status, 200 for an error inside a stream. `provider` prefixes the message;
/// stream decoders pass `None` and the caller adds it.
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
    let (message, grpc, code, details) = match parsed {
        Some(e) => (e.message, e.status, e.code, e.details),
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            ((!text.is_empty()).then_some(text), None, None, Vec::new())
        }
    };
    let status = if (200..300).contains(&status) {
        // Inside a stream the HTTP status said nothing; the error's own code does.
        code.as_ref()
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or_else(|| grpc.as_deref().map_or(500, grpc_http_status))
    } else {
        status
    };
    let kind = match grpc.as_deref() {
        Some("RESOURCE_EXHAUSTED") => "rate_limit_error",
        _ => super::openai_error_type(status),
    };
    // OpenAI's own codes where it has one, so clients that branch on them keep working.
    let code = match grpc.as_deref() {
        Some("RESOURCE_EXHAUSTED") => Some("rate_limit_exceeded".to_string()),
        Some("NOT_FOUND") => Some("model_not_found".to_string()),
        other => other.map(str::to_string),
    };
    let retry_after = retry_after.or_else(|| {
        details
            .iter()
            .find_map(|d| d.retry_delay.as_deref().and_then(retry_delay_seconds))
    });
    // Gemini answers a bad key with 400 INVALID_ARGUMENT, not 401; the message may quote it.
    let bad_key = details
        .iter()
        .any(|d| d.reason.as_deref() == Some("API_KEY_INVALID"))
        || message.as_deref().is_some_and(|m| m.contains("API key"));
    // It is the gateway's key that is wrong, not the client's request: answered as the 401 it
    // means, so that the attempt fails over like any other rejected key.
    let (status, kind, code) = if bad_key {
        (
            401,
            "authentication_error",
            Some("invalid_api_key".to_string()),
        )
    } else {
        (status, kind, code)
    };
    let message = upstream_message(provider, status, message);
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
    prompt_feedback: Option<PromptFeedbackWire>,
    #[serde(default)]
    usage_metadata: Option<UsageWire>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedbackWire {
    #[serde(default)]
    block_reason: Option<String>,
}

impl PromptFeedbackWire {
    /// Feedback also comes with answered prompts (safety ratings); only a reason means blocked.
    fn blocked(&self) -> bool {
        self.block_reason
            .as_deref()
            .is_some_and(|r| r != "BLOCK_REASON_UNSPECIFIED")
    }
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
    /// Tool calls written so far: the next call's dense index.
    tools: u32,
    /// The last `finishReason` seen; old models send one on every chunk.
    finish: Option<String>,
}

struct GeminiStreamDecoder {
    candidates: Vec<CandidateState>,
    usage: Option<UsageWire>,
    blocked: bool,
    identified: bool,
}

impl<'s> SseHandler<dyn EventSink + 's> for GeminiStreamDecoder {
    fn event(
        &mut self,
        event: SseEvent,
        sink: &mut (dyn EventSink + 's),
    ) -> Result<(), StreamFailure> {
        self.handle(event, sink)
    }

    fn end(&mut self, sink: &mut (dyn EventSink + 's)) -> Result<(), StreamFailure> {
        if self.blocked && self.candidates.is_empty() {
            sink.emit(Event::Start { choice: 0 });
            sink.emit(Event::Finish {
                choice: 0,
                reason: StopReason::ContentFilter,
            });
        } else {
            // Gemini has no closing event: a finishReason is the only sign the answer is whole.
            if self.candidates.is_empty() || self.candidates.iter().any(|c| c.finish.is_none()) {
                return Err(StreamFailure::Truncated);
            }
            for (i, c) in self.candidates.iter().enumerate() {
                sink.emit(Event::Finish {
                    choice: i as u32,
                    reason: finish_reason(c.finish.as_deref(), c.tools > 0),
                });
            }
        }
        let usage = self.usage();
        sink.emit(Event::End {
            usage: usage.as_ref(),
        });
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(UsageWire::to_usage)
    }
}

impl GeminiStreamDecoder {
    fn handle(&mut self, event: SseEvent, sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
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
            sink.emit(Event::Identity {
                id: response.response_id.as_deref(),
                model: Some(response.model_version.as_deref().unwrap_or("gemini")),
            });
        }
        if let Some(u) = response.usage_metadata {
            // Usage may repeat on several chunks: the last one is the total.
            self.usage = Some(u);
        }
        if response.candidates.is_empty() && response.prompt_feedback.is_some_and(|f| f.blocked()) {
            self.blocked = true;
        }
        for candidate in response.candidates {
            let index = candidate.index.unwrap_or(0);
            let slot = index as usize;
            if slot >= MAX_CANDIDATES {
                return Err(StreamFailure::Malformed(format!(
                    "candidate index {index} is out of range"
                )));
            }
            if self.candidates.len() <= slot {
                self.candidates.resize(slot + 1, CandidateState::default());
            }
            if !self.candidates[slot].started {
                self.candidates[slot].started = true;
                sink.emit(Event::Start { choice: index });
            }
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    let tool_index = self.candidates[slot].tools;
                    self.candidates[slot].tools += 1;
                    let id = synthesize_call_id(part.thought_signature.as_deref());
                    let args = call
                        .args
                        .map_or_else(|| "{}".to_string(), |a| a.to_string());
                    sink.emit(Event::ToolCallStart {
                        choice: index,
                        index: tool_index,
                        id: &id,
                        name: &call.name,
                        arguments: &args,
                    });
                } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                    sink.emit(if part.thought {
                        Event::Reasoning {
                            choice: index,
                            text: &text,
                        }
                    } else {
                        Event::Text {
                            choice: index,
                            text: &text,
                        }
                    });
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
    use crate::dialect::openai::ChatRequest;
    use crate::dialect::Dialect;
    use crate::providers::{client_answer, client_stream, Endpoint};

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/gemini/", $name))
        };
    }

    fn client_answer_openai(
        body: Bytes,
    ) -> Result<crate::providers::RenderedAnswer, StreamFailure> {
        client_answer(&GeminiAdapter, body, Dialect::OpenAi)
    }

    #[allow(dead_code)]
    fn client_stream_openai(settings: StreamSettings) -> Box<dyn crate::providers::StreamDecoder> {
        client_stream(&GeminiAdapter, Dialect::OpenAi, settings)
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn request(v: Value) -> ChatRequest {
        ChatRequest::parse(v.to_string().as_bytes()).unwrap()
    }

    /// The Gemini body for `messages` plus `extra` top-level fields, sent to Gemini 2.5.
    fn body_with(messages: Value, extra: Value) -> Result<Value, GatewayError> {
        body_for_model(messages, extra, "gemini-2.5-flash")
    }

    fn body_for_model(messages: Value, extra: Value, model: &str) -> Result<Value, GatewayError> {
        let mut v = json!({"model": "g", "messages": messages});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        GeminiAdapter::request_body(&request(v).canonical()?, model)
    }

    fn hello() -> Value {
        json!([{"role": "user", "content": "x"}])
    }

    /// Replaces the random parts of generated ids and `created`, so output can be compared with
    /// a fixture.
    fn normalise(text: &str) -> String {
        let mut out = blank_after(text, "\"created\":", |c| c.is_ascii_digit(), '0', true);
        out = blank_after(&out, "\"call_", |c| c.is_ascii_hexdigit(), 'X', false);
        blank_after(&out, "\"chatcmpl-", |c| c.is_ascii_hexdigit(), 'X', false)
    }

    /// After each `marker`, replaces the run of characters matching `keep` by `fill` (once,
    /// when `collapse`, else once per character).
    fn blank_after(
        text: &str,
        marker: &str,
        keep: impl Fn(char) -> bool,
        fill: char,
        collapse: bool,
    ) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find(marker) {
            out.push_str(&rest[..pos + marker.len()]);
            rest = &rest[pos + marker.len()..];
            let run = rest.chars().take_while(|c| keep(*c)).count();
            if collapse {
                out.push(fill);
            } else {
                out.extend(std::iter::repeat_n(fill, run));
            }
            rest = &rest[run..];
        }
        out.push_str(rest);
        out
    }

    fn stream(
        input: &str,
        include_usage: bool,
        piece: usize,
    ) -> (Result<(), StreamFailure>, String, Option<Usage>) {
        let mut d = client_stream_openai(StreamSettings { include_usage });
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(piece) {
            if let Err(e) = d.push(c, &mut out) {
                return (Err(e), String::from_utf8(out).unwrap(), d.usage());
            }
        }
        let r = d.finish(&mut out);
        (r, normalise(&String::from_utf8(out).unwrap()), d.usage())
    }

    /// The JSON objects of an OpenAI SSE body.
    fn chunks(sse: &str) -> Vec<Value> {
        sse.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| e.starts_with('{'))
            .map(json)
            .collect()
    }

    fn decode(answer: &str) -> Value {
        let decoded = client_answer_openai(Bytes::from(answer.to_string())).unwrap();
        serde_json::from_slice(&decoded.body).unwrap()
    }

    fn endpoint() -> Endpoint {
        Endpoint::from_url(&url::Url::parse("https://generativelanguage.googleapis.com").unwrap())
            .unwrap()
    }

    // ---- golden fixtures ----

    #[test]
    fn golden_request_with_tools_history_and_signatures() {
        let req = ChatRequest::parse(fixture!("request_tools.openai.json").as_bytes()).unwrap();
        let key = Secret::new("g-key");
        let extra = [(
            http::HeaderName::from_static("x-extra"),
            HeaderValue::from_static("1"),
        )];
        let out = GeminiAdapter
            .build_request(
                &ClientRequest::OpenAi(req),
                &AttemptTarget {
                    upstream_model: "gemini-2.5-flash",
                    endpoint: &endpoint(),
                    api_key: Some(&key),
                    extra_headers: &extra,
                },
            )
            .unwrap();
        assert_eq!(
            out.path_and_query,
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        let header = |name: &str| {
            out.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(header("x-goog-api-key").as_deref(), Some("g-key"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("x-extra").as_deref(), Some("1"));
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body, json(fixture!("request_tools.gemini.json")));
    }

    #[test]
    fn streaming_uses_sse_endpoint_under_the_base_path_and_never_a_key_in_the_url() {
        let mut v = json(fixture!("request_tools.openai.json"));
        v["stream"] = json!(true);
        let key = Secret::new("g-key");
        let ep = Endpoint::from_url(&url::Url::parse("http://proxy.local:8080/gemini/").unwrap())
            .unwrap();
        let out = GeminiAdapter
            .build_request(
                &ClientRequest::OpenAi(request(v)),
                &AttemptTarget {
                    upstream_model: "models/gemini-2.5-pro",
                    endpoint: &ep,
                    api_key: Some(&key),
                    extra_headers: &[],
                },
            )
            .unwrap();
        assert_eq!(
            out.path_and_query,
            "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert!(!out.path_and_query.contains("key="));
        let bad = GeminiAdapter.build_request(
            &ClientRequest::OpenAi(request(json!({"model": "g", "messages": hello()}))),
            &AttemptTarget {
                upstream_model: "gemini?key=x",
                endpoint: &ep,
                api_key: None,
                extra_headers: &[],
            },
        );
        assert_eq!(bad.unwrap_err().param(), Some("model"));
    }

    #[test]
    fn golden_text_response_with_thoughts_and_usage() {
        let got = decode(fixture!("response_text.gemini.json"));
        let got = json(&normalise(&got.to_string()));
        assert_eq!(got, json(fixture!("response_text.openai.json")));
    }

    #[test]
    fn golden_function_call_response() {
        let got = decode(fixture!("response_function_call.gemini.json"));
        let ids: Vec<&str> = got["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_ne!(ids[0], ids[1]);
        let got = json(&normalise(&got.to_string()));
        assert_eq!(got, json(fixture!("response_function_call.openai.json")));
    }

    #[test]
    fn golden_text_stream_in_any_pieces() {
        for piece in [1, 7, 4096] {
            let (r, out, usage) = stream(fixture!("stream_text.gemini.sse"), true, piece);
            r.unwrap();
            assert_eq!(out, fixture!("stream_text.openai.sse"), "piece {piece}");
            assert_eq!(usage.unwrap().total(), 47);
        }
    }

    #[test]
    fn golden_function_call_stream_in_any_pieces() {
        for piece in [1, 7, 4096] {
            let (r, out, _) = stream(fixture!("stream_function_call.gemini.sse"), true, piece);
            r.unwrap();
            assert_eq!(
                out,
                fixture!("stream_function_call.openai.sse"),
                "piece {piece}"
            );
        }
    }

    // ---- request-side tricky cases (reference §6) ----

    #[test]
    fn case01_system_and_developer_messages_keep_their_order() {
        let body = body_with(
            json!([{"role": "system", "content": "a"}, {"role": "user", "content": "x"},
                   {"role": "developer", "content": [{"type": "text", "text": "b"}]},
                   {"role": "system", "content": ""}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "a"}, {"text": "b"}]})
        );
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "x"}]}])
        );
    }

    #[test]
    fn case04_empty_user_content_is_never_sent() {
        let body = body_with(
            json!([{"role": "user", "content": ""},
                   {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]},
                   {"role": "assistant", "content": ""},
                   {"role": "assistant", "content": null},
                   {"role": "user", "content": "again"}]),
            json!({}),
        )
        .unwrap();
        // The empty assistant turns vanish, so the two user turns merge into one.
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}])
        );
        let all_empty = body_with(
            json!([{"role": "user", "content": ""}, {"role": "user", "content": []}]),
            json!({}),
        );
        assert_eq!(all_empty.unwrap_err().param(), Some("messages"));
    }

    #[test]
    fn case05_consecutive_tool_results_form_one_user_turn() {
        let body = body_with(
            json!([{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [
                       {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                       {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "a", "content": "1"},
                   {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "two"}]}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "f", "response": {"output": 1}}},
                {"functionResponse": {"name": "g", "response": {"output": "two"}}}]})
        );
        assert_eq!(body["contents"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn case10_tool_call_arguments_empty_object_invalid() {
        let with_args = |args: &str| {
            body_with(
                json!([{"role": "user", "content": "x"},
                       {"role": "assistant", "tool_calls": [
                           {"id": "a", "type": "function", "function": {"name": "f", "arguments": args}}]}]),
                json!({}),
            )
        };
        for empty in ["", "{}", "  "] {
            assert_eq!(
                with_args(empty).unwrap()["contents"][1]["parts"][0]["functionCall"]["args"],
                json!({})
            );
        }
        for bad in ["{", "[1]", "\"s\""] {
            let err = with_args(bad).unwrap_err();
            assert_eq!(
                (err.status(), err.param()),
                (400, Some("messages")),
                "{bad}"
            );
        }
    }

    #[test]
    fn case11_tool_result_name_is_looked_up_by_call_id() {
        let body = body_with(
            json!([{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [
                       {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "call_9", "content": "{\"ok\":true}"}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "lookup", "response": {"output": {"ok": true}}})
        );
        for orphan in [
            json!([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]),
            json!([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]),
        ] {
            let err = body_with(orphan, json!({})).unwrap_err();
            assert_eq!((err.status(), err.param()), (400, Some("messages")));
        }
    }

    #[test]
    fn case12_assistant_text_and_tool_calls_stay_in_one_model_turn() {
        let body = body_with(
            json!([{"role": "user", "content": "x"},
                   {"role": "assistant", "content": "Let me look.", "tool_calls": [
                       {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["contents"][1],
            json!({"role": "model", "parts": [{"text": "Let me look."},
                                              {"functionCall": {"name": "f", "args": {"q": 1}}}]})
        );
    }

    #[test]
    fn case14_stop_as_string_whitespace_and_at_most_five() {
        let stops = |stop: Value| body_with(hello(), json!({ "stop": stop }));
        assert_eq!(
            stops(json!("\n")).unwrap()["generationConfig"]["stopSequences"],
            json!(["\n"])
        );
        assert_eq!(
            stops(json!(["a", "b", "c", "d", "e"])).unwrap()["generationConfig"]["stopSequences"],
            json!(["a", "b", "c", "d", "e"])
        );
        let err = stops(json!(["a", "b", "c", "d", "e", "f"])).unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("stop")));
        assert_eq!(stops(json!([1])).unwrap_err().param(), Some("stop"));
        assert!(stops(json!(null))
            .unwrap()
            .get("generationConfig")
            .is_none());
    }

    #[test]
    fn case16_images_pdfs_and_audio() {
        let parts = |content: Value| {
            body_with(json!([{ "role": "user", "content": content }]), json!({}))
                .map(|b| b["contents"][0]["parts"].clone())
        };
        let got = parts(json!([
            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;charset=utf-8;base64,iVBO"}},
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
            {"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBERi0="}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.PNG?size=2"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/doc.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}}
        ]))
        .unwrap();
        assert_eq!(
            got,
            json!([
                {"inlineData": {"mimeType": "image/webp", "data": "UklG"}},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                // Gemini decides about formats it may learn; the gateway does not guess.
                {"inlineData": {"mimeType": "image/bmp", "data": "Qk0="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.PNG?size=2"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
                {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/doc.pdf"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGR"}},
                {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}}
            ])
        );
        for refused in [
            json!([{"type": "file", "file": {"file_id": "file-123"}}]),
            json!([{"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}}]),
            json!([{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]),
        ] {
            let err = parts(refused.clone()).unwrap_err();
            assert_eq!(
                (err.status(), err.param()),
                (400, Some("messages")),
                "{refused}"
            );
        }
    }

    #[test]
    fn case20_schemas_are_reduced_to_the_gemini_subset() {
        let schema = json!({"$schema": "x", "type": "object", "additionalProperties": false, "title": "T",
            "properties": {
                "a": {"type": ["string", "null"], "examples": ["x"], "default": "d"},
                "b": {"const": "fixed"},
                "c": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                "d": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "e": {"anyOf": [{"$ref": "#/$defs/item"}, {"type": "null"}], "description": "maybe"},
                "f": {"type": "object", "propertyNames": {"pattern": "^x"}, "patternProperties": {"^x": {}},
                      "properties": {"g": {"type": "string", "format": "email"}}},
                "h": {"type": "string", "format": "date-time", "enum": ["2020-01-01T00:00:00Z"]},
                "i": {"type": "integer", "enum": [1, 2], "format": "int64"},
                "j": {"type": ["integer", "string"]}
            },
            "required": ["a", "missing"],
            "$defs": {"item": {"type": "object", "title": "Item", "properties": {"n": {"type": "number", "default": 1}}}}});
        assert_eq!(
            sanitize_schema(&schema, "tools").unwrap(),
            json!({"type": "OBJECT", "required": ["a"], "properties": {
                "a": {"type": "STRING", "nullable": true},
                "b": {"type": "STRING", "enum": ["fixed"]},
                "c": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}}},
                "d": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
                "e": {"type": "OBJECT", "description": "maybe", "nullable": true,
                      "properties": {"n": {"type": "NUMBER"}}},
                "f": {"type": "OBJECT", "properties": {"g": {"type": "STRING"}}},
                "h": {"type": "STRING", "format": "date-time", "enum": ["2020-01-01T00:00:00Z"]},
                "i": {"type": "INTEGER", "format": "int64"},
                "j": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]}
            }})
        );
    }

    #[test]
    fn case20_ref_siblings_all_of_and_missing_types() {
        let schema = json!({
            "definitions": {"Base": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}},
            "properties": {
                "x": {"$ref": "#/definitions/Base", "description": "the x"},
                "y": {"allOf": [{"$ref": "#/definitions/Base"},
                                {"properties": {"n": {"type": "integer"}}, "required": ["n"]}]},
                "z": {"enum": ["p", "q"]},
                "w": {"items": {"type": "string"}},
                "s": {"type": "string", "properties": {"bogus": {}}, "required": ["bogus"], "items": {}},
                "k": {"type": "boolean", "const": true}
            }
        });
        assert_eq!(
            sanitize_schema(&schema, "tools").unwrap(),
            json!({"type": "OBJECT", "properties": {
                "x": {"type": "OBJECT", "description": "the x", "required": ["id"],
                      "properties": {"id": {"type": "STRING"}}},
                "y": {"type": "OBJECT", "required": ["id", "n"],
                      "properties": {"id": {"type": "STRING"}, "n": {"type": "INTEGER"}}},
                "z": {"type": "STRING", "enum": ["p", "q"]},
                "w": {"type": "ARRAY", "items": {"type": "STRING"}},
                "s": {"type": "STRING"},
                "k": {"type": "BOOLEAN"}
            }})
        );
    }

    #[test]
    fn case20_recursive_dangling_and_exploding_refs_are_refused() {
        let recursive = json!({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"});
        let err = sanitize_schema(&recursive, "response_format").unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("response_format")));
        assert!(err.to_string().contains("recursive"), "{err}");

        let dangling = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}});
        assert_eq!(
            sanitize_schema(&dangling, "tools").unwrap_err().param(),
            Some("tools")
        );

        // Eight defs each using the next one eight times: 8^8 nodes if inlined.
        let mut defs = Map::new();
        for level in 0..8 {
            let mut props = Map::new();
            for p in 0..8 {
                let target = if level == 7 {
                    json!({"type": "string"})
                } else {
                    json!({ "$ref": format!("#/$defs/d{}", level + 1) })
                };
                props.insert(format!("p{p}"), target);
            }
            defs.insert(
                format!("d{level}"),
                json!({"type": "object", "properties": props}),
            );
        }
        let bomb = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        let started = std::time::Instant::now();
        let err = sanitize_schema(&bomb, "tools").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));

        // One big definition used many times costs its size each time.
        let big: Vec<String> = (0..2000).map(|i| format!("{i:0>100}")).collect();
        let uses = |n: usize| {
            let props: Map<String, Value> = (0..n)
                .map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/big"})))
                .collect();
            json!({"type": "object", "properties": props,
                   "$defs": {"big": {"type": "string", "enum": big}}})
        };
        assert!(sanitize_schema(&uses(3), "tools").is_ok());
        let err = sanitize_schema(&uses(20), "tools").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn case20_tools_and_response_format_use_the_sanitised_schema() {
        let body = body_with(
            hello(),
            json!({"tools": [
                    {"type": "function", "function": {"name": "noargs"}},
                    {"type": "function", "function": {"name": "empty", "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}},
                    {"type": "function", "function": {"name": "q", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
                   "tool_choice": {"type": "function", "function": {"name": "q"}},
                   "response_format": {"type": "json_schema", "json_schema": {"name": "o", "strict": true,
                       "schema": {"type": "object", "additionalProperties": false, "properties": {"v": {"type": "integer"}}, "required": ["v"]}}}}),
        )
        .unwrap();
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [{"name": "noargs"}, {"name": "empty"},
                {"name": "q", "parameters": {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}}}]}])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["q"]}})
        );
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json", "responseSchema":
                {"type": "OBJECT", "properties": {"v": {"type": "INTEGER"}}, "required": ["v"]}})
        );
        let err =
            body_with(hello(), json!({"tools": [{"type": "web_search_preview"}]})).unwrap_err();
        assert_eq!(err.param(), Some("tools"));
    }

    #[test]
    fn case21_n_becomes_candidate_count_but_not_for_streams() {
        assert_eq!(
            body_with(hello(), json!({"n": 2})).unwrap()["generationConfig"]["candidateCount"],
            2
        );
        let err = body_with(hello(), json!({"n": 2, "stream": true})).unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("n")));
        let two = decode(
            r#"{"candidates": [
                {"content": {"parts": [{"text": "B"}], "role": "model"}, "finishReason": "MAX_TOKENS", "index": 1},
                {"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP"}]}"#,
        );
        let choices = two["choices"].as_array().unwrap();
        assert_eq!(
            (
                &choices[0]["message"]["content"],
                &choices[0]["finish_reason"]
            ),
            (&json!("A"), &json!("stop"))
        );
        assert_eq!(
            (
                &choices[1]["index"],
                &choices[1]["message"]["content"],
                &choices[1]["finish_reason"]
            ),
            (&json!(1), &json!("B"), &json!("length"))
        );
    }

    #[test]
    fn case23_thought_signature_round_trip_through_the_tool_call_id() {
        let answer = r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "find_theaters", "args": {"movie": "Barbie"}}, "thoughtSignature": "c2lnLTE+/w=="}, {"functionCall": {"name": "noargs"}}], "role": "model"}, "finishReason": "STOP", "index": 0}]}"#;
        let v = decode(answer);
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        let signed = calls[0]["id"].as_str().unwrap();
        let unsigned = calls[1]["id"].as_str().unwrap();
        assert_eq!(signature_of(signed), Some("c2lnLTE+/w=="));
        assert_eq!(signature_of(unsigned), None);

        // The client replays the answer as OpenAI history; the signature goes back in place.
        let history = json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": calls},
            {"role": "tool", "tool_call_id": signed, "content": "none"},
            {"role": "tool", "tool_call_id": unsigned, "content": "{}"}]);
        for model in ["gemini-2.5-flash", "gemini-3-pro-preview"] {
            let replay = body_for_model(history.clone(), json!({}), model).unwrap();
            assert_eq!(
                replay["contents"][1]["parts"],
                json!([{"functionCall": {"name": "find_theaters", "args": {"movie": "Barbie"}}, "thoughtSignature": "c2lnLTE+/w=="},
                       {"functionCall": {"name": "noargs", "args": {}}}]),
                "{model}"
            );
        }

        // Streamed calls carry it the same way.
        let (r, out, _) = stream(&format!("data: {answer}\n\n"), false, 9);
        r.unwrap();
        assert!(
            out.contains("\"id\":\"call_XXXXXXXX_ts_c2lnLTE+/w==\""),
            "{out}"
        );

        // Only our own ids carry signatures.
        for foreign in [
            "toolu_ts_abc",
            "call_xyz_ts_abc",
            "call_1234567_ts_abc",
            "call_12345678_ts_",
        ] {
            assert_eq!(signature_of(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn case23_unsigned_history_gets_the_documented_stand_in_on_gemini_3_only() {
        let history = json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "Sure.", "tool_calls": [
                {"id": "toolu_01", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "toolu_02", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "1"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": "2"}]);
        let g3 = body_for_model(history.clone(), json!({}), "gemini-3.1-pro-preview").unwrap();
        let parts = &g3["contents"][1]["parts"];
        assert!(parts[0].get("thoughtSignature").is_none());
        assert_eq!(parts[1]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(parts[2].get("thoughtSignature").is_none());
        for older in ["gemini-2.5-pro", "gemini-flash-latest"] {
            let body = body_for_model(history.clone(), json!({}), older).unwrap();
            assert!(
                !body.to_string().contains(SKIP_SIGNATURE),
                "{older}: {body}"
            );
        }
        assert!(validates_signatures("gemini-10-ultra"));
        assert!(!validates_signatures("gemma-3-27b-it"));
    }

    #[test]
    fn refusals_name_the_parameter_and_drops_are_silent() {
        let err = |extra: Value| body_with(hello(), extra).unwrap_err();
        for (extra, param) in [
            (json!({"logit_bias": {"1": 2}}), Some("logit_bias")),
            (
                json!({"audio": {"voice": "alloy", "format": "wav"}}),
                Some("audio"),
            ),
            (json!({"modalities": ["text", "audio"]}), Some("modalities")),
            (
                json!({"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]}),
                Some("tool_choice"),
            ),
            (
                json!({"reasoning_effort": "extreme"}),
                Some("reasoning_effort"),
            ),
            (
                json!({"response_format": {"type": "grammar"}}),
                Some("response_format"),
            ),
            (json!({"whatever": 1}), None),
            (json!({"functions": []}), None),
        ] {
            let e = err(extra.clone());
            assert_eq!((e.status(), e.param()), (400, param), "{extra}");
        }
        assert!(err(json!({"whatever": 1}))
            .to_string()
            .contains("'whatever'"));

        let ok = body_with(
            hello(),
            json!({"parallel_tool_calls": false, "user": "u", "safety_identifier": "s", "store": true,
                   "metadata": {"a": "b"}, "service_tier": "auto", "prompt_cache_key": "k",
                   "stream_options": {"include_usage": true}, "modalities": ["text"], "audio": null,
                   "logit_bias": null, "max_tokens": 10, "max_completion_tokens": 20, "top_k": 40,
                   "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.25,
                   "logprobs": true, "top_logprobs": 3, "response_format": {"type": "json_object"}}),
        )
        .unwrap();
        assert_eq!(
            ok["generationConfig"],
            json!({"topK": 40, "maxOutputTokens": 20, "seed": 7, "presencePenalty": 0.5,
                   "frequencyPenalty": 0.25, "responseLogprobs": true, "logprobs": 3,
                   "responseMimeType": "application/json"})
        );
        assert_eq!(ok.as_object().unwrap().len(), 2, "{ok}");
    }

    #[test]
    fn reasoning_effort_maps_to_thinking_budgets() {
        for (effort, config) in [
            ("none", json!({"thinkingBudget": 0})),
            (
                "low",
                json!({"thinkingBudget": 1024, "includeThoughts": true}),
            ),
            (
                "medium",
                json!({"thinkingBudget": 8192, "includeThoughts": true}),
            ),
            (
                "high",
                json!({"thinkingBudget": 24576, "includeThoughts": true}),
            ),
        ] {
            let body = body_with(hello(), json!({ "reasoning_effort": effort })).unwrap();
            assert_eq!(
                body["generationConfig"]["thinkingConfig"], config,
                "{effort}"
            );
        }
    }

    // ---- response and stream tricky cases ----

    #[test]
    fn case35_crlf_split_reads_and_blank_events() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hé\"}]}}]}\r\n\r\n\r\n: keep-alive\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"llo\"}]}, \"finishReason\": \"STOP\"}]}\r\n\r\n";
        let outputs: Vec<String> = [1, 2, 7, 4096]
            .into_iter()
            .map(|piece| {
                let (r, out, _) = stream(input, false, piece);
                r.unwrap();
                out
            })
            .collect();
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        let text: String = chunks(&outputs[0])
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, "Héllo");
    }

    #[test]
    fn case37_function_call_then_a_separate_stop_chunk_is_tool_calls() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\", \"args\": {\"a\": 1}}}]}}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\", \"args\": {\"a\": 2}}}]}}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}]}, \"finishReason\": \"STOP\"}]}\n\n";
        let (r, out, _) = stream(input, false, 4096);
        r.unwrap();
        let events = chunks(&out);
        let calls: Vec<&Value> = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(
            calls.iter().map(|c| c["index"].clone()).collect::<Vec<_>>(),
            vec![json!(0), json!(1)]
        );
        // Unique ids, compared before normalising.
        let mut d = client_stream_openai(StreamSettings {
            include_usage: false,
        });
        let mut raw = Vec::new();
        d.push(input.as_bytes(), &mut raw).unwrap();
        let ids: Vec<String> = chunks(std::str::from_utf8(&raw).unwrap())
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["id"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(
            events.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn case38_usage_counts_thoughts_as_completion_and_keeps_the_last_report() {
        let v = decode(
            r#"{"candidates": [{"content": {"parts": [{"text": "hm", "thought": true}, {"text": "ok"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                                  "cachedContentTokenCount": 60, "totalTokenCount": 150}}"#,
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                   "prompt_tokens_details": {"cached_tokens": 60},
                   "completion_tokens_details": {"reasoning_tokens": 30}})
        );
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "hm");
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"t\", \"thought\": true}]}}], \"usageMetadata\": {\"promptTokenCount\": 9, \"thoughtsTokenCount\": 3}}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"finishReason\": \"STOP\"}], \"usageMetadata\": {\"promptTokenCount\": 9, \"candidatesTokenCount\": 4, \"thoughtsTokenCount\": 3}}\n\n";
        let (r, out, usage) = stream(input, true, 5);
        r.unwrap();
        let u = usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (9, 7, 3)
        );
        let events = chunks(&out);
        assert_eq!(events[1]["choices"][0]["delta"]["reasoning_content"], "t");
        assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 7);
    }

    #[test]
    fn case39_blocked_prompt_is_a_content_filter_answer() {
        let blocked = r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},"modelVersion":"gemini-2.5-flash"}"#;
        let v = decode(blocked);
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(v["usage"]["prompt_tokens"], 12);
        let (r, out, _) = stream(&format!("data: {blocked}\n\n"), false, 10);
        r.unwrap();
        let events = chunks(&out);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["choices"][0]["finish_reason"], "content_filter");

        // Feedback without a block reason (ratings only) and no candidates is not an answer.
        let odd = r#"{"promptFeedback":{"safetyRatings":[]}}"#;
        assert!(matches!(
            client_answer_openai(Bytes::from(odd)),
            Err(StreamFailure::Malformed(_))
        ));
        assert!(matches!(
            stream(&format!("data: {odd}\n\n"), false, 4).0,
            Err(StreamFailure::Truncated)
        ));
    }

    #[test]
    fn case39_array_error_bodies_are_read() {
        let e = decode_gemini_error(Some("gemini"), 400, br#"[{"error":{"code":400,"message":"Please ensure that the number of function response parts is equal to the number of function call parts","status":"INVALID_ARGUMENT"}}]"#, None);
        assert_eq!(
            (e.status(), e.openai_type(), e.openai_code()),
            (400, "invalid_request_error", Some("INVALID_ARGUMENT"))
        );
        assert!(e.to_string().starts_with("gemini: Please ensure"), "{e}");
    }

    #[test]
    fn case40_repeated_finish_reason_does_not_end_the_stream_early() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"finishReason\": \"STOP\"}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"b\"}]}, \"finishReason\": \"STOP\"}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"c\"}]}, \"finishReason\": \"MAX_TOKENS\"}]}\n\n";
        let (r, out, _) = stream(input, false, 3);
        r.unwrap();
        let events = chunks(&out);
        let text: String = events
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "abc");
        let finishes: Vec<&Value> = events
            .iter()
            .map(|e| &e["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, vec![&json!("length")]);
    }

    #[test]
    fn case45_error_bodies_map_per_status() {
        let e = decode_gemini_error(Some("gemini"), 429, br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#, Some("20".into()));
        assert_eq!(
            (
                e.status(),
                e.openai_type(),
                e.openai_code(),
                e.retry_after()
            ),
            (
                429,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
                Some("20")
            )
        );
        assert_eq!(
            e.to_string(),
            "gemini: Resource has been exhausted (e.g. check quota)."
        );
        // Without the header, RetryInfo says when to come back.
        let e = decode_gemini_error(Some("gemini"), 429, br#"{"error":{"code":429,"message":"You exceeded your current quota. Please retry in 58.9s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"m"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"58.2s"}]}}"#, None);
        assert_eq!(e.retry_after(), Some("59"));
        let e = decode_gemini_error(Some("gemini"), 404, br#"{"error":{"code":404,"message":"models/gemini-9 is not found for API version v1beta","status":"NOT_FOUND"}}"#, None);
        assert_eq!(
            (e.status(), e.openai_type(), e.openai_code()),
            (404, "invalid_request_error", Some("model_not_found"))
        );
        for (status, kind) in [
            (500, "server_error"),
            (503, "server_error"),
            (504, "timeout"),
        ] {
            let e = decode_gemini_error(Some("gemini"), status, br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#, None);
            assert_eq!((e.status(), e.openai_type()), (status, kind));
        }
        let e = decode_gemini_error(
            Some("gemini"),
            502,
            b"<html>upstream connect error</html>",
            None,
        );
        assert_eq!(
            (e.openai_type(), e.to_string().as_str()),
            (
                "server_error",
                "gemini: <html>upstream connect error</html>"
            )
        );
        let long = vec![b'x'; 2000];
        let e = decode_gemini_error(Some("gemini"), 500, &long, None);
        assert_eq!(e.to_string().len(), "gemini: ".len() + 512);
    }

    #[test]
    fn case45_credential_failures_never_echo_the_upstream_message() {
        for (status, body) in [
            (400, &br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key. AIzaSyA-secret","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#[..]),
            (403, &br#"{"error":{"code":403,"message":"Permission denied for key AIzaSyA-secret","status":"PERMISSION_DENIED"}}"#[..]),
            (401, &b"unauthorized AIzaSyA-secret"[..]),
        ] {
            let e = decode_gemini_error(Some("gemini"), status, body, None);
            // Gemini's 400 for a bad key is answered as the 401 it means (and so fails over).
            let expected = if status == 400 { 401 } else { status };
            assert_eq!(
                e.to_string(),
                format!("provider 'gemini' rejected the gateway's credentials (HTTP {expected})")
            );
            assert_eq!(e.status(), expected);
        }
        let e = decode_gemini_error(
            None,
            200,
            br#"{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT"}}"#,
            None,
        );
        assert_eq!(
            (e.status(), e.openai_code()),
            (401, Some("invalid_api_key"))
        );
    }

    #[test]
    fn stream_cut_before_any_finish_reason_fails() {
        let first_event = fixture!("stream_text.gemini.sse")
            .split("\r\n\r\n")
            .next()
            .unwrap();
        assert!(matches!(
            stream(&format!("{first_event}\r\n\r\n"), false, 5).0,
            Err(StreamFailure::Truncated)
        ));
        assert!(matches!(
            stream("", false, 5).0,
            Err(StreamFailure::Truncated)
        ));
    }

    #[test]
    fn error_event_mid_stream_fails_with_the_mapped_error() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"index\": 0}]}\n\ndata: {\"error\": {\"code\": 429, \"message\": \"Resource has been exhausted\", \"status\": \"RESOURCE_EXHAUSTED\", \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"7s\"}]}}\n\n";
        match stream(input, false, 8).0 {
            Err(StreamFailure::Upstream(e)) => {
                assert_eq!(
                    (e.status(), e.openai_type(), e.retry_after()),
                    (429, "rate_limit_error", Some("7"))
                );
                // The caller adds the provider's name.
                assert_eq!(e.to_string(), "Resource has been exhausted");
            }
            other => panic!("{other:?}"),
        }
        // Without a code, the gRPC status decides; unknown ones are server errors.
        for (error, status) in [
            (r#"{"status": "UNAVAILABLE", "message": "m"}"#, 503),
            (r#"{"status": "INVALID_ARGUMENT", "message": "m"}"#, 400),
            (r#"{"status": "DEADLINE_EXCEEDED"}"#, 504),
            (r#"{"message": "m"}"#, 500),
        ] {
            match stream(&format!("data: {{\"error\": {error}}}\n\n"), false, 4096).0 {
                Err(StreamFailure::Upstream(e)) => assert_eq!(e.status(), status, "{error}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn malformed_streams_and_answers_fail() {
        assert!(matches!(
            stream("data: {oops\n\n", false, 3).0,
            Err(StreamFailure::Malformed(_))
        ));
        assert!(matches!(
            stream(
                "data: {\"candidates\": [{\"index\": 4000000000}]}\n\n",
                false,
                4096
            )
            .0,
            Err(StreamFailure::Malformed(_))
        ));
        for body in ["not json", "[]", r#"{"candidates": []}"#] {
            assert!(
                matches!(
                    client_answer_openai(Bytes::from(body)),
                    Err(StreamFailure::Malformed(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_response_fields_are_ignored() {
        let v = decode(
            r#"{"candidates": [{"content": {"parts": [{"text": "a", "futurePart": {"x": 1}},
                {"executableCode": {"language": "PYTHON", "code": "1"}}], "role": "model"},
                "finishReason": "STOP", "citationMetadata": {}, "groundingMetadata": {}}],
                "createTime": "2026-01-01T00:00:00Z", "newThing": [1, 2]}"#,
        );
        assert_eq!(v["choices"][0]["message"]["content"], "a");
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("STOP"), false).openai(), "stop");
        assert_eq!(finish_reason(Some("STOP"), true).openai(), "tool_calls");
        assert_eq!(
            finish_reason(Some("MAX_TOKENS"), true).openai(),
            "tool_calls"
        );
        assert_eq!(finish_reason(Some("MAX_TOKENS"), false).openai(), "length");
        for filtered in [
            "SAFETY",
            "RECITATION",
            "LANGUAGE",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
        ] {
            assert_eq!(
                finish_reason(Some(filtered), false).openai(),
                "content_filter"
            );
        }
        for stop in [
            "FINISH_REASON_UNSPECIFIED",
            "OTHER",
            "MALFORMED_FUNCTION_CALL",
            "UNEXPECTED_TOOL_CALL",
            "TOO_MANY_TOOL_CALLS",
            "FUTURE_REASON",
        ] {
            assert_eq!(finish_reason(Some(stop), false).openai(), "stop");
        }
        assert_eq!(finish_reason(None, false).openai(), "stop");
    }

    #[test]
    fn probe_lists_one_model_with_the_key_header() {
        let key = Secret::new("g-key");
        let probe = GeminiAdapter
            .probe_request(&AttemptTarget {
                upstream_model: "gemini-2.5-flash",
                endpoint: &endpoint(),
                api_key: Some(&key),
                extra_headers: &[],
            })
            .unwrap();
        assert_eq!(probe.path_and_query, "/v1beta/models?pageSize=1");
        assert!(probe
            .headers
            .iter()
            .any(|(n, v)| n == "x-goog-api-key" && v == "g-key"));
    }
}
