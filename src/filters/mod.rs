//! Filters: user logic on the request path, at the level of LLM requests, in the spirit of
//! Pingora's `ProxyHttp` phases. A [`Filter`] implements the phases it cares about; every phase
//! has a default that does nothing, so a filter that does nothing costs nothing but the call.
//!
//! The phases of one request, in order:
//! 1. [`Filter::on_request`] — once, before routing, with the request in canonical form and its
//!    context (client key, dialect, headers, metadata): may rewrite it, change its model (and so
//!    its route), answer it, or deny it.
//! 2. [`Filter::on_attempt`] — per attempt, with the vendor request built for one target: may add
//!    headers or body fields for that vendor.
//! 3. [`Filter::on_response`] — a whole (non-streamed) answer in canonical form: may rewrite it
//!    or refuse it.
//! 4. [`Filter::on_stream`] — a streamed answer: a [`StreamFilter`] made per stream sees each
//!    canonical event and may pass it on, change it, hold it back, or end the stream with an
//!    error.
//! 5. [`Filter::on_log`] — after the answer, with its status, usage, cost and timings.
//!
//! Filters run in order: the gateway's own (added in code with `GatewayBuilder::filter`),
//! then the client key's (`auth.keys[].filters`), then the model's (`models.NAME.filters`). A
//! filter's error is the client's error, in its dialect, with the filter's status.
//!
//! A request no filter rewrites passes through as before (byte for byte to a vendor of its own
//! dialect); one that a filter rewrites, or whose answers a filter reads
//! ([`Filter::reads_answers`]), goes through the canonical model to every vendor, unless
//! every filter that reads answers takes a vendor's JSON answer in the client's own dialect as
//! bytes ([`Filter::takes_answer_bytes`]).

pub mod builtin;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::accounting::Usage;
use crate::chat::{self, Event, EventSink};
use crate::dialect::{ClientRequest, Dialect};
use crate::error::GatewayError;
use crate::observability::metrics::METRICS;
use crate::transport::UpstreamRequest;

/// What a filter knows of the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: String,
    /// The client key's configured name (never the key); `None` without client auth.
    pub key: Option<String>,
    pub dialect: Dialect,
    /// The client's request headers (the gateway's own credentials headers included: a filter
    /// must not copy them anywhere).
    pub headers: HeaderMap,
    /// Values filters pass to each other and to the log (`route_when` reads them, a webhook may
    /// set them). Starts empty.
    pub metadata: Map<String, Value>,
}

/// A filter's refusal, sent to the client in its dialect.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `error.code`: `content_policy_violation`, `filter_unavailable`, ...
    pub code: &'static str,
}

impl FilterError {
    /// A 400 refusal of the request's content.
    pub fn denied(message: impl Into<String>) -> Self {
        FilterError {
            status: 400,
            message: message.into(),
            code: "content_policy_violation",
        }
    }
}

/// What [`Filter::on_request`] decided.
pub enum Verdict {
    /// Go on with the (possibly rewritten) request.
    Continue,
    /// Answer with this instead of asking any vendor.
    Respond(chat::Response),
}

/// The request as filters see it in [`Filter::on_request`]: its model, its context, and its
/// body in canonical form, read from the client's body until a filter edits it.
pub struct FilterRequest {
    pub info: RequestInfo,
    model: String,
    original: ClientRequest,
    edited: Option<chat::Request<'static>>,
    estimated_tokens: u64,
}

impl FilterRequest {
    pub fn new(info: RequestInfo, request: ClientRequest, estimated_tokens: u64) -> Self {
        FilterRequest {
            info,
            model: request.model().to_string(),
            original: request,
            edited: None,
            estimated_tokens,
        }
    }

    /// The public model the request is routed by.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Routes the request to another public model (or `PROVIDER/MODEL`).
    pub fn set_model(&mut self, model: impl Into<String>) {
        self.model = model.into();
    }

    /// Tokens the request may use: its prompt at about four bytes a token plus its output
    /// budget, as limits count it before the answer.
    pub fn estimated_tokens(&self) -> u64 {
        self.estimated_tokens
    }

    pub fn stream(&self) -> bool {
        self.original.stream()
    }

