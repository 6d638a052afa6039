//! Sticky routing on the request path: which conversation a request belongs to, and the target
//! that conversation was last sent to, kept in the state backend (`store::AFFINITY`, so every
//! instance on one Redis agrees) for the model's `sticky.ttl_s` after its last request.
//!
//! A conversation is named by the client when it can be (`x-session-id`, or the body's
//! `session_id` / `prompt_cache_key`); else it is the system prompt and the first user message,
//! which every later turn of the conversation repeats.

use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::ctx::RequestCtx;
use crate::chat::Request;
use crate::dialect::ClientRequest;
use crate::observability::metrics::METRICS;
use crate::routing::sticky::{stick, target_id};
use crate::routing::{Route, Target};
use crate::store::AFFINITY;

const SESSION_HEADER: &str = "x-session-id";

/// Orders `targets` for the request's conversation when `route` is sticky, and remembers the
/// choice. A state backend that cannot be reached leaves the strategy's order as it was.
pub(super) async fn apply(
    ctx: &RequestCtx,
    headers: &HeaderMap,
    request: &ClientRequest,
    route: &Route,
    targets: &mut [&Target],
) {
    let Some(policy) = route.sticky else {
        return;
    };
    let Some(key) = conversation_key(headers, request, &route.public_name) else {
        return;
    };
    let remembered = match AFFINITY.get(&key, None).await {
        Ok(found) => found.and_then(|id| String::from_utf8(id.to_vec()).ok()),
        Err(e) => {
            log::warn!("sticky routing skipped: {e}");
            return;
        }
    };
    let result = stick(targets, remembered.as_deref());
    METRICS
        .sticky_routes_total
        .with_label_values(&[ctx.model_label.as_str(), result.as_str()])
        .inc();
    if let (true, Some(first)) = (result.remembers(), targets.first()) {
        let id = target_id(first);
        if let Err(e) = AFFINITY.put_for(&key, None, id.into(), policy.ttl).await {
            log::warn!("sticky routing not remembered: {e}");
        }
    }
}

/// The hex SHA-256 naming the request's conversation for `model`; `None` when the request has
/// nothing to tell it by (no session and no user message).
fn conversation_key(headers: &HeaderMap, request: &ClientRequest, model: &str) -> Option<String> {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    if let Some(session) = headers
        .get(SESSION_HEADER)
        .map(http::HeaderValue::as_bytes)
        .filter(|v| !v.is_empty())
    {
        hasher.update(b"header\0");
        hasher.update(session);
        return Some(hex::encode(hasher.finalize()));
    }
    let canonical = request.canonical().ok()?;
    if let Some(session) = named_session(&canonical) {
        hasher.update(b"body\0");
        hasher.update(session.as_bytes());
        return Some(hex::encode(hasher.finalize()));
    }
    hasher.update(b"prompt\0");
    for message in canonical
        .messages
        .iter()
        .filter(|m| matches!(&*m.role, "system" | "developer"))
    {
        hasher.update(message.text().as_bytes());
        hasher.update([0]);
    }
    let first_user = canonical.messages.iter().find(|m| m.role == "user")?;
    hasher.update(first_user.text().as_bytes());
    Some(hex::encode(hasher.finalize()))
}

/// A conversation the client named in the body.
fn named_session<'r>(request: &'r Request<'_>) -> Option<&'r str> {
    ["session_id", "prompt_cache_key"]
        .iter()
        .find_map(|field| request.rest.get(*field)?.as_str())
        .filter(|s| !s.is_empty())
}
