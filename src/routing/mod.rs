//! The routing table: the compiled, immutable form of a config that the request path reads.
//!
//! A [`RoutingTable`] is built once per config load and published through [`TableHandle`] (an
//! `ArcSwap`). Each request takes one snapshot at its start and uses it for all its attempts, so
//! a reload never changes a request midway and nothing on the request path takes a lock.

pub mod checks;
pub mod health;
pub mod hedge;
pub mod retry;
pub mod sticky;
pub mod strategy;

use crate::filters::FilterSet;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arc_swap::ArcSwap;
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::accounting::catalog::{family_of, CATALOG};
use crate::config::{
    CachePolicy, Config, Price, ProviderConfig, ProviderKind, RetryPolicy, Secret, StickyPolicy,
    Strategy,
};
use crate::error::GatewayError;
use crate::limits::{KeyPolicy, LIMITS};
use crate::providers::mock::MockProvider;
use crate::providers::openai::OpenAiAdapter;
use crate::providers::{adapter_for, Endpoint, ProviderAdapter};
use crate::transport::Upstream;
use health::{HealthRegistry, TargetHealth};
use hedge::Hedge;

/// The health records of the running process; they outlive routing tables.
pub static HEALTH: std::sync::LazyLock<HealthRegistry> =
    std::sync::LazyLock::new(HealthRegistry::default);

/// The live table, swapped whole on reload.
pub type TableHandle = Arc<ArcSwap<RoutingTable>>;

/// A configured upstream account.
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// The vendor's wire format (the mock speaks OpenAI's).
    pub adapter: Box<dyn ProviderAdapter>,
    pub backend: Backend,
    /// Where its targets without a configured price are priced.
    pub pricing: Pricing,
}

/// Where a target's price comes from when its config gives none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// The built-in mock costs nothing.
    Free,
    /// The price catalog, under this vendor family.
    Catalog(&'static str),
    /// A host the catalog does not know (a local server): only configured prices.
    Unknown,
}

impl Provider {
    /// The price of `model` here when no config price is given.
    pub fn default_price(&self, model: &str) -> Option<Price> {
        match self.pricing {
            Pricing::Free => Some(Price {
                input_per_mtok: 0.0,
                output_per_mtok: 0.0,
                cached_input_per_mtok: None,
                cache_write_per_mtok: None,
            }),
            Pricing::Catalog(family) => CATALOG.lookup(family, model).map(|e| e.price()),
            Pricing::Unknown => None,
        }
    }
}

/// How a provider is reached.
pub enum Backend {
    /// A vendor API over HTTP(S).
    Http(Box<HttpBackend>),
    /// The built-in mock: a fake OpenAI server in the process.
    Mock(MockProvider),
}

pub struct HttpBackend {
    pub config: ProviderConfig,
    pub upstream: Upstream,
}

impl HttpBackend {
    pub fn api_key(&self) -> Option<&Secret> {
        self.config.api_key.as_ref()
    }
}

/// Where the mock's fake OpenAI server "lives", for the paths the adapter builds.
pub fn mock_endpoint() -> &'static Endpoint {
    static ENDPOINT: std::sync::LazyLock<Endpoint> = std::sync::LazyLock::new(|| Endpoint {
        tls: false,
        host: "mock".into(),
        port: 0,
        authority: "mock".into(),
        base_path: "/v1".into(),
    });
    &ENDPOINT
}

/// `model` as `provider`'s vendor can serve it (see [`ProviderAdapter::check_model`]).
fn checked_model(provider: &Provider, model: &str) -> Result<String, GatewayError> {
    provider.adapter.check_model(model)?;
    Ok(model.to_string())
}

/// One place a public model can be served from.
#[derive(Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub upstream_model: String,
    pub weight: u32,
    pub price: Option<Price>,
    pub health: Arc<TargetHealth>,
    /// A direct `PROVIDER/MODEL` route: the model is the client's choice, so the vendor not
    /// knowing it (404) is the client's mistake, not the provider's ill health.
    pub direct: bool,
}

