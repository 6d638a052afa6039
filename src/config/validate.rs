//! Turns [`RawConfig`] into a [`Config`], collecting every problem with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

use super::raw::*;
use super::*;

/// Collects issues so that one run of `switchyard check` reports all of them.
#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

pub fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Issues::default();
    let mut warnings = Vec::new();

    let server = server(raw.server, &mut issues);
    let state = state(raw.state, &mut issues, &mut warnings);
    let auth = auth(raw.auth, &mut issues, &mut warnings);

    let mut providers = BTreeMap::new();
    for (name, raw_provider) in raw.providers {
        if let Some(p) = provider(&name, raw_provider, &mut issues) {
            if let Some(why) = &p.disabled {
                warnings.push(format!("provider '{name}' is disabled: {why}"));
            }
            if p.kind == ProviderKind::Mock && p.api_key.is_some() {
                warnings.push(format!(
                    "providers.{name}.api_key: ignored, the built-in mock needs no key"
                ));
            }
            providers.insert(name, p);
        }
    }

    let mut models = BTreeMap::new();
    for (name, raw_model) in raw.models {
        if let Some(m) = model(&name, raw_model, &providers, &mut issues, &mut warnings) {
            models.insert(name, m);
        }
    }
    warnings.extend(unmatched_key_globs(&auth, &providers, &models));

    let budgets = auth.keys.iter().filter(|k| k.budget.is_some()).count();
    if budgets > 0 && matches!(state.backend, StateBackend::Memory) && state.snapshot.is_none() {
        // Allowed (a test or a throw-away instance), but a restart or upgrade forgets spending.
        warnings.push(format!(
            "{budgets} key(s) have budget_usd on state.backend: memory without state.snapshot_path: \
             spending starts again from 0 at every restart and upgrade"
        ));
    }

    if issues.0.is_empty() {
        Ok(Config {
            server,
            state,
            auth,
            providers,
            models,
            warnings,
        })
    } else {
        Err(issues.0)
    }
}

fn server(raw: RawServer, issues: &mut Issues) -> ServerSettings {
    let listen = match raw.listen {
        None => vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
        Some(list) if list.is_empty() => {
            issues.push("server.listen", "must name at least one address");
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, addr)| socket_addr(&format!("server.listen[{i}]"), addr, issues))
            .collect(),
    };
    let admin_listen = match raw.admin_listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        Some("") => None,
        Some(addr) => socket_addr("server.admin_listen", addr, issues),
    };
    let threads = positive("server.threads", raw.threads, 2, issues) as usize;
    let max_body_bytes = positive(
        "server.max_body_bytes",
        raw.max_body_bytes,
        10 * 1024 * 1024,
        issues,
    ) as usize;
    let grace = non_negative("server.grace_period_s", raw.grace_period_s, 30, issues);
    let pid_file = absolute_path(
        "server.pid_file",
        raw.pid_file,
        "/tmp/switchyard.pid",
        issues,
    );
    let upgrade_sock = absolute_path(
        "server.upgrade_sock",
        raw.upgrade_sock,
        "/tmp/switchyard_upgrade.sock",
        issues,
    );
    ServerSettings {
        listen,
        admin_listen,
        threads,
        max_body_bytes,
        grace_period: Duration::from_secs(grace),
        pid_file,
        upgrade_sock,
    }
}

fn absolute_path(
    path: &str,
    value: Option<String>,
    default: &str,
    issues: &mut Issues,
) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(value.as_deref().unwrap_or(default));
    if !p.is_absolute() {
        issues.push(path, "must be an absolute path");
    }
    p
}

fn state(raw: RawState, issues: &mut Issues, warnings: &mut Vec<String>) -> StateSettings {
    let backend = match raw.backend.as_deref() {
        None | Some("memory") => {
            if raw.url.is_some() {
                issues.push("state.url", "only used with backend: redis");
            }
            StateBackend::Memory
        }
        Some("redis") => match raw.url.filter(|u| !u.is_empty()) {
            Some(url) => {
                let ok = Url::parse(&url)
                    .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss") && u.host().is_some());
                if !ok {
                    // The URL may carry a password: it is not repeated in the message.
                    issues.push("state.url", "not a redis:// or rediss:// URL with a host");
                }
                StateBackend::Redis {
                    url: Secret::new(url),
                }
            }
            None => {
                issues.push("state.url", "required with backend: redis");
                StateBackend::Memory
            }
        },
        Some(other) => {
            issues.push(
                "state.backend",
                format!("unknown backend '{other}' (expected memory or redis)"),
            );
            StateBackend::Memory
        }
    };
    let failure_mode = match raw.failure_mode.as_deref() {
        None | Some("fail_open") => FailureMode::FailOpen,
        Some("fail_closed") => FailureMode::FailClosed,
        Some(other) => {
            issues.push(
                "state.failure_mode",
                format!("unknown mode '{other}' (expected fail_open or fail_closed)"),
            );
            FailureMode::FailOpen
        }
    };
    let snapshot = match raw.snapshot_path.filter(|p| !p.is_empty()) {
        // Ignored rather than refused, so one file can switch backends by an environment
        // variable (as the production example does).
        Some(_) if matches!(backend, StateBackend::Redis { .. }) => {
            warnings.push(
                "state.snapshot_path is ignored with backend: redis (Redis keeps the counters)"
                    .to_string(),
            );
            None
        }
        Some(path) => {
            let path = absolute_path("state.snapshot_path", Some(path), "", issues);
            if path.file_name().is_none() {
                issues.push("state.snapshot_path", "must name a file");
            }
            let interval = positive(
                "state.snapshot_interval_s",
                raw.snapshot_interval_s,
                10,
                issues,
            );
            Some(SnapshotSettings {
                path,
                interval: Duration::from_secs(interval),
            })
        }
        None => {
            if raw.snapshot_interval_s.is_some() {
                issues.push("state.snapshot_interval_s", "only used with snapshot_path");
            }
            None
        }
    };
    StateSettings {
        backend,
        failure_mode,
        key_prefix: raw.key_prefix.unwrap_or_else(|| "switchyard:".to_string()),
        snapshot,
    }
}

