//! Google Cloud Vertex AI (`kind: vertex`): Gemini and Anthropic models of one project and
//! region, authorized with OAuth tokens from a service account
//! ([`auth::TokenSource`]).
//!
//! A target's model picks the publisher: `claude-*` models are Anthropic's
//! (`…/publishers/anthropic/models/{m}:rawPredict`, `:streamRawPredict`; the Messages body
//! without `model`, with `anthropic_version: vertex-2023-10-16`), every other model Google's
//! (`…/publishers/google/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`, the
//! Gemini body). Answers are told apart by their shape, so one provider serves both. Requests
//! are translated from the canonical form for every client (no byte-for-byte pass-through of
//! Anthropic clients on Vertex).

use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::{json, Value};

use super::anthropic::{AnthropicAdapter, AnthropicStreamDecoder};
use super::gemini::{GeminiAdapter, GeminiStreamDecoder};
use super::model_id::ModelIdRule;
use super::sse::SseEvent;
use super::stream::{SseFrame, SseHandler};
use super::{
    push_credentials, Answer, AttemptTarget, KeyScheme, ProbeRequest, ProviderAdapter, Renewable,
    StreamFailure, StreamReader, StreamSettings, UpstreamRequest,
};
use crate::accounting::Usage;
use crate::chat::EventSink;
use crate::config::{ProviderConfig, ProviderKind};
use crate::dialect::ClientRequest;
use crate::dialect::Dialect;
use crate::error::GatewayError;
use auth::TokenSource;

mod auth;

const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

pub struct VertexAdapter {
    project: String,
    region: String,
    tokens: TokenSource,
}

/// Publisher model ids: `gemini-2.5-pro`, `claude-sonnet-4-5@20250929`.
const VERTEX_MODEL: ModelIdRule = ModelIdRule {
    what: "a Vertex AI model name",
    punctuation: b"-._@",
    literal: b"@",
};

fn is_anthropic(model: &str) -> bool {
    model.starts_with("claude")
}

impl VertexAdapter {
    pub fn new(config: &ProviderConfig) -> Result<Self, String> {
        let account = config
            .service_account
            .as_ref()
            .ok_or("no service account")?;
        Ok(VertexAdapter {
            project: config.project.clone().ok_or("no project")?,
            region: config.region.clone().ok_or("no region")?,
            tokens: TokenSource::new(account, config.timeouts).map_err(|e| e.to_string())?,
        })
    }
}

/// Which publisher's format an answer is in.
#[derive(Deserialize)]
struct ShapeProbe {
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

fn anthropic_shaped(body: &[u8]) -> bool {
    serde_json::from_slice::<ShapeProbe>(body)
        .ok()
        .and_then(|p| p.kind)
        .is_some_and(|k| k == "message" || k == "error")
}

impl ProviderAdapter for VertexAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Vertex
    }

    fn renewable(&self) -> Option<&dyn Renewable> {
        Some(&self.tokens)
    }

    fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        VERTEX_MODEL.check(model)
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = &*VERTEX_MODEL.segment(target.upstream_model)?;
        let canonical = request.canonical()?;
        let stream = request.stream();
        let base = format!(
            "{}/v1/projects/{}/locations/{}/publishers",
            target.endpoint.base_path, self.project, self.region
        );
        let (path_and_query, body) = if is_anthropic(model) {
            let mut body = AnthropicAdapter::request_body(&canonical, model)?;
            if let Value::Object(map) = &mut body {
                map.shift_remove("model");
                map.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
            }
            let method = if stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            (format!("{base}/anthropic/models/{model}:{method}"), body)
        } else {
            let body = GeminiAdapter::request_body(&canonical, model)?;
            let method = if stream {
                "streamGenerateContent?alt=sse"
            } else {
                "generateContent"
            };
            (format!("{base}/google/models/{model}:{method}"), body)
        };
        let mut headers = vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        // The attempt puts the current access token in `api_key`.
        push_credentials(&mut headers, target, KeyScheme::Bearer)?;
        Ok(UpstreamRequest {
            path_and_query,
            headers,
            body: crate::providers::convert::json_bytes(&body),
        })
    }

    /// A publisher model's metadata (`GET …/v1/publishers/google/models/…`): free, and it checks
    /// the token.
    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let mut headers = Vec::new();
        push_credentials(&mut headers, target, KeyScheme::Bearer).ok()?;
        Some(ProbeRequest {
            path_and_query: format!(
                "{}/v1/publishers/google/models/gemini-2.0-flash",
                target.endpoint.base_path
            ),
            headers,
            endpoint: None,
        })
    }

    fn decode_response(
        &self,
        body: Bytes,
        _native: Option<Dialect>,
    ) -> Result<Answer, StreamFailure> {
        if anthropic_shaped(&body) {
            AnthropicAdapter.decode_response(body, None)
        } else {
            GeminiAdapter.decode_response(body, None)
        }
    }

    fn stream_decoder(&self, _native: Option<Dialect>, _settings: StreamSettings) -> StreamReader {
        StreamReader::Events(Box::new(SseFrame::new(Sniffing::Unknown)))
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        if anthropic_shaped(body) {
            AnthropicAdapter.decode_error(provider, status, body, retry_after)
        } else {
            GeminiAdapter.decode_error(provider, status, body, retry_after)
        }
    }
}

/// A stream that is Anthropic's (named events from `message_start`) or Gemini's (bare data
/// chunks), told apart by its first event.
enum Sniffing {
    Unknown,
    Anthropic(AnthropicStreamDecoder),
    Gemini(GeminiStreamDecoder),
}

impl<'s> SseHandler<dyn EventSink + 's> for Sniffing {
    fn event(
        &mut self,
        event: SseEvent,
        sink: &mut (dyn EventSink + 's),
    ) -> Result<(), StreamFailure> {
        if let Sniffing::Unknown = self {
            let anthropic = event.event.is_some() || event.data.contains("\"message_start\"");
            *self = if anthropic {
                Sniffing::Anthropic(AnthropicStreamDecoder::default())
            } else {
                Sniffing::Gemini(GeminiStreamDecoder::default())
            };
        }
        match self {
            Sniffing::Anthropic(d) => d.event(event, sink),
            Sniffing::Gemini(d) => d.event(event, sink),
            Sniffing::Unknown => Ok(()),
        }
    }

    fn end(&mut self, sink: &mut (dyn EventSink + 's)) -> Result<(), StreamFailure> {
        match self {
            Sniffing::Anthropic(d) => d.end(sink),
            Sniffing::Gemini(d) => d.end(sink),
            Sniffing::Unknown => Err(StreamFailure::Truncated),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Sniffing::Anthropic(d) => SseHandler::<dyn EventSink>::usage(d),
            Sniffing::Gemini(d) => SseHandler::<dyn EventSink>::usage(d),
            Sniffing::Unknown => None,
        }
    }
}
