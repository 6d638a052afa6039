//! Running a request's [`filters`](crate::filters): which apply (the gateway's own, the client
//! key's, the requested model's), their request phase before routing (and with it the answer
//! cache's decision, on the request as filters left it), and their log phase.

use std::sync::Arc;

use pingora::protocols::http::ServerSession;

use super::caching;
use super::ctx::RequestCtx;
use super::respond;
use crate::dialect::ClientRequest;
use crate::error::GatewayError;
use crate::filters::{FilterError, FilterRequest, FilterSet, LogSummary, RequestInfo, Verdict};
use crate::routing::{ClientKey, Route, RoutingTable};

/// The filters of one request and what they know of it, kept for the later phases.
pub struct ActiveFilters {
    pub set: FilterSet,
    pub info: RequestInfo,
}

/// The filters that apply: the gateway's own, then the key's, then the model's (`route`: a
/// configured model; direct `PROVIDER/MODEL` routes have none).
fn filters_for(global: &FilterSet, key: Option<&ClientKey>, route: Option<&Route>) -> FilterSet {
    let parts = [
        Some(global),
        key.map(|k| &k.filters),
        route.map(|r| &r.filters),
    ];
    if parts.iter().flatten().all(|set| set.is_empty()) {
        return FilterSet::default();
    }
    FilterSet::new(
        parts
            .into_iter()
            .flatten()
            .flat_map(|set| set.iter().cloned())
            .collect(),
    )
}

pub(super) fn to_gateway_error(error: FilterError) -> GatewayError {
    GatewayError::Filtered {
        status: error.status,
        message: error.message,
        code: error.code,
    }
}

/// Runs the request phase of the request's filters, then decides what the answer cache does
/// for the request as filters left it: the request to route (the client's, or the one filters
/// rewrote), or `None` when a filter answered or refused and the client has its answer. With
/// no filters and no cache, the request goes on untouched.
#[allow(clippy::too_many_arguments)]
pub(super) async fn on_request(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    global: &FilterSet,
    table: &RoutingTable,
    key: Option<&ClientKey>,
    request: ClientRequest,
    estimate: u64,
) -> pingora::Result<Option<ClientRequest>> {
    if matches!(request, ClientRequest::Embeddings(_)) {
        return Ok(Some(request));
    }
    // One lookup of the requested model for its filters and its cache.
    let route = table.configured(request.model());
    let set = filters_for(global, key, route);
    if set.is_empty() && route.and_then(|r| r.cache).is_none() {
        return Ok(Some(request));
    }
    let info = RequestInfo {
        request_id: ctx.request_id.clone(),
        key: key.map(|k| k.name.clone()),
        dialect: request.dialect(),
        headers: session.req_header().headers.clone(),
        metadata: serde_json::Map::new(),
    };
    let mut filtered = FilterRequest::new(info, request, estimate);
    for filter in set.iter() {
        match filter.on_request(&mut filtered).await {
            Ok(Verdict::Continue) => {}
            Ok(Verdict::Respond(answer)) => {
                log::info!(
                    "filter '{}' answered request {}",
                    filter.name(),
                    ctx.request_id
                );
                let request = filtered.into_request();
                respond::answer(session, ctx, &request, answer).await?;
                return Ok(None);
            }
            Err(error) => {
                log::info!(
                    "filter '{}' refused request {}: {error}",
                    filter.name(),
                    ctx.request_id
                );
                respond::error(session, ctx, &to_gateway_error(error)).await?;
                return Ok(None);
            }
        }
    }
    let mut set = set;
    // Filters may have chosen another model: its cache policy is the one that applies.
    let policy = match route {
        Some(r) if r.public_name == filtered.model() => r.cache,
        _ => table.configured(filtered.model()).and_then(|r| r.cache),
    };
    if let Some(policy) = policy {
        let model = filtered.model().to_string();
        ctx.model_label = table.model_label(&model);
        let directives = caching::directives(&filtered.info.headers);
        if !caching::bypassed(ctx, policy, directives) {
            let key = filtered.info.key.clone();
            // Keyed on the request as it will be sent, read in canonical form (not edited:
            // a vendor of the client's dialect still gets the client's bytes).
            let fill = match filtered.canonical() {
                Ok(request) => {
                    caching::prepare(ctx, policy, directives, key.as_deref(), &model, &request)
                }
                Err(err) => {
                    respond::error(session, ctx, &err).await?;
                    return Ok(None);
                }
            };
            if let Some(fill) = fill {
                // Last: it keeps the answer as the client got it, after the other filters.
                set = set.with(fill);
            }
        }
    }
    let (info, request) = filtered.into_parts();
    if !set.is_empty() {
        ctx.filters = Some(Arc::new(ActiveFilters { set, info }));
    }
    Ok(Some(request))
}

/// The log phase of the request's filters.
pub(super) fn on_log(ctx: &RequestCtx, status: u16) {
    let Some(active) = &ctx.filters else {
        return;
    };
    let summary = LogSummary {
        status,
        model: ctx.requested_model.as_deref(),
        provider: ctx.provider.as_deref(),
        usage: ctx.usage,
        cost_usd: ctx.cost_usd,
        duration: ctx.started.elapsed(),
        time_to_first_byte: ctx.first_byte_at.map(|t| t.duration_since(ctx.started)),
        attempts: ctx.attempts,
        error: ctx.error.as_deref(),
    };
    for filter in active.set.iter() {
        filter.on_log(&active.info, &summary);
    }
}