/// A positive limit; 0 and negatives are errors (leave the key out for "no limit").
fn limit(path: &str, value: Option<i64>, issues: &mut Issues) -> Option<u64> {
    match value {
        None => None,
        Some(v) if v > 0 => Some(v as u64),
        Some(_) => {
            issues.push(
                path,
                "must be a positive number (leave it out for no limit)",
            );
            None
        }
    }
}

fn limits(
    path: &str,
    rpm: Option<i64>,
    tpm: Option<i64>,
    max_concurrent: Option<i64>,
    issues: &mut Issues,
) -> Limits {
    Limits {
        rpm: limit(&format!("{path}.rpm"), rpm, issues),
        tpm: limit(&format!("{path}.tpm"), tpm, issues),
        max_concurrent: limit(&format!("{path}.max_concurrent"), max_concurrent, issues),
    }
}

fn budget(path: &str, raw: RawBudget, issues: &mut Issues) -> Option<Budget> {
    let period = match raw.period.as_str() {
        "daily" => BudgetPeriod::Daily,
        "weekly" => BudgetPeriod::Weekly,
        "monthly" => BudgetPeriod::Monthly,
        "total" => BudgetPeriod::Total,
        other => {
            issues.push(
                format!("{path}.period"),
                format!("unknown period '{other}' (expected daily, weekly, monthly or total)"),
            );
            return None;
        }
    };
    if !(raw.amount.is_finite() && raw.amount >= 0.0) {
        issues.push(format!("{path}.amount"), "must be a number of USD >= 0");
        return None;
    }
    Some(Budget {
        amount_usd: raw.amount,
        period,
    })
}

fn auth(raw: RawAuth, issues: &mut Issues, warnings: &mut Vec<String>) -> AuthSettings {
    let admin_token = raw.admin_token.filter(|t| !t.is_empty()).map(Secret::new);
    if raw.keys.is_empty() {
        warnings.push("auth.keys is empty: clients are not authenticated".to_string());
    }
    let mut keys: Vec<ClientKey> = Vec::new();
    for (i, key) in raw.keys.into_iter().enumerate() {
        let path = format!("auth.keys[{i}]");
        let name = key.name.unwrap_or_else(|| format!("key-{i}"));
        if keys.iter().any(|k| k.name == name) {
            issues.push(
                format!("{path}.name"),
                format!("'{name}' is used by another key"),
            );
        }
        let key_sha256 = match (key.key, key.key_sha256) {
            (Some(k), None) if !k.is_empty() => crate::auth::digest(&k),
            (None, Some(hex)) => match crate::auth::from_hex(&hex) {
                Some(d) => d,
                None => {
                    issues.push(
                        format!("{path}.key_sha256"),
                        "must be 64 hex digits (see `switchyard keys hash`)",
                    );
                    continue;
                }
            },
            (Some(_), Some(_)) => {
                issues.push(&path, "set key or key_sha256, not both");
                continue;
            }
            _ => {
                issues.push(
                    format!("{path}.key"),
                    "must be set and non-empty (or key_sha256)",
                );
                continue;
            }
        };
        if keys
            .iter()
            .any(|k| crate::auth::digests_equal(&k.key_sha256, &key_sha256))
        {
            issues.push(&path, "the same key is configured twice");
        }
        let model_limits = key
            .limits
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(j, l)| {
                let lpath = format!("{path}.limits[{j}]");
                if l.models.is_empty() {
                    issues.push(
                        format!("{lpath}.models"),
                        "must list at least one model glob",
                    );
                }
                ModelLimits {
                    models: l.models,
                    limits: limits(&lpath, l.rpm, l.tpm, l.max_concurrent, issues),
                }
            })
            .collect();
        keys.push(ClientKey {
            limits: limits(&path, key.rpm, key.tpm, key.max_concurrent, issues),
            budget: key
                .budget_usd
                .and_then(|b| budget(&format!("{path}.budget_usd"), b, issues)),
            name,
            key_sha256,
            models: key.models.unwrap_or_default(),
            model_limits,
        });
    }
    AuthSettings { keys, admin_token }
}

