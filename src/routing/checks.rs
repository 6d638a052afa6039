//! Active health checks: a Pingora background service that probes each provider on its
//! `health_check.interval_s` and keeps `switchyard_target_healthy` current.
//!
//! A probe is the provider's cheapest authenticated `GET` (its models list). Any answer below 500
//! means "up", except 400/401/403, which mean the gateway's key (Gemini answers a bad key with 400)
//! or request is refused and every request would fail too. 429 counts as up: the breaker, not the probe, handles rate limits. The verdict is
//! shared by all targets of the provider through the [`HealthRegistry`](super::health::HealthRegistry),
//! so it survives reloads. Probes run concurrently and never on the request path.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use std::sync::Arc;

use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::{Backend, TableHandle, HEALTH};
use crate::observability::metrics::METRICS;
use crate::providers::AttemptTarget;
use crate::transport::{Transport, Upstream};

/// How often the service wakes to see which providers are due.
const TICK: Duration = Duration::from_millis(500);
/// Longest a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Records a provider's probe verdict, logging changes.
fn mark(provider: &str, healthy: bool, why: &str) {
    let was = HEALTH.provider(provider).swap(healthy, Ordering::AcqRel);
    if was != healthy {
        log::warn!(
            "provider '{provider}' is now {} ({why})",
            if healthy { "healthy" } else { "unhealthy" }
        );
    }
}

pub struct HealthChecker {
    table: TableHandle,
    /// The gateway's own pool: a probe that succeeds leaves a warm connection for requests.
    transport: Arc<Transport>,
}

impl HealthChecker {
    pub fn new(table: TableHandle, transport: Arc<Transport>) -> Self {
        HealthChecker { table, transport }
    }

    /// Probes every provider that is due; returns when all probes finished.
    async fn probe_due(&self, next_due: &mut HashMap<String, Instant>) {
        let table = self.table.load_full();
        let now = Instant::now();
        let mut probes = Vec::new();
        for provider in table.providers() {
            let Backend::Http(http) = &provider.backend else {
                continue;
            };
            let Some(interval) = http.config.health_check_interval else {
                continue;
            };
            if next_due.get(&provider.name).is_some_and(|due| now < *due) {
                continue;
            }
            next_due.insert(provider.name.clone(), now + interval);
            let transport = &self.transport;
            probes.push(async move {
                // Credentials that expire are renewed here too, in the background, so requests
                // rarely wait for them; a bearer token (Vertex AI) is the probe's key.
                let token = match provider.adapter.renewable() {
                    Some(credentials) => match credentials.renew(transport).await {
                        Ok(token) => token,
                        Err(e) => {
                            mark(&provider.name, false, &format!("no credentials: {e}"));
                            return;
                        }
                    },
                    None => None,
                };
                let target = AttemptTarget {
                    upstream_model: "",
                    endpoint: &http.upstream.endpoint,
                    api_key: token.as_ref().or(http.api_key()),
                    extra_headers: &http.config.headers,
                };
                let Some(request) = provider.adapter.probe_request(&target) else {
                    return;
                };
                let elsewhere = request
                    .endpoint
                    .clone()
                    .map(|ep| Upstream::new(ep, http.upstream.timeouts));
                let upstream = elsewhere.as_ref().unwrap_or(&http.upstream);
                let verdict = transport.probe(upstream, &request, PROBE_TIMEOUT).await;
                let healthy = matches!(verdict, Ok(status) if status < 500 && !matches!(status, 400 | 401 | 403));
                let why = match &verdict {
                    Ok(status) => format!("probe answered HTTP {status}"),
                    Err(e) => format!("probe: {e}"),
                };
                mark(&provider.name, healthy, &why);
            });
        }
        futures_util::future::join_all(probes).await;
        // Forget providers that are gone, so a re-added one is probed at once.
        next_due.retain(|name, _| table.providers().any(|p| p.name == *name));
    }

    /// Publishes the health of every configured target, and drops the series of targets a
    /// reload removed (`published` is what the last call published).
    fn publish(&self, published: &mut HashSet<[String; 3]>) {
        let table = self.table.load();
        let mut now = HashSet::new();
        for route in table.routes() {
            for target in &route.targets {
                let labels = [
                    target.provider.name.clone(),
                    route.public_name.clone(),
                    target.upstream_model.clone(),
                ];
                METRICS
                    .target_healthy
                    .with_label_values(&labels.each_ref().map(String::as_str))
                    .set(i64::from(target.health.is_healthy()));
                now.insert(labels);
            }
        }
        for labels in published.difference(&now) {
            let _ = METRICS
                .target_healthy
                .remove_label_values(&labels.each_ref().map(String::as_str));
        }
        *published = now;
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut next_due = HashMap::new();
        let mut published = HashSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    self.probe_due(&mut next_due).await;
                    self.publish(&mut published);
                }
            }
        }
    }
}
