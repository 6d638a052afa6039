//! Per-request state, carried from answering the request to recording its metrics and log line.

use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::accounting::Usage;
use crate::dialect::Dialect;
use crate::limits::{Admission, KeyPolicy, LIMITS};
use crate::observability::metrics::UNKNOWN_LABEL;

pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    /// The API the client spoke: errors and answers are rendered in it.
    pub dialect: Dialect,
    /// Which endpoint handled the request (`chat`, `models`, ...), for the access log.
    pub endpoint: &'static str,
    /// The model string the client sent, for the access log.
    pub requested_model: Option<String>,
    /// A configured public model name or `unknown`: safe as a metric label.
    pub model_label: String,
    /// The provider that answered (or the last one tried).
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub attempts: u32,
    pub status: u16,
    pub stream: bool,
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
    pub first_byte_at: Option<Instant>,
    /// Time spent waiting on upstreams or on deliberate delays, excluded from overhead.
    pub waited: Duration,
    pub error: Option<String>,
    pub client_key: Option<String>,
    /// The client key's `x-ratelimit-*` values, sent with the answer.
    pub rate_headers: Option<crate::limits::RateHeaders>,
    /// The key's admission, settled just before the answer's last byte goes out (so a client
    /// that sends its next request on receiving it finds its budget already updated).
    pub settlement: Option<(Arc<KeyPolicy>, Admission)>,
    pub counted_inflight: bool,
    /// The request's filters, when any apply, for the phases after routing.
    pub filters: Option<Arc<super::filtering::ActiveFilters>>,
    /// What the answer cache does for the request, for a model with a cache.
    pub cache: Option<Box<super::caching::CacheState>>,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            request_id: String::new(),
            started: Instant::now(),
            dialect: Dialect::OpenAi,
            endpoint: "other",
            requested_model: None,
            model_label: UNKNOWN_LABEL.to_string(),
            provider: None,
            upstream_model: None,
            attempts: 0,
            status: 0,
            stream: false,
            usage: None,
            cost_usd: None,
            first_byte_at: None,
            waited: Duration::ZERO,
            error: None,
            client_key: None,
            rate_headers: None,
            settlement: None,
            counted_inflight: false,
            filters: None,
            cache: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// A request id: the client's `x-request-id` when it is sane, else 32 random hex digits.
pub fn request_id(client_supplied: Option<&str>) -> String {
    match client_supplied {
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.to_string()
        }
        _ => {
            // Not `format!("{:016x}{:016x}", ..)`: the formatting machinery cost 1.3k
            // instructions on every request.
            let random = fastrand::u128(..).to_be_bytes();
            let mut digits = [0u8; 32];
            // 16 bytes always fit in 32 hex digits, which are always UTF-8.
            let _ = hex::encode_to_slice(random, &mut digits);
            String::from_utf8_lossy(&digits).into_owned()
        }
    }
}

impl RequestCtx {
    /// Settles the client key's admission with the request's usage and cost, once. `used` is
    /// the tokens the request used, when known.
    pub async fn settle(&mut self, used: Option<u64>) {
        if let Some((policy, admission)) = self.settlement.take() {
            LIMITS.settle(&policy, admission, used, self.cost_usd).await;
        }
    }

    /// [`Self::settle`] without waiting for Redis's reply ([`crate::limits::Limiter::settle_soon`]):
    /// for an answer about to go out, whose next request from this client is counted after it
    /// all the same.
    pub fn settle_soon(&mut self, used: Option<u64>) {
        if let Some(settlement) = self.settlement.take() {
            LIMITS.settle_soon(Some(settlement), used, self.cost_usd, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        let made = request_id(None);
        assert_eq!(made.len(), 32);
        assert!(made
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(made, request_id(None));
        assert_eq!(request_id(Some("bad id with spaces")).len(), 32);
        assert_eq!(request_id(Some(&"x".repeat(200))).len(), 32);
    }
}