fn provider(name: &str, raw: RawProvider, issues: &mut Issues) -> Option<ProviderConfig> {
    let path = format!("providers.{name}");
    if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
        issues.push(
            &path,
            "provider names must be non-empty and contain no '/' or spaces",
        );
        return None;
    }
    let kind = match raw.kind.as_deref() {
        None => {
            issues.push(format!("{path}.kind"), "is required");
            return None;
        }
        Some(k) => match ProviderKind::parse(k) {
            Some(kind) => kind,
            None => {
                let all: Vec<_> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                issues.push(
                    format!("{path}.kind"),
                    format!("unknown kind '{k}' (expected one of {})", all.join(", ")),
                );
                return None;
            }
        },
    };

    let (mut region, aws_credentials, aws_disabled) = aws(&path, kind, &raw, issues);
    let (project, service_account, vertex_disabled) = vertex(&path, kind, &raw, issues);
    if kind == ProviderKind::Vertex {
        region = raw.region.clone().filter(|r| !r.is_empty());
        if region.is_none() {
            issues.push(
                format!("{path}.region"),
                "is required for kind vertex (us-east5, global, ...)",
            );
        }
    }
    let base_url = match (raw.base_url.as_deref(), kind) {
        (_, ProviderKind::Mock) => None,
        (Some(u), _) => http_url(&format!("{path}.base_url"), u, issues),
        (None, ProviderKind::Bedrock) => region
            .as_ref()
            .and_then(|r| Url::parse(&format!("https://bedrock-runtime.{r}.amazonaws.com")).ok()),
        (None, ProviderKind::Vertex) => region.as_ref().and_then(|r| {
            let host = if r == "global" {
                "aiplatform.googleapis.com".to_string()
            } else {
                format!("{r}-aiplatform.googleapis.com")
            };
            Url::parse(&format!("https://{host}")).ok()
        }),
        (None, kind) => match kind.default_base_url() {
            Some(default) => Url::parse(default).ok(),
            None => {
                issues.push(
                    format!("{path}.base_url"),
                    format!("is required for kind {kind}"),
                );
                None
            }
        },
    };

    let mut disabled = None;
    let api_key = match raw.api_key.clone().map(Option::unwrap_or_default) {
        Some(k) if k.is_empty() => {
            if kind != ProviderKind::Mock {
                disabled = Some("api_key is empty".to_string());
            }
            None
        }
        Some(k) => Some(Secret::new(k)),
        // A local OpenAI-compatible server (vLLM, Ollama) usually needs no key at all.
        None if matches!(kind, ProviderKind::Mock | ProviderKind::OpenAiCompatible) => None,
        // Bedrock signs with AWS credentials; an API key is the alternative.
        None if kind == ProviderKind::Bedrock => {
            disabled = aws_disabled;
            None
        }
        // Vertex authorizes with the service account's tokens.
        None if kind == ProviderKind::Vertex => {
            disabled = vertex_disabled;
            None
        }
        None => {
            disabled = Some("api_key is not set".to_string());
            None
        }
    };
    if disabled.is_none() && !kind_is_supported(kind) {
        disabled = Some(format!("kind {kind} is not supported by this build yet"));
    }

    let mut headers = Vec::new();
    for (h, v) in &raw.headers {
        let hpath = format!("{path}.headers.{h}");
        match (
            HeaderName::try_from(h.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(hn), Ok(hv)) => headers.push((hn, hv)),
            (Err(_), _) => issues.push(hpath, "not a valid HTTP header name"),
            (_, Err(_)) => issues.push(hpath, "not a valid HTTP header value"),
        }
    }

    let defaults = Timeouts::default();
    let t = &raw.timeouts;
    let tpath = format!("{path}.timeouts");
    let timeouts = Timeouts {
        connect: millis(
            &format!("{tpath}.connect_ms"),
            t.connect_ms,
            defaults.connect,
            issues,
        ),
        first_byte: millis(
            &format!("{tpath}.first_byte_ms"),
            t.first_byte_ms,
            defaults.first_byte,
            issues,
        ),
        idle: millis(
            &format!("{tpath}.idle_ms"),
            t.idle_ms,
            defaults.idle,
            issues,
        ),
        total: millis(
            &format!("{tpath}.total_ms"),
            t.total_ms,
            defaults.total,
            issues,
        ),
    };
    let interval = raw.health_check.as_ref().and_then(|h| h.interval_s);
    let interval = Duration::from_secs(positive(
        &format!("{path}.health_check.interval_s"),
        interval,
        10,
        issues,
    ));
    let probes_on = raw
        .health_check
        .as_ref()
        .and_then(|h| h.enabled)
        .unwrap_or(true);
    let health_check_interval = probes_on.then_some(interval);
    let cb = raw.circuit_breaker.as_ref();
    let breaker_defaults = CircuitBreaker::default();
    let circuit_breaker = CircuitBreaker {
        failure_threshold: positive(
            &format!("{path}.circuit_breaker.failure_threshold"),
            cb.and_then(|c| c.failure_threshold),
            u64::from(breaker_defaults.failure_threshold),
            issues,
        )
        .min(1000) as u32,
        cooldown: millis(
            &format!("{path}.circuit_breaker.cooldown_ms"),
            cb.and_then(|c| c.cooldown_ms),
            breaker_defaults.cooldown,
            issues,
        ),
    };

    let mock = mock_settings(&path, kind, &raw, issues);

    if raw.api_version.is_some() && kind != ProviderKind::AzureOpenAi {
        issues.push(
            format!("{path}.api_version"),
            "only applies to kind azure-openai",
        );
    }

    Some(ProviderConfig {
        name: name.to_string(),
        kind,
        base_url,
        api_key,
        api_version: raw.api_version,
        region,
        aws_credentials,
        project,
        service_account,
        headers,
        timeouts,
        health_check_interval,
        circuit_breaker,
        mock,
        disabled,
    })
}

