//! Turns [`RawConfig`] into a [`Config`], collecting every problem with its key path. One
//! module per config section: [`server`](mod@server), [`state`](mod@state),
//! [`auth`](mod@auth) (keys, limits, budgets), [`providers`] (with Bedrock's and Vertex's
//! settings) and [`models`] (with prices and retries); the checks of single values they share
//! are here.

mod auth;
mod models;
mod providers;
mod server;
mod state;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;

use super::raw::*;
use super::*;
use auth::{auth, unmatched_key_globs};
use models::model;
use providers::provider;
use server::server;
use state::state;

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

/// A `filters:` list: each item an object with a `type` and an optional unique `name`; the rest
/// of it is the filter's settings, which the filter checks when the table is built.
fn filters(
    path: &str,
    raw: Option<Vec<serde_json::Value>>,
    issues: &mut Issues,
) -> Vec<FilterSpec> {
    let mut specs: Vec<FilterSpec> = Vec::new();
    for (i, item) in raw.into_iter().flatten().enumerate() {
        let path = format!("{path}[{i}]");
        let serde_json::Value::Object(mut settings) = item else {
            issues.push(path, "a filter is an object with a `type`");
            continue;
        };
        let kind = match settings.shift_remove("type") {
            Some(serde_json::Value::String(kind)) if !kind.is_empty() => kind,
            _ => {
                issues.push(format!("{path}.type"), "required: the filter's kind");
                continue;
            }
        };
        let name = match settings.shift_remove("name") {
            None => kind.clone(),
            Some(serde_json::Value::String(name)) if !name.is_empty() => name,
            Some(_) => {
                issues.push(format!("{path}.name"), "must be a non-empty string");
                continue;
            }
        };
        if specs.iter().any(|s| s.name == name) {
            issues.push(
                format!("{path}.name"),
                format!("two filters here are named '{name}'; give one a `name`"),
            );
            continue;
        }
        specs.push(FilterSpec {
            kind,
            name,
            settings,
            path,
        });
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::test_support::{env, issues};
    use crate::config::{parse, ConfigError, ProviderKind, Strategy};

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
}
