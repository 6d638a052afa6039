//! The client-facing service: a Pingora [`HttpServerApp`] that answers every request itself.
//!
//! Switchyard terminates and originates (the body is read and parsed, a target chosen, the
//! vendor request sent by our own [`transport`](crate::transport) and the answer streamed
//! back), so it has no use for Pingora's proxy state machine (`HttpProxy`: downstream modules,
//! cache phases, upstream hooks). Implementing `HttpServerApp` directly skips that machinery and its large
//! futures (docs/bench-log.md, issue 13's second session, has the measurement).
//! [`Gateway::process_new_http`] does what `HttpProxy` did for a request answered in its
//! `request_filter`: read the head, answer, record metrics and the access log, hand the
//! connection back for reuse, and drop idle keep-alive connections at shutdown.

mod admission;
mod attempt;
mod body;
mod caching;
mod count_tokens;
pub mod ctx;
mod filtering;
mod hedging;
mod models;
mod pipeline;
mod respond;
mod responses;
mod sticky;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{ErrorSource, ErrorType};
use tokio::sync::Notify;

use crate::dialect::Dialect;
use crate::error::GatewayError;
use crate::filters::FilterSet;
use crate::observability::logging::{self, AccessRecord};
use crate::observability::metrics::METRICS;
use crate::process::inflight::InFlight;
use crate::routing::{ClientKey, RoutingTable, TableHandle};
use crate::transport::Transport;
use ctx::{request_id, RequestCtx};

pub struct Gateway {
    table: TableHandle,
    transport: Arc<Transport>,
    /// Set once this process hands its sockets over or stops: answers then ask clients to close
    /// the connection, so none is left idle to be cut under a client's next request.
    draining: Arc<AtomicBool>,
    /// Set, and `shutdown` notified, when the service stops: connections idle between requests
    /// are dropped then instead of holding the shutdown up.
    stopping: AtomicBool,
    shutdown: Notify,
    /// Requests in progress, which a stopping process waits for.
    inflight: Arc<InFlight>,
    /// Filters of every request, added in code (`GatewayBuilder::filter`).
    filters: FilterSet,
}

impl Gateway {
    pub fn new(
        table: TableHandle,
        transport: Arc<Transport>,
        draining: Arc<AtomicBool>,
        inflight: Arc<InFlight>,
        filters: FilterSet,
    ) -> Self {
        Gateway {
            table,
            transport,
            draining,
            stopping: AtomicBool::new(false),
            shutdown: Notify::new(),
            inflight,
            filters,
        }
    }

    async fn await_shutdown(&self) {
        let notified = self.shutdown.notified();
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// `%XX` escapes of a path decoded (lossily where they are not UTF-8).
fn percent_decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// The per-key series of a model request by the configured key `key`.
fn record_key(key: &str, status: &str, ctx: &RequestCtx) {
    METRICS
        .key_requests_total
        .with_label_values(&[key, status])
        .inc();
    if let Some(u) = ctx.usage {
        for (kind, n) in [
            ("input", u.prompt_tokens),
            ("output", u.completion_tokens),
            ("cached", u.cached_tokens),
        ] {
            METRICS
                .key_tokens_total
                .with_label_values(&[key, kind])
                .inc_by(n);
        }
    }
    if let Some(cost) = ctx.cost_usd {
        METRICS
            .key_cost_usd_total
            .with_label_values(&[key])
            .inc_by(cost);
    }
}

/// The key a client presented: `Authorization: Bearer KEY`, else `x-api-key` (Anthropic SDKs),
/// `api-key` (Azure OpenAI SDKs) or `x-goog-api-key` (Google SDKs).
fn presented_key(session: &ServerSession) -> Option<&str> {
    let headers = &session.req_header().headers;
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let auth = auth.trim();
        if auth.len() > 7 && auth[..7].eq_ignore_ascii_case("bearer ") {
            return Some(auth[7..].trim());
        }
    }
    ["x-api-key", "api-key", "x-goog-api-key"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

fn authenticate<'t>(
    session: &ServerSession,
    table: &'t RoutingTable,
) -> Result<Option<&'t ClientKey>, GatewayError> {
    if !table.requires_client_key() {
        return Ok(None);
    }
    presented_key(session)
        .and_then(|k| table.client_key(k))
        .map(Some)
        .ok_or(GatewayError::Unauthorized)
}

#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // Requests a client sends back to back in one write are answered in order (RFC 9112,
        // section 9.3.2): bytes read past this request's end start the next session.
        session.set_pipelining_enabled(true);
        let read = tokio::select! {
            // Biased: a request already buffered is served, not dropped, when both are ready.
            biased;
            read = session.read_request() => read,
            () = self.await_shutdown() => return None,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    let _ = session.respond_error(400).await;
                }
                session.shutdown().await;
                return None;
            }
        }
        // Held until the answer is finished below, its last bytes included.
        let _inflight = self.inflight.enter();
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let mut ctx = RequestCtx::new();
        let served = self.serve(&mut session, &mut ctx).await;
        if let Err(e) = &served {
            // A failure that was not the client's connection breaking, before any answer: say
            // so, as Pingora's proxy did, rather than closing without a word.
            let connection_broke = e.esource() == &ErrorSource::Downstream
                || matches!(
                    e.etype(),
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
                );
            if !connection_broke && session.response_written().is_none() {
                let err = GatewayError::Internal(e.to_string());
                let _ = respond::error(&mut session, &mut ctx, &err).await;
            }
        }
        self.record(
            &session,
            served.as_ref().err().map(std::convert::AsRef::as_ref),
            &mut ctx,
        );
        if served.is_err() {
            // The connection's state is unknown: never reuse it.
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        session
            .finish()
            .await
            .ok()
            .flatten()
            .map(|stream| ReusedHttpStream::from_reusable_stream(stream, settings))
    }

    async fn http_cleanup(&self) {
        self.stopping.store(true, Ordering::Release);
        self.shutdown.notify_waiters();
    }
}

