//! A gateway binary of your own, with a filter written in Rust: requests that say
//! `x-tier: gold` go to the `premium` model, `x-tier: canned` ones are answered by the filter
//! itself (no vendor is asked), every vendor request carries the tier in an `x-tier` header,
//! and each finished request is logged with its cost.
//!
//! ```sh
//! cargo run --example custom_filter -- serve --config conf/switchyard.yaml
//! curl localhost:8080/v1/chat/completions -H 'x-tier: gold' \
//!   -d '{"model":"mock","messages":[{"role":"user","content":"hi"}]}'
//! ```
//!
//! The binary takes the same commands as `switchyard` (`serve`, `check`, `keys hash`); the
//! filter runs before the filters of the client's key and model from the config.

use http::{HeaderName, HeaderValue};
use switchyard::accounting::Usage;
use switchyard::chat;
use switchyard::filters::{
    record, AttemptRequest, Filter, FilterError, FilterRequest, LogSummary, RequestInfo, Verdict,
};
use switchyard::Gateway;

/// Routes gold-tier requests to a premium model and tags vendor requests with the tier.
struct TierRouting {
    premium_model: String,
}

const TIER: HeaderName = HeaderName::from_static("x-tier");

fn tier(info: &RequestInfo) -> &str {
    info.headers
        .get(&TIER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("standard")
}

#[async_trait::async_trait]
impl Filter for TierRouting {
    fn name(&self) -> &str {
        "tier_routing"
    }

    async fn on_request(&self, request: &mut FilterRequest) -> Result<Verdict, FilterError> {
        let tier = tier(&request.info).to_string();
        match tier.as_str() {
            "gold" => {
                request.set_model(self.premium_model.clone());
                record(self.name(), "route", &request.info.request_id);
            }
            "standard" => {}
            "canned" => {
                record(self.name(), "respond", &request.info.request_id);
                return Ok(Verdict::Respond(canned(request.model())));
            }
            other => {
                return Err(FilterError::denied(format!(
                    "unknown x-tier '{other}' (tiers: standard, gold, canned)"
                )))
            }
        }
        request
            .info
            .metadata
            .insert("tier".into(), serde_json::Value::String(tier));
        Ok(Verdict::Continue)
    }

    fn on_attempt(&self, attempt: &mut AttemptRequest<'_>) -> Result<(), FilterError> {
        let tier = attempt
            .info
            .metadata
            .get("tier")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("standard");
        // Tiers are two fixed words, so this cannot fail; a filter never panics on input.
        if let Ok(value) = HeaderValue::from_str(tier) {
            attempt.set_header(TIER, value);
        }
        Ok(())
    }

    fn on_log(&self, info: &RequestInfo, summary: &LogSummary<'_>) {
        log::info!(
            "tier {} request {} answered {} by {} for ${:.6}",
            tier(info),
            info.request_id,
            summary.status,
            summary.provider.unwrap_or("nobody"),
            summary.cost_usd.unwrap_or(0.0)
        );
    }
}

/// The answer a filter gives itself; the gateway renders it in the client's dialect, streamed
/// when the client asked for a stream.
fn canned(model: &str) -> chat::Response {
    chat::Response {
        id: "canned-1".into(),
        created: chat::now_unix(),
        model: model.to_string(),
        choices: vec![chat::Choice {
            content: Some("This answer never left the gateway.".into()),
            ..chat::Choice::default()
        }],
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: 7,
            ..Usage::default()
        },
    }
}

fn main() {
    Gateway::builder()
        .filter(TierRouting {
            premium_model: std::env::var("PREMIUM_MODEL").unwrap_or_else(|_| "premium".into()),
        })
        .run()
}
