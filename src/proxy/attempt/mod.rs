//! One attempt: a request to one target, answered to the client or reported as a failure.
//!
//! An attempt builds the vendor request ([`ProviderAdapter::build_request`]), sends it through
//! the transport, and then either classifies the failure ([`classify`]) or relays the answer
//! ([`relay`]: a JSON body, or a stream chunk by chunk). Until the first byte reaches the client
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
use super::Gateway;
use crate::accounting::Usage;
use crate::config::RetryPolicy;
use crate::dialect::ClientRequest;
use crate::error::GatewayError;
use crate::filters::AttemptRequest;
use crate::providers::AttemptTarget;
use crate::routing::{mock_endpoint, Backend, Target};
use crate::transport;

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
    let provider = &*target.provider;
    let (endpoint, api_key, extra_headers) = match &provider.backend {
        Backend::Http(http) => (
            &http.upstream.endpoint,
            http.api_key(),
            &http.config.headers[..],
        ),
        Backend::Mock(_) => (mock_endpoint(), None, &[][..]),
    };
    // Credentials that expire are renewed first; a bearer token (Vertex AI) becomes the key.
    let token = match provider.adapter.renewable() {
        Some(credentials) => match Box::pin(credentials.renew(&gateway.transport)).await {
            Ok(token) => token,
            Err(e) => {
                return Ok(Attempt::Failed {
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
        },
        None => None,
    };
    let api_key = token.as_ref().or(api_key);
    let attempt_target = AttemptTarget {
        upstream_model: &target.upstream_model,
        endpoint,
        api_key,
        extra_headers,
    };
    let relay = relay::Relay {
        gateway,
        target,
        policy,
        api_key,
    };
    if let (ClientRequest::Embeddings(embeddings), Backend::Http(http)) =
        (request, &provider.backend)
    {
        // A vendor that takes one input per call (Bedrock Titan): several calls, one answer.
        match provider
            .adapter
            .build_embeddings_parts(embeddings, &attempt_target)
        {
            Some(Ok(parts)) => {
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
    let built = match request {
        ClientRequest::Embeddings(embeddings) => provider
            .adapter
            .build_embeddings(embeddings, &attempt_target),
        _ => provider.adapter.build_request(request, &attempt_target),
    };
    let mut upstream_request = match built {
        Ok(r) => r,
        Err(error) => {
            return Ok(Attempt::Failed {
                error,
                fault: Fault::Request,
                outcome: "invalid_request",
            })
        }
    };
    if let Some(active) = &ctx.filters {
        for filter in active.set.iter() {
            let mut attempt = AttemptRequest {
                info: &active.info,
                provider: &provider.name,
                upstream_model: &target.upstream_model,
                request: &mut upstream_request,
            };
            if let Err(error) = filter.on_attempt(&mut attempt) {
                log::info!(
                    "filter '{}' refused the attempt of request {} at provider '{}': {error}",
                    filter.name(),
                    ctx.request_id,
                    provider.name
                );
                return Ok(Attempt::Failed {
                    error: crate::proxy::filtering::to_gateway_error(error),
                    fault: Fault::Request,
                    outcome: "filtered",
                });
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
        Err(e) => return Ok(Attempt::transport_failure(&provider.name, e, policy)),
    };
    ctx.waited += exchange.waited();

    if !(200..300).contains(&exchange.status()) {
        return Ok(Box::pin(relay.error_status(exchange)).await);
    }
    if !request.stream() {
        return Box::pin(relay.json(session, ctx, request, exchange)).await;
    }
    relay.stream(session, ctx, request, exchange).await
}
