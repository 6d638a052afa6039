//! The model endpoints of every dialect (`POST /v1/chat/completions`, `POST /v1/messages`,
//! `POST /v1/embeddings`), as explicit stages: **parse** the body in the client's dialect,
//! **plan** the targets (the model and its fallbacks resolved, ordered by strategy and provider
//! preferences, unpriced ones left out for keys with a budget), **admit** it
//! ([`admission`](super::admission): the key's models, limits and budget), **attempt** the targets
//! under the retry policy ([`Retry`] decides; this module sends), **settle** the limits, and
//! **render** what failed as an error in the client's dialect.
//!
//! A 429 opens its target's breaker for the Retry-After time, a 400-class error is the request's
//! own fault and goes straight back to the client, and once the first byte of an answer has
//! reached the client nothing is retried: a failure ends the stream with an error event.

use std::sync::Arc;

use pingora::protocols::http::ServerSession;

use super::admission::admit;
use super::attempt::{self, Attempt, Fault};
use super::body::read_or_refuse;
use super::caching;
use super::ctx::RequestCtx;
use super::filtering;
use super::hedging;
use super::respond;
use super::responses;
use super::sticky;
use super::Gateway;
use crate::cache::fingerprint::Key;
use crate::dialect::anthropic::MessagesRequest;
use crate::dialect::openai::completions::CompletionsRequest;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::openai::ChatRequest;
use crate::dialect::responses::ResponsesRequest;
use crate::dialect::{ClientRequest, Dialect};
use crate::error::GatewayError;
use crate::limits::DEFAULT_OUTPUT_RESERVATION;
use crate::observability::metrics::METRICS;
use crate::routing::health::BreakerState;
use crate::routing::retry::{Gate, Retry, Step};
use crate::routing::strategy::{self, ProviderPreferences};
use crate::routing::{ClientKey, Route, RoutingTable, Target};

pub(super) async fn handle(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    client_key: Option<&ClientKey>,
) -> pingora::Result<()> {
    let Some((mut request, mut estimate)) = parse(session, ctx, table).await? else {
        return Ok(());
    };
    if let ClientRequest::Responses(responses) = &mut request {
        let owner = client_key.map(|k| k.name.as_str());
        if let Err(err) = Box::pin(responses::load_history(responses, owner)).await {
            return respond::error(session, ctx, &err).await;
        }
        // The earlier turns are part of the prompt.
        estimate += responses.history.as_ref().map_or(0, |h| h.len() as u64 / 4);
    }
    ctx.requested_model = Some(request.model().to_string());
    let filtered = Box::pin(filtering::on_request(
        session,
        ctx,
        &gateway.filters,
        table,
        client_key,
        request,
        estimate,
    ))
    .await?;
    let Some(request) = filtered else {
        return Ok(());
    };
    ctx.model_label = table.model_label(request.model());
    ctx.stream = request.stream();
    let plan = match plan(table, &request) {
        Ok(plan) => plan,
        Err(err) => return respond::error(session, ctx, &err).await,
    };
    let targets: Vec<&Target> = plan
        .routes
        .iter()
        .flat_map(|route| strategy::order(route, plan.preferences.as_ref()))
        .collect();
    if targets.is_empty() {
        let err = GatewayError::invalid(
            "no target of the model matches the provider preferences",
            Some("provider"),
        );
        return respond::error(session, ctx, &err).await;
    }
    let mut targets = match priced_for_budget(targets, client_key, request.model()) {
        Ok(targets) => targets,
        Err(err) => return respond::error(session, ctx, &err).await,
    };
    if plan.routes[0].sticky.is_some() {
        let headers = &session.req_header().headers;
        let route = &plan.routes[0];
        Box::pin(sticky::apply(ctx, headers, &request, route, &mut targets)).await;
    }
    let cached = match caching::lookup_of(ctx) {
        None => {
            if let Err(err) = admit(ctx, client_key, request.models(), estimate, None).await {
                return respond::error(session, ctx, &err).await;
            }
            None
        }
        // Boxed: held inline, the lookup's future would enlarge every request's, which is
        // moved whole when it starts.
        Some((key, max_age)) => {
            let found = admit_and_find(ctx, client_key, &request, estimate, key, max_age);
            match Box::pin(found).await {
                Ok(cached) => cached,
                Err(err) => return respond::error(session, ctx, &err).await,
            }
        }
    };
    if let Some(answer) = cached {
        // A hit spends no tokens: the admission's reservation is given back whole.
        ctx.settle_soon(Some(0));
        return Box::pin(caching::serve_hit(session, ctx, &request, answer)).await;
    }
    let outcome = run_attempts(gateway, session, ctx, &request, &targets, &plan.routes[0]).await;
    // An answered request settled before its last byte; what is left here failed (nothing
    // answered: no tokens, no cost) or broke off (its usage as far as it is known).
    let used = match &outcome {
        Ok(Some(_)) => Some(0),
        _ => ctx.usage.map(|u| u.total()),
    };
    Box::pin(ctx.settle(used)).await;
    match outcome? {
        Some(err) => respond::error(session, ctx, &err).await,
        None => Ok(()),
    }
}

