//! The answer cache on the request path: deciding whether a request may use it (after its
//! filters, on the request as it will be sent), looking its answer up beside admission, serving
//! a hit, and writing a complete answer to the store before its last byte goes out.
//!
//! A hit is admitted like any request (the key's models, its request rate and concurrency) but
//! settles as zero tokens and $0: it costs the key nothing of its token limits or budget.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use tokio::sync::oneshot;

use super::ctx::RequestCtx;
use super::respond;
use crate::cache::{
    self, fingerprint, CacheFill, CachedAnswer, Captured, Directives, Entry, Served,
};
use crate::chat;
use crate::config::{CachePolicy, CacheScope};
use crate::dialect::ClientRequest;
use crate::filters::Filter;
use crate::limits::{RiderThen, LIMITS};
use crate::observability::metrics::METRICS;
use crate::store::{Lookup, StoreError, Write, ANSWERS};

/// What the cache does for one request (`x-switchyard-cache` on the answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// A request's use of the cache.
pub struct CacheState {
    pub status: CacheStatus,
    /// Seconds since a hit's answer was stored (`age` on the answer).
    pub age_s: Option<u64>,
    /// `None` when bypassed.
    key: Option<fingerprint::Key>,
    /// Whether a stored answer may serve this request (not with `no-cache`).
    read: bool,
    /// The oldest a stored answer may be to serve it (`max-age`).
    max_age_s: Option<u64>,
    /// How long its answer is kept.
    ttl: Duration,
    /// Where the answer lands for [`to_keep`]; `None` when it is not to be stored.
    captured: Option<Captured>,
}

/// What the client's `Cache-Control` asks of the cache.
pub(super) fn directives(headers: &http::HeaderMap) -> Directives {
    Directives::parse(
        headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .map(http::HeaderValue::as_bytes),
    )
}

/// Whether the request may use the cache at all; when not, `ctx.cache` says `bypass`.
pub(super) fn bypassed(ctx: &mut RequestCtx, policy: CachePolicy, directives: Directives) -> bool {
    let ttl = cache::ttl(policy.ttl, directives);
    if !(directives.no_store || ttl.is_zero()) {
        return false;
    }
    bypass(ctx, ttl);
    true
}

fn bypass(ctx: &mut RequestCtx, ttl: Duration) {
    METRICS
        .cache_lookups_total
        .with_label_values(&[ctx.model_label.as_str(), "bypass"])
        .inc();
    ctx.cache = Some(Box::new(CacheState {
        status: CacheStatus::Bypass,
        age_s: None,
        key: None,
        read: false,
        max_age_s: None,
        ttl,
        captured: None,
    }));
}

/// Decides what the cache does for `request` (canonical, as it will be sent) of public model
/// `model`, for client key `key`. Returns the filter that captures the answer when it is to be
/// stored; records the decision in `ctx.cache`.
pub(super) fn prepare(
    ctx: &mut RequestCtx,
    policy: CachePolicy,
    directives: Directives,
    key: Option<&str>,
    model: &str,
    request: &chat::Request<'_>,
) -> Option<Arc<dyn Filter>> {
    let ttl = cache::ttl(policy.ttl, directives);
    let sampled = request.temperature.is_some_and(|t| t > 0.0);
    if sampled && !policy.sampled {
        bypass(ctx, ttl);
        return None;
    }
    let scope = match policy.scope {
        CacheScope::Key => key,
        CacheScope::Shared => None,
    };
    let captured = Captured::default();
    ctx.cache = Some(Box::new(CacheState {
        status: CacheStatus::Miss,
        age_s: None,
        key: Some(fingerprint::key(request, model, scope)),
        read: !directives.no_cache,
        max_age_s: directives.max_age,
        ttl,
        captured: Some(captured.clone()),
    }));
    Some(Arc::new(CacheFill::new(captured)))
}

/// The key to look up and the oldest answer that will do, when the request reads the cache.
pub(super) fn lookup_of(ctx: &RequestCtx) -> Option<(fingerprint::Key, Option<u64>)> {
    ctx.cache
        .as_ref()
        .filter(|c| c.read && c.status == CacheStatus::Miss)
        .and_then(|c| Some((c.key?, c.max_age_s)))
}

/// Begins looking `key` up: on Redis, a read that admission takes along in its write.
pub(super) fn begin_lookup(key: fingerprint::Key) -> Lookup<'static> {
    ANSWERS.lookup(key.as_str(), None)
}

/// A cache hit, ready to serve.
pub(super) struct Hit {
    age_s: u64,
    cost_usd: Option<f64>,
    served: Served,
}

