//! Client dialects: the APIs clients speak to Switchyard. Each has a decoder (its request JSON to
//! the canonical [`chat::Request`]) and encoders (canonical answers and errors to its JSON and
//! SSE), so any dialect reaches any vendor through one translation.

pub mod anthropic;
pub mod openai;
pub mod raw_object;
pub mod responses;

use bytes::Bytes;
use serde_json::Value;

use crate::chat::StreamSettings;
use crate::chat::{self, Event};
use crate::error::GatewayError;

/// Which API the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// OpenAI Responses (`POST /v1/responses`); its errors are OpenAI's.
    Responses,
    /// OpenAI legacy text completions (`POST /v1/completions`); its errors are OpenAI's.
    Completions,
}

impl Dialect {
    /// The `dialect` label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::Responses => "responses",
            Dialect::Completions => "completions",
        }
    }

    /// An error as this dialect's JSON body, and the HTTP status to send it with.
    pub fn error_body(self, err: &GatewayError) -> (u16, Bytes) {
        match self {
            Dialect::OpenAi | Dialect::Responses | Dialect::Completions => {
                (err.status(), openai::error_body(err))
            }
            Dialect::Anthropic => anthropic::error_body(err),
        }
    }

    /// The event that ends a stream failing after it started, for dialects whose encoders
    /// keep no state for it ([`StreamEncoder::fail`]).
    pub fn stream_error_event(self, err: &GatewayError) -> Bytes {
        match self {
            Dialect::OpenAi | Dialect::Completions => openai::stream_error_event(err),
            Dialect::Anthropic => anthropic::stream_error_event(err),
            Dialect::Responses => responses::encode::stream_error_event(err),
        }
    }
}

/// What a client wants its answer in: a dialect, and for the Responses dialect the request's own
/// response id and echoed parameters.
pub trait ClientFormat {
    fn dialect(&self) -> Dialect;

    /// A finished canonical answer as the client's JSON body.
    fn response_body(&self, response: &chat::Response) -> Bytes;

    /// An encoder of canonical stream events into the client's SSE.
    fn stream_encoder(&self, settings: StreamSettings) -> Box<dyn StreamEncoder>;

    /// Whether a vendor that speaks the client's dialect may answer it as it is (false for a
    /// request filters rewrote or whose answers they read: those go through the canonical
    /// model).
    fn passthrough(&self) -> bool {
        true
    }
}

impl ClientFormat for Dialect {
    fn dialect(&self) -> Dialect {
        *self
    }

    fn response_body(&self, response: &chat::Response) -> Bytes {
        match self {
            Dialect::OpenAi => openai::encode::response_body(response),
            Dialect::Anthropic => anthropic::encode::response_body(response),
            Dialect::Responses => {
                responses::encode::response_body(response, &responses::ResponseMeta::fresh())
            }
            Dialect::Completions => openai::completions::response_body(response),
        }
    }

    fn stream_encoder(&self, settings: StreamSettings) -> Box<dyn StreamEncoder> {
        match self {
            Dialect::OpenAi => Box::new(openai::encode::StreamEncoder::new(
                settings.include_usage,
                settings.price,
            )),
            Dialect::Anthropic => Box::new(anthropic::encode::StreamEncoder::new(settings.price)),
            Dialect::Responses => Box::new(responses::encode::StreamEncoder::new(
                std::sync::Arc::new(responses::ResponseMeta::fresh()),
                settings.price,
            )),
            Dialect::Completions => Box::new(openai::completions::StreamEncoder::new(
                settings.include_usage,
                settings.price,
            )),
        }
    }
}

impl ClientFormat for &ClientRequest {
    fn dialect(&self) -> Dialect {
        ClientRequest::dialect(self)
    }

    fn response_body(&self, response: &chat::Response) -> Bytes {
        match self.original() {
            ClientRequest::Responses(r) => responses::encode::response_body(response, &r.meta),
            _ => ClientRequest::dialect(self).response_body(response),
        }
    }

    fn stream_encoder(&self, settings: StreamSettings) -> Box<dyn StreamEncoder> {
        match self.original() {
            ClientRequest::Responses(r) => Box::new(responses::encode::StreamEncoder::new(
                r.meta.clone(),
                settings.price,
            )),
            _ => ClientRequest::dialect(self).stream_encoder(settings),
        }
    }

    fn passthrough(&self) -> bool {
        !matches!(self, ClientRequest::Filtered(_))
    }
}

/// Writes canonical stream events as one dialect's SSE bytes.
pub trait StreamEncoder: Send {
    fn encode(&mut self, event: Event<'_>, out: &mut Vec<u8>);

    /// Writes the end of a stream that failed after it started, when the dialect's ending
    /// depends on what was sent (Responses numbers its events); `false` leaves it to
    /// [`Dialect::stream_error_event`].
    fn fail(&mut self, error: &GatewayError, out: &mut Vec<u8>) -> bool {
        let _ = (error, out);
        false
    }

    /// The whole answer as one JSON body, once the stream ended, for dialects that keep
    /// answers (Responses); `None` for the others.
    fn finished(&mut self) -> Option<Bytes> {
        None
    }
}

/// A parsed client request, in the dialect it arrived in.
///
/// The raw form is kept: a vendor that speaks the same dialect gets it unchanged but for
/// `model` (the pass-through fast path); every other vendor gets it through [`Self::canonical`].
#[derive(Debug)]
pub enum ClientRequest {
    OpenAi(openai::ChatRequest),
    Anthropic(anthropic::MessagesRequest),
    /// `POST /v1/embeddings` (OpenAI's format).
    Embeddings(openai::embeddings::EmbeddingsRequest),
    Responses(responses::ResponsesRequest),
    /// `POST /v1/completions` (OpenAI's legacy text completions).
    Completions(openai::completions::CompletionsRequest),
    /// A request a filter rewrote: it reaches every vendor through the canonical model, and
    /// its answer goes back in the original's dialect.
    Filtered(Box<FilteredRequest>),
}

/// A request as filters left it: the client's original, the model it is routed by, and its
/// canonical form.
#[derive(Debug)]
pub struct FilteredRequest {
    pub original: ClientRequest,
    pub model: String,
    pub request: chat::Request<'static>,
}

impl ClientRequest {
    pub fn filtered(
        original: ClientRequest,
        model: String,
        request: chat::Request<'static>,
    ) -> ClientRequest {
        ClientRequest::Filtered(Box::new(FilteredRequest {
            original,
            model,
            request,
        }))
    }

