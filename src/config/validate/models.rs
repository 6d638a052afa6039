//! `models:`: each public model's routing strategy and targets, with the targets' prices and
//! the model's retry policy.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Issues;
use crate::config::raw::{RawCache, RawHedge, RawModel, RawPrice, RawRetry, RawSticky};
use crate::config::{
    CachePolicy, CacheScope, HedgeDelay, HedgePolicy, ModelConfig, Price, ProviderConfig, RetryOn,
    RetryPolicy, StickyPolicy, Strategy, TargetConfig,
};

/// `models.NAME.cache.ttl_s` when absent.
const DEFAULT_CACHE_TTL_S: u64 = 300;
/// `models.NAME.hedge.after_ms` when absent.
const DEFAULT_HEDGE_AFTER_MS: u64 = 1000;
/// `models.NAME.hedge.max_per_minute` when absent.
const DEFAULT_HEDGES_PER_MINUTE: u64 = 60;
/// `models.NAME.sticky.ttl_s` when absent: about as long as vendors keep a prompt cache warm
/// at the longest (Anthropic's extended TTL is an hour, OpenAI's up to an hour idle).
const DEFAULT_STICKY_TTL_S: u64 = 3600;

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
    let cache = raw
        .cache
        .map(|c| cache(&format!("{path}.cache"), c, issues));
    let hedge = raw
        .hedge
        .map(|h| hedge(&format!("{path}.hedge"), h, issues));
    if hedge.is_some() && targets.len() < 2 {
        warnings.push(format!(
            "{path}.hedge: ignored, the model has a single target to ask"
        ));
    }
    let sticky = raw
        .sticky
        .map(|s| sticky(&format!("{path}.sticky"), s, issues));
    if sticky.is_some() {
        if matches!(strategy, Strategy::Fallback) {
            warnings.push(format!(
                "{path}.sticky: ignored, strategy `fallback` already sends every request to the first healthy target"
            ));
        } else if !targets
            .iter()
            .any(|t| t.price.is_some_and(|p| p.caches_input()))
        {
            warnings.push(format!(
                "{path}.sticky: ignored, no target has a cached_input_per_mtok below its input_per_mtok"
            ));
        }
    }
    Some(ModelConfig {
        name: name.to_string(),
        strategy,
        targets,
        retry,
        filters,
        cache,
        hedge,
        sticky,
    })
}

fn cache(path: &str, raw: RawCache, issues: &mut Issues) -> CachePolicy {
    let ttl_s = super::positive(
        &format!("{path}.ttl_s"),
        raw.ttl_s,
        DEFAULT_CACHE_TTL_S,
        issues,
    );
    let scope = match raw.scope.as_deref() {
        None | Some("key") => CacheScope::Key,
        Some("shared") => CacheScope::Shared,
        Some(other) => {
            issues.push(
                format!("{path}.scope"),
                format!("unknown scope '{other}' (expected key or shared)"),
            );
            CacheScope::Key
        }
    };
    CachePolicy {
        ttl: Duration::from_secs(ttl_s),
        scope,
        sampled: raw.sampled.unwrap_or(false),
    }
}

fn hedge(path: &str, raw: RawHedge, issues: &mut Issues) -> HedgePolicy {
    let after_ms = super::positive(
        &format!("{path}.after_ms"),
        raw.after_ms,
        DEFAULT_HEDGE_AFTER_MS,
        issues,
    );
    let fixed = Duration::from_millis(after_ms);
    let delay = match &raw.after {
        None => HedgeDelay::Fixed(fixed),
        Some(serde_yaml::Value::Number(n)) => match n.as_u64().filter(|&ms| ms > 0) {
            Some(ms) => HedgeDelay::Fixed(Duration::from_millis(ms)),
            None => {
                issues.push(
                    format!("{path}.after"),
                    "must be a positive number of milliseconds, p90 or p95",
                );
                HedgeDelay::Fixed(fixed)
            }
        },
        Some(serde_yaml::Value::String(s)) if s == "p90" || s == "p95" => HedgeDelay::Percentile {
            percentile: if s == "p90" { 90 } else { 95 },
            fallback: fixed,
        },
        Some(_) => {
            issues.push(
                format!("{path}.after"),
                "must be a positive number of milliseconds, p90 or p95",
            );
            HedgeDelay::Fixed(fixed)
        }
    };
    let max_per_minute = super::positive(
        &format!("{path}.max_per_minute"),
        raw.max_per_minute,
        DEFAULT_HEDGES_PER_MINUTE,
        issues,
    );
    HedgePolicy {
        delay,
        max_per_minute: u32::try_from(max_per_minute).unwrap_or(u32::MAX),
    }
}

fn sticky(path: &str, raw: RawSticky, issues: &mut Issues) -> StickyPolicy {
    let ttl_s = super::positive(
        &format!("{path}.ttl_s"),
        raw.ttl_s,
        DEFAULT_STICKY_TTL_S,
        issues,
    );
    StickyPolicy {
        ttl: Duration::from_secs(ttl_s),
    }
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
