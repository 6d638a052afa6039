//! `POST /v1/messages/count_tokens` (Anthropic dialect): the input tokens a Messages request
//! would use. Claude Code calls it to manage its context window. The count is estimated from
//! the request (no upstream call), so it works for every target kind; Anthropic's own count can
//! differ by some percent.

use pingora::proxy::Session;
use serde_json::json;

use super::body::{discard_rest, read_body, BodyError};
use super::ctx::RequestCtx;
use super::respond;
use crate::dialect::anthropic::MessagesRequest;
use crate::error::GatewayError;
use crate::routing::{ClientKey, RoutingTable};

pub(super) async fn handle(
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    client_key: Option<&ClientKey>,
) -> pingora::Result<()> {
    let body = match read_body(session, table.max_body_bytes).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(err)) => {
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
    let counted =
        MessagesRequest::parse_count(body, &session.req_header().headers).and_then(|request| {
            if let Some(key) = client_key.filter(|k| !k.allows(&request.model)) {
                return Err(GatewayError::ModelNotAllowed {
                    key: key.name.clone(),
                    model: request.model.clone(),
                });
            }
            // The model must exist, as for a real request.
            table.resolve(&request.model)?;
            ctx.requested_model = Some(request.model.clone());
            request.estimate_input_tokens()
        });
    match counted {
        Ok(tokens) => {
            let body = json!({ "input_tokens": tokens }).to_string();
            respond::json(session, ctx, 200, body.into(), None).await
        }
        Err(err) => respond::error(session, ctx, &err).await,
    }
}