    /// Routes the request by another public model; the vendor still gets its target's model.
    pub fn set_model(&mut self, model: String) {
        match self {
            ClientRequest::OpenAi(r) => r.model = model,
            ClientRequest::Anthropic(r) => r.model = model,
            ClientRequest::Embeddings(r) => r.model = model,
            ClientRequest::Responses(r) => r.model = model,
            ClientRequest::Completions(r) => r.model = model,
            ClientRequest::Filtered(f) => f.model = model,
        }
    }

    /// The client's request as it arrived (before filters).
    pub fn original(&self) -> &ClientRequest {
        match self {
            ClientRequest::Filtered(f) => f.original.original(),
            other => other,
        }
    }

    /// The Responses request behind this one, if the client spoke the Responses API.
    pub fn responses(&self) -> Option<&responses::ResponsesRequest> {
        match self.original() {
            ClientRequest::Responses(r) => Some(r),
            _ => None,
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            ClientRequest::Filtered(f) => f.original.dialect(),
            ClientRequest::OpenAi(_) | ClientRequest::Embeddings(_) => Dialect::OpenAi,
            ClientRequest::Anthropic(_) => Dialect::Anthropic,
            ClientRequest::Responses(_) => Dialect::Responses,
            ClientRequest::Completions(_) => Dialect::Completions,
        }
    }

    /// The public model the client asked for.
    pub fn model(&self) -> &str {
        match self {
            ClientRequest::OpenAi(r) => &r.model,
            ClientRequest::Anthropic(r) => &r.model,
            ClientRequest::Embeddings(r) => &r.model,
            ClientRequest::Responses(r) => &r.model,
            ClientRequest::Filtered(f) => &f.model,
            ClientRequest::Completions(r) => &r.model,
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            ClientRequest::OpenAi(r) => r.stream,
            ClientRequest::Anthropic(r) => r.stream,
            ClientRequest::Responses(r) => r.stream,
            ClientRequest::Filtered(f) => f.original.stream(),
            ClientRequest::Completions(r) => r.stream,
            ClientRequest::Embeddings(_) => false,
        }
    }

    /// Whether the client's stream should carry usage (Anthropic streams always do).
    pub fn include_usage(&self) -> bool {
        match self {
            ClientRequest::OpenAi(r) => r.include_usage,
            ClientRequest::Completions(r) => r.include_usage,
            // Anthropic and Responses streams always carry usage.
            ClientRequest::Anthropic(_) | ClientRequest::Responses(_) => true,
            ClientRequest::Filtered(f) => f.original.include_usage(),
            ClientRequest::Embeddings(_) => false,
        }
    }

    /// OpenRouter-style fallback models to try after [`Self::model`].
    pub fn fallback_models(&self) -> &[String] {
        match self {
            ClientRequest::OpenAi(r) => &r.fallback_models,
            ClientRequest::Filtered(f) => f.original.fallback_models(),
            _ => &[],
        }
    }

    /// The output budget the client set (`max_completion_tokens`/`max_tokens`).
    pub fn max_output_tokens(&self) -> Option<u64> {
        match self {
            ClientRequest::OpenAi(r) => r.max_output_tokens(),
            ClientRequest::Anthropic(r) => r.max_tokens,
            ClientRequest::Responses(r) => r.max_output_tokens,
            ClientRequest::Completions(r) => Some(r.max_output_tokens()),
            ClientRequest::Filtered(f) => f.request.max_output_tokens(),
            // Embeddings have no output tokens.
            ClientRequest::Embeddings(_) => Some(0),
        }
    }

    /// Every model the request names, in the order to try them.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.model()).chain(self.fallback_models().iter().map(String::as_str))
    }

    /// OpenRouter-style provider preferences.
    pub fn provider_preferences(&self) -> Option<&Value> {
        match self {
            ClientRequest::OpenAi(r) => r.provider_preferences.as_ref(),
            ClientRequest::Filtered(f) => f.original.provider_preferences(),
            _ => None,
        }
    }

    /// The canonical form, for adapters of another dialect than the client's.
    pub fn canonical(&self) -> Result<chat::Request<'_>, GatewayError> {
        match self {
            ClientRequest::OpenAi(r) => r.canonical(),
            ClientRequest::Anthropic(r) => r.canonical(),
            ClientRequest::Responses(r) => r.canonical(),
            ClientRequest::Completions(r) => r.canonical(),
            ClientRequest::Filtered(f) => Ok(f.request.clone()),
            ClientRequest::Embeddings(_) => Err(GatewayError::invalid(
                "an embeddings request is not a chat request",
                None,
            )),
        }
    }
}
