//! One attempt: a request to one target, answered to the client or reported as a failure.
//!
//! An attempt builds the vendor request ([`ProviderAdapter::build_request`]), sends it through
//! the transport, and then either classifies the failure ([`classify`]) or relays the answer
//! ([`relay`](mod@relay): a JSON body, or a stream chunk by chunk). Until the first byte reaches the client
//! an attempt can fail without the client noticing, and the caller may try another target.
//! After that, a failure ends the client's stream with an error event, and the attempt counts as
//! answered (but unhealthy).
//!
//! [`ProviderAdapter::build_request`]: crate::providers::ProviderAdapter::build_request

mod classify;
mod relay;

use std::time::{Duration, Instant};

use pingora::protocols::http::ServerSession;

pub use classify::Fault;

use super::ctx::RequestCtx;
use super::filtering::ActiveFilters;
use super::Gateway;
use crate::accounting::Usage;
use crate::config::{RetryPolicy, Secret};
use crate::dialect::ClientRequest;
use crate::error::GatewayError;
use crate::filters::AttemptRequest;
use crate::providers::AttemptTarget;
use crate::routing::{mock_endpoint, Backend, Target};
use crate::transport::{self, Exchange};

/// What became of one attempt.
pub enum Attempt {
    /// The client has its answer. `healthy` is false when a stream broke after it started;
    /// `latency` is the time to the upstream's first byte.
    Answered {
        healthy: bool,
        latency: Option<Duration>,
    },
    /// Nothing reached the client.
    Failed {
        error: GatewayError,
        fault: Fault,
        /// The `outcome` label of `switchyard_upstream_attempts_total`.
        outcome: &'static str,
    },
}

impl Attempt {
    fn transport_failure(
        provider: &str,
        err: transport::AttemptError,
        policy: &RetryPolicy,
    ) -> Self {
        let (error, fault, outcome) = classify::transport_error(provider, err, policy);
        Attempt::Failed {
            error,
            fault,
            outcome,
        }
    }
}

fn finish_accounting(ctx: &mut RequestCtx, target: &Target, usage: Option<Usage>) {
    ctx.usage = usage;
    ctx.cost_usd = match (usage, target.price.as_ref()) {
        (Some(u), Some(price)) => Some(u.cost(price)),
        _ => None,
    };
}

/// A request sent to one target whose answer came back with a 2xx status: ready to relay.
pub struct Sent {
    exchange: Exchange,
    /// Renewed credentials (a bearer token), when the provider's expire.
    token: Option<Secret>,
}

/// A failed send, and how long it waited on the upstream.
pub type SendFailure = (Attempt, Duration);

/// Credentials that expire are renewed first; a bearer token (Vertex AI) becomes the key.
async fn renewed_token(
    gateway: &Gateway,
    target: &Target,
    policy: &RetryPolicy,
) -> Result<Option<Secret>, Attempt> {
    let provider = &*target.provider;
    let Some(credentials) = provider.adapter.renewable() else {
        return Ok(None);
    };
    Box::pin(credentials.renew(&gateway.transport))
        .await
        .map_err(|e| Attempt::Failed {
            error: GatewayError::BadGateway(format!(
                "provider '{}' cannot get its credentials: {e}",
                provider.name
            )),
            fault: Fault::Provider {
                retryable: policy.retries_connect(),
            },
            outcome: "connect_error",
        })
}

/// Where `target` is reached and with which key.
fn reach<'t>(
    target: &'t Target,
    token: Option<&'t Secret>,
) -> (AttemptTarget<'t>, Option<&'t Secret>) {
    let (endpoint, api_key, extra_headers) = match &target.provider.backend {
        Backend::Http(http) => (
            &http.upstream.endpoint,
            http.api_key(),
            &http.config.headers[..],
        ),
        Backend::Mock(_) => (mock_endpoint(), None, &[][..]),
    };
    let api_key = token.or(api_key);
    (
        AttemptTarget {
            upstream_model: &target.upstream_model,
            endpoint,
            api_key,
            extra_headers,
        },
        api_key,
    )
}