/// A public model name and the targets behind it.
pub struct Route {
    /// The name clients use; also the `model` metric label.
    pub public_name: String,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    pub retry: RetryPolicy,
    /// Where the next round-robin request starts.
    pub cursor: AtomicUsize,
    /// `models.NAME.filters`, in order.
    pub filters: FilterSet,
    /// `models.NAME.cache`.
    pub cache: Option<CachePolicy>,
    /// `models.NAME.hedge`, with its budget (a model with one target never hedges).
    pub hedge: Option<Hedge>,
    /// `models.NAME.sticky`, for strategies that spread load.
    pub sticky: Option<StickyPolicy>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{}/{}", t.provider.name, t.upstream_model))
            .collect();
        f.debug_struct("Route")
            .field("public_name", &self.public_name)
            .field("strategy", &self.strategy)
            .field("targets", &targets)
            .finish()
    }
}

/// A client API key (its digest), the public models it may use, and its limits.
pub struct ClientKey {
    pub name: String,
    key_sha256: [u8; 32],
    models: Option<GlobSet>,
    /// The model globs as configured, for the admin API.
    pub model_patterns: Vec<String>,
    pub policy: Arc<KeyPolicy>,
    /// `auth.keys[].filters`, in order.
    pub filters: FilterSet,
}

impl ClientKey {
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|set| set.is_match(model))
    }
}

/// Builds configured filters, in order.
fn build_filters(specs: &[crate::config::FilterSpec]) -> Result<FilterSet, String> {
    specs
        .iter()
        .map(crate::filters::builtin::build)
        .collect::<Result<Vec<_>, _>>()
        .map(FilterSet::new)
}

pub struct RoutingTable {
    /// Counts loads: 1 for the config the process started with, +1 per successful reload.
    pub generation: u64,
    pub max_body_bytes: usize,
    /// Required on `/admin/*` when set.
    pub admin_token: Option<Secret>,
    /// Unix time of the build; the `created` of listed models.
    pub built_at: u64,
    providers: HashMap<String, Arc<Provider>>,
    /// Providers configured but switched off, with the reason, for helpful 404s.
    disabled_providers: HashMap<String, String>,
    models: HashMap<String, Arc<Route>>,
    /// Models configured but without any usable target, with the reason.
    unavailable_models: HashMap<String, String>,
    /// Public names in listing order.
    model_names: Vec<String>,
    client_keys: Vec<ClientKey>,
    /// Health records for direct `PROVIDER/MODEL` requests, by provider.
    direct_health: HashMap<String, Arc<TargetHealth>>,
}

impl RoutingTable {
    /// Builds the table with the process-wide health records.
    pub fn build(config: &Config) -> Result<RoutingTable, String> {
        Self::build_with(config, &HEALTH)
    }

