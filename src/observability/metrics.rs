//! Prometheus metrics, named as the README's "Metrics" paragraph lists them.
//!
//! All metrics live in one process-wide [`Metrics`] registry created on first use. Label values
//! are bounded: configured model and provider names, status codes, outcome words. A model name the
//! client invented never becomes a label (see the routing table's `model_label`).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::LazyLock;

/// Buckets from 1 ms to 5 min: LLM calls span four orders of magnitude.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Gateway overhead is measured in microseconds.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];

pub struct Metrics {
    pub registry: Registry,
    /// Name, help and type of every metric, so that families without samples yet still appear.
    families: Vec<(String, String, &'static str)>,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub time_to_first_token_seconds: HistogramVec,
    pub gateway_overhead_seconds: HistogramVec,
    pub upstream_attempts_total: IntCounterVec,
    pub fallbacks_total: IntCounterVec,
    pub tokens_total: IntCounterVec,
    pub cost_usd_total: prometheus::CounterVec,
    pub target_healthy: IntGaugeVec,
    pub inflight_requests: IntGauge,
    pub config_reloads_total: IntCounterVec,
    pub rate_limited_total: IntCounterVec,
    /// Failed calls to the limits backend (Redis), by the policy that decided the request.
    pub state_errors_total: IntCounterVec,
    /// What filters did (`deny`, `rewrite`, `route`, `redact`, `respond`, `allow`, `error`).
    pub filter_actions_total: IntCounterVec,
    /// Per client key (configured names only): requests, tokens, cost, budget left.
    pub key_requests_total: IntCounterVec,
    pub key_tokens_total: IntCounterVec,
    pub key_cost_usd_total: prometheus::CounterVec,
    pub key_budget_remaining_usd: prometheus::GaugeVec,
    pub key_budget_usd: prometheus::GaugeVec,
    /// Answer cache lookups by result (`hit`, `miss`, `bypass`), bytes stored, and the USD
    /// the hits did not spend.
    pub cache_lookups_total: IntCounterVec,
    pub cache_stored_bytes_total: IntCounterVec,
    pub cache_saved_usd_total: prometheus::CounterVec,
    /// Hedged requests by what became of them (`won`, `lost`, `skipped`: over the budget).
    pub hedges_total: IntCounterVec,
    /// Sticky routing decisions (`kept`: the conversation's target; `assigned`: a new one;
    /// `moved`: its target was unhealthy).
    pub sticky_routes_total: IntCounterVec,
    /// Always 1; its labels say which build runs.
    pub build_info: IntGaugeVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The label used for requests whose model did not resolve to anything configured.
pub const UNKNOWN_LABEL: &str = "unknown";

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // Registration only fails on duplicate or malformed names, which are constants here.
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique constants");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    labels,
                )
                .expect("valid metric"),
            )
        };
        let metrics = Metrics {
            families: Vec::new(),
            requests_total: counter(
                "switchyard_requests_total",
                "Model requests answered, by public model, answering provider, HTTP status and client dialect.",
                &["model", "provider", "status", "dialect"],
            ),
            request_duration_seconds: histogram(
                "switchyard_request_duration_seconds",
                "Time from request start to the last byte of the answer.",
                &["model", "provider"],
                DURATION_BUCKETS,
            ),
            time_to_first_token_seconds: histogram(
                "switchyard_time_to_first_token_seconds",
                "Time from request start to the first byte of the answer body sent to the client.",
                &["model", "provider"],
                DURATION_BUCKETS,
            ),
            gateway_overhead_seconds: histogram(
                "switchyard_gateway_overhead_seconds",
                "Time spent inside Switchyard itself, excluding waiting on upstreams.",
                &["dialect"],
                OVERHEAD_BUCKETS,
            ),
            upstream_attempts_total: counter(
                "switchyard_upstream_attempts_total",
                "Attempts sent to upstream providers, by outcome.",
                &["provider", "outcome"],
            ),
            fallbacks_total: counter(
                "switchyard_fallbacks_total",
                "Requests that moved on to another target after a failed attempt.",
                &["model"],
            ),
            tokens_total: counter(
                "switchyard_tokens_total",
                "Tokens reported by upstreams, by kind (prompt, completion, cached).",
                &["model", "provider", "kind"],
            ),
            cost_usd_total: reg(
                &registry,
                prometheus::CounterVec::new(
                    Opts::new(
                        "switchyard_cost_usd_total",
                        "Cost in USD of answered requests, where a price is configured.",
                    ),
                    &["model", "provider"],
                )
                .expect("valid metric"),
            ),
            target_healthy: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_target_healthy",
                        "1 when a routing target is considered healthy, else 0; model is the public model, upstream_model the provider's.",
                    ),
                    &["provider", "model", "upstream_model"],
                )
                .expect("valid metric"),
            ),
            inflight_requests: reg(
                &registry,
                IntGauge::new(
                    "switchyard_inflight_requests",
                    "Client requests currently being served.",
                )
                .expect("valid metric"),
            ),
            config_reloads_total: counter(
                "switchyard_config_reloads_total",
                "Config reload attempts by result (ok, error).",
                &["result"],
            ),
            rate_limited_total: counter(
                "switchyard_rate_limited_total",
                "Requests refused by a client key's rate limit or budget.",
                &["key", "reason"],
            ),
            filter_actions_total: counter(
                "switchyard_filter_actions_total",
                "Actions of request filters, by filter name and action.",
                &["filter", "action"],
            ),
            state_errors_total: counter(
                "switchyard_state_errors_total",
                "Failed calls to the limits backend, by failure_mode (fail_open, fail_closed).",
                &["failure_mode"],
            ),
            key_requests_total: counter(
                "switchyard_key_requests_total",
                "Model requests by client key and HTTP status.",
                &["key", "status"],
            ),
            key_tokens_total: counter(
                "switchyard_key_tokens_total",
                "Tokens used by client key, by kind (input, output, cached).",
                &["key", "kind"],
            ),
            cache_lookups_total: counter(
                "switchyard_cache_lookups_total",
                "Answer cache lookups by model and result (hit, miss, bypass).",
                &["model", "result"],
            ),
            cache_stored_bytes_total: counter(
                "switchyard_cache_stored_bytes_total",
                "Bytes of answers stored in the answer cache, by model.",
                &["model"],
            ),
            cache_saved_usd_total: reg(
                &registry,
                prometheus::CounterVec::new(
                    Opts::new(
                        "switchyard_cache_saved_usd_total",
                        "USD the answer cache's hits would have cost, by model.",
                    ),
                    &["model"],
                )
                .expect("valid metric"),
            ),
            hedges_total: counter(
                "switchyard_hedges_total",
                "Hedged requests by model and result (won, lost, skipped).",
                &["model", "result"],
            ),
            sticky_routes_total: counter(
                "switchyard_sticky_routes_total",
                "Sticky routing decisions by model and result (kept, assigned, moved).",
                &["model", "result"],
            ),
            key_cost_usd_total: reg(
                &registry,
                prometheus::CounterVec::new(
                    Opts::new(
                        "switchyard_key_cost_usd_total",
                        "Cost in USD of the answered requests of a client key.",
                    ),
                    &["key"],
                )
                .expect("valid metric"),
            ),
            key_budget_remaining_usd: reg(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "switchyard_key_budget_remaining_usd",
                        "USD left in the current budget period of a client key (as of the scrape).",
                    ),
                    &["key", "period"],
                )
                .expect("valid metric"),
            ),
            key_budget_usd: reg(
                &registry,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "switchyard_key_budget_usd",
                        "The budget of a client key per period, as configured.",
                    ),
                    &["key", "period"],
                )
                .expect("valid metric"),
            ),
            build_info: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "switchyard_build_info",
                        "Always 1: the version and allocator of the running build.",
                    ),
                    &["version", "allocator"],
                )
                .expect("valid metric"),
            ),
            registry,
        };
        let allocator = if cfg!(feature = "mimalloc") {
            "mimalloc"
        } else {
            "system"
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), allocator])
            .set(1);
        // CPU, memory and file descriptors of this process (`process_*`), as every exporter has.
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = metrics.registry.register(Box::new(process)) {
                log::warn!("no process metrics: {e}");
            }
        }
        // Both outcomes exist from the start, so a dashboard can rate() them.
        for result in ["ok", "error"] {
            metrics.config_reloads_total.with_label_values(&[result]);
        }
        metrics.with_families()
    }

    fn with_families(mut self) -> Self {
        use prometheus::core::Collector;
        let kinds: [(&dyn Collector, &'static str); 25] = [
            (&self.requests_total, "counter"),
            (&self.request_duration_seconds, "histogram"),
            (&self.time_to_first_token_seconds, "histogram"),
            (&self.gateway_overhead_seconds, "histogram"),
            (&self.upstream_attempts_total, "counter"),
            (&self.fallbacks_total, "counter"),
            (&self.tokens_total, "counter"),
            (&self.cost_usd_total, "counter"),
            (&self.target_healthy, "gauge"),
            (&self.inflight_requests, "gauge"),
            (&self.config_reloads_total, "counter"),
            (&self.rate_limited_total, "counter"),
            (&self.state_errors_total, "counter"),
            (&self.filter_actions_total, "counter"),
            (&self.key_requests_total, "counter"),
            (&self.key_tokens_total, "counter"),
            (&self.key_cost_usd_total, "counter"),
            (&self.key_budget_remaining_usd, "gauge"),
            (&self.key_budget_usd, "gauge"),
            (&self.cache_lookups_total, "counter"),
            (&self.cache_stored_bytes_total, "counter"),
            (&self.cache_saved_usd_total, "counter"),
            (&self.hedges_total, "counter"),
            (&self.sticky_routes_total, "counter"),
            (&self.build_info, "gauge"),
        ];
        self.families = kinds
            .iter()
            .flat_map(|(c, kind)| {
                c.desc()
                    .into_iter()
                    .map(|d| (d.fq_name.clone(), d.help.clone(), *kind))
                    .collect::<Vec<_>>()
            })
            .collect();
        self
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let gathered = self.registry.gather();
        let _ = TextEncoder::new().encode(&gathered, &mut out);
        for (name, help, kind) in &self.families {
            if !gathered.iter().any(|f| f.name() == name) {
                out.extend_from_slice(
                    format!("# HELP {name} {help}\n# TYPE {name} {kind}\n").as_bytes(),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_metric_is_exposed_even_without_samples() {
        let text = String::from_utf8(METRICS.render()).unwrap();
        for name in [
            "switchyard_requests_total",
            "switchyard_request_duration_seconds",
            "switchyard_time_to_first_token_seconds",
            "switchyard_gateway_overhead_seconds",
            "switchyard_upstream_attempts_total",
            "switchyard_fallbacks_total",
            "switchyard_tokens_total",
            "switchyard_cost_usd_total",
            "switchyard_target_healthy",
            "switchyard_inflight_requests",
            "switchyard_config_reloads_total",
            "switchyard_rate_limited_total",
            "switchyard_state_errors_total",
            "switchyard_filter_actions_total",
            "switchyard_key_requests_total",
            "switchyard_key_tokens_total",
            "switchyard_key_cost_usd_total",
            "switchyard_key_budget_remaining_usd",
            "switchyard_key_budget_usd",
            "switchyard_cache_lookups_total",
            "switchyard_cache_stored_bytes_total",
            "switchyard_cache_saved_usd_total",
            "switchyard_hedges_total",
            "switchyard_sticky_routes_total",
            "switchyard_build_info",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_cpu_seconds_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(text.contains("switchyard_config_reloads_total{result=\"error\"} 0"));
    }
}
