//! `providers:`: kind, base URL, key, headers, timeouts, health checks and circuit breaker of
//! each provider; Bedrock's region and AWS credentials, Vertex's project and service account,
//! and the built-in mock's settings.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

use super::{non_negative, positive, Issues};

/// Calls one client request may have in flight to a provider when it needs several.
const DEFAULT_PARALLEL_REQUESTS: usize = 4;
use crate::config::raw::RawProvider;
use crate::config::{
    AwsCredentials, CircuitBreaker, MockSettings, ProviderConfig, ProviderKind, Secret,
    ServiceAccountKey, Timeouts,
};

pub(super) fn provider(
    name: &str,
    raw: RawProvider,
    issues: &mut Issues,
) -> Option<ProviderConfig> {
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
    let max_parallel_requests = match raw.max_parallel_requests {
        None => DEFAULT_PARALLEL_REQUESTS,
        Some(n) if (1..=64).contains(&n) => n as usize,
        Some(_) => {
            issues.push(
                format!("{path}.max_parallel_requests"),
                "must be between 1 and 64",
            );
            DEFAULT_PARALLEL_REQUESTS
        }
    };

    let openai_kind = matches!(
        kind,
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible | ProviderKind::AzureOpenAi
    );
    if raw.responses_api.is_some() && !openai_kind {
        issues.push(
            format!("{path}.responses_api"),
            "only applies to kinds openai, openai-compatible and azure-openai",
        );
    }
    let responses_api = raw.responses_api.unwrap_or(matches!(
        kind,
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi
    ));
    if raw.completions_api.is_some()
        && !matches!(kind, ProviderKind::OpenAi | ProviderKind::OpenAiCompatible)
    {
        issues.push(
            format!("{path}.completions_api"),
            "only applies to kinds openai and openai-compatible",
        );
    }

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
        max_parallel_requests,
        responses_api: responses_api && openai_kind,
        completions_api: raw.completions_api.unwrap_or(false),
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
            issues.push(format!("{path}.project"), "not a Google Cloud project id");
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

fn http_url(path: &str, text: &str, issues: &mut Issues) -> Option<Url> {
    match Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        _ => {
            issues.push(path, "not a URL");
            None
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
    use super::super::test_support::{env, issues};
    use crate::config::parse;

    #[test]
    fn vertex_needs_a_project_a_region_and_a_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sa.json");
        std::fs::write(
            &file,
            include_str!("../../../tests/fixtures/vertex/service_account.json")
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
    fn completions_api_is_for_openai_kinds_only() {
        let cfg = parse(
            "providers: { v: { kind: openai-compatible, base_url: 'http://h/v1', completions_api: true }, o: { kind: openai, api_key: k } }",
            env,
        )
        .unwrap();
        assert!(cfg.providers["v"].completions_api);
        assert!(!cfg.providers["o"].completions_api);
        let found =
            issues("providers: { a: { kind: anthropic, api_key: k, completions_api: true } }");
        assert!(
            found.contains(
                &"providers.a.completions_api: only applies to kinds openai and openai-compatible"
                    .to_string()
            ),
            "{found:?}"
        );
    }

    #[test]
    fn parallel_requests_default_and_bounds() {
        let cfg = parse(
            "providers: { b: { kind: bedrock, region: eu-west-1, aws_access_key_id: AKID, aws_secret_access_key: s, max_parallel_requests: 8 }, m: { kind: mock } }",
            env,
        )
        .unwrap();
        assert_eq!(cfg.providers["b"].max_parallel_requests, 8);
        assert_eq!(cfg.providers["m"].max_parallel_requests, 4);
        let found = issues("providers: { m: { kind: mock, max_parallel_requests: 0 } }");
        assert!(
            found
                .iter()
                .any(|i| i.contains("providers.m.max_parallel_requests")),
            "{found:?}"
        );
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
    fn secrets_do_not_show_in_debug_output() {
        let cfg = parse(
            "providers: { o: { kind: openai, api_key: sk-very-secret } }",
            env,
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("sk-very-secret"));
    }
}
