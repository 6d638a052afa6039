//! `auth:`: client keys (as given or as SHA-256 digests) with their limits and budgets, and the
//! admin token; and the warning about key model globs that match nothing.

use std::collections::BTreeMap;

use super::Issues;
use crate::config::raw::{RawAuth, RawBudget};
use crate::config::{
    AuthSettings, Budget, BudgetPeriod, ClientKey, Limits, ModelConfig, ModelLimits,
    ProviderConfig, Secret,
};

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

pub(super) fn auth(raw: RawAuth, issues: &mut Issues, warnings: &mut Vec<String>) -> AuthSettings {
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
        let filters = super::filters(&format!("{path}.filters"), key.filters, issues);
        keys.push(ClientKey {
            filters,
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

/// Model globs of client keys that match nothing a client could ask for: neither a configured
/// model nor a direct `PROVIDER/MODEL` of a configured provider. Usually a typo that silently
/// locks the key out.
pub(super) fn unmatched_key_globs(
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{env, issues};
    use crate::config::{parse, Budget, BudgetPeriod, FailureMode, Limits, StateBackend};

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
}
