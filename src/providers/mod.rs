//! Vendor adapters: one module per vendor, each implementing [`ProviderAdapter`].
//!
//! An adapter is pure translation — no sockets, no Pingora types — so every vendor is unit-tested
//! with golden fixtures, and the [`transport`](crate::transport) is shared by all of them. An
//! adapter turns the canonical request into the vendor's request, and the vendor's answers into a
//! canonical [`chat::Response`] or a stream of canonical [`chat::Event`]s, which the client's
//! dialect encodes. When the client speaks the vendor's own dialect, the adapter passes the
//! request and the answer through instead (only `model` and keys change).
//!
//! The built-in `mock` provider ([`mock`]) generates OpenAI answers; it sits behind the OpenAI
//! adapter as a fake transport.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod convert;
pub mod gemini;
pub mod mock;
pub mod model_id;
pub mod openai;
pub mod sse;
pub mod stream;
#[cfg(test)]
mod test_support;
pub mod vertex;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::accounting::Usage;
use crate::chat::{self, EventSink};
use crate::config::{ProviderConfig, ProviderKind, Secret};
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::{self, ClientFormat, ClientRequest, Dialect};
use crate::error::GatewayError;
// Adapters build these for the transport, which owns them: it sends them and knows nothing of
// vendors.
pub use crate::transport::{Endpoint, ProbeRequest, UpstreamRequest};
// How the client wants its stream: the dialect's encoder and the vendor's decoder both read it.
pub use crate::chat::StreamSettings;

/// What an adapter needs to know about the attempt it builds a request for.
pub struct AttemptTarget<'a> {
    /// The model name the vendor expects.
    pub upstream_model: &'a str,
    pub endpoint: &'a Endpoint,
    pub api_key: Option<&'a Secret>,
    pub extra_headers: &'a [(HeaderName, HeaderValue)],
}

/// How a vendor wants the provider key sent.
#[derive(Debug, Clone, Copy)]
pub enum KeyScheme {
    /// `Authorization: Bearer <key>`: OpenAI and compatible hosts, Bedrock API keys, Vertex
    /// access tokens.
    Bearer,
    /// The bare key in a header of the vendor's own: `x-api-key`, `api-key`, `x-goog-api-key`.
    Header(&'static str),
}

/// Appends the provider key as the vendor wants it, then the provider's extra headers. The
/// key's header is marked sensitive, so it is never printed or indexed by HPACK.
pub fn push_credentials(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    target: &AttemptTarget<'_>,
    scheme: KeyScheme,
) -> Result<(), GatewayError> {
    if let Some(key) = target.api_key {
        let (name, value) = match scheme {
            KeyScheme::Bearer => (
                http::header::AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer {}", key.expose())),
            ),
            KeyScheme::Header(name) => (
                HeaderName::from_static(name),
                HeaderValue::from_str(key.expose()),
            ),
        };
        let mut value = value.map_err(|_| {
            GatewayError::Internal("provider api_key is not a valid header value".into())
        })?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    headers.extend(target.extra_headers.iter().cloned());
    Ok(())
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The vendor's own body, for a client of the same dialect.
    Native { body: Bytes, usage: Option<Usage> },
    /// The canonical answer, for the client's dialect to encode.
    Chat(chat::Response),
}

impl Answer {
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Answer::Native { usage, .. } => *usage,
            Answer::Chat(r) => Some(r.usage),
        }
    }
}

/// Why a stream could not be completed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamFailure {
    /// The upstream reported an error inside the stream.
    #[error("{0}")]
    Upstream(Box<GatewayError>),
    /// Bytes that are not a valid stream of this vendor.
    #[error("malformed stream from provider: {0}")]
    Malformed(String),
    /// The stream ended before the vendor's closing event.
    #[error("stream ended before it was complete")]
    Truncated,
}