impl Gateway {
    /// Answers one request on `session`.
    async fn serve(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.started = Instant::now();
        ctx.request_id = request_id(
            session
                .req_header()
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        );
        METRICS.inflight_requests.inc();
        ctx.counted_inflight = true;
        if self.draining.load(Ordering::Acquire) {
            session.set_keepalive(None);
        }

        // One snapshot for the whole request: a reload never changes it midway.
        let table = self.table.load_full();
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let route = path.strip_prefix("/v1").unwrap_or(&path);
        match (method.as_str(), route) {
            (
                "POST",
                "/chat/completions"
                | "/completions"
                | "/embeddings"
                | "/messages"
                | "/messages/count_tokens"
                | "/responses",
            ) => {
                let counting = route == "/messages/count_tokens";
                (ctx.endpoint, ctx.dialect) = match route {
                    "/chat/completions" => ("chat", Dialect::OpenAi),
                    "/completions" => ("completions", Dialect::Completions),
                    "/embeddings" => ("embeddings", Dialect::OpenAi),
                    "/responses" => ("responses", Dialect::Responses),
                    _ if counting => ("count_tokens", Dialect::Anthropic),
                    _ => ("messages", Dialect::Anthropic),
                };
                match authenticate(session, &table) {
                    Ok(key) => {
                        ctx.client_key = key.map(|k| k.name.clone());
                        if counting {
                            count_tokens::handle(self, session, ctx, &table, key).await?;
                        } else {
                            pipeline::handle(self, session, ctx, &table, key).await?;
                        }
                    }
                    Err(err) => {
                        session.set_keepalive(None);
                        respond::error(session, ctx, &err).await?;
                    }
                }
            }
            ("GET", "/models") => {
                ctx.endpoint = "models";
                match authenticate(session, &table) {
                    Ok(key) => {
                        let body = models::list_body(&table, key);
                        respond::json(session, ctx, 200, body, None).await?;
                    }
                    Err(err) => respond::error(session, ctx, &err).await?,
                }
            }
            ("GET", _) if route.starts_with("/models/") => {
                ctx.endpoint = "models";
                // Model ids may hold `/` (`PROVIDER/MODEL`) and arrive percent-encoded.
                let id = percent_decode(&route["/models/".len()..]);
                let answer = authenticate(session, &table)
                    .and_then(|key| models::retrieve_body(&table, key, &id));
                match answer {
                    Ok(body) => respond::json(session, ctx, 200, body, None).await?,
                    Err(err) => respond::error(session, ctx, &err).await?,
                }
            }
            ("GET" | "DELETE", _) if route.starts_with("/responses/") => {
                (ctx.endpoint, ctx.dialect) = ("stored_response", Dialect::Responses);
                let id = percent_decode(&route["/responses/".len()..]);
                let delete = method == http::Method::DELETE;
                responses::handle(session, ctx, &table, delete, &id).await?;
            }
            (
                _,
                "/chat/completions"
                | "/completions"
                | "/embeddings"
                | "/messages"
                | "/messages/count_tokens"
                | "/models"
                | "/responses",
            ) => {
                let err = GatewayError::MethodNotAllowed {
                    method: method.to_string(),
                    path,
                };
                respond::error(session, ctx, &err).await?;
            }
            _ => {
                let err = GatewayError::NotFound {
                    method: method.to_string(),
                    path,
                };
                respond::error(session, ctx, &err).await?;
            }
        }
        Ok(())
    }

