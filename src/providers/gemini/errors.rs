//! Gemini errors (HTTP bodies, also as arrays, and errors inside a stream) → the client's error
//! (docs/translation.md §3.5, §5.10).

use serde::Deserialize;
use serde_json::Value;

use crate::error::GatewayError;
use crate::providers::convert::upstream_message;

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

/// Maps a Gemini error (HTTP body or in-stream object) to the client's error (docs/translation.md
/// §5.10). `status`
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
        _ => crate::providers::openai_error_type(status),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