/// Admits the request and looks its answer up in the cache: when both are in Redis, the lookup
/// rides in the admission script's write (one round trip, one write). The cached answer, if
/// one will do.
async fn admit_and_find(
    ctx: &mut RequestCtx,
    client_key: Option<&ClientKey>,
    request: &ClientRequest,
    estimate: u64,
    key: Key,
    max_age_s: Option<u64>,
) -> Result<Option<caching::Hit>, GatewayError> {
    let mut lookup = caching::begin_lookup(key);
    admit(ctx, client_key, request.models(), estimate, lookup.rider()).await?;
    let cached = caching::found(key, lookup.finish().await, max_age_s, request);
    caching::record_lookup(ctx, cached.is_some());
    Ok(cached)
}

/// Reads and parses the body in the client's dialect, with the tokens the request may use (its
/// size, at about four bytes a token, plus its output budget); `None` when an error was sent.
async fn parse(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
) -> pingora::Result<Option<(ClientRequest, u64)>> {
    let Some(body) = read_or_refuse(session, ctx, table.max_body_bytes).await? else {
        return Ok(None);
    };
    let prompt_estimate = (body.len() as u64).div_ceil(4);
    let parsed = match ctx.dialect {
        Dialect::OpenAi if ctx.endpoint == "embeddings" => {
            EmbeddingsRequest::parse(&body).map(ClientRequest::Embeddings)
        }
        // Kept as bytes with its fields' spans: OpenAI-compatible upstreams get them spliced.
        Dialect::OpenAi => ChatRequest::from_bytes(body).map(ClientRequest::OpenAi),
        // Kept as bytes: Anthropic upstreams get them unchanged.
        Dialect::Anthropic => MessagesRequest::parse(body, &session.req_header().headers)
            .map(ClientRequest::Anthropic),
        // Kept as bytes: Responses upstreams get them unchanged.
        Dialect::Responses => ResponsesRequest::parse(body).map(ClientRequest::Responses),
        // Kept as bytes: hosts with the endpoint get them spliced.
        Dialect::Completions => {
            CompletionsRequest::from_bytes(body).map(ClientRequest::Completions)
        }
    };
    match parsed {
        Ok(request) => {
            let output = request
                .max_output_tokens()
                .unwrap_or(DEFAULT_OUTPUT_RESERVATION);
            Ok(Some((request, prompt_estimate + output)))
        }
        Err(err) => {
            respond::error(session, ctx, &err).await?;
            Ok(None)
        }
    }
}

/// A key with a budget spends only where the spending can be counted: unpriced targets are
/// left out, and a model with none priced is refused (403) rather than served for free.
fn priced_for_budget<'t>(
    targets: Vec<&'t Target>,
    client_key: Option<&ClientKey>,
    model: &str,
) -> Result<Vec<&'t Target>, GatewayError> {
    // A model the key may not use is refused as such by admission.
    let Some(key) = client_key.filter(|k| k.policy.budget.is_some() && k.allows(model)) else {
        return Ok(targets);
    };
    if targets.iter().all(|t| t.price.is_some()) {
        return Ok(targets);
    }
    let priced: Vec<&Target> = targets.into_iter().filter(|t| t.price.is_some()).collect();
    if priced.is_empty() {
        return Err(GatewayError::ModelNotPriced {
            key: key.name.clone(),
            model: model.to_string(),
        });
    }
    Ok(priced)
}

/// The routes to try (the requested model, then OpenRouter-style fallback models) and the
/// provider preferences that order their targets.
struct Plan {
    routes: Vec<Arc<Route>>,
    preferences: Option<ProviderPreferences>,
}

fn plan(table: &RoutingTable, request: &ClientRequest) -> Result<Plan, GatewayError> {
    let preferences = request
        .provider_preferences()
        .map(ProviderPreferences::parse)
        .transpose()?;
    let mut routes = Vec::with_capacity(1 + request.fallback_models().len());
    for model in request.models() {
        routes.push(table.resolve(model)?);
    }
    Ok(Plan {
        routes,
        preferences,
    })
}