/// `kind: bedrock`'s region and credentials (config, else `AWS_*` in the environment), and why
/// it is off when it has none; other kinds must not set them.
fn aws(
    path: &str,
    kind: ProviderKind,
    raw: &RawProvider,
    issues: &mut Issues,
) -> (Option<String>, Option<AwsCredentials>, Option<String>) {
    let set = [
        ("region", raw.region.is_some()),
        ("aws_access_key_id", raw.aws_access_key_id.is_some()),
        ("aws_secret_access_key", raw.aws_secret_access_key.is_some()),
        ("aws_session_token", raw.aws_session_token.is_some()),
    ];
    if kind != ProviderKind::Bedrock {
        for (field, is_set) in set {
            if field == "region" && kind == ProviderKind::Vertex {
                continue;
            }
            if is_set {
                issues.push(format!("{path}.{field}"), "only used with kind bedrock");
            }
        }
        return (None, None, None);
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = raw
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"));
    match &region {
        None => issues.push(
            format!("{path}.region"),
            "is required for kind bedrock (or AWS_REGION)",
        ),
        Some(r) if !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            issues.push(format!("{path}.region"), "not an AWS region name");
        }
        Some(_) => {}
    }
    let nonempty = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let configured = (
        nonempty(&raw.aws_access_key_id),
        nonempty(&raw.aws_secret_access_key),
    );
    let (id, secret, token) = match configured {
        (Some(id), Some(secret)) => (Some(id), Some(secret), nonempty(&raw.aws_session_token)),
        (None, None) => (
            env("AWS_ACCESS_KEY_ID"),
            env("AWS_SECRET_ACCESS_KEY"),
            env("AWS_SESSION_TOKEN"),
        ),
        _ => {
            issues.push(
                path,
                "set both aws_access_key_id and aws_secret_access_key, or neither",
            );
            (None, None, None)
        }
    };
    let credentials = match (id, secret) {
        (Some(access_key_id), Some(secret)) => Some(AwsCredentials {
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: token.map(Secret::new),
        }),
        _ => None,
    };
    // Without keys the instance profile is asked (IMDSv2), unless it is switched off.
    let imds_off =
        std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let disabled = (credentials.is_none() && imds_off).then(|| {
        "no AWS credentials (aws_access_key_id and aws_secret_access_key, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the instance profile, or a Bedrock api_key)".to_string()
    });
    (region, credentials, disabled)
}

/// `kind: vertex`'s project and service account (`service_account`: a key file's path or its
/// JSON, else `GOOGLE_APPLICATION_CREDENTIALS`), and why it is off without one.
fn vertex(
    path: &str,
    kind: ProviderKind,
    raw: &RawProvider,
    issues: &mut Issues,
) -> (Option<String>, Option<ServiceAccountKey>, Option<String>) {
    if kind != ProviderKind::Vertex {
        for (field, is_set) in [
            ("project", raw.project.is_some()),
            ("service_account", raw.service_account.is_some()),
        ] {
            if is_set {
                issues.push(format!("{path}.{field}"), "only used with kind vertex");
            }
        }
        return (None, None, None);
    }
    let project = raw.project.clone().filter(|p| !p.is_empty());
    match &project {
        None => issues.push(format!("{path}.project"), "is required for kind vertex"),
        Some(p)
            if !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.')) =>
        {
            issues.push(format!("{path}.project"), "not a Google Cloud project id")
        }
        Some(_) => {}
    }
    let source = raw
        .service_account
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
                .ok()
                .filter(|s| !s.is_empty())
        });
    let Some(source) = source else {
        return (
            project,
            None,
            Some("no service account (service_account, or GOOGLE_APPLICATION_CREDENTIALS)".into()),
        );
    };
    let json = if source.trim_start().starts_with('{') {
        source
    } else {
        match std::fs::read_to_string(&source) {
            Ok(text) => text,
            Err(e) => {
                issues.push(
                    format!("{path}.service_account"),
                    format!("cannot read the key file '{source}': {e}"),
                );
                return (project, None, None);
            }
        }
    };
    match ServiceAccountKey::parse(&json) {
        Ok(key) => (project, Some(key), None),
        Err(why) => {
            issues.push(
                format!("{path}.service_account"),
                format!("the service account JSON is not usable: {why}"),
            );
            (project, None, None)
        }
    }
}

/// Provider kinds whose adapter exists in this build.
fn kind_is_supported(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::Vertex
            | ProviderKind::Bedrock
            | ProviderKind::OpenAi
            | ProviderKind::OpenAiCompatible
            | ProviderKind::AzureOpenAi
            | ProviderKind::Anthropic
            | ProviderKind::Gemini
            | ProviderKind::Mock
    )
}

