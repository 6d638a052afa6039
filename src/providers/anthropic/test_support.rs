//! Helpers shared by the adapter's tests: fixtures, requests, and the whole answer path.

use bytes::Bytes;
use serde_json::Value;

use super::AnthropicAdapter;
use crate::accounting::Usage;
use crate::dialect::Dialect;
use crate::error::GatewayError;
use crate::providers::StreamFailure;

use crate::dialect::openai::ChatRequest;
use crate::providers::client_answer;
use crate::providers::test_support::stream_as_openai;

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

pub(super) use crate::providers::test_support::json;

/// `created` is the wall clock; everything else must match byte for byte.
pub(super) use crate::providers::test_support::blank_created as normalise;

pub(super) fn stream(
    input: &str,
    include_usage: bool,
    piece: usize,
) -> (Result<(), StreamFailure>, String, Option<Usage>) {
    stream_as_openai(&AnthropicAdapter, input, include_usage, piece, normalise)
}
