//! `POST /v1/chat/completions`: route, attempt targets in order, answer or stream back.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::proxy::Session;

use super::body::{discard_rest, read_body, BodyError};
use super::ctx::RequestCtx;
use super::respond;
use super::upstream::{self, AttemptError};
use super::Gateway;
use crate::config::RetryPolicy;
use crate::dialect::openai::ChatRequest;
use crate::error::GatewayError;
use crate::observability::metrics::METRICS;
use crate::providers::mock::MockProvider;
use crate::providers::{scrub_secret, AttemptTarget, StreamFailure, StreamSettings};
use crate::routing::{Backend, ClientKey, HttpBackend, Route, RoutingTable, Target};

/// Largest non-streamed answer accepted from an upstream.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read from an upstream (only its message is used).
const MAX_ERROR_BYTES: usize = 256 * 1024;

/// What became of one attempt.
enum Attempt {
    /// The client has its answer (or its stream ended, cleanly or with an error event).
    Answered,
    /// Nothing reached the client; another target may be tried if `retryable`.
    Failed {
        error: GatewayError,
        retryable: bool,
        outcome: &'static str,
    },
}

pub(super) async fn handle(
    gateway: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    client_key: Option<&ClientKey>,
) -> pingora::Result<()> {
    let body = match read_body(session, table.max_body_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(err)) => {
            // The connection cannot carry another request after a partly read body.
            session.set_keepalive(None);
            respond::error(session, ctx, &err).await?;
            discard_rest(session).await;
            return Ok(());
        }
        Err(BodyError::Downstream(e)) => {
            ctx.status = 499;
            return Err(e);
        }
    };
    let request = match ChatRequest::parse(&body) {
        Ok(r) => r,
        Err(err) => return respond::error(session, ctx, &err).await,
    };
    ctx.requested_model = Some(request.model.clone());
    ctx.stream = request.stream;

    let routes = match plan_routes(table, &request, client_key) {
        Ok(routes) => routes,
        Err(err) => return respond::error(session, ctx, &err).await,
    };
    ctx.model_label = model_label(table, &routes[0]);

    let mut tried: Vec<String> = Vec::new();
    let mut last_error = None;
    for route in &routes {
        for target in route.plan() {
            ctx.attempts += 1;
            if ctx.attempts > 1 {
                METRICS
                    .fallbacks_total
                    .with_label_values(&[ctx.model_label.as_str()])
                    .inc();
            }
            ctx.provider = Some(target.provider.name.clone());
            ctx.upstream_model = Some(target.upstream_model.clone());
            let attempt = match &target.provider.backend {
                Backend::Mock(mock) => serve_mock(session, ctx, &request, target, mock).await?,
                Backend::Http(http) => {
                    attempt_http(gateway, session, ctx, &request, target, http, &route.retry)
                        .await?
                }
            };
            match attempt {
                Attempt::Answered => {
                    record_attempt(&target.provider.name, "ok");
                    return Ok(());
                }
                Attempt::Failed {
                    error,
                    retryable,
                    outcome,
                } => {
                    record_attempt(&target.provider.name, outcome);
                    tried.push(format!("{} ({})", target.provider.name, error));
                    if !retryable {
                        return respond::error(session, ctx, &error).await;
                    }
                    last_error = Some(error);
                }
            }
        }
    }
    let err = all_failed(last_error, &tried);
    respond::error(session, ctx, &err).await
}

/// The routes to try: the requested model, then OpenRouter-style `models: [...]` fallbacks.
fn plan_routes(
    table: &RoutingTable,
    request: &ChatRequest,
    client_key: Option<&ClientKey>,
) -> Result<Vec<Arc<Route>>, GatewayError> {
    if request.provider_preferences.is_some() {
        return Err(GatewayError::invalid(
            "provider preferences are not supported by this gateway yet",
            Some("provider"),
        ));
    }
    let mut routes = Vec::with_capacity(1 + request.fallback_models.len());
    for model in std::iter::once(&request.model).chain(&request.fallback_models) {
        if let Some(key) = client_key {
            if !key.allows(model) {
                return Err(GatewayError::ModelNotAllowed {
                    key: key.name.clone(),
                    model: model.clone(),
                });
            }
        }
        routes.push(table.resolve(model)?);
    }
    Ok(routes)
}