fn mock_settings(
    path: &str,
    kind: ProviderKind,
    raw: &RawProvider,
    issues: &mut Issues,
) -> MockSettings {
    if kind != ProviderKind::Mock {
        for (key, set) in [
            ("latency_ms", raw.latency_ms.is_some()),
            ("tokens_per_second", raw.tokens_per_second.is_some()),
            ("reply", raw.reply.is_some()),
        ] {
            if set {
                issues.push(format!("{path}.{key}"), "only applies to kind mock");
            }
        }
        return MockSettings::default();
    }
    let latency = Duration::from_millis(non_negative(
        &format!("{path}.latency_ms"),
        raw.latency_ms,
        0,
        issues,
    ));
    let tokens_per_second = match raw.tokens_per_second {
        Some(r) if !(r.is_finite() && r >= 0.0) => {
            issues.push(
                format!("{path}.tokens_per_second"),
                "must be a non-negative number",
            );
            None
        }
        Some(0.0) => None,
        other => other,
    };
    MockSettings {
        latency,
        tokens_per_second,
        reply: raw.reply.clone(),
    }
}

/// Model globs of client keys that match nothing a client could ask for: neither a configured
/// model nor a direct `PROVIDER/MODEL` of a configured provider. Usually a typo that silently
/// locks the key out.
fn unmatched_key_globs(
    auth: &AuthSettings,
    providers: &BTreeMap<String, ProviderConfig>,
    models: &BTreeMap<String, ModelConfig>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, key) in auth.keys.iter().enumerate() {
        for (j, pattern) in key.models.iter().enumerate() {
            // Invalid globs are refused when the table is built, with their own message.
            let Ok(glob) = globset::Glob::new(pattern) else {
                continue;
            };
            let matcher = glob.compile_matcher();
            let matches_model = models.keys().any(|m| matcher.is_match(m));
            let matches_direct = pattern.split_once('/').is_some_and(|(provider, _)| {
                globset::Glob::new(provider)
                    .map(|g| g.compile_matcher())
                    .is_ok_and(|p| providers.keys().any(|name| p.is_match(name)))
            });
            if !matches_model && !matches_direct {
                warnings.push(format!(
                    "auth.keys[{i}].models[{j}]: '{pattern}' matches no configured model or provider"
                ));
            }
        }
    }
    warnings
}

fn model(
    name: &str,
    raw: RawModel,
    providers: &BTreeMap<String, ProviderConfig>,
    issues: &mut Issues,
    warnings: &mut Vec<String>,
) -> Option<ModelConfig> {
    let path = format!("models.{name}");
    if name.is_empty() {
        issues.push(&path, "model names must be non-empty");
        return None;
    }
    let strategy = match raw.strategy.as_deref() {
        None => Strategy::Fallback,
        Some(s) => match Strategy::parse(s) {
            Some(st) => st,
            None => {
                issues.push(
                    format!("{path}.strategy"),
                    format!("unknown strategy '{s}' (expected fallback, weighted, round_robin, least_latency or lowest_cost)"),
                );
                Strategy::Fallback
            }
        },
    };
    if raw.targets.is_empty() {
        issues.push(format!("{path}.targets"), "must list at least one target");
    }
    let mut targets = Vec::new();
    for (i, t) in raw.targets.into_iter().enumerate() {
        let tpath = format!("{path}.targets[{i}]");
        let provider = match t.provider {
            Some(p) if providers.contains_key(&p) => p,
            Some(p) => {
                issues.push(
                    format!("{tpath}.provider"),
                    format!("unknown provider '{p}'"),
                );
                continue;
            }
            None => {
                issues.push(format!("{tpath}.provider"), "is required");
                continue;
            }
        };
        let model = match t.model {
            Some(m) if !m.is_empty() => m,
            _ => {
                issues.push(format!("{tpath}.model"), "is required");
                continue;
            }
        };
        if t.weight.is_some() && strategy != Strategy::Weighted {
            warnings.push(format!(
                "{tpath}.weight: ignored, only strategy `weighted` uses weights (this model's is `{}`)",
                strategy.as_str()
            ));
        }
        let weight = match t.weight {
            None => 1,
            Some(w) if (0..=i64::from(u32::MAX)).contains(&w) => w as u32,
            Some(_) => {
                issues.push(format!("{tpath}.weight"), "must be a non-negative integer");
                1
            }
        };
        let price = t.price.map(|p| price(&format!("{tpath}.price"), p, issues));
        targets.push(TargetConfig {
            provider,
            model,
            weight,
            price,
        });
    }
    let retry = raw
        .retry
        .map(|r| retry(&format!("{path}.retry"), r, issues))
        .unwrap_or_default();
    Some(ModelConfig {
        name: name.to_string(),
        strategy,
        targets,
        retry,
    })
}

fn price(path: &str, raw: RawPrice, issues: &mut Issues) -> Price {
    let mut check = |key: &str, v: Option<f64>| -> Option<f64> {
        match v {
            Some(x) if !(x.is_finite() && x >= 0.0) => {
                issues.push(format!("{path}.{key}"), "must be a non-negative number");
                None
            }
            other => other,
        }
    };
    Price {
        input_per_mtok: check("input_per_mtok", raw.input_per_mtok).unwrap_or(0.0),
        output_per_mtok: check("output_per_mtok", raw.output_per_mtok).unwrap_or(0.0),
        cached_input_per_mtok: check("cached_input_per_mtok", raw.cached_input_per_mtok),
        cache_write_per_mtok: check("cache_write_per_mtok", raw.cache_write_per_mtok),
    }
}