/// The breakers of a plan's targets, as the retry loop asks about them.
struct PlanGate<'p>(&'p [&'p Target]);

impl Gate for PlanGate<'_> {
    fn try_acquire(&self, target: usize) -> bool {
        self.0[target].health.try_acquire()
    }

    fn is_open(&self, target: usize) -> bool {
        self.0[target].health.state() == BreakerState::Open
    }
}

/// Tries the plan under the retry policy ([`Retry`] decides what comes next), the first
/// attempt hedged when the model says so. Returns the error to send when no attempt answered.
async fn run_attempts(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
    plan: &[&Target],
    route: &Route,
) -> pingora::Result<Option<GatewayError>> {
    let policy = &route.retry;
    let gate = PlanGate(plan);
    let mut retry = Retry::new(plan.len(), policy);
    let mut tried: Vec<String> = Vec::new();
    let mut last_error = None;
    // Embeddings are cheap and quick: never worth a second call.
    let hedge = route
        .hedge
        .as_ref()
        .filter(|_| plan.len() > 1 && !matches!(request, ClientRequest::Embeddings(_)));
    loop {
        let i = match retry.next(&gate) {
            Step::Try(i) => i,
            Step::Pause(pause) => {
                tokio::time::sleep(pause).await;
                ctx.waited += pause;
                continue;
            }
            Step::GiveUp => break,
        };
        let target = plan[i];
        ctx.attempts += 1;
        if ctx.attempts > 1 {
            METRICS
                .fallbacks_total
                .with_label_values(&[ctx.model_label.as_str()])
                .inc();
        }
        ctx.provider = Some(target.provider.name.clone());
        ctx.upstream_model = Some(target.upstream_model.clone());
        let outcomes = match hedge {
            Some(hedge) if ctx.attempts == 1 => {
                hedging::race(
                    gateway, session, ctx, request, plan, &gate, &mut retry, i, hedge, policy,
                )
                .await
            }
            _ => vec![(
                i,
                attempt::run(gateway, session, ctx, request, target, policy).await,
            )],
        };
        // Once something reached the client, no failure may answer it again.
        let answered = outcomes
            .iter()
            .any(|(_, o)| !matches!(o, Ok(Attempt::Failed { .. })));
        for (i, outcome) in outcomes {
            let target = plan[i];
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    // The client went away: that says nothing about the provider.
                    target.health.record_neutral();
                    record_attempt(&target.provider.name, "client_gone");
                    return Err(e);
                }
            };
            match outcome {
                Attempt::Answered { healthy, latency } => {
                    if healthy {
                        target.health.record_success(latency);
                        record_attempt(&target.provider.name, "ok");
                    } else {
                        target.health.record_failure();
                        record_attempt(&target.provider.name, "stream_error");
                    }
                    return Ok(None);
                }
                Attempt::Failed {
                    error,
                    fault,
                    outcome,
                } => {
                    record_attempt(&target.provider.name, outcome);
                    tried.push(format!("{} ({})", target.provider.name, error));
                    match &fault {
                        Fault::Request => target.health.record_neutral(),
                        Fault::RateLimited { retry_after, .. } => {
                            target.health.record_rate_limited(*retry_after);
                        }
                        Fault::Provider { .. } => target.health.record_failure(),
                    }
                    if !retry.failed(i, &fault) && !answered {
                        return Ok(Some(error));
                    }
                    last_error = Some(error);
                }
            }
        }
    }
    if ctx.attempts == 0 {
        return Ok(Some(unavailable(plan)));
    }
    Ok(Some(all_failed(last_error, &tried)))
}

/// Every target's breaker is open: nothing was sent. A rate limit says 429, else 503; both with
/// the time until the first target may be tried again.
fn unavailable(plan: &[&Target]) -> GatewayError {
    let wait_ms = plan
        .iter()
        .map(|t| t.health.open_for_ms())
        .min()
        .unwrap_or(1000);
    let retry_after = Some(wait_ms.div_ceil(1000).max(1).to_string());
    let names: Vec<&str> = plan.iter().map(|t| t.provider.name.as_str()).collect();
    if plan.iter().any(|t| t.health.is_rate_limited()) {
        GatewayError::Upstream {
            status: 429,
            message: format!(
                "every target is rate-limited or unavailable ({}); retry later",
                names.join(", ")
            ),
            kind: "rate_limit_error".into(),
            code: Some("rate_limit_exceeded".into()),
            param: None,
            retry_after,
        }
    } else {
        GatewayError::Upstream {
            status: 503,
            message: format!(
                "every target is unavailable after repeated failures ({}); retry later",
                names.join(", ")
            ),
            kind: "server_error".into(),
            code: Some("targets_unavailable".into()),
            param: None,
            retry_after,
        }
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
