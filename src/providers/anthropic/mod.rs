//! Anthropic Messages API (`kind: anthropic`): [`request`] (canonical → Anthropic), [`response`]
//! and [`stream`] (Anthropic → canonical, or passed through to Anthropic clients), [`errors`].
//!
//! Translation follows the mapping tables of docs/translation.md (§5.1–5.3, 5.8–5.10). Decisions
//! where
//! vendors differ:
//! - All system and developer messages become the top-level `system` blocks, in order.
//! - `max_tokens` is required by Anthropic: `max_completion_tokens`, else `max_tokens`, else
//!   [`DEFAULT_MAX_TOKENS`].
//! - Refused with a 400 naming the parameter (Anthropic cannot honour them and dropping them would
//!   change the answer): `n` > 1, `logprobs`, `top_logprobs`, `logit_bias`, `temperature` > 1,
//!   audio input or output, `file_id` references, non-function tools, unknown fields.
//! - Dropped (no effect on the meaning of the answer, or no Anthropic equivalent): `seed`,
//!   `presence_penalty`, `frequency_penalty`, `store`, `metadata`, `service_tier`,
//!   `prompt_cache_key`, `safety_identifier`, `verbosity`, `user` that looks like an e-mail
//!   (otherwise it becomes `metadata.user_id`), image `detail`, whitespace-only `stop` entries.
//! - `response_format` (json_object / json_schema) is emulated with a forced tool whose input is
//!   returned as the message content, with `finish_reason: "stop"`, also when streamed.
//! - `reasoning_effort` low/medium/high turns on extended thinking with a budget of
//!   1024/2048/4096 tokens (temperature, top_p and top_k are then left out, as Anthropic requires);
//!   thinking text comes back as `reasoning_content`.
//! - Tool-call ids are made to match `^[a-zA-Z0-9_-]+$` by replacing other characters with `_`,
//!   the same way for `tool_calls[].id` and `tool_call_id`, so the pairs stay consistent.
//! - Anthropic clients skip all of this: their body passes through byte for byte but `model`,
//!   with their `anthropic-version` and `anthropic-beta`, and the answer goes back as Anthropic
//!   sent it ([`AnthropicPassthrough`] for streams).

// First, so that its `fixture!` macro is in scope in the modules below.
#[cfg(test)]
#[macro_use]
mod test_support;

mod errors;
mod request;
mod response;
mod stream;

use bytes::Bytes;
use http::HeaderValue;

use super::stream::SseFrame;
use super::{
    push_credentials, Answer, AttemptTarget, KeyScheme, ProbeRequest, ProviderAdapter,
    StreamFailure, StreamReader, StreamSettings, UpstreamRequest,
};
use crate::config::ProviderKind;
use crate::dialect::anthropic::{MessagesRequest, DEFAULT_VERSION};
use crate::dialect::{ClientRequest, Dialect};
use crate::error::GatewayError;

pub use errors::decode_anthropic_error;
pub use request::sanitize_tool_id;
pub use response::finish_reason;
pub use stream::{AnthropicPassthrough, AnthropicStreamDecoder};

/// Output budget when the client sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The tool that carries `response_format` answers; reserved so it cannot clash with a user tool.
const JSON_TOOL: &str = "switchyard_json_response";
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Top-level fields with no Anthropic equivalent that do not change what the answer means.
const DROPPED_FIELDS: [&str; 6] = [
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "verbosity",
    "stream_options",
];
/// Anthropic-native fields a client may send through the OpenAI dialect.
const NATIVE_FIELDS: [&str; 2] = ["thinking", "output_config"];

#[derive(Debug, Default)]
pub struct AnthropicAdapter;

fn json_content_type() -> (http::HeaderName, HeaderValue) {
    (
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )
}

/// An Anthropic client's request to `path`: its body but for `model`, its `anthropic-version`
/// (or ours) and `anthropic-beta`, and the provider's key.
fn native_request(
    raw: &MessagesRequest,
    target: &AttemptTarget<'_>,
    path: &str,
) -> Result<UpstreamRequest, GatewayError> {
    let mut headers = Vec::with_capacity(4 + target.extra_headers.len());
    headers.push(json_content_type());
    headers.push((
        http::HeaderName::from_static("anthropic-version"),
        raw.version
            .clone()
            .unwrap_or(HeaderValue::from_static(DEFAULT_VERSION)),
    ));
    if let Some(beta) = &raw.beta {
        headers.push((
            http::HeaderName::from_static("anthropic-beta"),
            beta.clone(),
        ));
    }
    push_credentials(&mut headers, target, KeyScheme::Header("x-api-key"))?;
    Ok(UpstreamRequest {
        path_and_query: format!("{}{path}", target.endpoint.base_path),
        headers,
        body: raw.body_with_model(target.upstream_model),
    })
}

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

