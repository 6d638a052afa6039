//! Loading and validating the config file.
//!
//! The path is: file text → `${VAR}` expansion ([`env`](mod@env)) → YAML into the raw serde
//! types ([`raw`]) → [`validate`](mod@validate) into the typed [`Config`] below. Only a fully
//! valid [`Config`] ever reaches the routing table, so the proxy never sees half-checked input.

pub mod env;
pub mod raw;
mod service_account;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

pub use service_account::ServiceAccountKey;
pub use validate::validate;

/// The default config path when neither `--config` nor `$SWITCHYARD_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "conf/switchyard.yaml";

/// Why a config could not be loaded. Each issue names the key path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", format_missing(.0))]
    MissingVariables(Vec<String>),
    #[error("{0}")]
    Yaml(String),
    #[error("{}", format_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn format_missing(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("${{{n}}}: environment variable is not set (use ${{{n}:-default}} for an optional value)"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn format_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem with one key: `providers.anthropic.base_url: not a URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Reads, expands and validates the config at `path` against the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, |name| std::env::var(name).ok())
}

/// Expands and validates config text; `lookup` resolves `${VAR}` references.
pub fn parse(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let expanded = env::expand(text, lookup)
        .map_err(|m| ConfigError::MissingVariables(m.0.into_iter().collect()))?;
    let raw: raw::RawConfig = if expanded.trim().is_empty() {
        raw::RawConfig::default()
    } else {
        serde_yaml::from_str(&expanded).map_err(|e| ConfigError::Yaml(yaml_error_message(&e)))?
    };
    validate(raw).map_err(ConfigError::Invalid)
}

/// serde_yaml already prefixes the key path (`providers.openai: unknown field ...`); this adds
/// the position when it has one and never echoes the (possibly secret-bearing) document.
fn yaml_error_message(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(loc) if !e.to_string().contains(" at line ") => {
            format!("{e} (line {}, column {})", loc.line(), loc.column())
        }
        _ => e.to_string(),
    }
}

/// A credential: it is only ever shown as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The raw value, for building upstream auth headers and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A fully validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub state: StateSettings,
    pub auth: AuthSettings,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    /// Things that are allowed but probably not what the user wants (disabled providers, ...).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub threads: usize,
    pub max_body_bytes: usize,
    pub grace_period: Duration,
    /// Written in `--daemon` mode; absolute because a daemon changes its directory.
    pub pid_file: PathBuf,
    /// Where a new process started with `--upgrade` receives the listening sockets.
    pub upgrade_sock: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub keys: Vec<ClientKey>,
    pub admin_token: Option<Secret>,
}

/// A client key as configured: only its SHA-256 digest is kept, never the key.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub name: String,
    pub key_sha256: [u8; 32],
    pub models: Vec<String>,
    pub limits: Limits,
    /// Limits for some models (globs), on top of [`Self::limits`].
    pub model_limits: Vec<ModelLimits>,
    pub budget: Option<Budget>,
    pub filters: Vec<FilterSpec>,
}

/// Rate limits of a key (or of some of its models); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_concurrent.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct ModelLimits {
    pub models: Vec<String>,
    pub limits: Limits,
}

/// A spending limit in USD per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub amount_usd: f64,
    pub period: BudgetPeriod,
}

/// Calendar periods in UTC; a budget starts afresh at each period's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Daily,
    /// Weeks start on Monday.
    Weekly,
    Monthly,
    /// Never resets.
    Total,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Weekly => "weekly",
            BudgetPeriod::Monthly => "monthly",
            BudgetPeriod::Total => "total",
        }
    }
}

/// Where limit and budget counters, and stored Responses API answers, live.
#[derive(Debug, Clone)]
pub struct StateSettings {
    pub backend: StateBackend,
    pub failure_mode: FailureMode,
    /// Prefix of every Redis key, so several gateways can share one Redis.
    pub key_prefix: String,
    /// Where the memory backend keeps budget spending across restarts and upgrades.
    pub snapshot: Option<SnapshotSettings>,
    /// How long a stored response can be read back (`state.responses_ttl_s`).
    pub responses_ttl: Duration,
    /// At most this many stored responses on the memory backend, the oldest evicted first
    /// (`state.responses_max_entries`; Redis's own memory policy applies to the other).
    pub responses_max_entries: usize,
    /// At most this many bytes of stored responses on the memory backend, the oldest evicted
    /// first (`state.responses_max_mib`).
    pub responses_max_bytes: usize,
    /// At most this many bytes of cached answers on the memory backend, the least recently
    /// used evicted first (`state.cache_max_mib`).
    pub cache_max_bytes: usize,
}