    pub fn build_with(config: &Config, registry: &HealthRegistry) -> Result<RoutingTable, String> {
        let mut providers = HashMap::new();
        let mut disabled_providers = HashMap::new();
        for (name, pc) in &config.providers {
            if let Some(why) = &pc.disabled {
                disabled_providers.insert(name.clone(), why.clone());
                continue;
            }
            let pricing = match pc.kind {
                ProviderKind::Mock => Pricing::Free,
                kind => {
                    let host = pc
                        .base_url
                        .as_ref()
                        .and_then(|u| u.host_str())
                        .unwrap_or("");
                    family_of(kind, host).map_or(Pricing::Unknown, Pricing::Catalog)
                }
            };
            let (adapter, backend): (Box<dyn ProviderAdapter>, Backend) = match pc.kind {
                ProviderKind::Mock => (
                    Box::new(OpenAiAdapter::new(ProviderKind::OpenAi)),
                    Backend::Mock(MockProvider::new(pc.mock.clone())),
                ),
                _ => {
                    let url = pc
                        .base_url
                        .as_ref()
                        .ok_or_else(|| format!("providers.{name}.base_url: missing"))?;
                    let endpoint = Endpoint::from_url(url)
                        .ok_or_else(|| format!("providers.{name}.base_url: not a URL"))?;
                    let Some(adapter) = adapter_for(pc) else {
                        disabled_providers.insert(
                            name.clone(),
                            format!("kind {} is not supported by this build yet", pc.kind),
                        );
                        continue;
                    };
                    let backend = Backend::Http(Box::new(HttpBackend {
                        upstream: Upstream::new(endpoint, pc.timeouts),
                        config: pc.clone(),
                    }));
                    (adapter, backend)
                }
            };
            providers.insert(
                name.clone(),
                Arc::new(Provider {
                    name: name.clone(),
                    kind: pc.kind,
                    adapter,
                    backend,
                    pricing,
                }),
            );
        }

        let mut models = HashMap::new();
        let mut unavailable_models = HashMap::new();
        let mut model_names = Vec::new();
        for (name, mc) in &config.models {
            let mut targets = Vec::new();
            let mut reasons = Vec::new();
            for (i, t) in mc.targets.iter().enumerate() {
                match providers.get(&t.provider) {
                    Some(p) => targets.push(Target {
                        upstream_model: checked_model(p, &t.model)
                            .map_err(|e| format!("models.{name}.targets[{i}].model: {e}"))?,
                        provider: p.clone(),
                        weight: t.weight,
                        price: t.price.or_else(|| p.default_price(&t.model)),
                        health: {
                            let h = registry.target(&t.provider, &t.model);
                            let cb = config.providers[&t.provider].circuit_breaker;
                            h.set_policy(cb.failure_threshold, cb.cooldown);
                            h
                        },
                        direct: false,
                    }),
                    None => reasons.push(format!(
                        "provider '{}' is disabled ({})",
                        t.provider,
                        disabled_providers
                            .get(&t.provider)
                            .map(String::as_str)
                            .unwrap_or("unknown")
                    )),
                }
            }
            if targets.is_empty() {
                unavailable_models.insert(name.clone(), reasons.join("; "));
                continue;
            }
            model_names.push(name.clone());
            let targets_len = targets.len();
            models.insert(
                name.clone(),
                Arc::new(Route {
                    public_name: name.clone(),
                    strategy: mc.strategy,
                    targets,
                    retry: mc.retry.clone(),
                    cursor: AtomicUsize::new(0),
                    filters: build_filters(&mc.filters)?,
                    cache: mc.cache,
                    hedge: mc.hedge.filter(|_| targets_len > 1).map(Hedge::new),
                    sticky: mc.sticky.filter(|_| mc.strategy != Strategy::Fallback),
                }),
            );
        }

        let mut client_keys = Vec::new();
        for (i, k) in config.auth.keys.iter().enumerate() {
            let models = if k.models.is_empty() {
                None
            } else {
                let mut set = GlobSetBuilder::new();
                for (j, pattern) in k.models.iter().enumerate() {
                    let glob = Glob::new(pattern)
                        .map_err(|e| format!("auth.keys[{i}].models[{j}]: {e}"))?;
                    set.add(glob);
                }
                Some(
                    set.build()
                        .map_err(|e| format!("auth.keys[{i}].models: {e}"))?,
                )
            };
            client_keys.push(ClientKey {
                name: k.name.clone(),
                key_sha256: k.key_sha256,
                models,
                model_patterns: k.models.clone(),
                policy: Arc::new(LIMITS.policy(&format!("auth.keys[{i}]"), k)?),
                filters: build_filters(&k.filters)?,
            });
        }

        registry.retain(&|provider, model| {
            model == "*"
                || config.models.values().any(|m| {
                    m.targets
                        .iter()
                        .any(|t| t.provider == provider && t.model == model)
                })
        });
        let direct_health = providers
            .keys()
            .map(|name| {
                let h = registry.target(name, "*");
                let cb = config.providers[name].circuit_breaker;
                h.set_policy(cb.failure_threshold, cb.cooldown);
                (name.clone(), h)
            })
            .collect();
        Ok(RoutingTable {
            generation: 1,
            max_body_bytes: config.server.max_body_bytes,
            admin_token: config.auth.admin_token.clone(),
            built_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            providers,
            disabled_providers,
            models,
            unavailable_models,
            direct_health,
            model_names,
            client_keys,
        })
    }

    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Resolves a client's model string: a configured public model, else `PROVIDER/MODEL`.
    pub fn resolve(&self, model: &str) -> Result<Arc<Route>, GatewayError> {
        if let Some(route) = self.models.get(model) {
            return Ok(route.clone());
        }
        if let Some(why) = self.unavailable_models.get(model) {
            return Err(GatewayError::UnknownModel(format!(
                "model '{model}' is unavailable: {why}"
            )));
        }
        if let Some((provider, upstream_model)) = model.split_once('/') {
            if let Some(p) = self.providers.get(provider) {
                if !upstream_model.is_empty() {
                    // Decided here, before any attempt: a model the vendor could never serve is
                    // the client's 400, and never reaches a URL or a breaker.
                    p.adapter.check_model(upstream_model)?;
                    return Ok(Arc::new(Route {
                        public_name: model.to_string(),
                        strategy: Strategy::Fallback,
                        targets: vec![Target {
                            provider: p.clone(),
                            upstream_model: upstream_model.to_string(),
                            weight: 1,
                            price: p.default_price(upstream_model),
                            health: self.direct_health(p),
                            direct: true,
                        }],
                        retry: RetryPolicy::default(),
                        cursor: AtomicUsize::new(0),
                        filters: FilterSet::default(),
                        cache: None,
                        hedge: None,
                        sticky: None,
                    }));
                }
            }
            if let Some(why) = self.disabled_providers.get(provider) {
                return Err(GatewayError::UnknownModel(format!(
                    "model '{model}' is unavailable: provider '{provider}' is disabled ({why})"
                )));
            }
        }
        Err(GatewayError::UnknownModel(format!(
            "the model '{model}' does not exist; GET /v1/models lists the available models"
        )))
    }

