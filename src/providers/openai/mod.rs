//! OpenAI and OpenAI-compatible hosts (vLLM, Ollama, Groq, Mistral, DeepSeek, Together, ...).
//! [`request`] (the client's body with the target's model and the host's [`Quirks`]),
//! [`response`] and [`stream`] (answers checked and passed on), [`errors`]; [`canonical`] for
//! clients of another dialect.
//!
//! Decisions:
//! - The client already speaks this format, so requests pass through with only `model` and
//!   `stream_options` rewritten, and answers pass through byte for byte, except that:
//!   - the gateway always asks for stream usage (to count tokens) and drops the usage chunk
//!     again when the client did not ask for it;
//!   - chunks with empty `choices` and no usage (Azure's content-filter preamble) are skipped;
//!   - tool-call deltas get dense indexes by call id (Ollama omits or repeats `index`), and a
//!     `finish_reason: "stop"` on an answer with tool calls becomes `"tool_calls"` (OpenAI
//!     itself says `stop` when `tool_choice` names a function; clients key on `tool_calls`).
//! - [`Quirks`] covers request-side deviations of OpenAI-compatible hosts: `developer` →
//!   `system` (most hosts reject `developer`), and for Mistral 9-character alphanumeric
//!   tool-call ids and `max_tokens` instead of `max_completion_tokens`.
//! - Legacy text completions (`POST /v1/completions`) pass through the same way, to the host's
//!   `/completions`, where the provider sets `completions_api`; elsewhere they are mapped onto chat.

mod canonical;
mod errors;
mod request;
mod response;
pub mod responses;
mod stream;

use bytes::Bytes;

use super::stream::SseFrame;
use super::{
    push_credentials, Answer, AttemptTarget, KeyScheme, ProbeRequest, ProviderAdapter,
    RenderedAnswer, StreamFailure, StreamReader, StreamSettings, UpstreamRequest,
};
use crate::chat;
use crate::config::ProviderKind;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::responses::ResponsesRequest;
use crate::dialect::{ClientRequest, Dialect};
use crate::error::GatewayError;

pub use errors::decode_openai_error;
pub use request::{nine_char_id, Quirks};
pub use response::{decode_openai_embeddings, decode_openai_response};
pub use stream::{openai_stream_decoder, OpenAiStreamDecoder};

pub struct OpenAiAdapter {
    kind: ProviderKind,
    quirks: Quirks,
    /// The host serves the Responses API: Responses clients pass through.
    responses_api: bool,
    /// The host serves legacy `POST /completions` (config `completions_api`).
    completions_api: bool,
}

impl OpenAiAdapter {
    pub fn new(kind: ProviderKind) -> Self {
        Self::with_quirks(kind, Quirks::default())
    }

    pub fn with_quirks(kind: ProviderKind, quirks: Quirks) -> Self {
        OpenAiAdapter {
            kind,
            quirks,
            completions_api: false,
            responses_api: false,
        }
    }

    /// Legacy completions clients are passed through to the host's `POST /completions`.
    pub fn with_completions_api(mut self, on: bool) -> Self {
        self.completions_api = on;
        self
    }

    /// Passes Responses clients through to the host's `/responses` (`responses_api: true`).
    pub fn with_responses_api(mut self, served: bool) -> Self {
        self.responses_api = served;
        self
    }

    /// The request of a Responses client, for a host that serves the API at `path`.
    pub fn responses_request(
        request: &ResponsesRequest,
        target: &AttemptTarget<'_>,
        path_and_query: String,
        scheme: KeyScheme,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = request.upstream_body(target.upstream_model)?;
        let mut headers = Vec::with_capacity(4 + target.extra_headers.len());
        headers.extend(Self::content_headers(request.stream));
        push_credentials(&mut headers, target, scheme)?;
        Ok(UpstreamRequest {
            path_and_query,
            headers,
            body,
        })
    }
}

/// An OpenAI Chat Completions answer decoded into the canonical model (as for a client of
/// another dialect).
pub fn decode_chat_response(body: &[u8]) -> Result<chat::Response, StreamFailure> {
    canonical::decode_response(body)
}

impl ProviderAdapter for OpenAiAdapter {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn native_dialect(&self) -> Option<Dialect> {
        Some(Dialect::OpenAi)
    }

    fn speaks(&self, dialect: Dialect) -> bool {
        match dialect {
            Dialect::OpenAi => true,
            Dialect::Responses => self.responses_api,
            Dialect::Completions => self.completions_api,
            Dialect::Anthropic => false,
        }
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        if let ClientRequest::Responses(responses) = request {
            if self.responses_api {
                let path = format!("{}/responses", target.endpoint.base_path);
                return Self::responses_request(responses, target, path, KeyScheme::Bearer);
            }
        }
        let body = self.body_for(request, target.upstream_model)?;
        let mut headers = Vec::with_capacity(4 + target.extra_headers.len());
        headers.extend(Self::content_headers(request.stream()));
        push_credentials(&mut headers, target, KeyScheme::Bearer)?;
        let operation = match request {
            ClientRequest::Completions(_) if self.completions_api => "completions",
            _ => "chat/completions",
        };
        Ok(UpstreamRequest {
            path_and_query: format!("{}/{operation}", target.endpoint.base_path),
            headers,
            body: Bytes::from(body),
        })
    }

