//! Prompt-cache-aware sticky routing (`models.NAME.sticky`): the choice, given the target a
//! conversation was last sent to. A vendor's prompt cache lives on the account and model that
//! served the earlier turns, so sending the next turn elsewhere pays full input price again.
//!
//! The conversation keeps its target while that target is healthy. A new conversation (or one
//! whose target went unhealthy or left the config) takes the strategy's first choice, and is
//! remembered only when that target's cached input is cheaper than its fresh input: elsewhere
//! there is nothing to gain and the strategy's spreading stands.

use super::Target;

/// What became of a request's target order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stickiness {
    /// The conversation's target, healthy, goes first.
    Kept,
    /// A new conversation, remembered on its first target.
    Assigned,
    /// The conversation's target is unhealthy or gone: it moves to the first target.
    Moved,
    /// Not remembered: the first target's prompt cache costs no less.
    Unpriced,
}

impl Stickiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Stickiness::Kept => "kept",
            Stickiness::Assigned => "assigned",
            Stickiness::Moved => "moved",
            Stickiness::Unpriced => "unpriced",
        }
    }

    /// Whether the conversation's target is (re)written, which also extends its TTL.
    pub fn remembers(self) -> bool {
        !matches!(self, Stickiness::Unpriced)
    }
}

/// How a target is remembered: its provider and upstream model.
pub fn target_id(target: &Target) -> String {
    format!("{}/{}", target.provider.name, target.upstream_model)
}

/// Puts the conversation's target (`remembered`, a [`target_id`]) first when it is healthy.
pub fn stick(targets: &mut [&Target], remembered: Option<&str>) -> Stickiness {
    if let Some(id) = remembered {
        let found = targets
            .iter()
            .position(|t| target_id(t) == id && t.health.is_healthy());
        if let Some(at) = found {
            // The others keep the strategy's order behind it.
            targets[..=at].rotate_right(1);
            return Stickiness::Kept;
        }
    }
    let caches = targets
        .first()
        .and_then(|t| t.price)
        .is_some_and(|p| p.caches_input());
    match (caches, remembered) {
        (false, _) => Stickiness::Unpriced,
        (true, None) => Stickiness::Assigned,
        (true, Some(_)) => Stickiness::Moved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::routing::health::HealthRegistry;
    use crate::routing::RoutingTable;

    const YAML: &str = r#"
providers:
  a: { kind: mock }
  b: { kind: mock }
  c: { kind: mock }
models:
  m:
    strategy: round_robin
    targets:
      - { provider: a, model: m, price: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3 } }
      - { provider: b, model: m, price: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3 } }
      - { provider: c, model: m, price: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3 } }
  plain:
    strategy: round_robin
    targets:
      - { provider: a, model: m, price: { input_per_mtok: 3, output_per_mtok: 15 } }
      - { provider: b, model: m, price: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 3 } }
"#;

    fn table() -> (RoutingTable, HealthRegistry) {
        let cfg = parse(YAML, |_| None).unwrap();
        let registry = HealthRegistry::default();
        (RoutingTable::build_with(&cfg, &registry).unwrap(), registry)
    }

    fn names(targets: &[&Target]) -> Vec<String> {
        targets.iter().map(|t| t.provider.name.clone()).collect()
    }

    #[test]
    fn a_healthy_remembered_target_goes_first_and_the_rest_keep_their_order() {
        let (table, registry) = table();
        let route = table.resolve("m").unwrap();
        let mut order: Vec<&Target> = route.targets.iter().collect();
        assert_eq!(stick(&mut order, Some("c/m")), Stickiness::Kept);
        assert_eq!(names(&order), ["c", "a", "b"]);

        let mut order: Vec<&Target> = route.targets.iter().collect();
        assert_eq!(stick(&mut order, None), Stickiness::Assigned);
        assert_eq!(names(&order), ["a", "b", "c"]);
        assert_eq!(stick(&mut order, Some("gone/m")), Stickiness::Moved);
        assert_eq!(target_id(order[0]), "a/m");

        // Unhealthy: the conversation moves to the strategy's choice.
        for _ in 0..10 {
            registry.target("c", "m").record_failure();
        }
        let mut order: Vec<&Target> = route.targets.iter().collect();
        assert_eq!(stick(&mut order, Some("c/m")), Stickiness::Moved);
        assert_eq!(names(&order), ["a", "b", "c"]);
    }

    #[test]
    fn without_a_cheaper_cached_price_nothing_is_remembered() {
        let (table, _registry) = table();
        let route = table.resolve("plain").unwrap();
        let mut order: Vec<&Target> = route.targets.iter().collect();
        assert_eq!(stick(&mut order, None), Stickiness::Unpriced);
        assert!(!Stickiness::Unpriced.remembers());
        order.reverse();
        assert_eq!(stick(&mut order, Some("x/m")), Stickiness::Unpriced);
        // A remembered target is kept all the same (its price may have changed since).
        assert_eq!(stick(&mut order, Some("a/m")), Stickiness::Kept);
    }
}