/// Turns a vendor's stream bytes into the client's stream bytes, incrementally: a pass-through
/// relay, or an [`EventDecoder`] feeding the client dialect's encoder
/// ([`stream::Translated`]).
pub trait StreamDecoder: Send {
    /// Consumes one piece of the upstream body and appends whatever client bytes it completes.
    fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), StreamFailure>;
    /// The upstream body ended: appends the final client bytes, or fails if the stream was cut.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), StreamFailure>;
    /// Usage seen so far (the final figure once `finish` succeeded).
    fn usage(&self) -> Option<Usage>;
    /// Writes the end of a stream that failed after it started, when the client's dialect
    /// ends it depending on what was sent ([`StreamEncoder::fail`]); `false` leaves it to
    /// [`Dialect::stream_error_event`].
    ///
    /// [`StreamEncoder::fail`]: crate::dialect::StreamEncoder::fail
    fn fail(&mut self, error: &GatewayError, out: &mut Vec<u8>) -> bool {
        let _ = (error, out);
        false
    }
    /// The whole answer as one JSON body once the stream ended, for dialects that keep
    /// answers (Responses).
    fn finished(&mut self) -> Option<Bytes> {
        None
    }
}

/// Turns a vendor's stream bytes into canonical events, incrementally.
pub trait EventDecoder: Send {
    /// Consumes one piece of the upstream body and emits the events it completes.
    fn push(&mut self, chunk: &[u8], sink: &mut dyn EventSink) -> Result<(), StreamFailure>;
    /// The upstream body ended: emits the final events, or fails if the stream was cut.
    fn finish(&mut self, sink: &mut dyn EventSink) -> Result<(), StreamFailure>;
    /// Usage seen so far (the final figure once `finish` succeeded).
    fn usage(&self) -> Option<Usage>;
}

/// How an adapter reads one streamed answer.
pub enum StreamReader {
    /// Passes the vendor's events through (client and vendor share the dialect).
    Native(Box<dyn StreamDecoder>),
    /// Decodes the vendor's events into canonical ones.
    Events(Box<dyn EventDecoder>),
}

/// Credentials that expire and are renewed before they do.
#[async_trait::async_trait]
pub trait Renewable: Send + Sync {
    /// Makes sure the credentials are valid for a while; returns the bearer token to send as
    /// the attempt's key, when the provider uses one.
    async fn renew(
        &self,
        transport: &crate::transport::Transport,
    ) -> Result<Option<Secret>, String>;
}

/// One vendor's wire format.
///
/// `native` in the decoding methods is the client's dialect when the adapter
/// [`speaks`](Self::speaks) it:
/// the request was then passed through, and the answer goes back as the vendor sent it.
pub trait ProviderAdapter: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// The client dialect this vendor speaks, if any.
    fn native_dialect(&self) -> Option<Dialect> {
        None
    }

    /// Whether a client speaking `dialect` is passed through to this vendor. Vendors that
    /// speak several dialects (OpenAI: Chat Completions and, where the host has it,
    /// Responses) say so here.
    fn speaks(&self, dialect: Dialect) -> bool {
        self.native_dialect() == Some(dialect)
    }

    /// Whether `model` is an id this vendor could serve, checked before any attempt of a direct
    /// `PROVIDER/MODEL` route and at config load: a client's typo must be its own 400, never
    /// a failed attempt that counts against the provider. Vendors that put the model in a URL
    /// narrow [`model_id::BODY_ONLY`].
    fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        model_id::BODY_ONLY.check(model)
    }

    /// Builds the vendor request for one attempt: the client's own body (but for `model`) when
    /// the adapter [`speaks`](Self::speaks) the client's dialect, else a translation of its
    /// canonical form.
    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError>;

    /// Decodes a successful JSON answer.
    fn decode_response(
        &self,
        body: Bytes,
        native: Option<Dialect>,
    ) -> Result<Answer, StreamFailure>;

    /// A reader for one streamed answer.
    fn stream_decoder(&self, native: Option<Dialect>, settings: StreamSettings) -> StreamReader;

    /// The vendor request for `POST /v1/embeddings`; vendors without embeddings refuse.
    fn build_embeddings(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let _ = (request, target);
        Err(GatewayError::invalid(
            format!(
                "provider kind {} has no embeddings API; route this model to an embeddings provider",
                self.kind()
            ),
            Some("model"),
        ))
    }

    /// The vendor requests for `POST /v1/embeddings` when one call cannot carry them all:
    /// several, sent at once (bounded by the provider's `max_parallel_requests`) and answered
    /// together by [`Self::decode_embeddings_parts`]. `None` (the default) when
    /// [`Self::build_embeddings`]'s one request does.
    fn build_embeddings_parts(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Option<Result<Vec<UpstreamRequest>, GatewayError>> {
        let _ = (request, target);
        None
    }

    /// The answers to [`Self::build_embeddings_parts`]'s requests, in their order, as one
    /// OpenAI `list`.
    fn decode_embeddings_parts(
        &self,
        request: &EmbeddingsRequest,
        model: &str,
        bodies: &[Bytes],
    ) -> Result<RenderedAnswer, StreamFailure> {
        let _ = (request, model, bodies);
        Err(StreamFailure::Malformed(
            "this provider kind sends embeddings in one request".into(),
        ))
    }

    /// The vendor's embeddings answer as OpenAI's `list` (for the upstream `model`).
    fn decode_embeddings(
        &self,
        request: &EmbeddingsRequest,
        model: &str,
        body: Bytes,
    ) -> Result<RenderedAnswer, StreamFailure> {
        let _ = (request, model, body);
        Err(StreamFailure::Malformed(
            "this provider kind has no embeddings API".into(),
        ))
    }

    /// A request that counts the input tokens of an Anthropic Messages request, for vendors
    /// that can (`POST /v1/messages/count_tokens`); `None` means the gateway estimates.
    fn count_tokens_request(
        &self,
        request: &dialect::anthropic::MessagesRequest,
        target: &AttemptTarget<'_>,
    ) -> Option<UpstreamRequest> {
        let _ = (request, target);
        None
    }

    /// This provider's credentials that expire (Vertex AI tokens, Bedrock instance-profile
    /// keys), if it has such: renewed before each attempt and each probe.
    fn renewable(&self) -> Option<&dyn Renewable> {
        None
    }

    /// The active health probe for this provider, if it has one (its models list, usually).
    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let _ = target;
        None
    }

    /// Maps an error answer (status >= 400) to the client-facing error. `provider` names the
    /// provider in the message; `retry_after` is the upstream's header, when it sent one.
    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError;
}