fn retry(path: &str, raw: RawRetry, issues: &mut Issues) -> RetryPolicy {
    let defaults = RetryPolicy::default();
    let attempts = match raw.attempts {
        None => defaults.attempts,
        Some(a) if (1..=10).contains(&a) => a as u32,
        Some(_) => {
            issues.push(format!("{path}.attempts"), "must be between 1 and 10");
            defaults.attempts
        }
    };
    // 0 is legitimate: retry at once.
    let backoff = match raw.backoff_ms {
        None => defaults.backoff,
        Some(v) if v >= 0 => Duration::from_millis(v as u64),
        Some(_) => {
            issues.push(
                format!("{path}.backoff_ms"),
                "must be zero or a positive number of milliseconds",
            );
            defaults.backoff
        }
    };
    let on = match raw.on {
        None => defaults.on,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let text = match v {
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::String(s) => s.clone(),
                    _ => String::new(),
                };
                let parsed = match text.as_str() {
                    "5xx" => Some(RetryOn::ServerErrors),
                    "timeout" => Some(RetryOn::Timeout),
                    "connect" => Some(RetryOn::Connect),
                    code => code
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (400..600).contains(c))
                        .map(RetryOn::Status),
                };
                if parsed.is_none() {
                    issues.push(
                        format!("{path}.on[{i}]"),
                        "expected an HTTP status 400-599, 5xx, timeout or connect",
                    );
                }
                parsed
            })
            .collect(),
    };
    RetryPolicy {
        attempts,
        backoff,
        on,
    }
}

fn socket_addr(path: &str, text: &str, issues: &mut Issues) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            issues.push(path, format!("'{text}' is not an IP:port address"));
            None
        }
    }
}

fn http_url(path: &str, text: &str, issues: &mut Issues) -> Option<Url> {
    match Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        _ => {
            issues.push(path, "not a URL");
            None
        }
    }
}

fn positive(path: &str, value: Option<i64>, default: u64, issues: &mut Issues) -> u64 {
    match value {
        None => default,
        Some(v) if v > 0 => v as u64,
        Some(_) => {
            issues.push(path, "must be a positive integer");
            default
        }
    }
}

fn non_negative(path: &str, value: Option<i64>, default: u64, issues: &mut Issues) -> u64 {
    match value {
        None => default,
        Some(v) if v >= 0 => v as u64,
        Some(_) => {
            issues.push(path, "must not be negative");
            default
        }
    }
}

