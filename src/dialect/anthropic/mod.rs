//! The Anthropic Messages dialect (`POST /v1/messages`): parsing client requests, decoding them
//! into the canonical model ([`decode`]), and rendering answers ([`encode`]) and errors.
//!
//! The body is kept as the bytes the client sent: an Anthropic upstream receives exactly those
//! bytes with only the `model` string replaced, so thinking signatures, `cache_control` and
//! fields newer than this code reach it untouched. Other upstreams get the canonical view.

pub mod decode;
pub mod encode;

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::chat;
use crate::error::GatewayError;

/// The API version sent upstream when the client names none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// A parsed `POST /v1/messages` body.
#[derive(Debug)]
pub struct MessagesRequest {
    pub model: String,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// The body exactly as the client sent it.
    pub raw: Bytes,
    /// Where the `model` JSON string sits in `raw`.
    model_span: Range<usize>,
    /// The client's `anthropic-version` and `anthropic-beta` headers.
    pub version: Option<HeaderValue>,
    pub beta: Option<HeaderValue>,
}

/// What the gateway itself reads of the body; the rest is parsed only when translating.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    messages: Option<IgnoredList>,
}

/// A JSON value whose shape is checked (a list, how long) without keeping it.
enum IgnoredList {
    List(usize),
    Other,
}

