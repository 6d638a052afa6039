//! Reading the client's request body, bounded and with `Expect: 100-continue` answered.

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession;

use super::ctx::RequestCtx;
use super::respond;
use crate::error::GatewayError;

/// How much of a refused body is read and discarded so that the client sees the 413.
const DRAIN_LIMIT_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

enum BodyError {
    /// Refused: the body is larger than the limit (the rest of it was not read).
    TooLarge(Box<GatewayError>),
    /// Its framing is broken (a bad chunk size, a missing CRLF): where the next request would
    /// start is unknown.
    Malformed(Box<GatewayError>),
    /// Read whole, but not UTF-8; the connection can carry the next request.
    Invalid(Box<GatewayError>),
    /// The client went away.
    Downstream(Box<pingora::Error>),
}

/// Reads the whole body, or answers the client itself (`None`): a 413 for more than `limit`
/// bytes, a 400 for a broken framing or bytes that are not UTF-8 (every body here is JSON,
/// which RFC 8259 says is UTF-8, and vendors that pass bodies through must not get anything
/// else). An error when the client went away.
pub async fn read_or_refuse(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    limit: usize,
) -> pingora::Result<Option<Bytes>> {
    match read_body(session, limit).await {
        Ok(body) => Ok(Some(body)),
        Err(BodyError::TooLarge(err)) => {
            // The connection cannot carry another request after a partly read body.
            session.set_keepalive(None);
            respond::error(session, ctx, &err).await?;
            discard_rest(session).await;
            Ok(None)
        }
        Err(BodyError::Invalid(err)) => {
            respond::error(session, ctx, &err).await?;
            Ok(None)
        }
        Err(BodyError::Malformed(err)) => {
            session.set_keepalive(None);
            respond::error(session, ctx, &err).await?;
            Ok(None)
        }
        Err(BodyError::Downstream(e)) => {
            ctx.status = 499;
            Err(e)
        }
    }
}

/// Sorts a failed body read: the client's connection ending or failing, or a body whose framing
/// is broken (Pingora's `InvalidChunk`, `InvalidTrailerEnd` and the like), which is the client's
/// 400 and not the gateway's 500.
fn body_read_error(e: Box<pingora::Error>) -> BodyError {
    use pingora::ErrorType::{
        ConnectionClosed, ReadError, ReadTimedout, WriteError, WriteTimedout,
    };
    match e.etype() {
        ConnectionClosed | ReadError | ReadTimedout | WriteError | WriteTimedout => {
            BodyError::Downstream(e)
        }
        framing => BodyError::Malformed(Box::new(GatewayError::invalid(
            format!(
                "the request body's framing is malformed ({})",
                framing.as_str()
            ),
            None,
        ))),
    }
}

fn utf8_or_refuse(body: Bytes) -> Result<Bytes, BodyError> {
    match std::str::from_utf8(&body) {
        Ok(_) => Ok(body),
        Err(e) => Err(BodyError::Invalid(Box::new(GatewayError::invalid(
            format!(
                "the request body is not valid UTF-8 (byte {})",
                e.valid_up_to()
            ),
            None,
        )))),
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(session: &mut ServerSession, limit: usize) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(BodyError::TooLarge(Box::new(GatewayError::BodyTooLarge {
            limit,
        })));
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        // Without this, curl and others wait a second before sending large bodies.
        session
            .write_continue_response()
            .await
            .map_err(BodyError::Downstream)?;
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = session.read_request_body().await.map_err(body_read_error)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(Box::new(GatewayError::BodyTooLarge {
                limit,
            })));
        }
        body.extend_from_slice(&chunk);
    }
    utf8_or_refuse(body.freeze())
}

/// After refusing a body, reads and discards what the client is still sending (bounded in bytes
/// and time). Closing at once would reset the connection under a client that is still writing,
/// and it would never read the 413. A client that sent `Expect: 100-continue` sends no body.
async fn discard_rest(session: &mut ServerSession) {
    let expects_continue = session
        .req_header()
        .headers
        .contains_key(http::header::EXPECT);
    if expects_continue {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut drained = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            drained += chunk.len();
            if drained > DRAIN_LIMIT_BYTES {
                break;
            }
        }
    })
    .await;
}
