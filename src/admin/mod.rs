//! The admin service on `server.admin_listen`: health, readiness, Prometheus metrics, reload and
//! the live routing table.
//!
//! `/admin/*` needs `Authorization: Bearer <auth.admin_token>` when a token is configured (the
//! token itself is hot-reloadable). Nothing here ever shows a key.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::accounting::round_usd;
use crate::limits::LIMITS;
use crate::observability::metrics::METRICS;
use crate::reload::Reloader;
use crate::routing::{Backend, RoutingTable, TableHandle};

pub struct AdminApp {
    table: TableHandle,
    reloader: Arc<Reloader>,
}

impl AdminApp {
    pub fn new(table: TableHandle, reloader: Arc<Reloader>) -> Self {
        AdminApp { table, reloader }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        format!("{body}\n").into_bytes(),
    )
}

fn json_reply(status: u16, body: &Value) -> Response<Vec<u8>> {
    reply(status, "application/json", body.to_string().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request may use `/admin/*`.
fn authorized(session: &ServerSession, table: &RoutingTable) -> bool {
    let Some(token) = &table.admin_token else {
        return true;
    };
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|presented| {
            constant_time_eq(presented.trim().as_bytes(), token.expose().as_bytes())
        })
}

/// The live table: every model, its targets and their health; providers and why some are off.
pub fn routes_json(table: &RoutingTable) -> Value {
    let models: Vec<Value> = table
        .routes()
        .map(|route| {
            let targets: Vec<Value> = route
                .targets
                .iter()
                .map(|t| {
                    json!({
                        "provider": t.provider.name,
                        "kind": t.provider.kind.as_str(),
                        "model": t.upstream_model,
                        "weight": t.weight,
                        "price": t.price.map(|p| json!({
                            "input_per_mtok": p.input_per_mtok,
                            "output_per_mtok": p.output_per_mtok,
                        })),
                        "healthy": t.health.is_healthy(),
                        "probe_healthy": t.health.probe_healthy(),
                        "breaker": t.health.state().as_str(),
                        "open_for_ms": t.health.open_for_ms(),
                        "latency_ms": t.health.latency_ms(),
                    })
                })
                .collect();
            json!({
                "model": route.public_name,
                "strategy": route.strategy.as_str(),
                "retry": {
                    "attempts": route.retry.attempts,
                    "backoff_ms": route.retry.backoff.as_millis() as u64,
                },
                "targets": targets,
            })
        })
        .collect();
    let mut providers: Vec<Value> = table
        .providers()
        .map(|p| {
            let base_url = match &p.backend {
                Backend::Http(http) => {
                    // A URL can carry credentials in its user-info part; never show them.
                    let mut url = http.config.base_url.clone();
                    if let Some(u) = url.as_mut() {
                        let _ = u.set_username("");
                        let _ = u.set_password(None);
                    }
                    url.map(|u| u.to_string())
                }
                Backend::Mock(_) => None,
            };
            json!({"name": p.name, "kind": p.kind.as_str(), "base_url": base_url, "enabled": true})
        })
        .collect();
    providers.extend(
        table
            .disabled_providers()
            .map(|(name, why)| json!({"name": name, "enabled": false, "reason": why})),
    );
    json!({
        "pid": std::process::id(),
        "generation": table.generation,
        "models": models,
        "providers": providers,
    })
}

/// Every client key: its models, limits, usage and what is left of its budget. Never a key or
/// a digest of one.
/// Sets `switchyard_key_budget_remaining_usd` of every key with a budget, as of now: read at
/// scrape time (one call per key to Redis when it holds the counters) rather than kept up to
/// date on the request path. A key whose spending cannot be read has no sample this scrape.
async fn publish_budgets(table: &RoutingTable) {
    let gauge = &METRICS.key_budget_remaining_usd;
    gauge.reset();
    METRICS.key_budget_usd.reset();
    for key in table.client_keys() {
        let Some(budget) = key.policy.budget else {
            continue;
        };
        METRICS
            .key_budget_usd
            .with_label_values(&[key.name.as_str(), budget.period.as_str()])
            .set(budget.amount_usd);
        if let Ok(usage) = LIMITS.usage(&key.policy).await {
            gauge
                .with_label_values(&[key.name.as_str(), budget.period.as_str()])
                .set(round_usd((budget.amount_usd - usage.spent_usd).max(0.0)));
        }
    }
}

pub async fn keys_json(table: &RoutingTable) -> Value {
    let mut keys = Vec::with_capacity(table.client_keys().len());
    for key in table.client_keys() {
        let p = &key.policy;
        let usage = if p.is_unlimited() {
            None
        } else {
            Some(LIMITS.usage(p).await)
        };
        let (usage, error) = match usage {
            None => (Value::Null, Value::Null),
            Some(Ok(mut u)) => {
                u.spent_usd = round_usd(u.spent_usd);
                (json!(u), Value::Null)
            }
            Some(Err(e)) => (Value::Null, json!(e)),
        };
        let remaining = |limit: Option<u64>, used: &str| match (limit, usage.get(used)) {
            (Some(l), Some(u)) => json!(l.saturating_sub(u.as_u64().unwrap_or(0))),
            _ => Value::Null,
        };
        let budget = p.budget.map(|b| {
            let spent = usage["spent_usd"].as_f64().unwrap_or(0.0);
            json!({"amount_usd": round_usd(b.amount_usd), "period": b.period.as_str(),
                   "spent_usd": round_usd(spent),
                   "remaining_usd": round_usd((b.amount_usd - spent).max(0.0))})
        });
        let model_limits: Vec<Value> = p
            .model_limits()
            .map(|(models, l)| {
                json!({"models": models, "rpm": l.rpm, "tpm": l.tpm, "max_concurrent": l.max_concurrent})
            })
            .collect();
        keys.push(json!({
            "name": key.name,
            "models": if key.model_patterns.is_empty() { json!("*") } else { json!(key.model_patterns) },
            "limits": {"rpm": p.limits.rpm, "tpm": p.limits.tpm, "max_concurrent": p.limits.max_concurrent},
            "model_limits": model_limits,
            "usage": usage,
            "remaining": {
                "requests_this_minute": remaining(p.limits.rpm, "requests_this_minute"),
                "tokens_this_minute": remaining(p.limits.tpm, "tokens_this_minute"),
            },
            "budget": budget,
            "error": error,
        }));
    }
    json!({"keys": keys})
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let table = self.table.load_full();
        if path.starts_with("/admin/") && !authorized(session, &table) {
            return json_reply(401, &json!({"error": "missing or wrong admin token"}));
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => text(200, "ok"),
            ("GET", "/readyz") => {
                if table.has_healthy_target() {
                    text(200, "ready")
                } else {
                    text(503, "no healthy target")
                }
            }
            ("GET", "/metrics") => {
                publish_budgets(&table).await;
                reply(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    METRICS.render(),
                )
            }
            ("POST", "/admin/reload") => {
                // Reading the file and compiling the table is short and bounded; it runs here
                // rather than on a blocking pool because nothing else waits on this thread.
                match self.reloader.reload("admin API") {
                    Ok(report) => json_reply(200, &json!({"status": "ok", "report": report})),
                    Err(reason) => json_reply(
                        400,
                        &json!({"status": "error", "error": reason, "serving_generation": table.generation}),
                    ),
                }
            }
            ("GET", "/admin/routes") => json_reply(200, &routes_json(&table)),
            ("GET", "/admin/keys") => json_reply(200, &keys_json(&table).await),
            (_, "/admin/reload" | "/admin/routes" | "/admin/keys") => {
                text(405, "method not allowed")
            }
            _ => text(404, "not found"),
        }
    }
}