    /// Direct `PROVIDER/MODEL` routes share one health record per provider: the model part is
    /// client-chosen, and per-model records would let clients grow the registry without bound.
    fn direct_health(&self, provider: &Provider) -> Arc<TargetHealth> {
        self.direct_health
            .get(&provider.name)
            .cloned()
            .unwrap_or_else(TargetHealth::detached)
    }

    /// The route of a configured model (its filters, cache policy, ...); direct
    /// `PROVIDER/MODEL` routes and unknown names have none. A map lookup: no route is built.
    pub fn configured(&self, model: &str) -> Option<&Route> {
        self.models.get(model).map(|route| &**route)
    }

    /// The `model` label of a request for `model`, bounded by the config: a configured name
    /// (usable or not), `PROVIDER/*` for a direct route to a configured provider, else
    /// `unknown`, so that clients cannot mint label values.
    pub fn model_label(&self, model: &str) -> String {
        if self.models.contains_key(model) || self.unavailable_models.contains_key(model) {
            return model.to_string();
        }
        match model.split_once('/') {
            Some((provider, _))
                if self.providers.contains_key(provider)
                    || self.disabled_providers.contains_key(provider) =>
            {
                format!("{provider}/*")
            }
            _ => crate::observability::metrics::UNKNOWN_LABEL.to_string(),
        }
    }

