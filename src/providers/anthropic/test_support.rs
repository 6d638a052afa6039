//! Helpers shared by the adapter's tests: fixtures, requests, and the whole answer path.

use bytes::Bytes;
use serde_json::Value;

use super::AnthropicAdapter;
use crate::accounting::Usage;
use crate::dialect::Dialect;
use crate::error::GatewayError;
use crate::providers::{StreamFailure, StreamSettings};

use crate::dialect::openai::ChatRequest;
use crate::providers::{client_answer, client_stream};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/anthropic/", $name))
    };
}

pub(super) fn request(body: &str) -> ChatRequest {
    ChatRequest::parse(body.as_bytes()).unwrap()
}

pub(super) fn body_for(openai: Value) -> Result<Value, GatewayError> {
    AnthropicAdapter::request_body(
        &request(&openai.to_string()).canonical()?,
        "claude-sonnet-4-5",
    )
}

pub(super) fn client_answer_openai(
    body: Bytes,
) -> Result<crate::providers::RenderedAnswer, StreamFailure> {
    client_answer(&AnthropicAdapter, body, Dialect::OpenAi)
}

#[allow(dead_code)]
pub(super) fn client_stream_openai(
    settings: StreamSettings,
) -> Box<dyn crate::providers::StreamDecoder> {
    client_stream(&AnthropicAdapter, Dialect::OpenAi, settings)
}

pub(super) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// `created` is the wall clock; everything else must match byte for byte.
pub(super) fn normalise(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find("\"created\":") {
        out.push_str(&rest[..pos]);
        out.push_str("\"created\":0");
        rest = &rest[pos + 10..];
        rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

pub(super) fn stream(
    input: &str,
    include_usage: bool,
    piece: usize,
) -> (Result<(), StreamFailure>, String, Option<Usage>) {
    let mut d = client_stream(
        &AnthropicAdapter,
        Dialect::OpenAi,
        StreamSettings {
            include_usage,
            price: None,
        },
    );
    let mut out = Vec::new();
    for c in input.as_bytes().chunks(piece) {
        if let Err(e) = d.push(c, &mut out) {
            return (Err(e), String::from_utf8(out).unwrap(), d.usage());
        }
    }
    let r = d.finish(&mut out);
    (r, normalise(&String::from_utf8(out).unwrap()), d.usage())
}
