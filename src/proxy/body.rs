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
    TooLarge(GatewayError),
    /// The client went away or sent a broken body.
    Downstream(Box<pingora::Error>),
}

/// Reads the whole body, or answers the client itself: a 413 for more than `limit` bytes
/// (`None`), an error when the client went away or sent a broken body.
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
        Err(BodyError::Downstream(e)) => {
            ctx.status = 499;
            Err(e)
        }
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
        return Err(BodyError::TooLarge(GatewayError::BodyTooLarge { limit }));
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
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(BodyError::Downstream)?
    {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(GatewayError::BodyTooLarge { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