/// A bounded metric label: configured model names as they are, direct `PROVIDER/MODEL`
/// requests folded into `PROVIDER/*` so that clients cannot mint label values.
fn model_label(table: &RoutingTable, route: &Route) -> String {
    if table.is_configured_model(&route.public_name) {
        route.public_name.clone()
    } else {
        format!("{}/*", route.targets[0].provider.name)
    }
}

fn record_attempt(provider: &str, outcome: &str) {
    METRICS
        .upstream_attempts_total
        .with_label_values(&[provider, outcome])
        .inc();
}

/// The error for a request whose every attempt failed.
fn all_failed(last: Option<GatewayError>, tried: &[String]) -> GatewayError {
    let summary = tried.join("; ");
    match last {
        // A single upstream's own answer is more useful than a summary.
        Some(err @ GatewayError::Upstream { .. }) if tried.len() == 1 => err,
        Some(GatewayError::Upstream {
            status,
            kind,
            code,
            param,
            retry_after,
            ..
        }) => GatewayError::Upstream {
            status,
            message: format!("every attempt failed: {summary}"),
            kind,
            code,
            param,
            retry_after,
        },
        Some(GatewayError::GatewayTimeout(_)) => {
            GatewayError::GatewayTimeout(format!("every attempt failed: {summary}"))
        }
        _ => GatewayError::BadGateway(format!("every attempt failed: {summary}")),
    }
}

fn finish_accounting(
    ctx: &mut RequestCtx,
    target: &Target,
    usage: Option<crate::accounting::Usage>,
) {
    ctx.usage = usage;
    if let (Some(u), Some(price)) = (usage, target.price.as_ref()) {
        ctx.cost_usd = Some(u.cost(price));
    }
}

async fn serve_mock(
    session: &mut Session,
    ctx: &mut RequestCtx,
    request: &ChatRequest,
    target: &Target,
    mock: &MockProvider,
) -> pingora::Result<Attempt> {
    let answer = mock.answer(request, &target.upstream_model);
    let latency = mock.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
        ctx.waited += latency;
    }
    finish_accounting(ctx, target, Some(answer.usage));
    if !request.stream {
        respond::json(session, ctx, 200, answer.json(), None).await?;
        return Ok(Attempt::Answered);
    }
    let usage_chunks = request.include_usage;
    respond::start_stream(session, ctx).await?;
    ctx.first_byte_at = Some(Instant::now());
    match mock.token_interval() {
        Some(interval) => {
            session
                .write_response_body(Some(answer.role_chunk(usage_chunks)), false)
                .await?;
            for i in 0..answer.tokens.len() {
                tokio::time::sleep(interval).await;
                ctx.waited += interval;
                session
                    .write_response_body(Some(answer.token_chunk(i, usage_chunks)), false)
                    .await?;
            }
            session
                .write_response_body(Some(answer.closing_chunks(usage_chunks)), true)
                .await?;
        }
        None => {
            // Without a token rate the whole stream is ready at once: one write.
            let mut all = answer.role_chunk(usage_chunks).to_vec();
            for i in 0..answer.tokens.len() {
                all.extend_from_slice(&answer.token_chunk(i, usage_chunks));
            }
            all.extend_from_slice(&answer.closing_chunks(usage_chunks));
            session
                .write_response_body(Some(Bytes::from(all)), true)
                .await?;
        }
    }
    Ok(Attempt::Answered)
}

fn attempt_failure(provider: &str, err: AttemptError, policy: &RetryPolicy) -> Attempt {
    match err {
        AttemptError::Timeout { phase, after } => Attempt::Failed {
            error: GatewayError::timeout(provider, phase, after),
            retryable: policy.retries_timeout(),
            outcome: "timeout",
        },
        AttemptError::Connect(why) => Attempt::Failed {
            error: GatewayError::BadGateway(format!("provider '{provider}' is unreachable: {why}")),
            retryable: policy.retries_connect(),
            outcome: "connect_error",
        },
        AttemptError::Io(why) => Attempt::Failed {
            error: GatewayError::BadGateway(format!("provider '{provider}' failed: {why}")),
            retryable: policy.retries_connect(),
            outcome: "io_error",
        },
    }
}

fn stream_failure_error(provider: &str, failure: StreamFailure) -> GatewayError {
    match failure {
        StreamFailure::Upstream(mut err) => {
            if let GatewayError::Upstream { message, .. } = err.as_mut() {
                *message = format!("{provider}: {message}");
            }
            *err
        }
        other => GatewayError::BadGateway(format!("provider '{provider}': {other}")),
    }
}

