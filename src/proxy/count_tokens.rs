//! `POST /v1/messages/count_tokens` (Anthropic dialect): the input tokens a Messages request
//! would use. Claude Code calls it to manage its context window.
//!
//! The model's first target whose vendor can count (Anthropic) is asked, with the client's body
//! but for `model`; otherwise, or when that upstream fails, the count is estimated from the
//! request (about four characters per token), so it works for every target kind.

use std::time::Instant;

use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use super::admission::admit;
use super::body::read_or_refuse;
use super::ctx::RequestCtx;
use super::{respond, Gateway};
use crate::dialect::anthropic::MessagesRequest;
use crate::providers::AttemptTarget;
use crate::routing::{strategy, Backend, ClientKey, Route, RoutingTable};

/// Largest count answer read from an upstream (it is a few bytes).
const MAX_COUNT_BYTES: usize = 64 * 1024;

pub(super) async fn handle(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    client_key: Option<&ClientKey>,
) -> pingora::Result<()> {
    let Some(body) = read_or_refuse(session, ctx, table.max_body_bytes).await? else {
        return Ok(());
    };
    let planned = MessagesRequest::parse_count(body, &session.req_header().headers)
        // The model must exist, as for a real request.
        .and_then(|request| Ok((table.resolve(&request.model)?, request)));
    let (route, request) = match planned {
        Ok(planned) => planned,
        Err(err) => return respond::error(session, ctx, &err).await,
    };
    ctx.requested_model = Some(request.model.clone());
    ctx.model_label = table.model_label(&request.model);
    // Counted like any request of the key (its rate and concurrency); it uses no tokens.
    if let Err(err) = admit(
        ctx,
        client_key,
        std::iter::once(request.model.as_str()),
        0,
        None,
    )
    .await
    {
        return respond::error(session, ctx, &err).await;
    }
    let answered = answer(gateway, session, ctx, &route, &request).await;
    Box::pin(ctx.settle(Some(0))).await;
    answered
}

/// The count, from the model's first target that can count, else estimated.
async fn answer(
    gateway: &Gateway,
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    route: &Route,
    request: &MessagesRequest,
) -> pingora::Result<()> {
    let counter = strategy::order(route, None).into_iter().find_map(|target| {
        let Backend::Http(http) = &target.provider.backend else {
            return None;
        };
        let upstream_request = target.provider.adapter.count_tokens_request(
            request,
            &AttemptTarget {
                upstream_model: &target.upstream_model,
                endpoint: &http.upstream.endpoint,
                api_key: http.api_key(),
                extra_headers: &http.config.headers,
            },
        )?;
        Some((target, http, upstream_request))
    });
    if let Some((target, http, upstream_request)) = counter {
        let provider = target.provider.name.as_str();
        match upstream_count(gateway, &http.upstream, &upstream_request).await {
            Ok(body) => {
                ctx.provider = Some(provider.to_string());
                ctx.upstream_model = Some(target.upstream_model.clone());
                return respond::json(session, ctx, 200, body, None).await;
            }
            Err(why) => log::warn!(
                "provider '{provider}' could not count tokens ({why}); sending an estimate"
            ),
        }
    }
    match request.estimate_input_tokens() {
        Ok(tokens) => {
            let body = json!({ "input_tokens": tokens }).to_string();
            respond::json(session, ctx, 200, body.into(), None).await
        }
        Err(err) => respond::error(session, ctx, &err).await,
    }
}

/// The upstream's count answer, when it gave one.
async fn upstream_count(
    gateway: &Gateway,
    upstream: &crate::transport::Upstream,
    request: &crate::providers::UpstreamRequest,
) -> Result<Bytes, String> {
    let mut exchange = gateway
        .transport
        .send(upstream, request, Instant::now())
        .await
        .map_err(|e| e.to_string())?;
    let status = exchange.status();
    let body = exchange
        .read_all(MAX_COUNT_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    gateway.transport.release(exchange);
    let counted = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v["input_tokens"].is_u64());
    if status == 200 && counted {
        Ok(body)
    } else {
        Err(format!("HTTP {status}"))
    }
}