impl ProviderAdapter for AnthropicAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn native_dialect(&self) -> Option<Dialect> {
        Some(Dialect::Anthropic)
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        match request {
            // The client's own bytes: thinking signatures, cache_control and newer fields
            // reach Anthropic exactly as sent.
            ClientRequest::Anthropic(raw) => native_request(raw, target, "/v1/messages"),
            _ => {
                let body = Self::request_body(&request.canonical()?, target.upstream_model)?;
                let mut headers = Vec::with_capacity(3 + target.extra_headers.len());
                headers.push(json_content_type());
                headers.push((
                    http::HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_static(DEFAULT_VERSION),
                ));
                push_credentials(&mut headers, target, KeyScheme::Header("x-api-key"))?;
                Ok(UpstreamRequest {
                    path_and_query: format!("{}/v1/messages", target.endpoint.base_path),
                    headers,
                    body: crate::providers::convert::json_bytes(&body),
                })
            }
        }
    }

    fn count_tokens_request(
        &self,
        request: &MessagesRequest,
        target: &AttemptTarget<'_>,
    ) -> Option<UpstreamRequest> {
        native_request(request, target, "/v1/messages/count_tokens").ok()
    }

    fn decode_response(
        &self,
        body: Bytes,
        native: Option<Dialect>,
    ) -> Result<Answer, StreamFailure> {
        response::decode(body, native.is_some())
    }

    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let mut headers = vec![(
            http::HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(DEFAULT_VERSION),
        )];
        push_credentials(&mut headers, target, KeyScheme::Header("x-api-key")).ok()?;
        Some(ProbeRequest {
            path_and_query: format!("{}/v1/models", target.endpoint.base_path),
            headers,
            endpoint: None,
        })
    }

    fn stream_decoder(&self, native: Option<Dialect>, settings: StreamSettings) -> StreamReader {
        if native.is_some() {
            return StreamReader::Native(Box::new(SseFrame::new(
                stream::AnthropicPassthrough::new(settings.price),
            )));
        }
        StreamReader::Events(Box::new(SseFrame::new(
            stream::AnthropicStreamDecoder::default(),
        )))
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        errors::decode_anthropic_error(Some(provider), status, body, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::Value;

    #[test]
    fn json_response_format_is_emulated_with_a_forced_tool() {
        let body = body_for(serde_json::json!({"model": "c", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}}}))
        .unwrap();
        assert_eq!(
            body["tool_choice"],
            serde_json::json!({"type": "tool", "name": JSON_TOOL})
        );
        assert_eq!(
            body["tools"][0]["input_schema"]["properties"]["a"]["type"],
            "integer"
        );

        let answer = r#"{"id":"m","model":"c","content":[{"type":"tool_use","id":"t","name":"switchyard_json_response","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#;
        let decoded = client_answer_openai(Bytes::from(answer)).unwrap();
        let v: Value = serde_json::from_slice(&decoded.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());

        let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
                 data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"switchyard_json_response\",\"input\":{}}}\n\n\
                 data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n\
                 data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n\
                 data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\n\
                 data: {\"type\":\"message_stop\"}\n\n";
        let (r, out, _) = stream(s, false, 13);
        r.unwrap();
        assert!(out.contains(r#""delta":{"content":"{\"a\":"}"#), "{out}");
        assert!(out.contains(r#""finish_reason":"stop""#), "{out}");
        assert!(!out.contains("tool_calls"), "{out}");
    }

    #[test]
    fn reasoning_effort_turns_on_thinking_and_drops_sampling() {
        let body = body_for(
            serde_json::json!({"model": "c", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "medium", "temperature": 0.3, "max_completion_tokens": 1000}),
        )
        .unwrap();
        assert_eq!(
            body["thinking"],
            serde_json::json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert!(body.get("temperature").is_none());
        assert!(body["max_tokens"].as_u64().unwrap() > 2048);
        let thinking = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
            data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
            data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n\
            data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n\
            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n\
            data: {\"type\":\"message_stop\"}\n\n";
        let (r, out, _) = stream(thinking, false, 17);
        r.unwrap();
        assert!(
            out.contains(r#""reasoning_content":"Let me think""#),
            "{out}"
        );
        assert!(!out.contains("abc"));
    }
}
