//! The order in which a request tries a model's targets.
//!
//! The strategy picks the order; healthy targets always come before unhealthy ones (which stay at
//! the end as a last resort, since a probe can be wrong); OpenRouter-style request preferences
//! (`provider: {order, only, ignore, allow_fallbacks, sort}`) filter and reorder last.
//!
//! `pingora-load-balancing` selects among socket addresses; a target here is a provider account
//! plus a model, with prices and latencies of its own, so the selection is done here instead.

use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::{Route, Target};
use crate::config::Strategy;
use crate::error::GatewayError;

/// OpenRouter's `provider` request object.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPreferences {
    #[serde(default)]
    pub order: Vec<String>,
    #[serde(default)]
    pub only: Option<Vec<String>>,
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub allow_fallbacks: Option<bool>,
    #[serde(default)]
    pub sort: Option<SortBy>,
    /// OpenRouter fields with no meaning for a self-hosted gateway are accepted and ignored.
    #[serde(default)]
    pub data_collection: Option<serde_json::Value>,
    #[serde(default)]
    pub require_parameters: Option<bool>,
    #[serde(default)]
    pub quantizations: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    Price,
    Latency,
    Throughput,
}

impl ProviderPreferences {
    pub fn parse(value: &serde_json::Value) -> Result<Self, GatewayError> {
        ProviderPreferences::deserialize(value).map_err(|e| {
            GatewayError::invalid(
                format!("invalid provider preferences: {e}"),
                Some("provider"),
            )
        })
    }
}

/// Blended price used to rank targets: input plus output per million tokens.
fn price_key(t: &Target) -> f64 {
    t.price
        .map(|p| p.input_per_mtok + p.output_per_mtok)
        .unwrap_or(f64::INFINITY)
}

/// Unmeasured targets rank first so that they get measured.
fn latency_key(t: &Target) -> f64 {
    t.health.latency_ms().unwrap_or(0.0)
}

fn sort_by_key(targets: &mut [&Target], key: fn(&Target) -> f64) {
    targets.sort_by(|a, b| key(a).total_cmp(&key(b)));
}

/// Weighted random order without replacement; zero weights keep their place at the end.
fn weighted_order<'a>(
    targets: &[&'a Target],
    mut random: impl FnMut(u64) -> u64,
) -> Vec<&'a Target> {
    let mut pool: Vec<&Target> = targets.iter().copied().filter(|t| t.weight > 0).collect();
    let mut out = Vec::with_capacity(targets.len());
    while !pool.is_empty() {
        let total: u64 = pool.iter().map(|t| u64::from(t.weight)).sum();
        let mut pick = random(total);
        let index = pool
            .iter()
            .position(|t| {
                let w = u64::from(t.weight);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        out.push(pool.remove(index));
    }
    out.extend(targets.iter().copied().filter(|t| t.weight == 0));
    out
}

/// The targets of `route` in the order this request should try them.
pub fn order<'a>(route: &'a Route, prefs: Option<&ProviderPreferences>) -> Vec<&'a Target> {
    order_with(route, prefs, |n| fastrand::u64(..n.max(1)))
}

