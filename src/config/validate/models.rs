//! `models:`: each public model's routing strategy and targets, with the targets' prices and
//! the model's retry policy.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Issues;
use crate::config::raw::{RawModel, RawPrice, RawRetry};
use crate::config::{
    ModelConfig, Price, ProviderConfig, RetryOn, RetryPolicy, Strategy, TargetConfig,
};

pub(super) fn model(
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
    let filters = super::filters(&format!("{path}.filters"), raw.filters, issues);
    Some(ModelConfig {
        name: name.to_string(),
        strategy,
        targets,
        retry,
        filters,
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{env, issues};
    use crate::config::parse;

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
}
