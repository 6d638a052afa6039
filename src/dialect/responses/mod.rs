//! The OpenAI Responses dialect (`POST /v1/responses`): parsing client requests, decoding their
//! items into the canonical model ([`decode`]), and rendering answers as response objects and
//! typed, numbered SSE events ([`encode`]).
//!
//! The body is kept as the bytes the client sent: an upstream that speaks the Responses API
//! itself (OpenAI, Azure) receives exactly those bytes with only `model` replaced. A request that
//! continues a stored conversation (`previous_response_id`) carries the earlier items
//! ([`ResponsesRequest::history`]), which the gateway keeps itself: such a request reaches a
//! Responses upstream with the items spelled out instead of the id.

pub mod decode;
pub mod encode;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::chat;
use crate::error::GatewayError;

/// A parsed `POST /v1/responses` body.
#[derive(Debug)]
pub struct ResponsesRequest {
    pub model: String,
    pub stream: bool,
    /// Whether the answer is kept for `GET /v1/responses/{id}` and `previous_response_id`
    /// (OpenAI's default: true).
    pub store: bool,
    pub previous_response_id: Option<String>,
    pub max_output_tokens: Option<u64>,
    /// The body exactly as the client sent it.
    pub raw: Bytes,
    /// Where the `model` JSON string sits in `raw`.
    model_span: Range<usize>,
    /// The conversation before this request, as a JSON array of items (the stored input and
    /// output of `previous_response_id`); set by the gateway after loading it.
    pub history: Option<Bytes>,
    /// The response's id and the request parameters it repeats.
    pub meta: Arc<ResponseMeta>,
}

/// What every rendering of one request's response shares: its id, its creation time and the
/// request parameters a response object repeats.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// `resp_` and 32 hex digits, made by the gateway (translated answers), or the upstream's own
    /// id (pass-through answers, which carry it).
    pub id: String,
    pub created_at: u64,
    /// `instructions`, `tools`, `temperature`, ... as the client sent them (or OpenAI's defaults),
    /// in the order of OpenAI's response object.
    pub echo: Map<String, Value>,
}

impl ResponseMeta {
    /// A meta with a fresh id and OpenAI's defaults, for answers rendered without a request.
    pub fn fresh() -> Self {
        ResponseMeta {
            id: new_id("resp"),
            created_at: chat::now_unix(),
            echo: echo(Map::new()),
        }
    }
}

/// `{prefix}_` and 32 random hex digits: the ids of responses and of their output items.
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

/// The request parameters a response object repeats, with OpenAI's defaults for those absent.
fn echo(mut body: Map<String, Value>) -> Map<String, Value> {
    let defaults = [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", json!(true)),
        ("previous_response_id", Value::Null),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("store", json!(true)),
        ("temperature", json!(1.0)),
        ("text", json!({"format": {"type": "text"}})),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("top_p", json!(1.0)),
        ("truncation", json!("disabled")),
        ("user", Value::Null),
    ];
    let mut echo = Map::with_capacity(defaults.len());
    for (key, default) in defaults {
        let value = match body.swap_remove(key) {
            Some(v) if !v.is_null() => v,
            _ => default,
        };
        echo.insert(key.to_string(), value);
    }
    echo
}

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