    /// The request in canonical form, to read.
    pub fn canonical(&self) -> Result<chat::Request<'_>, GatewayError> {
        match &self.edited {
            Some(edited) => Ok(edited.clone()),
            None => self.original.canonical(),
        }
    }

    /// The request in canonical form, to change: from then on it reaches every vendor through
    /// the canonical model.
    pub fn edit(&mut self) -> Result<&mut chat::Request<'static>, GatewayError> {
        if self.edited.is_none() {
            self.edited = Some(self.original.canonical()?.into_owned());
        }
        // Set just above.
        self.edited
            .as_mut()
            .ok_or_else(|| GatewayError::Internal("filtered request lost".into()))
    }

    /// Whether a filter changed the body.
    pub fn is_edited(&self) -> bool {
        self.edited.is_some()
    }

    /// The request to route: the client's own (under the model filters chose, still passed
    /// through to a vendor of its dialect), or the edited one.
    pub fn into_request(self) -> ClientRequest {
        self.into_parts().1
    }

    /// [`Self::into_request`], with the request's context kept for the later phases.
    pub fn into_parts(self) -> (RequestInfo, ClientRequest) {
        let request = match self.edited {
            Some(request) => ClientRequest::filtered(self.original, self.model, request),
            None => {
                let mut request = self.original;
                if request.model() != self.model {
                    request.set_model(self.model);
                }
                request
            }
        };
        (self.info, request)
    }
}

/// One attempt's vendor request, for [`Filter::on_attempt`].
pub struct AttemptRequest<'a> {
    pub info: &'a RequestInfo,
    /// The configured provider name and the model the vendor gets.
    pub provider: &'a str,
    pub upstream_model: &'a str,
    pub request: &'a mut UpstreamRequest,
}

impl AttemptRequest<'_> {
    /// Sets (or replaces) a header of the vendor request.
    pub fn set_header(&mut self, name: http::HeaderName, value: http::HeaderValue) {
        self.request.headers.retain(|(n, _)| n != name);
        self.request.headers.push((name, value));
    }

    /// Removes a header from the vendor request; the provider's credentials cannot be removed.
    pub fn remove_header(&mut self, name: &http::HeaderName) {
        self.request
            .headers
            .retain(|(n, v)| n != name || v.is_sensitive());
    }

    /// Sets a top-level field of the vendor's JSON body.
    pub fn set_body_field(&mut self, key: &str, value: Value) -> Result<(), FilterError> {
        let mut body: Map<String, Value> =
            serde_json::from_slice(&self.request.body).map_err(|_| FilterError {
                status: 500,
                message: format!(
                    "the request to provider '{}' is not a JSON object",
                    self.provider
                ),
                code: "filter_error",
            })?;
        body.insert(key.to_string(), value);
        self.request.body = chat::json_bytes(&Value::Object(body));
        Ok(())
    }
}

/// How a request ended, for [`Filter::on_log`].
#[derive(Debug, Clone)]
pub struct LogSummary<'a> {
    pub status: u16,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub duration: Duration,
    pub time_to_first_byte: Option<Duration>,
    pub attempts: u32,
    pub error: Option<&'a str>,
}

/// Logic on the request path; see the [module docs](self) for the phases.
#[async_trait::async_trait]
pub trait Filter: Send + Sync {
    /// The name in metrics (`switchyard_filter_actions_total{filter}`) and logs.
    fn name(&self) -> &str;

    /// Whether this filter reads answers ([`Self::on_response`], [`Self::on_stream`]): they are
    /// then decoded into the canonical model, even from a vendor of the client's own dialect.
    fn reads_answers(&self) -> bool {
        false
    }

    /// Whether this filter, reading answers, takes a JSON answer from a vendor of the client's
    /// own dialect as the bytes the client is sent ([`Self::on_answer_bytes`]) instead of
    /// [`Self::on_response`]'s canonical model. When every filter that reads answers does, the
    /// answer passes through undecoded, as it would with no filter. (The answer cache: it keeps
    /// the bytes and decodes them only when a client of another dialect is served them.)
    fn takes_answer_bytes(&self, info: &RequestInfo) -> bool {
        let _ = info;
        false
    }

    /// A complete JSON answer in the client's dialect (`info.dialect`), as the vendor sent it,
    /// with the usage it reported; called only when [`Self::takes_answer_bytes`] said yes.
    fn on_answer_bytes(&self, info: &RequestInfo, body: &Bytes, usage: Option<Usage>) {
        let _ = (info, body, usage);
    }

    async fn on_request(&self, request: &mut FilterRequest) -> Result<Verdict, FilterError> {
        let _ = request;
        Ok(Verdict::Continue)
    }

    fn on_attempt(&self, attempt: &mut AttemptRequest<'_>) -> Result<(), FilterError> {
        let _ = attempt;
        Ok(())
    }