/// The answer a lookup of `key` found for `request`, if one young enough is there. A cache that
/// cannot be read, or an entry that does not decode, is a miss, not a failed request.
pub(super) fn found(
    key: fingerprint::Key,
    lookup: Result<Option<Bytes>, StoreError>,
    max_age_s: Option<u64>,
    request: &ClientRequest,
) -> Option<Hit> {
    let stored = match lookup {
        Ok(stored) => stored?,
        Err(e) => {
            log::warn!("answer cache not read: {e}");
            return None;
        }
    };
    let Some(answer) = CachedAnswer::decode(&stored) else {
        log::debug!("answer cache entry {key} does not decode; treated as absent");
        return None;
    };
    let age_s = answer.age_s();
    if max_age_s.is_some_and(|max| age_s > max) {
        return None;
    }
    let cost_usd = answer.cost_usd;
    let Some(served) = answer.serve(request.dialect(), request.stream()) else {
        log::debug!("answer cache entry {key} does not decode for this client; treated as absent");
        return None;
    };
    Some(Hit {
        age_s,
        cost_usd,
        served,
    })
}

/// Counts a lookup's result.
pub(super) fn record_lookup(ctx: &RequestCtx, hit: bool) {
    METRICS
        .cache_lookups_total
        .with_label_values(&[ctx.model_label.as_str(), if hit { "hit" } else { "miss" }])
        .inc();
}

/// Answers from the cache, in the client's dialect, whole or streamed.
pub(super) async fn serve_hit(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    request: &ClientRequest,
    hit: Hit,
) -> pingora::Result<()> {
    if let Some(state) = ctx.cache.as_mut() {
        state.status = CacheStatus::Hit;
        state.age_s = Some(hit.age_s);
        // Served: nothing to store.
        state.captured = None;
    }
    if let Some(saved) = hit.cost_usd {
        METRICS
            .cache_saved_usd_total
            .with_label_values(&[ctx.model_label.as_str()])
            .inc_by(saved);
    }
    ctx.cost_usd = Some(0.0);
    match hit.served {
        Served::Bytes { body, usage } => {
            ctx.usage = usage;
            respond::json(session, ctx, 200, body, None).await
        }
        Served::Canonical(response) => respond::answer(session, ctx, request, response).await,
    }
}

/// An answer to store, taken off the request so that storing it can run beside settling.
pub(super) struct Keep {
    key: fingerprint::Key,
    entry: Entry,
    ttl: Duration,
    model: String,
}

/// The answer the request's [`CacheFill`] captured, priced as the vendor's answer was; `None`
/// when there is nothing to store.
pub(super) fn to_keep(ctx: &RequestCtx) -> Option<Keep> {
    let state = ctx.cache.as_ref()?;
    let answer = cache::take(state.captured.as_ref()?)?;
    Some(Keep {
        key: state.key?,
        entry: CachedAnswer::new(answer, ctx.cost_usd).encode()?,
        ttl: state.ttl,
        model: ctx.model_label.clone(),
    })
}

impl Keep {
    /// Stores the answer beside the settlement's increments: one write for both when both are
    /// in Redis. In Redis, returns what is told once that write is on Redis's connection: the
    /// caller awaits it before the answer's last byte goes out, so that an identical request
    /// sent on receiving the answer finds it on any instance. Nobody waits for the reply: the
    /// connection's task reads it, as for a settlement alone ([`RequestCtx::settle_soon`]).
    /// Waiting for it as well cost ~3 µs of CPU per request in the load bench, the request's
    /// task sleeping through a round trip.
    pub(super) fn store_beside(
        self,
        ctx: &mut RequestCtx,
        used: Option<u64>,
    ) -> Option<oneshot::Receiver<()>> {
        let size = self.entry.size() as u64;
        let Entry { head, body } = self.entry;
        let settlement = ctx.settlement.take();
        let mut rider = match ANSWERS.write(self.key.as_str(), None, &head, body, self.ttl) {
            Write::Done => {
                stored(&self.model, size);
                LIMITS.settle_soon(settlement, used, ctx.cost_usd, None);
                return None;
            }
            Write::Riding(rider) => rider,
        };
        let written = rider.written();
        let model = self.model;
        let then: RiderThen = Box::new(move |reply| match reply {
            Ok(_) => stored(&model, size),
            Err(e) => log::warn!("answer not cached: {e}"),
        });
        LIMITS.settle_soon(settlement, used, ctx.cost_usd, Some((rider, then)));
        Some(written)
    }
}

fn stored(model: &str, size: u64) {
    METRICS
        .cache_stored_bytes_total
        .with_label_values(&[model])
        .inc_by(size);
}
