//! Relaying an upstream answer: an error status (classified, nothing sent), a JSON body, or a
//! stream translated and forwarded chunk by chunk.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use pingora::protocols::http::ServerSession;

use super::classify;
use super::{finish_accounting, Attempt};
use crate::accounting::with_usage_cost;
use crate::config::{RetryPolicy, Secret};
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::responses::ResponsesRequest;
use crate::dialect::ClientRequest;
use crate::error::GatewayError;
use crate::providers::convert::upstream_message;
use crate::providers::{
    answers_natively, client_answer, client_answer_with, client_stream, client_stream_with,
    scrub_secret, RenderedAnswer, StreamDecoder, StreamFailure, StreamSettings, UpstreamRequest,
};
use crate::proxy::ctx::RequestCtx;
use crate::proxy::{caching, respond, responses, Gateway};
use crate::routing::Target;
use crate::transport::{Exchange, Upstream};

/// Largest non-streamed answer accepted from an upstream.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read from an upstream (only its message is used).
const MAX_ERROR_BYTES: usize = 256 * 1024;

/// One part of a request sent in several, in flight.
type PartFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, Attempt>> + Send + 'a>>;

/// What relaying one attempt's answer needs to know.
pub(super) struct Relay<'a> {
    pub gateway: &'a Gateway,
    pub target: &'a Target,
    pub policy: &'a RetryPolicy,
    /// The provider's key, scrubbed from anything the provider says back.
    pub api_key: Option<&'a Secret>,
}