    fn on_response(
        &self,
        info: &RequestInfo,
        response: &mut chat::Response,
    ) -> Result<(), FilterError> {
        let _ = (info, response);
        Ok(())
    }

    fn on_stream(&self, info: &RequestInfo) -> Option<Box<dyn StreamFilter>> {
        let _ = info;
        None
    }

    fn on_log(&self, info: &RequestInfo, summary: &LogSummary<'_>) {
        let _ = (info, summary);
    }
}

/// One streamed answer's filter state ([`Filter::on_stream`]).
pub trait StreamFilter: Send {
    /// One canonical event: passes it on (`next.emit(event)`), changed or not, now or later
    /// (held back until a later event), or fails the stream. `Event::End` is the last call:
    /// whatever is held back must be emitted before it.
    fn on_event(&mut self, event: Event<'_>, next: &mut dyn EventSink) -> Result<(), FilterError>;
}

/// Counts one filter action (`deny`, `rewrite`, `route`, `redact`, `respond`, `allow`,
/// `error`) and says so in the log: refusals and failures at `info`, routine changes at `debug`
/// (a line per request would cost more than most filters).
pub fn record(filter: &str, action: &str, request_id: &str) {
    METRICS
        .filter_actions_total
        .with_label_values(&[filter, action])
        .inc();
    match action {
        "allow" => {}
        "deny" | "error" | "respond" => {
            log::info!("filter '{filter}' {action}: request {request_id}");
        }
        _ => log::debug!("filter '{filter}' {action}: request {request_id}"),
    }
}

/// The filters of one request, in order.
#[derive(Clone, Default)]
pub struct FilterSet {
    filters: Vec<Arc<dyn Filter>>,
}

impl FilterSet {
    pub fn new(filters: Vec<Arc<dyn Filter>>) -> Self {
        FilterSet { filters }
    }

    /// This set with `filter` after its own.
    pub fn with(mut self, filter: Arc<dyn Filter>) -> FilterSet {
        self.filters.push(filter);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Filter>> {
        self.filters.iter()
    }

    pub fn reads_answers(&self) -> bool {
        self.filters.iter().any(|f| f.reads_answers())
    }

    /// Whether every filter that reads answers takes them as the client's bytes
    /// ([`Filter::takes_answer_bytes`]).
    pub fn takes_answer_bytes(&self, info: &RequestInfo) -> bool {
        self.filters
            .iter()
            .filter(|f| f.reads_answers())
            .all(|f| f.takes_answer_bytes(info))
    }

    /// Hands a JSON answer's bytes to the filters that read answers.
    pub fn answer_bytes(&self, info: &RequestInfo, body: &Bytes, usage: Option<Usage>) {
        for filter in self.filters.iter().filter(|f| f.reads_answers()) {
            filter.on_answer_bytes(info, body, usage);
        }
    }

    /// The stream filters of one streamed answer, in order.
    pub fn stream_filters(&self, info: &RequestInfo) -> Vec<Box<dyn StreamFilter>> {
        self.filters
            .iter()
            .filter_map(|f| f.on_stream(info))
            .collect()
    }
}

impl std::fmt::Debug for FilterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.filters.iter().map(|x| x.name()))
            .finish()
    }
}

/// Runs canonical events through stream filters, then into `last`; the first filter error
/// stops the stream.
pub struct StreamChain<'a> {
    filters: &'a mut [Box<dyn StreamFilter>],
    last: &'a mut dyn EventSink,
    failed: &'a mut Option<FilterError>,
}

impl<'a> StreamChain<'a> {
    pub fn new(
        filters: &'a mut [Box<dyn StreamFilter>],
        last: &'a mut dyn EventSink,
        failed: &'a mut Option<FilterError>,
    ) -> Self {
        StreamChain {
            filters,
            last,
            failed,
        }
    }
}

impl EventSink for StreamChain<'_> {
    fn emit(&mut self, event: Event<'_>) {
        if self.failed.is_some() {
            return;
        }
        match self.filters.split_first_mut() {
            None => self.last.emit(event),
            Some((first, rest)) => {
                let mut next = StreamChain {
                    filters: rest,
                    last: &mut *self.last,
                    failed: &mut *self.failed,
                };
                if let Err(e) = first.on_event(event, &mut next) {
                    if self.failed.is_none() {
                        *self.failed = Some(e);
                    }
                }
            }
        }
    }
}
