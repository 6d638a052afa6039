//! The OpenAI Chat Completions dialect: parsing client requests, decoding them into the
//! canonical model, and rendering answers ([`encode`]) and errors.
//!
//! The request is kept as its JSON object minus the fields the gateway itself interprets, so that
//! every field a client sends (including ones newer than this code) reaches an OpenAI-compatible
//! upstream unchanged.

pub mod completions;
pub mod embeddings;
pub mod encode;
mod messages;

pub use messages::MessagesSummary;

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::raw_object::RawObject;
use crate::chat;
use crate::error::GatewayError;

/// A parsed `POST /v1/chat/completions` body.
///
/// The fields the gateway interprets are taken out; everything else stays as the client's bytes
/// ([`RawObject`]), so an OpenAI-compatible upstream gets it without a parse and re-encode, the
/// canonical view of a translation is read from those bytes, and a `Value` view
/// ([`ChatRequest::rest`]) is built only for a host quirk that rewrites messages.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage` as the client asked.
    pub include_usage: bool,
    /// Other `stream_options` keys, forwarded as given.
    pub stream_options_rest: Map<String, Value>,
    /// OpenRouter's `models: [...]` fallback list (interpreted by routing, never forwarded).
    pub fallback_models: Vec<String>,
    /// OpenRouter's `provider: {...}` preferences (interpreted by routing, never forwarded).
    pub provider_preferences: Option<Value>,
    /// Everything else, `messages` included, in the client's order and bytes.
    fields: RawObject,
    rest: OnceLock<Map<String, Value>>,
    /// Known once the messages were read, by [`Self::messages_summary`] or
    /// [`Self::canonical`]: a cached request that goes upstream passed through needs both, and
    /// the second need not read a long conversation again.
    summary: OnceLock<MessagesSummary>,
}

/// An OpenAI-format request body as its object, with `model` taken out of it.
pub(crate) fn object_with_model(body: &[u8]) -> Result<(String, Map<String, Value>), GatewayError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    let Value::Object(mut rest) = value else {
        return Err(GatewayError::invalid(
            "request body must be a JSON object",
            None,
        ));
    };
    let model = model_name(rest.shift_remove("model"))?;
    Ok((model, rest))
}

/// The `model` field's value, which must be a non-empty string.
fn model_name(value: Option<Value>) -> Result<String, GatewayError> {
    match value {
        Some(Value::String(m)) if !m.is_empty() => Ok(m),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(GatewayError::invalid(
            "you must provide a model parameter",
            Some("model"),
        )),
        Some(_) => Err(GatewayError::invalid(
            "model must be a string",
            Some("model"),
        )),
    }
}

/// The value of a field taken out of the body; `None` for an absent field.
fn field_value(fields: &mut RawObject, key: &str) -> Result<Option<Value>, GatewayError> {
    // The body was scanned as JSON already; only nesting past serde_json's limit fails here.
    fields
        .take_value::<Value>(key)
        .transpose()
        .map_err(|e| GatewayError::invalid(format!("invalid {key}: {e}"), None))
}

/// `stream` and `stream_options` taken out of the body: whether to stream, whether the client
/// asked for `stream_options.include_usage`, and the other `stream_options` keys.
pub(crate) fn stream_fields(
    fields: &mut RawObject,
) -> Result<(bool, bool, Map<String, Value>), GatewayError> {
    let stream = match field_value(fields, "stream")? {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(GatewayError::invalid(
                "stream must be a boolean",
                Some("stream"),
            ))
        }
    };
    let (include_usage, stream_options_rest) = match field_value(fields, "stream_options")? {
        None | Some(Value::Null) => (false, Map::new()),
        Some(Value::Object(mut opts)) => {
            let include = match opts.shift_remove("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => b,
                Some(_) => {
                    return Err(GatewayError::invalid(
                        "stream_options.include_usage must be a boolean",
                        Some("stream_options"),
                    ))
                }
            };
            (include, opts)
        }
        Some(_) => {
            return Err(GatewayError::invalid(
                "stream_options must be an object",
                Some("stream_options"),
            ))
        }
    };
    Ok((stream, include_usage, stream_options_rest))
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, GatewayError> {
        Self::from_bytes(Bytes::copy_from_slice(body))
    }

    /// Parses a body without copying it.
    pub fn from_bytes(body: Bytes) -> Result<ChatRequest, GatewayError> {
        let mut fields =
            RawObject::parse(body).map_err(|e| GatewayError::invalid(e.to_string(), None))?;
        let model = model_name(field_value(&mut fields, "model")?)?;
        // Each message is looked at only where it is needed: by the scan of a passthrough
        // ([`Self::messages_summary`]) or by the canonical parse of a translation.
        MessagesSummary::check_list(fields.get("messages"))?;
        let (stream, include_usage, stream_options_rest) = stream_fields(&mut fields)?;
        let fallback_models = match field_value(&mut fields, "models")? {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .into_iter()
                .map(|m| match m {
                    Value::String(s) if !s.is_empty() => Ok(s),
                    _ => Err(GatewayError::invalid(
                        "models must be an array of model names",
                        Some("models"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(GatewayError::invalid(
                    "models must be an array of model names",
                    Some("models"),
                ))
            }
        };
        let provider_preferences = field_value(&mut fields, "provider")?.filter(|v| !v.is_null());
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            stream_options_rest,
            fallback_models,
            provider_preferences,
            fields,
            rest: OnceLock::new(),
            summary: OnceLock::new(),
        })
    }

    /// The client's other fields (`messages` included) as JSON values, parsed on first use.
    pub fn rest(&self) -> &Map<String, Value> {
        self.rest.get_or_init(|| self.fields.to_map())
    }

    /// Checks that every message is an object, and what the messages hold that host quirks act
    /// on: one scan of the messages, or none after [`Self::canonical`] read them.
    pub fn messages_summary(&self) -> Result<MessagesSummary, GatewayError> {
        if let Some(summary) = self.summary.get() {
            return Ok(*summary);
        }
        let summary = MessagesSummary::read(self.fields.get("messages"))?;
        let _ = self.summary.set(summary);
        Ok(summary)
    }

    /// The client's other fields as their JSON text.
    pub fn raw_fields(&self) -> &RawObject {
        &self.fields
    }

    /// `max_completion_tokens`, else the deprecated `max_tokens`, when it is a count.
    pub fn max_output_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| self.fields.get(k).and_then(|text| text.parse().ok()))
    }

    /// The canonical view of this request, borrowing its messages and tools.
    pub fn canonical(&self) -> Result<chat::Request<'_>, GatewayError> {
        let mut request = self.fields.deserialize::<chat::Request>().map_err(|e| {
            // A message that is not an object gets the same error as on the passthrough path;
            // checking only on failure keeps the scan off the translation path.
            match self.messages_summary() {
                Err(messages) => messages,
                Ok(_) => GatewayError::invalid(format!("invalid request: {e}"), None),
            }
        })?;
        request.stream = self.stream;
        let _ = self.summary.set(MessagesSummary::of(&request.messages));
        Ok(request)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

