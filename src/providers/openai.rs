//! OpenAI and OpenAI-compatible hosts (vLLM, Ollama, Groq, Mistral, DeepSeek, Together, ...).
//!
//! The client already speaks this format, so requests pass through with only `model` and
//! `stream_options` rewritten, and answers pass through byte for byte, except that the gateway
//! always asks for stream usage (to count tokens) and drops the usage chunk again when the client
//! did not ask for it.

use bytes::Bytes;
use http::HeaderValue;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::sse::{SseDecoder, SseEvent};
use super::{
    openai_error_type, AttemptTarget, DecodedResponse, ProviderAdapter, StreamDecoder,
    StreamFailure, StreamSettings, UpstreamRequest,
};
use crate::accounting::{OpenAiUsageWire, Usage};
use crate::config::ProviderKind;
use crate::dialect::openai::ChatRequest;
use crate::error::GatewayError;

pub struct OpenAiAdapter {
    kind: ProviderKind,
}

impl OpenAiAdapter {
    pub fn new(kind: ProviderKind) -> Self {
        OpenAiAdapter { kind }
    }
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

    fn build_request(
        &self,
        request: &ChatRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = OutgoingBody {
            model: target.upstream_model,
            rest: &request.rest,
            stream: request.stream,
            stream_options: request.stream.then_some(OutgoingStreamOptions {
                include_usage: true,
                rest: &request.stream_options_rest,
            }),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))?;
        let mut headers = Vec::with_capacity(4 + target.extra_headers.len());
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        headers.push((
            http::header::ACCEPT,
            HeaderValue::from_static(if request.stream {
                "text/event-stream"
            } else {
                "application/json"
            }),
        ));
        if let Some(key) = target.api_key {
            let value =
                HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
                    GatewayError::Internal("provider api_key is not a valid header value".into())
                })?;
            headers.push((http::header::AUTHORIZATION, value));
        }
        headers.extend(target.extra_headers.iter().cloned());
        Ok(UpstreamRequest {
            path_and_query: format!("{}/chat/completions", target.endpoint.base_path),
            headers,
            body: Bytes::from(body),
        })
    }

    fn decode_response(&self, body: Bytes) -> Result<DecodedResponse, StreamFailure> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            usage: Option<OpenAiUsageWire>,
            #[serde(default)]
            choices: Option<IgnoredAny>,
        }
        let probe: Probe = serde_json::from_slice(&body)
            .map_err(|e| StreamFailure::Malformed(format!("answer is not JSON: {e}")))?;
        if probe.choices.is_none() {
            return Err(StreamFailure::Malformed("answer has no choices".into()));
        }
        Ok(DecodedResponse {
            usage: probe.usage.map(Usage::from),
            body,
        })
    }

    fn stream_decoder(&self, settings: StreamSettings) -> Box<dyn StreamDecoder> {
        Box::new(OpenAiStreamDecoder {
            sse: SseDecoder::new(),
            events: Vec::new(),
            settings,
            usage: None,
            done: false,
        })
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
    let name = provider.unwrap_or("the provider");
    let message = if status == 401 || status == 403 {
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
        kind: kind.unwrap_or_else(|| openai_error_type(status).to_string()),
        code,
        param,
        retry_after,
    }
}

struct OpenAiStreamDecoder {
    sse: SseDecoder,
    events: Vec<SseEvent>,
    settings: StreamSettings,
    usage: Option<Usage>,
    done: bool,
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

impl OpenAiStreamDecoder {
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
        let usage_only = probe.choices.as_ref().is_some_and(|c| c.is_empty());
        if let Some(u) = probe.usage {
            self.usage = Some(Usage::from(u));
            // The gateway asked for usage on the client's behalf; the client gets that chunk only
            // if it asked too.
            if usage_only && !self.settings.include_usage {
                return Ok(());
            }
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\n\n");
        Ok(())
    }
}

impl StreamDecoder for OpenAiStreamDecoder {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        let mut events = std::mem::take(&mut self.events);
        let decoded = self
            .sse
            .push(chunk, &mut events)
            .map_err(|e| StreamFailure::Malformed(e.to_string()));
        let mut result = decoded;
        for event in events.drain(..) {
            if result.is_ok() {
                result = self.handle(event, out);
            }
        }
        self.events = events;
        result
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        // Accept a final `data: [DONE]` that lacks its blank line; anything else unterminated is cut.
        if let Some(tail) = self
            .sse
            .finish()
            .map_err(|e| StreamFailure::Malformed(e.to_string()))?
        {
            self.handle(tail, out)?;
        }
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

impl std::fmt::Debug for OpenAiAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenAiAdapter({})", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
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
                &req,
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
        let mut d = OpenAiAdapter::new(ProviderKind::OpenAi)
            .stream_decoder(StreamSettings { include_usage });
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(piece) {
            if let Err(e) = d.push(c, &mut out) {
                return (Err(e), String::from_utf8(out).unwrap(), d.usage());
            }
        }
        let r = d.finish(&mut out);
        (r, String::from_utf8(out).unwrap(), d.usage())
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
}