    /// Configured providers that are switched off, with the reason.
    pub fn disabled_providers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.disabled_providers
            .iter()
            .map(|(n, w)| (n.as_str(), w.as_str()))
    }

    /// The usable providers.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }

    /// Ready to serve: some configured target is healthy, or (with no models configured) some
    /// provider's probes say it is up.
    pub fn has_healthy_target(&self) -> bool {
        if self.models.is_empty() {
            return self.direct_health.values().any(|h| h.is_healthy());
        }
        self.models
            .values()
            .any(|route| route.targets.iter().any(|t| t.health.is_healthy()))
    }

    /// Public models and their routes, in listing order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.model_names.iter().filter_map(|n| self.models.get(n))
    }

    /// `None` when client auth is off (no keys configured).
    pub fn requires_client_key(&self) -> bool {
        !self.client_keys.is_empty()
    }

    /// The client key whose digest matches `presented`'s. Every configured digest is compared
    /// in constant time, without stopping at a match.
    pub fn client_key(&self, presented: &str) -> Option<&ClientKey> {
        let digest = crate::auth::digest(presented);
        let mut found = None;
        for key in &self.client_keys {
            if crate::auth::digests_equal(&key.key_sha256, &digest) && found.is_none() {
                found = Some(key);
            }
        }
        found
    }

    /// The configured client keys, in config order.
    pub fn client_keys(&self) -> &[ClientKey] {
        &self.client_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn table(yaml: &str) -> RoutingTable {
        let cfg = parse(yaml, |_| None).unwrap();
        RoutingTable::build(&cfg).unwrap()
    }

    const YAML: &str = r#"
providers:
  mock: { kind: mock }
  local: { kind: openai-compatible, base_url: "http://127.0.0.1:9/v1" }
  openai: { kind: openai, api_key: "" }
models:
  fast: { targets: [{ provider: mock, model: m1 }, { provider: local, model: l1 }] }
  gpt: { targets: [{ provider: openai, model: gpt-4o }] }
auth:
  keys:
    - { name: a, key: sk-a, models: ["fast", "mock/*"] }
"#;

    #[test]
    fn resolves_public_models_in_target_order() {
        let t = table(YAML);
        let route = t.resolve("fast").unwrap();
        let plan: Vec<_> = route
            .targets
            .iter()
            .map(|t| (t.provider.name.as_str(), t.upstream_model.as_str()))
            .collect();
        assert_eq!(plan, vec![("mock", "m1"), ("local", "l1")]);
    }

    #[test]
    fn resolves_provider_slash_model() {
        let t = table(YAML);
        let route = t.resolve("local/llama3:8b").unwrap();
        assert_eq!(route.targets[0].provider.name, "local");
        assert_eq!(route.targets[0].upstream_model, "llama3:8b");
        assert_eq!(route.public_name, "local/llama3:8b");
        assert_eq!(t.model_label("local/llama3:8b"), "local/*");
        assert_eq!(t.model_label("fast"), "fast");
        assert_eq!(t.model_label("nobody/x"), "unknown");
    }

    #[test]
    fn explains_unknown_and_disabled() {
        let t = table(YAML);
        let err = t.resolve("nope").unwrap_err();
        assert_eq!(err.status(), 404);
        let err = t.resolve("gpt").unwrap_err().to_string();
        assert!(err.contains("provider 'openai' is disabled"), "{err}");
        let err = t.resolve("openai/gpt-4o").unwrap_err().to_string();
        assert!(err.contains("disabled"), "{err}");
        assert!(t.resolve("mock/").is_err());
        assert_eq!(
            t.routes()
                .map(|r| r.public_name.as_str())
                .collect::<Vec<_>>(),
            vec!["fast"]
        );
    }

    #[test]
    fn client_keys_and_model_globs() {
        let t = table(YAML);
        assert!(t.requires_client_key());
        assert!(t.client_key("sk-b").is_none());
        let key = t.client_key("sk-a").unwrap();
        assert!(key.allows("fast") && key.allows("mock/anything"));
        assert!(!key.allows("gpt"));
    }
}
