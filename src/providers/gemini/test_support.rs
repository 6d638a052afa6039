//! Helpers shared by the adapter's tests: fixtures, requests, and the whole answer path.

pub(super) use bytes::Bytes;
pub(super) use serde_json::{json, Value};

pub(super) use super::GeminiAdapter;
pub(super) use crate::accounting::Usage;
pub(super) use crate::config::Secret;
pub(super) use crate::dialect::openai::ChatRequest;
pub(super) use crate::dialect::Dialect;
pub(super) use crate::error::GatewayError;
use crate::providers::test_support::{blank_after, blank_created, stream_as_openai};
pub(super) use crate::providers::{client_answer, client_stream, Endpoint};
pub(super) use crate::providers::{StreamFailure, StreamSettings};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/gemini/", $name))
    };
}

pub(super) fn client_answer_openai(
    body: Bytes,
) -> Result<crate::providers::RenderedAnswer, StreamFailure> {
    client_answer(&GeminiAdapter, body, Dialect::OpenAi)
}

pub(super) fn client_stream_openai(
    settings: StreamSettings,
) -> Box<dyn crate::providers::StreamDecoder> {
    client_stream(&GeminiAdapter, Dialect::OpenAi, settings)
}

pub(super) use crate::providers::test_support::json;

pub(super) fn request(v: Value) -> ChatRequest {
    ChatRequest::parse(v.to_string().as_bytes()).unwrap()
}

/// The Gemini body for `messages` plus `extra` top-level fields, sent to Gemini 2.5.
pub(super) fn body_with(messages: Value, extra: Value) -> Result<Value, GatewayError> {
    body_for_model(messages, extra, "gemini-2.5-flash")
}

pub(super) fn body_for_model(
    messages: Value,
    extra: Value,
    model: &str,
) -> Result<Value, GatewayError> {
    let mut v = json!({"model": "g", "messages": messages});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    GeminiAdapter::request_body(&request(v).canonical()?, model)
}

pub(super) fn hello() -> Value {
    json!([{"role": "user", "content": "x"}])
}

/// Replaces the random parts of generated ids and `created`, so output can be compared with
/// a fixture.
pub(super) fn normalise(text: &str) -> String {
    let mut out = blank_created(text);
    out = blank_after(&out, "\"call_", |c| c.is_ascii_hexdigit(), 'X', false);
    blank_after(&out, "\"chatcmpl-", |c| c.is_ascii_hexdigit(), 'X', false)
}

pub(super) fn stream(
    input: &str,
    include_usage: bool,
    piece: usize,
) -> (Result<(), StreamFailure>, String, Option<Usage>) {
    stream_as_openai(&GeminiAdapter, input, include_usage, piece, normalise)
}

/// The JSON objects of an OpenAI SSE body.
pub(super) fn chunks(sse: &str) -> Vec<Value> {
    sse.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| e.starts_with('{'))
        .map(json)
        .collect()
}

pub(super) fn decode_as_openai(answer: &str) -> Value {
    let decoded = client_answer_openai(Bytes::from(answer.to_string())).unwrap();
    serde_json::from_slice(&decoded.body).unwrap()
}

pub(super) fn endpoint() -> Endpoint {
    Endpoint::from_url(&url::Url::parse("https://generativelanguage.googleapis.com").unwrap())
        .unwrap()
}

// ---- golden fixtures ----