/// `state.responses_ttl_s` when absent: 30 days, as long as OpenAI keeps responses.
pub const DEFAULT_RESPONSES_TTL_S: u64 = 30 * 24 * 3600;
/// `state.responses_max_entries` when absent.
pub const DEFAULT_RESPONSES_MAX_ENTRIES: u64 = 10_000;
/// `state.responses_max_mib` when absent.
pub const DEFAULT_RESPONSES_MAX_MIB: u64 = 256;
/// `state.cache_max_mib` when absent.
pub const DEFAULT_CACHE_MAX_MIB: u64 = 256;

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            backend: StateBackend::default(),
            failure_mode: FailureMode::default(),
            key_prefix: String::new(),
            snapshot: None,
            responses_ttl: Duration::from_secs(DEFAULT_RESPONSES_TTL_S),
            responses_max_entries: DEFAULT_RESPONSES_MAX_ENTRIES as usize,
            responses_max_bytes: (DEFAULT_RESPONSES_MAX_MIB as usize) << 20,
            cache_max_bytes: (DEFAULT_CACHE_MAX_MIB as usize) << 20,
        }
    }
}

/// `state.snapshot_path` and `state.snapshot_interval_s` (memory backend only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Absolute; a `.lock` file next to it serialises writers.
    pub path: PathBuf,
    /// How often the file is brought up to date while serving.
    pub interval: Duration,
}

#[derive(Debug, Clone, Default)]
pub enum StateBackend {
    /// Each instance counts alone.
    #[default]
    Memory,
    /// Shared by every instance on the same Redis. The URL may hold a password.
    Redis { url: Secret },
}

/// What happens to requests of limited keys while the state backend cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Admit them, with a warning and `switchyard_state_errors_total`.
    #[default]
    FailOpen,
    /// Refuse them with 503.
    FailClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    OpenAiCompatible,
    AzureOpenAi,
    Anthropic,
    Gemini,
    Bedrock,
    /// Google Cloud Vertex AI: Gemini and Anthropic models of a project.
    Vertex,
    Mock,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 8] = [
        ProviderKind::OpenAi,
        ProviderKind::OpenAiCompatible,
        ProviderKind::AzureOpenAi,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Bedrock,
        ProviderKind::Vertex,
        ProviderKind::Mock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiCompatible => "openai-compatible",
            ProviderKind::AzureOpenAi => "azure-openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Vertex => "vertex",
            ProviderKind::Mock => "mock",
        }
    }

    pub fn parse(s: &str) -> Option<ProviderKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The base URL used when the config gives none.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            _ => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// `None` only for `kind: mock`.
    pub base_url: Option<Url>,
    /// `None` when the provider needs no key (a local OpenAI-compatible server).
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    /// `kind: bedrock`: the AWS region and the credentials requests are signed with (SigV4),
    /// unless `api_key` (a Bedrock API key) is set.
    pub region: Option<String>,
    pub aws_credentials: Option<AwsCredentials>,
    /// `kind: vertex`: the Google Cloud project, and the service-account key file's JSON.
    pub project: Option<String>,
    pub service_account: Option<ServiceAccountKey>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeouts: Timeouts,
    /// Active probes; `None` when switched off (`health_check.enabled: false`).
    pub health_check_interval: Option<Duration>,
    pub circuit_breaker: CircuitBreaker,
    /// Requests one client request may have in flight here at once when it needs several
    /// (Bedrock Titan embeddings: one call per input).
    pub max_parallel_requests: usize,
    /// OpenAI kinds: Responses clients pass through to the host's own `/responses` (default for
    /// `openai` and `azure-openai`; `openai-compatible` hosts opt in).
    pub responses_api: bool,
    /// The host serves legacy `POST /completions` (OpenAI kinds only): `POST /v1/completions`
    /// passes through rather than being mapped onto chat.
    pub completions_api: bool,
    pub mock: MockSettings,
    /// Why the provider is switched off (empty key, unsupported kind); `None` when usable.
    pub disabled: Option<String>,
}