    /// Metrics and the access-log line of a request that ended, with `error` if it failed.
    fn record(
        &self,
        session: &ServerSession,
        error: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        let duration = ctx.started.elapsed();
        let status = match (ctx.status, session.response_written()) {
            (0, Some(resp)) => resp.status.as_u16(),
            (0, None) if error.is_some() => 499,
            (s, _) => s,
        };
        let provider = ctx.provider.as_deref().unwrap_or("none");
        let model = ctx.model_label.as_str();
        let status_label = status.to_string();
        // Model listings and unknown paths are not model requests: counted in the access log
        // only, so that request rates and error ratios describe model traffic.
        let model_request = matches!(
            ctx.endpoint,
            "chat" | "completions" | "messages" | "embeddings" | "count_tokens" | "responses"
        );
        if model_request {
            METRICS
                .requests_total
                .with_label_values(&[model, provider, &status_label, ctx.dialect.as_str()])
                .inc();
            METRICS
                .request_duration_seconds
                .with_label_values(&[model, provider])
                .observe(duration.as_secs_f64());
            if let Some(key) = ctx.client_key.as_deref() {
                record_key(key, &status_label, ctx);
            }
        }
        if let Some(first) = ctx.first_byte_at {
            METRICS
                .time_to_first_token_seconds
                .with_label_values(&[model, provider])
                .observe(first.duration_since(ctx.started).as_secs_f64());
        }
        METRICS
            .gateway_overhead_seconds
            .with_label_values(&[ctx.dialect.as_str()])
            .observe(duration.saturating_sub(ctx.waited).as_secs_f64());
        if let Some(u) = ctx.usage {
            for (kind, n) in [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
                ("cached", u.cached_tokens),
            ] {
                METRICS
                    .tokens_total
                    .with_label_values(&[model, provider, kind])
                    .inc_by(n);
            }
        }
        if let Some(cost) = ctx.cost_usd {
            METRICS
                .cost_usd_total
                .with_label_values(&[model, provider])
                .inc_by(cost);
        }

        let header = session.req_header();
        logging::access(&AccessRecord {
            request_id: &ctx.request_id,
            method: header.method.as_str(),
            path: header.uri.path(),
            endpoint: ctx.endpoint,
            dialect: ctx.dialect.as_str(),
            model: ctx.requested_model.as_deref(),
            provider: ctx.provider.as_deref(),
            upstream_model: ctx.upstream_model.as_deref(),
            status,
            stream: ctx.stream,
            attempts: ctx.attempts,
            duration_ms: duration.as_secs_f64() * 1000.0,
            ttfb_ms: ctx
                .first_byte_at
                .map(|t| t.duration_since(ctx.started).as_secs_f64() * 1000.0),
            prompt_tokens: ctx.usage.map(|u| u.prompt_tokens),
            completion_tokens: ctx.usage.map(|u| u.completion_tokens),
            cached_tokens: ctx.usage.map(|u| u.cached_tokens),
            total_tokens: ctx.usage.map(|u| u.total()),
            cost_usd: ctx.cost_usd.map(crate::accounting::round_usd),
            client_key: ctx.client_key.as_deref(),
            error: ctx
                .error
                .as_deref()
                .or_else(|| error.map(|e| e.etype().as_str())),
        });
        filtering::on_log(ctx, status);
        // Last, so that a scrape that sees no request in flight sees every answered one counted.
        if ctx.counted_inflight {
            METRICS.inflight_requests.dec();
            ctx.counted_inflight = false;
        }
    }
}