impl ResponsesRequest {
    pub fn parse(raw: Bytes) -> Result<ResponsesRequest, GatewayError> {
        // serde would read an array as the fields of `Head`, in order.
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(GatewayError::invalid(
                "request body must be a JSON object",
                None,
            ));
        }
        let head: Params = serde_json::from_slice(&raw).map_err(|e| {
            GatewayError::invalid(
                format!("request body is not a valid JSON object: {e}"),
                None,
            )
        })?;
        let Some(model_raw) = head.model else {
            return Err(invalid("you must provide a model parameter", "model"));
        };
        let model: String = serde_json::from_str(model_raw.get())
            .map_err(|_| invalid("model must be a string", "model"))?;
        if model.is_empty() {
            return Err(invalid("you must provide a model parameter", "model"));
        }
        // The raw value borrows from `raw`, so its offset is where the model string starts.
        let start = model_raw.get().as_ptr() as usize - raw.as_ptr() as usize;
        let model_span = start..start + model_raw.get().len();
        match head.input {
            Some(b'"' | b'[') | None => {}
            Some(_) => {
                return Err(invalid(
                    "input must be a string or a list of input items",
                    "input",
                ))
            }
        }
        let body = head.fields;
        let flag = |key: &'static str, default: bool| match body.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("{key} must be a boolean"), key)),
        };
        let stream = flag("stream", false)?;
        let store = flag("store", true)?;
        if flag("background", false)? {
            return Err(invalid(
                "background responses are not supported by this gateway; send the request without `background`",
                "background",
            ));
        }
        if body.get("conversation").is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                "conversation objects are not supported by this gateway; use previous_response_id",
                "conversation",
            ));
        }
        let previous_response_id = match body.get("previous_response_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(_) => {
                return Err(invalid(
                    "previous_response_id must be a response id",
                    "previous_response_id",
                ))
            }
        };
        if head.input.is_none() && previous_response_id.is_none() {
            return Err(invalid("input: Field required", "input"));
        }
        let max_output_tokens = match body.get("max_output_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                invalid(
                    "max_output_tokens must be a positive integer",
                    "max_output_tokens",
                )
            })?),
        };
        Ok(ResponsesRequest {
            model,
            stream,
            store,
            previous_response_id,
            max_output_tokens,
            model_span,
            meta: Arc::new(ResponseMeta {
                id: new_id("resp"),
                created_at: chat::now_unix(),
                echo: echo(body),
            }),
            raw,
            history: None,
        })
    }

    /// The body for an upstream that speaks the Responses API: the client's bytes with `model`
    /// replaced; a continued conversation has its earlier items spelled out before `input`
    /// instead of `previous_response_id`, which only this gateway knows.
    pub fn upstream_body(&self, model: &str) -> Result<Bytes, GatewayError> {
        let Some(history) = &self.history else {
            let quoted = serde_json::to_string(model).unwrap_or_else(|_| format!("\"{model}\""));
            let mut body = Vec::with_capacity(self.raw.len() + quoted.len());
            body.extend_from_slice(&self.raw[..self.model_span.start]);
            body.extend_from_slice(quoted.as_bytes());
            body.extend_from_slice(&self.raw[self.model_span.end..]);
            return Ok(Bytes::from(body));
        };
        let mut body: Map<String, Value> = serde_json::from_slice(&self.raw)
            .map_err(|e| GatewayError::invalid(format!("invalid request body: {e}"), None))?;
        let mut items: Vec<Value> = serde_json::from_slice(history).map_err(|e| {
            GatewayError::Internal(format!("stored conversation is not a list of items: {e}"))
        })?;
        match body.shift_remove("input") {
            Some(Value::Array(input)) => items.extend(input),
            Some(Value::String(text)) => {
                items.push(json!({"type": "message", "role": "user", "content": text}));
            }
            _ => {}
        }
        body.insert("model".into(), Value::String(model.to_string()));
        body.shift_remove("previous_response_id");
        body.insert("input".into(), Value::Array(items));
        Ok(crate::chat::json_bytes(&Value::Object(body)))
    }

    /// This request's input as a JSON list of items (a string input is one user message), for
    /// the stored conversation: the client's own bytes, not parsed into values.
    pub fn input_items(&self) -> Result<Vec<u8>, GatewayError> {
        #[derive(Deserialize)]
        struct Input<'a> {
            #[serde(default, borrow)]
            input: Option<&'a RawValue>,
        }
        let input: Input = serde_json::from_slice(&self.raw)
            .map_err(|e| GatewayError::invalid(format!("invalid request body: {e}"), None))?;
        let raw = input.input.map_or("[]", RawValue::get);
        Ok(match raw.as_bytes().first() {
            Some(b'[') => raw.as_bytes().to_vec(),
            // A JSON string literal, already escaped: it is the message's content as it is.
            Some(b'"') => {
                let mut items = Vec::with_capacity(raw.len() + 48);
                items.extend_from_slice(br#"[{"type":"message","role":"user","content":"#);
                items.extend_from_slice(raw.as_bytes());
                items.extend_from_slice(b"}]");
                items
            }
            _ => b"[]".to_vec(),
        })
    }

    /// The canonical view of this request: the stored conversation, then this request's input.
    pub fn canonical(&self) -> Result<chat::Request<'_>, GatewayError> {
        decode::canonical(&self.raw, self.history.as_deref(), self.stream)
    }
}