impl Relay<'_> {
    fn provider(&self) -> &str {
        &self.target.provider.name
    }

    /// The client-facing error of a failure the upstream reported inside a stream or answer.
    fn stream_failure_error(&self, failure: StreamFailure) -> GatewayError {
        let provider = self.provider();
        match failure {
            StreamFailure::Upstream(mut err) => {
                if let GatewayError::Upstream {
                    message, status, ..
                } = err.as_mut()
                {
                    *message = match *status {
                        // Decoders do not know the provider's name; the credentials message
                        // needs it.
                        401 | 403 => upstream_message(Some(provider), *status, None),
                        _ => format!("{provider}: {}", scrub_secret(message, self.api_key)),
                    };
                }
                *err
            }
            other => GatewayError::BadGateway(format!("provider '{provider}': {other}")),
        }
    }

    /// A failure inside an answer that had not reached the client yet.
    fn answer_failure(&self, failure: StreamFailure) -> Attempt {
        let error = self.stream_failure_error(failure);
        let (fault, _) = classify::upstream_error(&error, self.policy, self.target.direct);
        Attempt::Failed {
            error,
            fault,
            outcome: "invalid_response",
        }
    }

    /// An error status: the vendor's message in the client's error, classified by the status
    /// the adapter mapped it to.
    pub async fn error_status(&self, mut exchange: Exchange) -> Attempt {
        let status = exchange.status();
        let retry_after = exchange.take_retry_after();
        let body = match exchange.read_all(MAX_ERROR_BYTES).await {
            Ok(body) => {
                self.gateway.transport.release(exchange);
                body
            }
            Err(_) => Bytes::new(),
        };
        let mut error =
            self.target
                .provider
                .adapter
                .decode_error(self.provider(), status, &body, retry_after);
        if let GatewayError::Upstream { message, .. } = &mut error {
            *message = scrub_secret(message, self.api_key);
        }
        let (fault, outcome) = classify::upstream_error(&error, self.policy, self.target.direct);
        Attempt::Failed {
            error,
            fault,
            outcome,
        }
    }

    pub async fn json(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        request: &ClientRequest,
        mut exchange: Exchange,
    ) -> pingora::Result<Attempt> {
        let latency = exchange.waited();
        let body = match exchange.read_all(MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(e) => return Ok(Attempt::transport_failure(self.provider(), e, self.policy)),
        };
        ctx.waited += exchange.waited() - latency;
        self.gateway.transport.release(exchange);
        // Native answers are passed on as they came: bytes that are not UTF-8 would reach the
        // client as an invalid JSON 200.
        if let Err(e) = std::str::from_utf8(&body) {
            return Ok(self.answer_failure(StreamFailure::Malformed(format!(
                "the answer is not valid UTF-8 (byte {})",
                e.valid_up_to()
            ))));
        }
        let adapter = &*self.target.provider.adapter;
        let decoded = match request {
            ClientRequest::Embeddings(embeddings) => {
                adapter.decode_embeddings(embeddings, &self.target.upstream_model, body)
            }
            _ => match &ctx.filters {
                // Filters that take the answer's bytes (the cache's fill) leave it undecoded.
                Some(active)
                    if active.set.reads_answers()
                        && answers_natively(adapter, request)
                        && active.set.takes_answer_bytes(&active.info) =>
                {
                    let answer = client_answer(adapter, body, request);
                    if let Ok(answer) = &answer {
                        active
                            .set
                            .answer_bytes(&active.info, &answer.body, answer.usage);
                    }
                    answer
                }
                Some(active) if active.set.reads_answers() => {
                    client_answer_with(adapter, body, request, &mut |response| {
                        for filter in active.set.iter() {
                            filter
                                .on_response(&active.info, response)
                                .map_err(crate::proxy::filtering::to_gateway_error)?;
                        }
                        Ok(())
                    })
                }
                _ => client_answer(adapter, body, request),
            },
        };
        let kept = request.responses();
        match decoded {
            Ok(answer) => self.answered(session, ctx, answer, latency, kept).await,
            Err(failure) => Ok(self.answer_failure(failure)),
        }
    }

    /// Sends a complete answer to the client, counted and priced; a Responses answer is
    /// stored first, so that a client continuing the conversation at once finds it.
    async fn answered(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        answer: RenderedAnswer,
        latency: Duration,
        kept: Option<&ResponsesRequest>,
    ) -> pingora::Result<Attempt> {
        finish_accounting(ctx, self.target, answer.usage);
        let used = answer.usage.map(|u| u.total());
        settle(ctx, used).await;
        // The answer reports its own price, OpenRouter-style, in either dialect.
        let body = match ctx.cost_usd {
            Some(cost) => with_usage_cost(&answer.body, cost)
                .map(Bytes::from)
                .unwrap_or(answer.body),
            None => answer.body,
        };
        if let Some(request) = kept {
            Box::pin(responses::keep(request, ctx.client_key.as_deref(), &body)).await;
        }
        respond::json(session, ctx, 200, body, None).await?;
        Ok(Attempt::Answered {
            healthy: true,
            latency: Some(latency),
        })
    }

    /// Embeddings sent as several requests (one per input, for vendors that take one), at most
    /// `parallel` at a time, and answered as one list in input order. The first part that fails
    /// fails the whole request as that part's own failure would (its status, fault and
    /// outcome); the parts still in flight are dropped.
    pub async fn embeddings_parts(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        request: &EmbeddingsRequest,
        upstream: &Upstream,
        parallel: usize,
        parts: Vec<UpstreamRequest>,
    ) -> pingora::Result<Attempt> {
        let started = Instant::now();
        // Futures made first and boxed: a stream that maps a borrowing closure makes the
        // request's future fail the `Send` check (a known limit of async fn type inference).
        let mut calls: Vec<PartFuture<'_>> = Vec::with_capacity(parts.len());
        for part in &parts {
            calls.push(Box::pin(self.part(upstream, part)));
        }
        let mut answers = futures_util::stream::iter(calls).buffered(parallel.max(1));
        let mut bodies = Vec::with_capacity(parts.len());
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(body) => bodies.push(body),
                Err(failed) => return Ok(failed),
            }
        }
        drop(answers);
        let latency = started.elapsed();
        ctx.waited += latency;
        let decoded = self.target.provider.adapter.decode_embeddings_parts(
            request,
            &self.target.upstream_model,
            &bodies,
        );
        match decoded {
            Ok(answer) => self.answered(session, ctx, answer, latency, None).await,
            Err(failure) => Ok(self.answer_failure(failure)),
        }
    }

    /// One part of a request sent in several: its body, or the failed attempt it makes.
    async fn part(&self, upstream: &Upstream, request: &UpstreamRequest) -> Result<Bytes, Attempt> {
        let transport = &self.gateway.transport;
        let mut exchange = Box::pin(transport.send(upstream, request, Instant::now()))
            .await
            .map_err(|e| Attempt::transport_failure(self.provider(), e, self.policy))?;
        if !(200..300).contains(&exchange.status()) {
            return Err(Box::pin(self.error_status(exchange)).await);
        }
        let body = exchange
            .read_all(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Attempt::transport_failure(self.provider(), e, self.policy))?;
        transport.release(exchange);
        Ok(body)
    }

    pub async fn stream(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
        request: &ClientRequest,
        mut exchange: Exchange,
    ) -> pingora::Result<Attempt> {
        let latency = Some(exchange.waited());
        let settings = StreamSettings {
            include_usage: request.include_usage(),
            price: self.target.price,
        };
        let adapter = &*self.target.provider.adapter;
        let mut decoder = match &ctx.filters {
            Some(active) if active.set.reads_answers() => client_stream_with(
                adapter,
                request,
                settings,
                active.set.stream_filters(&active.info),
            ),
            _ => client_stream(adapter, request, settings),
        };
        // Reused for every chunk and copied out at its exact size: each open stream keeps only
        // its largest translated chunk, not a fresh 4 KiB buffer per chunk.
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut started = false;
        loop {
            let waited_before = exchange.waited();
            let read = exchange.read_chunk().await;
            ctx.waited += exchange.waited() - waited_before;
            let (step, end) = match read {
                Ok(Some(chunk)) => (decoder.push(&chunk, &mut out), false),
                Ok(None) => (decoder.finish(&mut out), true),
                Err(e) if !started => {
                    return Ok(Attempt::transport_failure(self.provider(), e, self.policy))
                }
                Err(e) => {
                    let (error, _, _) = classify::transport_error(self.provider(), e, self.policy);
                    return broken(session, ctx, &mut *decoder, &error, latency).await;
                }
            };
            if let Err(failure) = step {
                if !started {
                    // Nothing reached the client yet, so another target can still answer.
                    return Ok(self.answer_failure(failure));
                }
                if !out.is_empty() {
                    session
                        .write_response_body(Bytes::copy_from_slice(&out), false)
                        .await?;
                }
                let error = self.stream_failure_error(failure);
                return broken(session, ctx, &mut *decoder, &error, latency).await;
            }
            if end {
                finish_accounting(ctx, self.target, decoder.usage());
                let used = ctx.usage.map(|u| u.total());
                settle(ctx, used).await;
                if let (Some(request), Some(body)) = (request.responses(), decoder.finished()) {
                    Box::pin(responses::keep(request, ctx.client_key.as_deref(), &body)).await;
                }
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
                session.write_response_body(data, end).await?;
            }
            if end {
                self.gateway.transport.release(exchange);
                return Ok(Attempt::Answered {
                    healthy: true,
                    latency,
                });
            }
        }
    }
}