/// [`order`] with the random source given, for tests.
pub fn order_with<'a>(
    route: &'a Route,
    prefs: Option<&ProviderPreferences>,
    random: impl FnMut(u64) -> u64,
) -> Vec<&'a Target> {
    let all: Vec<&Target> = route.targets.iter().collect();
    let mut targets = match route.strategy {
        Strategy::Fallback => all,
        Strategy::RoundRobin => {
            let start = route.cursor.fetch_add(1, Ordering::Relaxed) % all.len().max(1);
            all[start..].iter().chain(&all[..start]).copied().collect()
        }
        Strategy::Weighted => weighted_order(&all, random),
        Strategy::LeastLatency => {
            let mut t = all;
            sort_by_key(&mut t, latency_key);
            t
        }
        Strategy::LowestCost => {
            let mut t = all;
            sort_by_key(&mut t, price_key);
            t
        }
    };
    // Stable: within each group the strategy's order stands.
    targets.sort_by_key(|t| !t.health.is_healthy());

    if let Some(p) = prefs {
        if let Some(only) = &p.only {
            targets.retain(|t| only.iter().any(|o| *o == t.provider.name));
        }
        targets.retain(|t| !p.ignore.iter().any(|i| *i == t.provider.name));
        match p.sort {
            Some(SortBy::Price) => sort_by_key(&mut targets, price_key),
            Some(SortBy::Latency) | Some(SortBy::Throughput) => {
                sort_by_key(&mut targets, latency_key);
            }
            None => {}
        }
        if !p.order.is_empty() {
            let rank = |t: &Target| {
                p.order
                    .iter()
                    .position(|o| *o == t.provider.name)
                    .unwrap_or(usize::MAX)
            };
            targets.sort_by_key(|t| rank(t));
            if p.allow_fallbacks == Some(false) {
                targets.retain(|t| rank(t) != usize::MAX);
            }
        } else if p.allow_fallbacks == Some(false) {
            targets.truncate(1);
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Strategy};
    use crate::routing::health::HealthRegistry;
    use crate::routing::RoutingTable;
    use std::time::Duration;

    const YAML: &str = r#"
providers:
  a: { kind: mock }
  b: { kind: mock }
  # A local server: the catalog has no price for it (a mock would cost a known $0).
  c: { kind: openai-compatible, base_url: "http://127.0.0.1:9/v1" }
models:
  m:
    strategy: fallback
    targets:
      - { provider: a, model: x, weight: 1, price: { input_per_mtok: 5, output_per_mtok: 15 } }
      - { provider: b, model: x, weight: 3, price: { input_per_mtok: 1, output_per_mtok: 2 } }
      - { provider: c, model: x, weight: 0 }
"#;

    fn table(strategy: &str) -> (RoutingTable, HealthRegistry) {
        let cfg = parse(&YAML.replace("fallback", strategy), |_| None).unwrap();
        let registry = HealthRegistry::default();
        (RoutingTable::build_with(&cfg, &registry).unwrap(), registry)
    }

    fn names(targets: &[&Target]) -> Vec<String> {
        targets.iter().map(|t| t.provider.name.clone()).collect()
    }

    #[test]
    fn fallback_keeps_config_order_and_moves_unhealthy_last() {
        let (t, registry) = table("fallback");
        let route = t.resolve("m").unwrap();
        assert_eq!(names(&order(&route, None)), ["a", "b", "c"]);
        registry
            .target("a", "x")
            .record_rate_limited(Some(Duration::from_secs(30)));
        assert_eq!(names(&order(&route, None)), ["b", "c", "a"]);
    }

    #[test]
    fn round_robin_rotates() {
        let (t, _) = table("round_robin");
        let route = t.resolve("m").unwrap();
        let firsts: Vec<String> = (0..4)
            .map(|_| names(&order(&route, None))[0].clone())
            .collect();
        assert_eq!(firsts, ["a", "b", "c", "a"]);
        assert_eq!(names(&order(&route, None)), ["b", "c", "a"]);
    }

    #[test]
    fn weighted_follows_weights_and_zero_weight_goes_last() {
        let (t, _) = table("weighted");
        let route = t.resolve("m").unwrap();
        // Total weight 4: draws 0 -> a, 1..=3 -> b.
        assert_eq!(names(&order_with(&route, None, |_| 0)), ["a", "b", "c"]);
        assert_eq!(names(&order_with(&route, None, |_| 2)), ["b", "a", "c"]);
        let mut b_first = 0;
        for _ in 0..2000 {
            if names(&order(&route, None))[0] == "b" {
                b_first += 1;
            }
        }
        assert!(
            (1300..1700).contains(&b_first),
            "b first {b_first}/2000, expected ~1500"
        );
    }

    #[test]
    fn least_latency_prefers_fast_and_explores_unmeasured() {
        let (t, registry) = table("least_latency");
        let route = t.resolve("m").unwrap();
        registry
            .target("a", "x")
            .record_success(Some(Duration::from_millis(300)));
        registry
            .target("b", "x")
            .record_success(Some(Duration::from_millis(100)));
        assert_eq!(names(&order(&route, None)), ["c", "b", "a"]);
        registry
            .target("c", "x")
            .record_success(Some(Duration::from_millis(900)));
        assert_eq!(names(&order(&route, None)), ["b", "a", "c"]);
    }

    #[test]
    fn lowest_cost_sorts_by_price_with_unpriced_last() {
        let (t, _) = table("lowest_cost");
        let route = t.resolve("m").unwrap();
        assert_eq!(names(&order(&route, None)), ["b", "a", "c"]);
        assert_eq!(route.strategy, Strategy::LowestCost);
    }

    #[test]
    fn request_preferences_filter_and_reorder() {
        let (t, _) = table("fallback");
        let route = t.resolve("m").unwrap();
        let prefs = |v: serde_json::Value| ProviderPreferences::parse(&v).unwrap();
        assert_eq!(
            names(&order(
                &route,
                Some(&prefs(serde_json::json!({"order": ["c", "b"]})))
            )),
            ["c", "b", "a"]
        );
        assert_eq!(
            names(&order(
                &route,
                Some(&prefs(
                    serde_json::json!({"order": ["c"], "allow_fallbacks": false})
                ))
            )),
            ["c"]
        );
        assert_eq!(
            names(&order(
                &route,
                Some(&prefs(serde_json::json!({"only": ["a", "c"]})))
            )),
            ["a", "c"]
        );
        assert_eq!(
            names(&order(
                &route,
                Some(&prefs(serde_json::json!({"ignore": ["a"]})))
            )),
            ["b", "c"]
        );
        assert_eq!(
            names(&order(
                &route,
                Some(&prefs(serde_json::json!({"sort": "price"})))
            )),
            ["b", "a", "c"]
        );
        assert_eq!(
            names(&order(
                &route,
                Some(&prefs(serde_json::json!({"allow_fallbacks": false})))
            )),
            ["a"]
        );
        assert!(ProviderPreferences::parse(&serde_json::json!({"sort": "vibes"})).is_err());
    }
}
