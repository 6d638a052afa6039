//! OpenAI-format errors (HTTP bodies and errors inside a stream) → the client's error.

use serde::Deserialize;
use serde_json::Value;

use crate::error::GatewayError;
use crate::providers::convert::upstream_message;
use crate::providers::openai_error_type;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