fn millis(path: &str, value: Option<i64>, default: Duration, issues: &mut Issues) -> Duration {
    match value {
        None => default,
        Some(v) if v > 0 => Duration::from_millis(v as u64),
        Some(_) => {
            issues.push(path, "must be a positive number of milliseconds");
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{
        parse, Budget, BudgetPeriod, ConfigError, FailureMode, Limits, ProviderKind,
        SnapshotSettings, StateBackend, Strategy,
    };

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_API_KEY" => Some("sk-live".into()),
            _ => None,
        }
    }

    fn issues(text: &str) -> Vec<String> {
        match parse(text, env) {
            Err(ConfigError::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
            Err(other) => vec![other.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = parse("", env).unwrap();
        assert_eq!(cfg.server.listen[0].to_string(), "0.0.0.0:8080");
        assert_eq!(
            cfg.server.admin_listen.unwrap().to_string(),
            "127.0.0.1:9090"
        );
        assert_eq!(cfg.server.max_body_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn full_example_loads() {
        let cfg = parse(
            r#"
server: { listen: ["127.0.0.1:8081"], threads: 4, max_body_bytes: 2048 }
providers:
  openai: { kind: openai, api_key: "${OPENAI_API_KEY}", headers: { x-org: acme } }
  anthropic: { kind: anthropic, api_key: "${ANTHROPIC_API_KEY:-}" }
  local: { kind: openai-compatible, base_url: "http://localhost:11434/v1" }
  mock: { kind: mock, latency_ms: 5, tokens_per_second: 100 }
models:
  gpt:
    strategy: round_robin
    targets: [{ provider: openai, model: gpt-4o, price: { input_per_mtok: 2.5, output_per_mtok: 10 } }]
    retry: { attempts: 3, backoff_ms: 100, on: [429, 5xx, timeout, connect] }
"#,
            env,
        )
        .unwrap();
        let openai = &cfg.providers["openai"];
        assert_eq!(openai.kind, ProviderKind::OpenAi);
        assert_eq!(openai.api_key.as_ref().unwrap().expose(), "sk-live");
        assert_eq!(
            openai.base_url.as_ref().unwrap().as_str(),
            "https://api.openai.com/v1"
        );
        assert!(openai.disabled.is_none());
        assert_eq!(
            cfg.providers["anthropic"].disabled.as_deref(),
            Some("api_key is empty")
        );
        assert!(
            cfg.providers["local"].disabled.is_none(),
            "local servers need no key"
        );
        assert_eq!(cfg.models["gpt"].strategy, Strategy::RoundRobin);
        assert_eq!(cfg.models["gpt"].retry.attempts, 3);
        assert!(cfg.warnings.iter().any(|w| w.contains("anthropic")));
    }

    #[test]
    fn zero_backoff_retries_at_once_and_negative_is_refused() {
        let text = |ms: i64| {
            format!(
                "providers: {{ mock: {{ kind: mock }} }}\nmodels:\n  m: {{ targets: [{{ provider: mock, model: x }}], retry: {{ backoff_ms: {ms} }} }}\n"
            )
        };
        let cfg = parse(&text(0), env).unwrap();
        assert_eq!(cfg.models["m"].retry.backoff, std::time::Duration::ZERO);
        assert_eq!(
            issues(&text(-5)),
            vec!["models.m.retry.backoff_ms: must be zero or a positive number of milliseconds"]
        );
    }

    #[test]
    fn names_the_key_path_and_reason() {
        let found = issues(
            r#"
providers:
  anthropic: { kind: anthropic, base_url: "not a url", api_key: k }
  weird: { kind: nosuch }
models:
  m: { targets: [{ provider: ghost, model: x }], strategy: random }
  empty: { targets: [] }
"#,
        );
        assert!(
            found.contains(&"providers.anthropic.base_url: not a URL".to_string()),
            "{found:?}"
        );
        assert!(found
            .iter()
            .any(|i| i.starts_with("providers.weird.kind: unknown kind 'nosuch'")));
        assert!(
            found.contains(&"models.m.targets[0].provider: unknown provider 'ghost'".to_string())
        );
        assert!(found
            .iter()
            .any(|i| i.starts_with("models.m.strategy: unknown strategy")));
        assert!(found.contains(&"models.empty.targets: must list at least one target".to_string()));
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let err = parse(
            "providers: { o: { kind: openai, api_key: ${NOPE_KEY} } }",
            env,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::MissingVariables(_)));
        assert!(err.to_string().contains("${NOPE_KEY}"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let found = issues("providers: { o: { kind: openai, base_ulr: x } }");
        assert!(found[0].contains("providers.o"), "{found:?}");
        assert!(found[0].contains("base_ulr"), "{found:?}");
    }

    #[test]
    fn rejects_bad_numbers_and_addresses() {
        let found = issues(
            r#"
server: { listen: ["nope"], max_body_bytes: 0, admin_listen: "1.2.3.4" }
providers:
  m: { kind: mock, tokens_per_second: -1 }
  o: { kind: openai, api_key: k, timeouts: { connect_ms: -5 }, latency_ms: 3 }
models:
  x: { targets: [{ provider: o, model: a }], retry: { attempts: 0, on: [418x] } }
"#,
        );
        for expected in [
            "server.listen[0]: 'nope' is not an IP:port address",
            "server.max_body_bytes: must be a positive integer",
            "server.admin_listen: '1.2.3.4' is not an IP:port address",
            "providers.m.tokens_per_second: must be a non-negative number",
            "providers.o.timeouts.connect_ms: must be a positive number of milliseconds",
            "providers.o.latency_ms: only applies to kind mock",
            "models.x.retry.attempts: must be between 1 and 10",
            "models.x.retry.on[0]: expected an HTTP status 400-599, 5xx, timeout or connect",
        ] {
            assert!(
                found.contains(&expected.to_string()),
                "missing {expected:?} in {found:?}"
            );
        }
    }

    #[test]
    fn vertex_needs_a_project_a_region_and_a_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sa.json");
        std::fs::write(
            &file,
            include_str!("../../tests/fixtures/vertex/service_account.json")
                .replace("TOKEN_URI", "https://oauth2.googleapis.com/token"),
        )
        .unwrap();
        let cfg = parse(
            &format!(
                "providers: {{ v: {{ kind: vertex, project: p-1, region: us-east5, service_account: \"{}\" }} }}",
                file.display()
            ),
            env,
        )
        .unwrap();
        let v = &cfg.providers["v"];
        assert!(v.disabled.is_none(), "{:?}", v.disabled);
        assert_eq!(
            v.base_url.as_ref().unwrap().as_str(),
            "https://us-east5-aiplatform.googleapis.com/"
        );
        assert!(!format!("{cfg:?}").contains("PRIVATE KEY"));
        let found = issues(
            "providers: { v: { kind: vertex, service_account: /nonexistent/sa.json }, o: { kind: openai, api_key: k, project: x } }",
        );
        for expected in [
            "providers.v.project: is required for kind vertex",
            "providers.v.region: is required for kind vertex (us-east5, global, ...)",
            "providers.o.project: only used with kind vertex",
        ] {
            assert!(
                found.contains(&expected.to_string()),
                "{expected}: {found:?}"
            );
        }
        assert!(found
            .iter()
            .any(|i| i.starts_with("providers.v.service_account: cannot read the key file")));
    }

    #[test]
    fn bedrock_needs_a_region_and_credentials() {
        let cfg = parse(
            "providers: { b: { kind: bedrock, region: eu-west-1, aws_access_key_id: AKID, aws_secret_access_key: s3cr3t } }",
            env,
        )
        .unwrap();
        let b = &cfg.providers["b"];
        assert!(b.disabled.is_none(), "{:?}", b.disabled);
        assert_eq!(
            b.base_url.as_ref().unwrap().as_str(),
            "https://bedrock-runtime.eu-west-1.amazonaws.com/"
        );
        assert_eq!(b.aws_credentials.as_ref().unwrap().access_key_id, "AKID");
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        // A Bedrock API key works instead of AWS credentials.
        let cfg = parse(
            "providers: { b: { kind: bedrock, region: us-east-1, api_key: k } }",
            env,
        )
        .unwrap();
        assert!(cfg.providers["b"].disabled.is_none());
        let found = issues(
            "providers: { b: { kind: bedrock, region: \"us east\", aws_access_key_id: AKID }, o: { kind: openai, api_key: k, region: x } }",
        );
        for expected in [
            "providers.b.region: not an AWS region name",
            "providers.b: set both aws_access_key_id and aws_secret_access_key, or neither",
            "providers.o.region: only used with kind bedrock",
        ] {
            assert!(
                found.contains(&expected.to_string()),
                "{expected}: {found:?}"
            );
        }
    }

    #[test]
    fn keys_limits_budgets_and_state() {
        let cfg = parse(
            r#"
state: { backend: redis, url: "redis://:pw@127.0.0.1:6379/2", failure_mode: fail_closed }
auth:
  keys:
    - { name: a, key: k, rpm: 10, tpm: 1000, max_concurrent: 2,
        budget_usd: { amount: 5, period: weekly },
        limits: [{ models: ["gpt-4o*"], rpm: 2 }] }
    - { name: b, key_sha256: "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD" }
"#,
            env,
        )
        .unwrap();
        let a = &cfg.auth.keys[0];
        assert_eq!(a.key_sha256, crate::auth::digest("k"));
        assert_eq!(
            a.limits,
            Limits {
                rpm: Some(10),
                tpm: Some(1000),
                max_concurrent: Some(2)
            }
        );
        assert_eq!(a.model_limits[0].limits.rpm, Some(2));
        assert_eq!(
            a.budget,
            Some(Budget {
                amount_usd: 5.0,
                period: BudgetPeriod::Weekly
            })
        );
        assert_eq!(cfg.auth.keys[1].key_sha256, crate::auth::digest("abc"));
        assert_eq!(cfg.state.failure_mode, FailureMode::FailClosed);
        assert!(matches!(cfg.state.backend, StateBackend::Redis { .. }));
        assert!(
            !format!("{cfg:?}").contains("pw@"),
            "the redis password stays hidden"
        );

        let found = issues(
            r#"
state: { backend: redis, failure_mode: maybe }
auth:
  keys:
    - { name: a, key: k, key_sha256: "00" }
    - { name: b, key_sha256: "xyz" }
    - { name: c, key: k2, rpm: 0, budget_usd: { amount: 1, period: hourly } }
    - { name: c, key: k2 }
"#,
        );
        for expected in [
            "state.url: required with backend: redis",
            "state.failure_mode: unknown mode 'maybe' (expected fail_open or fail_closed)",
            "auth.keys[0]: set key or key_sha256, not both",
            "auth.keys[1].key_sha256: must be 64 hex digits (see `switchyard keys hash`)",
            "auth.keys[2].rpm: must be a positive number (leave it out for no limit)",
            "auth.keys[2].budget_usd.period: unknown period 'hourly' (expected daily, weekly, monthly or total)",
            "auth.keys[3].name: 'c' is used by another key",
            "auth.keys[3]: the same key is configured twice",
        ] {
            assert!(found.contains(&expected.to_string()), "{expected}: {found:?}");
        }
        assert_eq!(
            issues("state: { backend: redis, url: \"http://x\" }"),
            vec!["state.url: not a redis:// or rediss:// URL with a host"]
        );
    }

    #[test]
    fn snapshots_keep_memory_budgets_or_warn() {
        let budgeted =
            "auth: { keys: [{ name: a, key: k, budget_usd: { amount: 5, period: monthly } }] }";
        let cfg = parse(
            &format!("state: {{ snapshot_path: /var/lib/switchyard/spend.json, snapshot_interval_s: 3 }}\n{budgeted}"),
            env,
        )
        .unwrap();
        assert_eq!(
            cfg.state.snapshot,
            Some(SnapshotSettings {
                path: "/var/lib/switchyard/spend.json".into(),
                interval: std::time::Duration::from_secs(3)
            })
        );
        assert!(!cfg.warnings.iter().any(|w| w.contains("snapshot_path")));
        // Without a snapshot, budgets on memory are allowed but warned about.
        let cfg = parse(budgeted, env).unwrap();
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("without state.snapshot_path")),
            "{:?}",
            cfg.warnings
        );
        let cfg = parse(
            "state: { backend: redis, url: \"redis://h\", snapshot_path: /x/spend.json }",
            env,
        )
        .unwrap();
        assert_eq!(cfg.state.snapshot, None);
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.contains("ignored with backend: redis")));
        let found = issues("state: { snapshot_path: spend.json, snapshot_interval_s: 0 }");
        for expected in [
            "state.snapshot_path: must be an absolute path",
            "state.snapshot_interval_s: must be a positive integer",
        ] {
            assert!(
                found.contains(&expected.to_string()),
                "{expected}: {found:?}"
            );
        }
        assert_eq!(
            issues("state: { snapshot_interval_s: 5 }"),
            vec!["state.snapshot_interval_s: only used with snapshot_path"]
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let cfg = parse(
            "providers: { o: { kind: openai, api_key: sk-very-secret } }",
            env,
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
    }
}