/// Tries `target` once.
///
/// This future lives as long as the stream it forwards, so everything it awaits only once per
/// attempt (sending, whole-body reads, the JSON answer, stream start and end, returning the
/// connection to the pool) is boxed: held inline, those states would make every open stream
/// carry several kilobytes it no longer uses.
pub async fn run(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
    target: &Target,
    policy: &RetryPolicy,
) -> pingora::Result<Attempt> {
    if let (ClientRequest::Embeddings(embeddings), Backend::Http(http)) =
        (request, &target.provider.backend)
    {
        let token = match renewed_token(gateway, target, policy).await {
            Ok(token) => token,
            Err(failed) => return Ok(failed),
        };
        let (attempt_target, api_key) = reach(target, token.as_ref());
        // A vendor that takes one input per call (Bedrock Titan): several calls, one answer.
        match target
            .provider
            .adapter
            .build_embeddings_parts(embeddings, &attempt_target)
        {
            Some(Ok(parts)) => {
                let relay = relay::Relay {
                    gateway,
                    target,
                    policy,
                    api_key,
                };
                let parallel = http.config.max_parallel_requests;
                return Box::pin(relay.embeddings_parts(
                    session,
                    ctx,
                    embeddings,
                    &http.upstream,
                    parallel,
                    parts,
                ))
                .await;
            }
            Some(Err(error)) => {
                return Ok(Attempt::Failed {
                    error,
                    fault: Fault::Request,
                    outcome: "invalid_request",
                })
            }
            None => {}
        }
    }
    let filters = ctx.filters.clone();
    let sent = Box::pin(send(
        gateway,
        filters.as_deref(),
        &ctx.request_id,
        request,
        target,
        policy,
    ))
    .await;
    match sent {
        Ok(sent) => relay(gateway, session, ctx, request, target, policy, sent).await,
        Err((failed, waited)) => {
            ctx.waited += waited;
            Ok(failed)
        }
    }
}

/// Sends `request` to `target` and waits for its answer's head: the exchange to relay, or the
/// failed attempt (an error status is read and classified here). Nothing reaches the client,
/// so a hedge can race two of these and drop the slower one.
pub async fn send(
    gateway: &Gateway,
    filters: Option<&ActiveFilters>,
    request_id: &str,
    request: &ClientRequest,
    target: &Target,
    policy: &RetryPolicy,
) -> Result<Sent, SendFailure> {
    let provider = &*target.provider;
    let token = renewed_token(gateway, target, policy)
        .await
        .map_err(|failed| (failed, Duration::ZERO))?;
    let (attempt_target, api_key) = reach(target, token.as_ref());
    let built = match request {
        ClientRequest::Embeddings(embeddings) => provider
            .adapter
            .build_embeddings(embeddings, &attempt_target),
        _ => provider.adapter.build_request(request, &attempt_target),
    };
    let refused = |error, outcome| {
        (
            Attempt::Failed {
                error,
                fault: Fault::Request,
                outcome,
            },
            Duration::ZERO,
        )
    };
    let mut upstream_request = built.map_err(|error| refused(error, "invalid_request"))?;
    if let Some(active) = filters {
        for filter in active.set.iter() {
            let mut attempt = AttemptRequest {
                info: &active.info,
                provider: &provider.name,
                upstream_model: &target.upstream_model,
                request: &mut upstream_request,
            };
            if let Err(error) = filter.on_attempt(&mut attempt) {
                log::info!(
                    "filter '{}' refused the attempt of request {request_id} at provider '{}': {error}",
                    filter.name(),
                    provider.name
                );
                return Err(refused(
                    crate::proxy::filtering::to_gateway_error(error),
                    "filtered",
                ));
            }
        }
    }

    let sent = match &provider.backend {
        Backend::Http(http) => {
            Box::pin(
                gateway
                    .transport
                    .send(&http.upstream, &upstream_request, Instant::now()),
            )
            .await
        }
        Backend::Mock(mock) => {
            Box::pin(crate::providers::mock::serve(mock, &upstream_request)).await
        }
    };
    // The vendor body has been sent; it need not live as long as the answer.
    drop(upstream_request);
    let exchange = match sent {
        Ok(x) => x,
        Err(e) => {
            return Err((
                Attempt::transport_failure(&provider.name, e, policy),
                Duration::ZERO,
            ))
        }
    };
    if !(200..300).contains(&exchange.status()) {
        let waited = exchange.waited();
        let relay = relay::Relay {
            gateway,
            target,
            policy,
            api_key,
        };
        return Err((Box::pin(relay.error_status(exchange)).await, waited));
    }
    Ok(Sent { exchange, token })
}

/// Relays the answer of a [`send`] to the client.
pub async fn relay(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
    target: &Target,
    policy: &RetryPolicy,
    sent: Sent,
) -> pingora::Result<Attempt> {
    let Sent { exchange, token } = sent;
    ctx.waited += exchange.waited();
    let (_, api_key) = reach(target, token.as_ref());
    let relay = relay::Relay {
        gateway,
        target,
        policy,
        api_key,
    };
    if !request.stream() {
        return Box::pin(relay.json(session, ctx, request, exchange)).await;
    }
    relay.stream(session, ctx, request, exchange).await
}
