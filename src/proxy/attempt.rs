//! One attempt: a request to one target, answered to the client or reported as a failure.
//!
//! Until the first byte reaches the client an attempt can fail without the client noticing, and
//! the caller may try another target. After that, a failure ends the client's stream with an error
//! event, and the attempt counts as answered (but unhealthy).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::respond;
use super::upstream::{self, AttemptError};
use super::Gateway;
use crate::accounting::Usage;
use crate::config::RetryPolicy;
use crate::dialect::openai::ChatRequest;
use crate::error::GatewayError;
use crate::providers::convert::upstream_message;
use crate::providers::mock::MockProvider;
use crate::providers::{scrub_secret, AttemptTarget, StreamFailure, StreamSettings};
use crate::routing::{HttpBackend, Target};

/// Largest non-streamed answer accepted from an upstream.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read from an upstream (only its message is used).
const MAX_ERROR_BYTES: usize = 256 * 1024;

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

/// Whose fault a failed attempt was, which decides what happens next.
pub enum Fault {
    /// The provider failed (5xx, timeout, connect error, reset, broken answer). Counts against
    /// the target's breaker; another attempt may follow when the retry policy lists the outcome.
    Provider { retryable: bool },
    /// The provider rate-limited us (429). Its breaker opens for the Retry-After time, and this
    /// request does not try it again; another target may answer when the policy lists 429.
    RateLimited {
        retry_after: Option<Duration>,
        retryable: bool,
    },
    /// The request itself is wrong (400-class): no other target would answer differently.
    Request,
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn finish_accounting(ctx: &mut RequestCtx, target: &Target, usage: Option<Usage>) {
    ctx.usage = usage;
    ctx.cost_usd = match (usage, target.price.as_ref()) {
        (Some(u), Some(price)) => Some(u.cost(price)),
        _ => None,
    };
}

/// The built-in mock: always answers.
pub async fn mock(
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
    let answered = Attempt::Answered {
        healthy: true,
        latency: Some(latency),
    };
    if !request.stream {
        respond::json(session, ctx, 200, answer.json(), None).await?;
        return Ok(answered);
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
    Ok(answered)
}

fn transport_failure(provider: &str, err: AttemptError, policy: &RetryPolicy) -> Attempt {
    let (error, retryable, outcome) = match err {
        AttemptError::Timeout { phase, after } => (
            GatewayError::timeout(provider, phase, after),
            policy.retries_timeout(),
            "timeout",
        ),
        AttemptError::Connect(why) => (
            GatewayError::BadGateway(format!("provider '{provider}' is unreachable: {why}")),
            policy.retries_connect(),
            "connect_error",
        ),
        AttemptError::Io(why) => (
            GatewayError::BadGateway(format!("provider '{provider}' failed: {why}")),
            policy.retries_connect(),
            "io_error",
        ),
    };
    Attempt::Failed {
        error,
        fault: Fault::Provider { retryable },
        outcome,
    }
}

fn stream_failure_error(provider: &str, failure: StreamFailure) -> GatewayError {
    match failure {
        StreamFailure::Upstream(mut err) => {
            if let GatewayError::Upstream {
                message, status, ..
            } = err.as_mut()
            {
                *message = match *status {
                    // Decoders do not know the provider's name; the credentials message needs it.
                    401 | 403 => upstream_message(Some(provider), *status, None),
                    _ => format!("{provider}: {message}"),
                };
            }
            *err
        }
        other => GatewayError::BadGateway(format!("provider '{provider}': {other}")),
    }
}

/// A failure reported by the upstream inside an answer that had not reached the client yet.
fn answer_failure(provider: &str, failure: StreamFailure, policy: &RetryPolicy) -> Attempt {
    let error = stream_failure_error(provider, failure);
    let fault = match &error {
        GatewayError::Upstream {
            status: 429,
            retry_after,
            ..
        } => Fault::RateLimited {
            retry_after: retry_after.as_deref().and_then(parse_retry_after),
            retryable: policy.retries_status(429),
        },
        GatewayError::Upstream { status, .. } if (400..500).contains(status) => Fault::Request,
        GatewayError::Upstream { status, .. } => Fault::Provider {
            retryable: policy.retries_status(*status),
        },
        _ => Fault::Provider {
            retryable: policy.retries_status(502),
        },
    };
    Attempt::Failed {
        error,
        fault,
        outcome: "invalid_response",
    }
}

/// A vendor API over HTTP(S).
///
/// This future lives as long as the stream it forwards, so everything it awaits only once per
/// attempt (sending, whole-body reads, the JSON answer, stream start and end, returning the
/// connection to the pool) is boxed: held inline, those states would make every open stream
/// carry several kilobytes it no longer uses.
pub async fn http(
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
                fault: Fault::Request,
                outcome: "invalid_request",
            })
        }
    };

    let sent = Box::pin(upstream::send(
        &gateway.connector,
        http,
        &upstream_request,
        Instant::now(),
    ))
    .await;
    // The vendor body has been sent; it need not live as long as the answer.
    drop(upstream_request);
    let mut exchange = match sent {
        Ok(x) => x,
        Err(e) => return Ok(transport_failure(provider, e, policy)),
    };
    let latency = exchange.waited;
    ctx.waited += exchange.waited;

    if !(200..300).contains(&exchange.status) {
        let status = exchange.status;
        let retry_after = exchange.retry_after.take();
        let body = match Box::pin(exchange.read_all(MAX_ERROR_BYTES)).await {
            Ok(body) => {
                Box::pin(exchange.release(&gateway.connector)).await;
                body
            }
            Err(_) => Bytes::new(),
        };
        let pause = retry_after.as_deref().and_then(parse_retry_after);
        let mut error = http
            .adapter
            .decode_error(provider, status, &body, retry_after);
        if let GatewayError::Upstream { message, .. } = &mut error {
            *message = scrub_secret(message, http.api_key());
        }
        let (fault, outcome) = match status {
            429 => (
                Fault::RateLimited {
                    retry_after: pause,
                    retryable: policy.retries_status(429),
                },
                "429",
            ),
            // A provider that rejects the gateway's own key, or does not know the model, is
            // broken for every request: the next target may well answer.
            401 | 403 | 404 => (
                Fault::Provider {
                    retryable: policy.retries_status(status) || policy.retries_status(502),
                },
                "4xx",
            ),
            400..=499 => (Fault::Request, "4xx"),
            _ => (
                Fault::Provider {
                    retryable: policy.retries_status(status),
                },
                "5xx",
            ),
        };
        return Ok(Attempt::Failed {
            error,
            fault,
            outcome,
        });
    }

    if !request.stream {
        let body = match Box::pin(exchange.read_all(MAX_ANSWER_BYTES)).await {
            Ok(body) => body,
            Err(e) => return Ok(transport_failure(provider, e, policy)),
        };
        ctx.waited += exchange.waited - latency;
        Box::pin(exchange.release(&gateway.connector)).await;
        return match http.adapter.decode_response(body) {
            Ok(decoded) => {
                finish_accounting(ctx, target, decoded.usage);
                Box::pin(respond::json(session, ctx, 200, decoded.body, None)).await?;
                Ok(Attempt::Answered {
                    healthy: true,
                    latency: Some(latency),
                })
            }
            Err(failure) => Ok(answer_failure(provider, failure, policy)),
        };
    }

    let mut decoder = http.adapter.stream_decoder(StreamSettings {
        include_usage: request.include_usage,
    });
    // Reused for every chunk and copied out at its exact size: each open stream keeps only its
    // largest translated chunk, not a fresh 4 KiB buffer per chunk.
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut started = false;
    loop {
        let waited_before = exchange.waited;
        let read = exchange.read_chunk().await;
        ctx.waited += exchange.waited - waited_before;
        let (step, end) = match read {
            Ok(Some(chunk)) => (decoder.push(&chunk, &mut out), false),
            Ok(None) => (decoder.finish(&mut out), true),
            Err(e) if !started => return Ok(transport_failure(provider, e, policy)),
            Err(e) => {
                let error = match transport_failure(provider, e, policy) {
                    Attempt::Failed { error, .. } => error,
                    Attempt::Answered { .. } => GatewayError::Internal("stream failed".into()),
                };
                Box::pin(respond::stream_error(session, ctx, &error)).await?;
                return Ok(Attempt::Answered {
                    healthy: false,
                    latency: Some(latency),
                });
            }
        };
        if let Err(failure) = step {
            if !started {
                // Nothing reached the client yet, so another target can still answer.
                return Ok(answer_failure(provider, failure, policy));
            }
            if !out.is_empty() {
                session
                    .write_response_body(Some(Bytes::copy_from_slice(&out)), false)
                    .await?;
            }
            let error = stream_failure_error(provider, failure);
            Box::pin(respond::stream_error(session, ctx, &error)).await?;
            return Ok(Attempt::Answered {
                healthy: false,
                latency: Some(latency),
            });
        }
        if !out.is_empty() || end {
            if !started {
                // Headers go out with the first translated bytes, not before: until then a
                // failed stream can still fall over to another target.
                Box::pin(respond::start_stream(session, ctx)).await?;
                ctx.first_byte_at = Some(Instant::now());
                started = true;
            }
            let data = Bytes::copy_from_slice(&out);
            out.clear();
            session
                .write_response_body((!data.is_empty()).then_some(data), end)
                .await?;
        }
        if end {
            finish_accounting(ctx, target, decoder.usage());
            Box::pin(exchange.release(&gateway.connector)).await;
            return Ok(Attempt::Answered {
                healthy: true,
                latency: Some(latency),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1"), None);
        let later = SystemTime::now() + Duration::from_secs(30);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            parsed <= Duration::from_secs(30) && parsed >= Duration::from_secs(28),
            "{parsed:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
