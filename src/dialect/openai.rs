//! The OpenAI Chat Completions dialect: parsing client requests and rendering errors.
//!
//! The request is kept as its JSON object minus the fields the gateway itself interprets, so that
//! every field a client sends (including ones newer than this code) reaches an OpenAI-compatible
//! upstream unchanged.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// A parsed `POST /v1/chat/completions` body.
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
    /// Everything else, `messages` included, in the client's order.
    pub rest: Map<String, Value>,
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, GatewayError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            GatewayError::invalid(format!("request body is not valid JSON: {e}"), None)
        })?;
        let Value::Object(mut rest) = value else {
            return Err(GatewayError::invalid(
                "request body must be a JSON object",
                None,
            ));
        };
        let model = match rest.shift_remove("model") {
            Some(Value::String(m)) if !m.is_empty() => m,
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(GatewayError::invalid(
                    "you must provide a model parameter",
                    Some("model"),
                ))
            }
            Some(_) => {
                return Err(GatewayError::invalid(
                    "model must be a string",
                    Some("model"),
                ))
            }
        };
        match rest.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => {
                if m.iter().any(|msg| !msg.is_object()) {
                    return Err(GatewayError::invalid(
                        "each message must be an object",
                        Some("messages"),
                    ));
                }
            }
            Some(Value::Array(_)) => {
                return Err(GatewayError::invalid(
                    "messages must contain at least one message",
                    Some("messages"),
                ))
            }
            Some(_) => {
                return Err(GatewayError::invalid(
                    "messages must be an array",
                    Some("messages"),
                ))
            }
            None => {
                return Err(GatewayError::invalid(
                    "you must provide a messages parameter",
                    Some("messages"),
                ))
            }
        }
        let stream = match rest.shift_remove("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => {
                return Err(GatewayError::invalid(
                    "stream must be a boolean",
                    Some("stream"),
                ))
            }
        };
        let (include_usage, stream_options_rest) = match rest.shift_remove("stream_options") {
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
        let fallback_models = match rest.shift_remove("models") {
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
        let provider_preferences = rest.shift_remove("provider").filter(|v| !v.is_null());
        Ok(ChatRequest {
            model,
            stream,
            include_usage,
            stream_options_rest,
            fallback_models,
            provider_preferences,
            rest,
        })
    }
}

/// A typed, borrowing view of a chat request for adapters that translate it to another vendor.
///
/// Built with [`ChatParams::from_request`]; fields the gateway does not know stay in `rest` so an
/// adapter can refuse what it cannot honour instead of dropping it unnoticed.
#[derive(Debug, Deserialize)]
pub struct ChatParams<'a> {
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    #[serde(default, borrow)]
    pub tools: Option<Vec<Tool<'a>>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub stop: Option<Value>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Not OpenAI, but accepted by many hosts and by Anthropic and Gemini.
    #[serde(default)]
    pub top_k: Option<u64>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub logit_bias: Option<Value>,
    #[serde(default, borrow)]
    pub user: Option<&'a str>,
    #[serde(default, borrow)]
    pub safety_identifier: Option<&'a str>,
    #[serde(default, borrow)]
    pub reasoning_effort: Option<&'a str>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl<'a> ChatParams<'a> {
    pub fn from_request(request: &'a ChatRequest) -> Result<ChatParams<'a>, GatewayError> {
        ChatParams::deserialize(&request.rest)
            .map_err(|e| GatewayError::invalid(format!("invalid request: {e}"), None))
    }

    /// `max_completion_tokens` wins over the deprecated `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// `stop` as a list (OpenAI allows a bare string).
    pub fn stop_sequences(&self) -> Result<Vec<&str>, GatewayError> {
        match &self.stop {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        GatewayError::invalid(
                            "stop must be a string or an array of strings",
                            Some("stop"),
                        )
                    })
                })
                .collect(),
            Some(_) => Err(GatewayError::invalid(
                "stop must be a string or an array of strings",
                Some("stop"),
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub role: &'a str,
    #[serde(default, borrow)]
    pub content: Option<Content<'a>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(default, borrow)]
    pub tool_call_id: Option<&'a str>,
    #[serde(default, borrow)]
    pub name: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content<'a> {
    #[serde(borrow)]
    Text(std::borrow::Cow<'a, str>),
    #[serde(borrow)]
    Parts(Vec<ContentPart<'a>>),
}

impl Content<'_> {
    /// The text of a string content or of its text parts, joined; other parts are ignored.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.to_string(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_ref()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart<'a> {
    Text {
        #[serde(borrow)]
        text: std::borrow::Cow<'a, str>,
    },
    ImageUrl {
        #[serde(borrow)]
        image_url: ImageUrl<'a>,
    },
    InputAudio {
        input_audio: Value,
    },
    File {
        #[serde(borrow)]
        file: FilePart<'a>,
    },
    Refusal {
        #[serde(borrow)]
        refusal: std::borrow::Cow<'a, str>,
    },
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub detail: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct FilePart<'a> {
    #[serde(default, borrow)]
    pub filename: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub file_data: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub file_id: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub arguments: std::borrow::Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    #[serde(default, borrow)]
    pub function: Option<FunctionDef<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub description: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// A data URL split into its media type and base64 payload.
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    // Parameters such as `;charset=utf-8` are not part of the media type.
    let mime = meta.split(';').next().unwrap_or(meta);
    Some((mime, data))
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
        let keys: Vec<_> = req.rest.keys().cloned().collect();
        assert_eq!(keys.len(), 3);
        for k in ["messages", "temperature", "some_future_field"] {
            assert!(req.rest.contains_key(k));
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
            (json!({"model": "m", "messages": ["hi"]}), Some("messages")),
            (
                json!({"model": "m", "messages": [{}], "stream": "yes"}),
                Some("stream"),
            ),
            (json!([1, 2]), None),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).unwrap_err();
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