/// The body in one pass: `model` where it sits, the first byte of `input` (which may be large
/// and is read only when translating), and every other top-level field.
struct Params<'a> {
    model: Option<&'a RawValue>,
    input: Option<u8>,
    fields: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Params<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Params<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Params<'de>, A::Error> {
                let mut params = Params {
                    model: None,
                    input: None,
                    fields: Map::new(),
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "model" => params.model = Some(map.next_value()?),
                        "input" => {
                            let input: &RawValue = map.next_value()?;
                            params.input = input.get().as_bytes().first().copied();
                        }
                        _ => {
                            let value = map.next_value::<Value>()?;
                            params.fields.insert(key.into_owned(), value);
                        }
                    }
                }
                Ok(params)
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<ResponsesRequest, GatewayError> {
        ResponsesRequest::parse(Bytes::from(body.to_string()))
    }

    #[test]
    fn reads_the_gateway_fields_and_echoes_parameters() {
        let req = parse(
            json!({"model": "m", "input": "hi", "stream": true, "store": false,
            "max_output_tokens": 50, "temperature": 0.2, "instructions": "be brief"}),
        )
        .unwrap();
        assert_eq!(req.model, "m");
        assert!(req.stream);
        assert!(!req.store);
        assert_eq!(req.max_output_tokens, Some(50));
        assert!(req.meta.id.starts_with("resp_") && req.meta.id.len() == 37);
        assert_eq!(req.meta.echo["temperature"], json!(0.2));
        assert_eq!(req.meta.echo["instructions"], json!("be brief"));
        assert_eq!(req.meta.echo["top_p"], json!(1.0));
        assert_eq!(req.meta.echo["tools"], json!([]));
    }

    #[test]
    fn refuses_bad_requests_naming_the_field() {
        let cases = [
            (json!({"input": "hi"}), Some("model")),
            (json!({"model": 3, "input": "hi"}), Some("model")),
            (json!({"model": "m"}), Some("input")),
            (json!({"model": "m", "input": 5}), Some("input")),
            (
                json!({"model": "m", "input": "x", "stream": "yes"}),
                Some("stream"),
            ),
            (
                json!({"model": "m", "input": "x", "background": true}),
                Some("background"),
            ),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": -1}),
                Some("max_output_tokens"),
            ),
            (
                json!({"model": "m", "input": "x", "previous_response_id": 7}),
                Some("previous_response_id"),
            ),
            (
                json!({"model": "m", "input": "x", "conversation": "conv_1"}),
                Some("conversation"),
            ),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.status(), 400, "{body}");
            assert_eq!(err.param(), param, "{body}");
        }
        let err = ResponsesRequest::parse(Bytes::from_static(b"[1]")).unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn upstream_body_swaps_model_or_spells_out_the_history() {
        let raw = r#"{"model" : "pub", "input":"next","x":1.50}"#;
        let mut req = ResponsesRequest::parse(Bytes::from_static(raw.as_bytes())).unwrap();
        assert_eq!(
            &req.upstream_body("gpt-4.1").unwrap()[..],
            br#"{"model" : "gpt-4.1", "input":"next","x":1.50}"#
        );
        req.history = Some(Bytes::from_static(
            br#"[{"type":"message","role":"user","content":"first"}]"#,
        ));
        let body: Value = serde_json::from_slice(&req.upstream_body("gpt-4.1").unwrap()).unwrap();
        assert_eq!(body["model"], "gpt-4.1");
        assert_eq!(
            body["input"],
            json!([{"type":"message","role":"user","content":"first"},
                   {"type":"message","role":"user","content":"next"}])
        );
        assert!(body.get("previous_response_id").is_none());
    }
}
