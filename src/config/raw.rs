//! The config file as written by users: serde types that mirror the YAML one to one.
//!
//! Nothing here is trusted yet; `validate` turns it into [`super::Config`]. Unknown keys are rejected
//! so that a typo (`base_ulr`) is an error with a key path rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Vec<String>>,
    pub admin_listen: Option<String>,
    pub threads: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub grace_period_s: Option<i64>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub backend: Option<String>,
    pub url: Option<String>,
    pub failure_mode: Option<String>,
    pub key_prefix: Option<String>,
    pub snapshot_path: Option<String>,
    pub snapshot_interval_s: Option<i64>,
    pub responses_ttl_s: Option<i64>,
    pub responses_max_entries: Option<i64>,
    /// Memory backend: at most this many MiB of stored responses.
    pub responses_max_mib: Option<i64>,
    /// Memory backend: at most this many MiB of cached answers.
    pub cache_max_mib: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub keys: Vec<RawClientKey>,
    pub admin_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientKey {
    pub name: Option<String>,
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    pub models: Option<Vec<String>>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_concurrent: Option<i64>,
    pub budget_usd: Option<RawBudget>,
    /// Limits for some of the key's models, on top of the key's own.
    pub limits: Option<Vec<RawModelLimit>>,
    /// Filters of this key's requests, in order, before the model's.
    pub filters: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelLimit {
    pub models: Vec<String>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub max_concurrent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub amount: f64,
    pub period: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: Option<String>,
    pub base_url: Option<String>,
    /// Absent (`None`) means "no key needed"; present but empty or null (`Some(None)` or
    /// `Some(Some(""))`, as `${KEY:-}` gives) means "key missing".
    #[serde(default, deserialize_with = "present")]
    pub api_key: Option<Option<String>>,
    pub api_version: Option<String>,
    /// `kind: bedrock` only: the AWS region, and static credentials (else the environment's).
    pub region: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_session_token: Option<String>,
    /// `kind: vertex` only: the project, and the service-account key (a file path, or its JSON).
    pub project: Option<String>,
    pub service_account: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub health_check: Option<RawHealthCheck>,
    pub circuit_breaker: Option<RawCircuitBreaker>,
    /// Requests one client request may have in flight to this provider at once, when the vendor
    /// takes one input per call (Bedrock Titan embeddings: one call per input).
    pub max_parallel_requests: Option<i64>,
    /// OpenAI kinds: whether the host serves the Responses API (`POST /responses`), so that
    /// Responses clients are passed through rather than translated to Chat Completions.
    pub responses_api: Option<bool>,
    /// `kind: openai` / `openai-compatible` only: the host serves `POST /completions`, so
    /// legacy completions pass through instead of being mapped onto chat.
    pub completions_api: Option<bool>,
    /// `kind: mock` only: delay before the first byte of an answer.
    pub latency_ms: Option<i64>,
    /// `kind: mock` only: streaming speed; 0 or absent sends all tokens at once.
    pub tokens_per_second: Option<f64>,
    /// `kind: mock` only: fixed answer text instead of the default echo.
    pub reply: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_ms: Option<i64>,
    pub first_byte_ms: Option<i64>,
    pub idle_ms: Option<i64>,
    pub total_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub interval_s: Option<i64>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    pub failure_threshold: Option<i64>,
    pub cooldown_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub strategy: Option<String>,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    pub retry: Option<RawRetry>,
    /// Filters of requests for this model, in order (see the `filters` module).
    pub filters: Option<Vec<serde_json::Value>>,
    pub cache: Option<RawCache>,
    pub hedge: Option<RawHedge>,
    pub sticky: Option<RawSticky>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub ttl_s: Option<i64>,
    pub scope: Option<String>,
    pub sampled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    /// Milliseconds, or `p90` / `p95` of the target's recent times to first byte.
    pub after: Option<serde_yaml::Value>,
    /// With a percentile: the delay until there are enough samples.
    pub after_ms: Option<i64>,
    pub max_per_minute: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub ttl_s: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub weight: Option<i64>,
    pub price: Option<RawPrice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub cached_input_per_mtok: Option<f64>,
    pub cache_write_per_mtok: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<i64>,
    pub backoff_ms: Option<i64>,
    pub on: Option<Vec<serde_yaml::Value>>,
}

/// Distinguishes a key given as null from an absent key.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}