impl<'de> Deserialize<'de> for IgnoredList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = IgnoredList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<IgnoredList, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(IgnoredList::List(n))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<IgnoredList, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IgnoredList::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<IgnoredList, E> {
                Ok(IgnoredList::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<IgnoredList, E> {
                Ok(IgnoredList::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<IgnoredList, E> {
                Ok(IgnoredList::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<IgnoredList, E> {
                Ok(IgnoredList::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<IgnoredList, E> {
                Ok(IgnoredList::Other)
            }
            fn visit_unit<E>(self) -> Result<IgnoredList, E> {
                Ok(IgnoredList::Other)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

impl MessagesRequest {
    /// A `POST /v1/messages` body.
    pub fn parse(raw: Bytes, headers: &HeaderMap) -> Result<MessagesRequest, GatewayError> {
        Self::parse_with(raw, headers, true)
    }

    /// A `POST /v1/messages/count_tokens` body: the same, without `max_tokens`.
    pub fn parse_count(raw: Bytes, headers: &HeaderMap) -> Result<MessagesRequest, GatewayError> {
        Self::parse_with(raw, headers, false)
    }

    fn parse_with(
        raw: Bytes,
        headers: &HeaderMap,
        needs_max_tokens: bool,
    ) -> Result<MessagesRequest, GatewayError> {
        // serde would read an array as the fields of `Head`, in order.
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(GatewayError::invalid(
                "request body must be a JSON object",
                None,
            ));
        }
        let head: Head = serde_json::from_slice(&raw).map_err(|e| {
            GatewayError::invalid(
                format!("request body is not a valid JSON object: {e}"),
                None,
            )
        })?;
        let Some(model_raw) = head.model else {
            return Err(invalid("model: Field required", "model"));
        };
        let model: String = serde_json::from_str(model_raw.get())
            .map_err(|_| invalid("model: Input should be a valid string", "model"))?;
        if model.is_empty() {
            return Err(invalid("model: String should not be empty", "model"));
        }
        // The raw value borrows from `raw`, so its offset is where the model string starts.
        let start = model_raw.get().as_ptr() as usize - raw.as_ptr() as usize;
        let model_span = start..start + model_raw.get().len();
        let stream = match head.stream {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => b,
            Some(_) => return Err(invalid("stream: Input should be a valid boolean", "stream")),
        };
        let max_tokens = head.max_tokens.as_ref().and_then(serde_json::Value::as_u64);
        match head.max_tokens {
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => {}
            None if !needs_max_tokens => {}
            None => return Err(invalid("max_tokens: Field required", "max_tokens")),
            Some(_) => {
                return Err(invalid(
                    "max_tokens: Input should be a valid integer",
                    "max_tokens",
                ))
            }
        }
        match head.messages {
            Some(IgnoredList::List(n)) if n > 0 => {}
            Some(IgnoredList::List(_)) => {
                return Err(invalid(
                    "messages: at least one message is required",
                    "messages",
                ))
            }
            None => return Err(invalid("messages: Field required", "messages")),
            Some(_) => {
                return Err(invalid(
                    "messages: Input should be a valid list",
                    "messages",
                ))
            }
        }
        Ok(MessagesRequest {
            model,
            stream,
            max_tokens,
            model_span,
            raw,
            version: headers.get("anthropic-version").cloned(),
            beta: headers.get("anthropic-beta").cloned(),
        })
    }

    /// The client's body with `model` replaced, byte for byte otherwise.
    pub fn body_with_model(&self, model: &str) -> Bytes {
        let quoted = serde_json::to_string(model).unwrap_or_else(|_| format!("\"{model}\""));
        let mut body = Vec::with_capacity(self.raw.len() + quoted.len());
        body.extend_from_slice(&self.raw[..self.model_span.start]);
        body.extend_from_slice(quoted.as_bytes());
        body.extend_from_slice(&self.raw[self.model_span.end..]);
        Bytes::from(body)
    }

    /// Estimated input tokens of this request, for `count_tokens` where no upstream counts:
    /// about four characters of text (and of tool definitions) per token, as Anthropic's own
    /// tokenizers roughly count English, plus a few tokens of framing per message.
    pub fn estimate_input_tokens(&self) -> Result<u64, GatewayError> {
        let request = self.canonical()?;
        let mut chars = 0usize;
        for message in &request.messages {
            chars += 16;
            chars += message.content.as_ref().map_or(0, |c| c.text().len());
            for call in message.tool_calls.iter().flatten() {
                chars += call.function.name.len() + call.function.arguments.len();
            }
        }
        for tool in request.tools.iter().flatten() {
            if let Some(f) = &tool.function {
                chars += f.name.len()
                    + f.description.as_ref().map_or(0, |d| d.len())
                    + f.parameters.as_ref().map_or(0, |p| p.to_string().len());
            }
        }
        Ok((chars as u64).div_ceil(4).max(1))
    }

    /// The canonical view of this request, borrowing its text from the body.
    pub fn canonical(&self) -> Result<chat::Request<'_>, GatewayError> {
        decode::canonical(&self.raw, self.stream)
    }
}

/// Anthropic's `error.type` and the status for an error; Anthropic's own overloaded condition
/// keeps its 529, which the Anthropic SDKs retry.
fn error_type_and_status(err: &GatewayError) -> (&'static str, u16) {
    let status = err.status();
    if err.openai_code() == Some("overloaded") {
        return ("overloaded_error", 529);
    }
    let kind = match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    (kind, status)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: String,
}

fn error_json(err: &GatewayError) -> (u16, Vec<u8>) {
    let (kind, status) = error_type_and_status(err);
    let body = ErrorBody {
        kind: "error",
        error: ErrorObject {
            kind,
            message: err.to_string(),
        },
    };
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

/// `{"type":"error","error":{"type","message"}}` and its status.
pub fn error_body(err: &GatewayError) -> (u16, Bytes) {
    let (status, body) = error_json(err);
    (status, Bytes::from(body))
}

/// `event: error`, as Anthropic ends a stream that failed after it started.
pub fn stream_error_event(err: &GatewayError) -> Bytes {
    let (_, body) = error_json(err);
    let mut out = b"event: error\ndata: ".to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<MessagesRequest, GatewayError> {
        MessagesRequest::parse(Bytes::from(body.to_string()), &HeaderMap::new())
    }

    #[test]
    fn model_is_spliced_and_every_other_byte_kept() {
        let body = "{ \"max_tokens\":5,\n \"model\" : \"claude\\u002dx\", \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"x\":1.50}";
        let req = parse(body).unwrap();
        assert_eq!(req.model, "claude-x");
        assert_eq!(
            req.body_with_model("claude-sonnet-4-5"),
            body.replace("\"claude\\u002dx\"", "\"claude-sonnet-4-5\"")
        );
    }

    #[test]
    fn refuses_bad_requests_naming_the_field() {
        let cases = [
            ("[]", None),
            ("{\"max_tokens\":5,\"messages\":[{}]}", Some("model")),
            (
                "{\"model\":7,\"max_tokens\":5,\"messages\":[{}]}",
                Some("model"),
            ),
            ("{\"model\":\"m\",\"messages\":[{}]}", Some("max_tokens")),
            (
                "{\"model\":\"m\",\"max_tokens\":-1,\"messages\":[{}]}",
                Some("max_tokens"),
            ),
            (
                "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[]}",
                Some("messages"),
            ),
            ("{\"model\":\"m\",\"max_tokens\":5}", Some("messages")),
            (
                "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{}],\"stream\":\"yes\"}",
                Some("stream"),
            ),
        ];
        for (body, param) in cases {
            let err = parse(body).expect_err(body);
            assert_eq!(err.status(), 400, "{body}");
            assert_eq!(err.param(), param, "{body}");
        }
    }

    #[test]
    fn errors_have_anthropic_shape_and_types() {
        let (status, body) = error_body(&GatewayError::Unauthorized);
        assert_eq!(status, 401);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "error", "error": {"type": "authentication_error", "message": "missing or invalid API key"}})
        );
        let overloaded = GatewayError::Upstream {
            status: 503,
            message: "anthropic: Overloaded".into(),
            kind: "server_error".into(),
            code: Some("overloaded".into()),
            param: None,
            retry_after: None,
        };
        assert_eq!(
            error_type_and_status(&overloaded),
            ("overloaded_error", 529)
        );
        assert_eq!(
            error_type_and_status(&GatewayError::UnknownModel("x".into())),
            ("not_found_error", 404)
        );
        assert_eq!(
            error_type_and_status(&GatewayError::BadGateway("x".into())),
            ("api_error", 502)
        );
        let event = stream_error_event(&GatewayError::GatewayTimeout("slow".into()));
        assert_eq!(
            &event[..],
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"slow\"}}\n\n"
        );
    }
}