fn error_object(err: &GatewayError) -> ErrorBody<'_> {
    ErrorBody {
        error: ErrorObject {
            message: err.to_string(),
            kind: err.openai_type(),
            param: err.param(),
            code: err.openai_code(),
        },
    }
}

/// `{"error":{"message","type","param","code"}}`, as OpenAI sends it.
pub fn error_body(err: &GatewayError) -> Bytes {
    Bytes::from(serde_json::to_vec(&error_object(err)).unwrap_or_default())
}

/// The SSE event that ends a failed stream: the OpenAI SDKs raise on a `data:` object with an
/// `error` key, so the client sees a failure rather than a clean end.
pub fn stream_error_event(err: &GatewayError) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(&error_object(err)).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse(v.to_string().as_bytes())
    }

    #[test]
    fn the_summary_from_the_canonical_form_is_the_one_read_from_the_text() {
        let cases = [
            r#"[{"role": "user", "content": "hi"}]"#,
            r#"[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]"#,
            r#"[{"role": "devel\u006fper", "content": "escaped"}]"#,
            r#"[{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c", "content": "1"}]"#,
            r#"[{"role": "assistant", "content": "x", "tool_calls": null, "tool_call_id": null}]"#,
            r#"[{"role": "assistant", "content": "x", "tool_calls": []}]"#,
        ];
        for messages in cases {
            let body = format!(r#"{{"model": "m", "messages": {messages}}}"#);
            let read = ChatRequest::parse(body.as_bytes())
                .unwrap()
                .messages_summary()
                .unwrap();
            let req = ChatRequest::parse(body.as_bytes()).unwrap();
            let canonical = req.canonical().unwrap();
            assert_eq!(MessagesSummary::of(&canonical.messages), read, "{messages}");
            assert_eq!(req.messages_summary().unwrap(), read, "{messages}");
        }
    }

    #[test]
    fn keeps_unknown_fields_and_extracts_gateway_fields() {
        let req = parse(json!({
            "model": "gpt", "messages": [{"role": "user", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": true, "include_obfuscation": false},
            "models": ["a", "b"], "provider": {"order": ["x"]},
            "temperature": 0.2, "some_future_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(req.model, "gpt");
        assert!(req.stream && req.include_usage);
        assert_eq!(
            req.stream_options_rest,
            json!({"include_obfuscation": false})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(req.fallback_models, vec!["a", "b"]);
        assert!(req.provider_preferences.is_some());
        let keys: Vec<_> = req.rest().keys().cloned().collect();
        assert_eq!(keys.len(), 3);
        for k in ["messages", "temperature", "some_future_field"] {
            assert!(req.rest().contains_key(k));
        }
    }

    #[test]
    fn rejects_bad_requests_naming_the_param() {
        let cases = [
            (json!({"messages": [{"role": "user"}]}), Some("model")),
            (
                json!({"model": "", "messages": [{"role": "user"}]}),
                Some("model"),
            ),
            (
                json!({"model": 5, "messages": [{"role": "user"}]}),
                Some("model"),
            ),
            (json!({"model": "m"}), Some("messages")),
            (json!({"model": "m", "messages": []}), Some("messages")),
            (json!({"model": "m", "messages": "hi"}), Some("messages")),
            (
                json!({"model": "m", "messages": [{}, "hi"]}),
                Some("messages"),
            ),
            (
                json!({"model": "m", "messages": [{}], "stream": "yes"}),
                Some("stream"),
            ),
            (json!([1, 2]), None),
        ];
        for (body, param) in cases {
            // A message that is not an object is found when the body is forwarded or translated.
            let err = parse(body.clone())
                .and_then(|r| r.canonical().map(|_| ()))
                .unwrap_err();
            assert_eq!(err.status(), 400, "{body}");
            assert_eq!(err.param(), param, "{body}");
        }
        let err = ChatRequest::parse(b"{not json").unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("not valid JSON"));
    }

    #[test]
    fn error_body_has_all_four_keys() {
        let body = error_body(&GatewayError::UnknownModel(
            "model 'x' does not exist".into(),
        ));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "model 'x' does not exist", "type": "invalid_request_error",
                   "param": null, "code": "model_not_found"}})
        );
    }
}
