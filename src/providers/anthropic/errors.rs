//! Anthropic errors (HTTP bodies and stream `error` events) → the client's error
//! (docs/translation.md §5.10).

use serde::Deserialize;

use crate::error::GatewayError;
use crate::providers::convert::upstream_message;

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

/// Maps an Anthropic error (HTTP body or stream `error` event) to the client's error
/// (docs/translation.md §5.10).
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
        _ => (crate::providers::openai_error_type(status), None),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