/// A finished answer in the client's dialect.
#[derive(Debug, Clone)]
pub struct RenderedAnswer {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// Decodes a vendor's JSON answer and renders it for `client` (a dialect, or the client's
/// request when its answer repeats it): passed on as it came from a vendor of the client's
/// own dialect.
pub fn client_answer(
    adapter: &dyn ProviderAdapter,
    body: Bytes,
    client: impl ClientFormat,
) -> Result<RenderedAnswer, StreamFailure> {
    let native = native_dialect(adapter, &client);
    render_answer(adapter, body, client, native, &mut |_| Ok(()))
}

/// [`client_answer`], with `review` seeing (and changing, or refusing) a canonical answer
/// before it is rendered (the request's filters): decoded into the canonical model even from
/// a vendor of the client's own dialect.
pub fn client_answer_with(
    adapter: &dyn ProviderAdapter,
    body: Bytes,
    client: impl ClientFormat,
    review: &mut dyn FnMut(&mut chat::Response) -> Result<(), GatewayError>,
) -> Result<RenderedAnswer, StreamFailure> {
    render_answer(adapter, body, client, None, review)
}

/// Whether `adapter`'s JSON answers reach `client` as they came, neither decoded nor encoded
/// (a vendor of the client's own dialect, for a request no filter rewrote).
pub fn answers_natively(adapter: &dyn ProviderAdapter, client: impl ClientFormat) -> bool {
    native_dialect(adapter, &client).is_some()
}

/// Whether [`decode_native_answer`] decodes answers in `dialect` (the dialects it has a
/// decoder for; checked per request, so not by trying one).
pub fn decodes_native_answers(dialect: Dialect) -> bool {
    matches!(dialect, Dialect::OpenAi | Dialect::Anthropic)
}

/// A JSON answer that a vendor of `dialect` sent, decoded into the canonical model as that
/// vendor's adapter decodes it for a client of another dialect. `None` for a dialect no vendor
/// here answers in with a canonical decoder (Responses, Completions).
pub fn decode_native_answer(
    dialect: Dialect,
    body: Bytes,
) -> Option<Result<chat::Response, StreamFailure>> {
    let canonical = |answer: Answer| match answer {
        Answer::Chat(response) => Ok(response),
        Answer::Native { .. } => Err(StreamFailure::Malformed(
            "the adapter kept a native answer it was asked to decode".into(),
        )),
    };
    match dialect {
        Dialect::OpenAi => Some(openai::decode_chat_response(&body)),
        Dialect::Anthropic => Some(
            anthropic::AnthropicAdapter
                .decode_response(body, None)
                .and_then(canonical),
        ),
        Dialect::Responses | Dialect::Completions => None,
    }
}

/// The dialect in which `adapter`'s answers can reach `client` as they came, if any.
fn native_dialect(adapter: &dyn ProviderAdapter, client: &impl ClientFormat) -> Option<Dialect> {
    Some(client.dialect()).filter(|d| client.passthrough() && adapter.speaks(*d))
}

fn render_answer(
    adapter: &dyn ProviderAdapter,
    body: Bytes,
    client: impl ClientFormat,
    native: Option<Dialect>,
    review: &mut dyn FnMut(&mut chat::Response) -> Result<(), GatewayError>,
) -> Result<RenderedAnswer, StreamFailure> {
    let answer = adapter.decode_response(body, native)?;
    let usage = answer.usage();
    let body = match answer {
        Answer::Native { body, .. } => body,
        Answer::Chat(mut response) => {
            review(&mut response).map_err(|e| StreamFailure::Upstream(Box::new(e)))?;
            client.response_body(&response)
        }
    };
    Ok(RenderedAnswer { body, usage })
}

/// The whole way from a vendor's stream bytes to the client's stream bytes: the vendor's own
/// events passed through, or its canonical events encoded for the client.
pub fn client_stream(
    adapter: &dyn ProviderAdapter,
    client: impl ClientFormat,
    settings: StreamSettings,
) -> Box<dyn StreamDecoder> {
    client_stream_with(adapter, client, settings, Vec::new())
}

/// [`client_stream`], with the canonical events going through the request's stream filters
/// (decoded into the canonical model, even from a vendor of the client's own dialect, when
/// there are any).
pub fn client_stream_with(
    adapter: &dyn ProviderAdapter,
    client: impl ClientFormat,
    settings: StreamSettings,
    filters: Vec<Box<dyn crate::filters::StreamFilter>>,
) -> Box<dyn StreamDecoder> {
    let native = native_dialect(adapter, &client).filter(|_| filters.is_empty());
    match adapter.stream_decoder(native, settings) {
        StreamReader::Native(relay) => relay,
        StreamReader::Events(events) => Box::new(stream::Translated::with_filters(
            events,
            client.stream_encoder(settings),
            filters,
        )),
    }
}

/// The adapter for a provider kind, or `None` when this build has none for it.
pub fn adapter_for(config: &ProviderConfig) -> Option<Box<dyn ProviderAdapter>> {
    match config.kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            let host = config
                .base_url
                .as_ref()
                .and_then(|u| u.host_str())
                .unwrap_or("");
            Some(Box::new(
                openai::OpenAiAdapter::with_quirks(
                    config.kind,
                    openai::Quirks::for_host(config.kind, host),
                )
                .with_responses_api(config.responses_api)
                .with_completions_api(config.completions_api),
            ))
        }
        ProviderKind::AzureOpenAi => Some(Box::new(
            azure::AzureAdapter::new(config.api_version.as_deref())
                .with_responses_api(config.responses_api),
        )),
        ProviderKind::Anthropic => Some(Box::new(anthropic::AnthropicAdapter)),
        ProviderKind::Bedrock => Some(Box::new(bedrock::BedrockAdapter::with_signer(
            config.region.as_deref().unwrap_or("us-east-1"),
            // A Bedrock API key, when set, is used instead of signing.
            config
                .aws_credentials
                .as_ref()
                .filter(|_| config.api_key.is_none()),
            config.api_key.is_some(),
        ))),
        ProviderKind::Gemini => Some(Box::new(gemini::GeminiAdapter)),
        ProviderKind::Vertex => vertex::VertexAdapter::new(config)
            .map(|a| Box::new(a) as Box<dyn ProviderAdapter>)
            .map_err(|e| log::warn!("provider '{}': {e}", config.name))
            .ok(),
        _ => None,
    }
}

/// OpenAI-style `error.type` for an upstream status, used when the upstream gave none.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "invalid_request_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        504 => "timeout",
        _ => "server_error",
    }
}

/// Removes a provider's own key from text that came back from that provider.
pub fn scrub_secret(text: &str, key: Option<&Secret>) -> String {
    match key {
        Some(k) if k.expose().len() >= 4 => text.replace(k.expose(), "***"),
        _ => text.to_string(),
    }
}