    fn build_embeddings(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let mut headers = Vec::with_capacity(3 + target.extra_headers.len());
        headers.extend(Self::content_headers(false));
        push_credentials(&mut headers, target, KeyScheme::Bearer)?;
        Ok(UpstreamRequest {
            path_and_query: format!("{}/embeddings", target.endpoint.base_path),
            headers,
            body: Bytes::from(request.body_with_model(target.upstream_model)?),
        })
    }

    fn decode_embeddings(
        &self,
        _request: &EmbeddingsRequest,
        _model: &str,
        body: Bytes,
    ) -> Result<RenderedAnswer, StreamFailure> {
        decode_openai_embeddings(body)
    }

    fn decode_response(
        &self,
        body: Bytes,
        native: Option<Dialect>,
    ) -> Result<Answer, StreamFailure> {
        if native == Some(Dialect::Responses) {
            responses::decode_responses_json(body)
        } else if native.is_some() {
            decode_openai_response(body)
        } else {
            canonical::decode_response(&body).map(Answer::Chat)
        }
    }

    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let mut headers = Vec::new();
        push_credentials(&mut headers, target, KeyScheme::Bearer).ok()?;
        Some(ProbeRequest {
            path_and_query: format!("{}/models", target.endpoint.base_path),
            headers,
            endpoint: None,
        })
    }

    fn stream_decoder(&self, native: Option<Dialect>, settings: StreamSettings) -> StreamReader {
        if native == Some(Dialect::Responses) {
            StreamReader::Native(responses::responses_stream_relay(settings))
        } else if native.is_some() {
            StreamReader::Native(openai_stream_decoder(settings))
        } else {
            StreamReader::Events(Box::new(SseFrame::new(canonical::StreamDecoder::default())))
        }
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

impl std::fmt::Debug for OpenAiAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenAiAdapter({})", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::dialect::openai::ChatRequest;
    use crate::providers::Endpoint;
    use serde_json::{json, Value};

    fn endpoint() -> Endpoint {
        Endpoint::from_url(&url::Url::parse("https://api.example.com/v1/").unwrap()).unwrap()
    }

    fn build(body: Value) -> (UpstreamRequest, Value) {
        let req = ChatRequest::parse(body.to_string().as_bytes()).unwrap();
        let key = Secret::new("sk-provider");
        let ep = endpoint();
        let out = OpenAiAdapter::new(ProviderKind::OpenAi)
            .build_request(
                &ClientRequest::OpenAi(req),
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
    fn legacy_completions_pass_through_only_where_the_host_has_them() {
        use crate::dialect::openai::completions::CompletionsRequest;
        use crate::providers::{client_answer, client_stream};
        let ep = endpoint();
        let target = AttemptTarget {
            upstream_model: "up",
            endpoint: &ep,
            api_key: None,
            extra_headers: &[],
        };
        let text = br#"{"model":"m","prompt":"Say","max_tokens":3,"stream":true}"#;
        let request = ClientRequest::Completions(CompletionsRequest::parse(text).unwrap());
        let plain = OpenAiAdapter::new(ProviderKind::OpenAiCompatible);
        let with = OpenAiAdapter::new(ProviderKind::OpenAiCompatible).with_completions_api(true);
        assert!(!plain.speaks(Dialect::Completions) && with.speaks(Dialect::Completions));
        let out = with.build_request(&request, &target).unwrap();
        assert_eq!(out.path_and_query, "/v1/completions");
        assert_eq!(
            std::str::from_utf8(&out.body).unwrap(),
            r#"{"model":"up","prompt":"Say","max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let out = plain.build_request(&request, &target).unwrap();
        assert_eq!(out.path_and_query, "/v1/chat/completions");
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "Say"}])
        );

        // The host's answers pass on as they came, their usage read.
        let answer = r#"{"id":"cmpl-1","object":"text_completion","choices":[{"text":"hi","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#;
        let got = client_answer(&with, Bytes::from(answer), Dialect::Completions).unwrap();
        assert_eq!(
            (&got.body[..], got.usage.unwrap().total()),
            (answer.as_bytes(), 3)
        );
        let stream = concat!(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"text\":\"hi\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut decoder = client_stream(&with, Dialect::Completions, StreamSettings::default());
        let mut out = Vec::new();
        decoder.push(stream.as_bytes(), &mut out).unwrap();
        decoder.finish(&mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        // The client did not ask for usage: the chunk the gateway asked for is dropped.
        assert!(
            out.contains("\"text\":\"hi\"") && !out.contains("usage"),
            "{out}"
        );
        assert_eq!(decoder.usage().unwrap().total(), 3);
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
}