async fn attempt_http(
    gateway: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    request: &ChatRequest,
    target: &Target,
    http: &HttpBackend,
    policy: &RetryPolicy,
) -> pingora::Result<Attempt> {
    let provider = target.provider.name.as_str();
    let upstream_request = match http.adapter.build_request(
        request,
        &AttemptTarget {
            upstream_model: &target.upstream_model,
            endpoint: &http.endpoint,
            api_key: http.api_key(),
            extra_headers: &http.config.headers,
        },
    ) {
        Ok(r) => r,
        Err(error) => {
            return Ok(Attempt::Failed {
                error,
                retryable: false,
                outcome: "invalid_request",
            })
        }
    };

    let mut exchange =
        match upstream::send(&gateway.connector, http, &upstream_request, Instant::now()).await {
            Ok(x) => x,
            Err(e) => return Ok(attempt_failure(provider, e, policy)),
        };
    ctx.waited += exchange.waited;

    if !(200..300).contains(&exchange.status) {
        let status = exchange.status;
        let retry_after = exchange.retry_after.take();
        let body = match exchange.read_all(MAX_ERROR_BYTES).await {
            Ok(body) => {
                exchange.release(&gateway.connector).await;
                body
            }
            Err(_) => Bytes::new(),
        };
        let mut error = http
            .adapter
            .decode_error(provider, status, &body, retry_after);
        if let GatewayError::Upstream { message, .. } = &mut error {
            *message = scrub_secret(message, http.api_key());
        }
        let outcome = match status {
            429 => "429",
            400..=499 => "4xx",
            _ => "5xx",
        };
        return Ok(Attempt::Failed {
            error,
            retryable: policy.retries_status(status),
            outcome,
        });
    }

    if !request.stream {
        let body = match exchange.read_all(MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(e) => return Ok(attempt_failure(provider, e, policy)),
        };
        ctx.waited += exchange.waited;
        exchange.release(&gateway.connector).await;
        return match http.adapter.decode_response(body) {
            Ok(decoded) => {
                finish_accounting(ctx, target, decoded.usage);
                respond::json(session, ctx, 200, decoded.body, None).await?;
                Ok(Attempt::Answered)
            }
            Err(failure) => Ok(Attempt::Failed {
                error: stream_failure_error(provider, failure),
                retryable: policy.retries_status(502),
                outcome: "invalid_response",
            }),
        };
    }

    let mut decoder = http.adapter.stream_decoder(StreamSettings {
        include_usage: request.include_usage,
    });
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut started = false;
    loop {
        let waited_before = exchange.waited;
        let read = exchange.read_chunk().await;
        ctx.waited += exchange.waited - waited_before;
        let (step, end) = match read {
            Ok(Some(chunk)) => (decoder.push(&chunk, &mut out), false),
            Ok(None) => (decoder.finish(&mut out), true),
            Err(e) => {
                if !started {
                    return Ok(attempt_failure(provider, e, policy));
                }
                let err = match attempt_failure(provider, e, policy) {
                    Attempt::Failed { error, .. } => error,
                    Attempt::Answered => GatewayError::Internal("unreachable".into()),
                };
                record_attempt(provider, "stream_error");
                respond::stream_error(session, ctx, &err).await?;
                return Ok(Attempt::Answered);
            }
        };
        if let Err(failure) = step {
            let err = stream_failure_error(provider, failure);
            if !started {
                // Nothing reached the client yet, so another target can still answer.
                return Ok(Attempt::Failed {
                    error: err,
                    retryable: policy.retries_status(502),
                    outcome: "stream_error",
                });
            }
            record_attempt(provider, "stream_error");
            if !out.is_empty() {
                session
                    .write_response_body(Some(Bytes::from(std::mem::take(&mut out))), false)
                    .await?;
            }
            respond::stream_error(session, ctx, &err).await?;
            return Ok(Attempt::Answered);
        }
        if !out.is_empty() || end {
            if !started {
                // Headers go out with the first translated bytes, not before: until then a
                // failed stream can still fall over to another target.
                respond::start_stream(session, ctx).await?;
                ctx.first_byte_at = Some(Instant::now());
                started = true;
            }
            let data = Bytes::from(std::mem::replace(&mut out, Vec::with_capacity(4096)));
            session
                .write_response_body((!data.is_empty()).then_some(data), end)
                .await?;
        }
        if end {
            finish_accounting(ctx, target, decoder.usage());
            exchange.release(&gateway.connector).await;
            return Ok(Attempt::Answered);
        }
    }
}