/// Settles the request's admission with the tokens it used, storing its answer for the cache
/// at the same time when it has one. Neither waits for Redis's reply; a store waits until it
/// is written to Redis, so that an identical request sent on receiving the answer finds it on
/// any instance ([`caching::Keep::store_beside`]).
async fn settle(ctx: &mut RequestCtx, used: Option<u64>) {
    match caching::to_keep(ctx) {
        Some(keep) => {
            if let Some(written) = keep.store_beside(ctx, used) {
                // Closed unsent: the write failed, and the answer goes out uncached.
                let _ = written.await;
            }
        }
        None => ctx.settle_soon(used),
    }
}

/// Ends a stream that broke after it started with the dialect's error event (the decoder's,
/// when the dialect numbers its events).
async fn broken(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    decoder: &mut dyn StreamDecoder,
    error: &GatewayError,
    latency: Option<Duration>,
) -> pingora::Result<Attempt> {
    let mut ending = Vec::new();
    if decoder.fail(error, &mut ending) {
        ctx.error = Some(error.to_string());
        session
            .write_response_body(Bytes::from(ending), true)
            .await?;
    } else {
        Box::pin(respond::stream_error(session, ctx, error)).await?;
    }
    Ok(Attempt::Answered {
        healthy: false,
        latency,
    })
}