/// Static AWS credentials, from the config or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_millis(2_000),
            first_byte: Duration::from_millis(60_000),
            idle: Duration::from_millis(30_000),
            total: Duration::from_millis(600_000),
        }
    }
}

/// When a target's breaker opens and for how long (doubling on each failed trial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    pub failure_threshold: u32,
    pub cooldown: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            failure_threshold: 3,
            cooldown: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MockSettings {
    pub latency: Duration,
    pub tokens_per_second: Option<f64>,
    pub reply: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fallback,
    Weighted,
    RoundRobin,
    LeastLatency,
    LowestCost,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "fallback" => Strategy::Fallback,
            "weighted" => Strategy::Weighted,
            "round_robin" => Strategy::RoundRobin,
            "least_latency" => Strategy::LeastLatency,
            "lowest_cost" => Strategy::LowestCost,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Fallback => "fallback",
            Strategy::Weighted => "weighted",
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLatency => "least_latency",
            Strategy::LowestCost => "lowest_cost",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub strategy: Strategy,
    pub targets: Vec<TargetConfig>,
    pub retry: RetryPolicy,
    pub filters: Vec<FilterSpec>,
    pub cache: Option<CachePolicy>,
    pub hedge: Option<HedgePolicy>,
    pub sticky: Option<StickyPolicy>,
}

/// `models.NAME.cache`: answers of this model served again to identical requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachePolicy {
    /// How long an answer is served from the cache (`ttl_s`; a request's
    /// `Cache-Control: max-age=N` shortens it).
    pub ttl: Duration,
    pub scope: CacheScope,
    /// Whether answers to requests with a `temperature` above 0 are cached too (`sampled`):
    /// such a client asked for variety, so by default it gets a fresh answer.
    pub sampled: bool,
}

/// Whose requests share cached answers (`models.NAME.cache.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Each client key has its own (the default): one key's prompts never answer another's.
    Key,
    /// Every caller shares them.
    Shared,
}

/// `models.NAME.hedge`: a second target asked when the first is slow to answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    pub delay: HedgeDelay,
    /// At most this many hedges per minute for the model, whatever the traffic.
    pub max_per_minute: u32,
}

/// How long to wait for the first target's first byte before starting the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    Fixed(Duration),
    /// That percentile (90 or 95) of the target's recent times to first byte; `fallback` until
    /// it has enough of them.
    Percentile {
        percentile: u8,
        fallback: Duration,
    },
}

/// `models.NAME.sticky`: a conversation kept on the target that holds its prompt cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StickyPolicy {
    /// How long a conversation stays with its target after its last request.
    pub ttl: Duration,
}

/// One configured filter (`filters: [{type: guard, ...}]`): its kind, its name (the kind unless
/// given), its settings, and where it was configured, for errors. Its settings are checked when
/// the routing table is built, by the filter itself.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSpec {
    pub kind: String,
    pub name: String,
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub provider: String,
    pub model: String,
    pub weight: u32,
    pub price: Option<Price>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Prompt tokens read from the vendor's prompt cache; the input price when not given.
    pub cached_input_per_mtok: Option<f64>,
    /// Prompt tokens written to the vendor's prompt cache (Anthropic, Bedrock); the input price
    /// when not given.
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    /// Whether prompt tokens the vendor has cached cost less than fresh ones: only then is it
    /// worth keeping a conversation on the target that holds them.
    pub fn caches_input(&self) -> bool {
        self.cached_input_per_mtok
            .is_some_and(|cached| cached < self.input_per_mtok)
    }
}

/// Which failed outcomes an attempt may be retried (or failed over) on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    Status(u16),
    ServerErrors,
    Timeout,
    Connect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
    pub on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(200),
            on: vec![
                RetryOn::Status(429),
                RetryOn::ServerErrors,
                RetryOn::Timeout,
                RetryOn::Connect,
            ],
        }
    }
}

impl RetryPolicy {
    pub fn retries_status(&self, status: u16) -> bool {
        self.on.iter().any(|on| match on {
            RetryOn::Status(s) => *s == status,
            RetryOn::ServerErrors => (500..600).contains(&status),
            _ => false,
        })
    }
    pub fn retries_timeout(&self) -> bool {
        self.on.contains(&RetryOn::Timeout)
    }
    pub fn retries_connect(&self) -> bool {
        self.on.contains(&RetryOn::Connect)
    }
}
