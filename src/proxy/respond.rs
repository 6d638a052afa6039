//! Writing answers to the client: JSON, errors in the client's dialect, and SSE streams.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use super::ctx::RequestCtx;
use super::responses;
use crate::chat::{self, StreamSettings};
use crate::dialect::{ClientFormat, ClientRequest};
use crate::error::GatewayError;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_PROVIDER: HeaderName = HeaderName::from_static("x-switchyard-provider");
const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
const X_CACHE: HeaderName = HeaderName::from_static("x-switchyard-cache");
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
// Static values: a value made from a `&str` is copied into an allocation.
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Headers every answer carries: request id, answering provider, attempt count.
fn base_header(status: u16, ctx: &RequestCtx) -> pingora::Result<ResponseHeader> {
    base_parts(status, ctx).map(ResponseHeader::from)
}

/// [`base_header`]'s status and headers, for more to be added before it is made.
///
/// Built as `http` parts, not with `ResponseHeader::insert_header`: that turns every name back
/// into bytes and parses it again (~200 instructions a header, and an answer to a limited key
/// carries a dozen). Names go out in lower case (HTTP/1 names are case-insensitive, and
/// HTTP/2 and Envoy send them so), as from `ResponseHeader::build_no_case`: Pingora's
/// case-keeping map costs an allocation per header.
fn base_parts(status: u16, ctx: &RequestCtx) -> pingora::Result<http::response::Parts> {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = http::StatusCode::from_u16(status)
        .map_err(|_| pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "status"))?;
    let headers = &mut parts.headers;
    headers.reserve(12);
    headers.insert(X_REQUEST_ID, value(ctx.request_id.as_str())?);
    if let Some(provider) = &ctx.provider {
        headers.insert(X_PROVIDER, value(provider.as_str())?);
    }
    if ctx.attempts > 0 {
        headers.insert(X_ATTEMPTS, HeaderValue::from(ctx.attempts));
    }
    if let Some(limits) = &ctx.rate_headers {
        headers.extend(limits.pairs());
    }
    if let Some(cache) = ctx.cache.as_deref().filter(|_| status < 400) {
        headers.insert(X_CACHE, HeaderValue::from_static(cache.status.as_str()));
        if let Some(age) = cache.age_s {
            headers.insert(http::header::AGE, HeaderValue::from(age));
        }
    }
    Ok(parts)
}

fn value(text: &str) -> pingora::Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|_| {
        pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "invalid header value",
        )
    })
}

/// A complete JSON answer.
pub async fn json(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
    retry_after: Option<&str>,
) -> pingora::Result<()> {
    let mut parts = base_parts(status, ctx)?;
    let headers = &mut parts.headers;
    headers.insert(http::header::CONTENT_TYPE, APPLICATION_JSON);
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(after) = retry_after {
        headers.insert(http::header::RETRY_AFTER, value(after)?);
    }
    ctx.status = status;
    session
        .write_response_header(Box::new(ResponseHeader::from(parts)))
        .await?;
    ctx.first_byte_at
        .get_or_insert_with(std::time::Instant::now);
    session.write_response_body(body, true).await
}

/// An answer made by the gateway (a filter's, or the cache's), in the client's dialect:
/// streamed when it asked for a stream, and stored first when it is a Responses answer to
/// keep.
pub async fn answer(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
    answer: chat::Response,
) -> pingora::Result<()> {
    ctx.usage = Some(answer.usage);
    if !request.stream() {
        let body = request.response_body(&answer);
        if let Some(kept) = request.responses() {
            Box::pin(responses::keep(kept, ctx.client_key.as_deref(), &body)).await;
        }
        return json(session, ctx, 200, body, None).await;
    }
    let mut encoder = request.stream_encoder(StreamSettings {
        include_usage: request.include_usage(),
        price: None,
    });
    let mut out = Vec::new();
    answer.replay(&mut |event| encoder.encode(event, &mut out));
    if let (Some(kept), Some(body)) = (request.responses(), encoder.finished()) {
        Box::pin(responses::keep(kept, ctx.client_key.as_deref(), &body)).await;
    }
    start_stream(session, ctx).await?;
    ctx.first_byte_at = Some(std::time::Instant::now());
    session.write_response_body(Bytes::from(out), true).await
}

/// An error in the client's dialect.
pub async fn error(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    err: &GatewayError,
) -> pingora::Result<()> {
    ctx.error = Some(err.to_string());
    let (status, body) = ctx.dialect.error_body(err);
    json(session, ctx, status, body, err.retry_after()).await
}

/// Starts an SSE answer; the body follows with [`ServerSession::write_response_body`].
pub async fn start_stream(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    let mut resp = base_header(200, ctx)?;
    resp.insert_header(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    )?;
    resp.insert_header(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    )?;
    // Tells nginx-style proxies in front of the gateway not to buffer the stream either.
    resp.insert_header(X_ACCEL_BUFFERING, HeaderValue::from_static("no"))?;
    if !session.is_http2() {
        resp.insert_header(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        )?;
    }
    ctx.status = 200;
    session.write_response_header(Box::new(resp)).await
}

/// Ends a stream that failed after it started: an error event, then the end of the body.
pub async fn stream_error(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    err: &GatewayError,
) -> pingora::Result<()> {
    ctx.error = Some(err.to_string());
    session
        .write_response_body(ctx.dialect.stream_error_event(err), true)
        .await
}
