//! Helpers shared by the adapter's tests: fixtures, requests, and the whole answer path.

pub(super) use bytes::Bytes;
pub(super) use serde_json::{json, Value};

pub(super) use super::GeminiAdapter;
pub(super) use crate::accounting::Usage;
pub(super) use crate::config::Secret;
pub(super) use crate::dialect::openai::ChatRequest;
pub(super) use crate::dialect::Dialect;
pub(super) use crate::error::GatewayError;
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

#[allow(dead_code)]
pub(super) fn client_stream_openai(
    settings: StreamSettings,
) -> Box<dyn crate::providers::StreamDecoder> {
    client_stream(&GeminiAdapter, Dialect::OpenAi, settings)
}

pub(super) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

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
    let mut out = blank_after(text, "\"created\":", |c| c.is_ascii_digit(), '0', true);
    out = blank_after(&out, "\"call_", |c| c.is_ascii_hexdigit(), 'X', false);
    blank_after(&out, "\"chatcmpl-", |c| c.is_ascii_hexdigit(), 'X', false)
}

/// After each `marker`, replaces the run of characters matching `keep` by `fill` (once,
/// when `collapse`, else once per character).
pub(super) fn blank_after(
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

pub(super) fn stream(
    input: &str,
    include_usage: bool,
    piece: usize,
) -> (Result<(), StreamFailure>, String, Option<Usage>) {
    let mut d = client_stream_openai(StreamSettings {
        include_usage,
        price: None,
    });
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
