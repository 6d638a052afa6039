//! The price catalog: what each vendor's models cost, so that every target has a price even
//! when the config gives none, and a `PROVIDER/MODEL` request is counted against budgets like a
//! configured one.
//!
//! The data is `data/model-prices.json`, built by `scripts/refresh-prices.py` from LiteLLM's
//! public, community-maintained list (MIT licence; source, version and date are in the file)
//! and compiled into the binary, so a gateway never prices from a file that changed under it. A
//! target's configured `price` always wins over the catalog.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::config::{Price, ProviderKind};

const CATALOG_JSON: &str = include_str!("../../data/model-prices.json");

/// One model's entry, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    pub context_window: Option<u64>,
}

impl CatalogEntry {
    pub fn price(&self) -> Price {
        Price {
            input_per_mtok: self.input,
            output_per_mtok: self.output,
            cached_input_per_mtok: self.cached_input,
            cache_write_per_mtok: self.cache_write,
        }
    }
}

#[derive(Deserialize)]
struct CatalogFile {
    retrieved: String,
    models: HashMap<String, HashMap<String, CatalogEntry>>,
}

/// Models by vendor family (`openai`, `anthropic`, `gemini`, `vertex`, `bedrock`, `azure`,
/// `groq`, `mistral`, ...), then by the vendor's own model id.
pub struct Catalog {
    /// When the data was taken from its source.
    pub retrieved: String,
    families: HashMap<String, HashMap<String, CatalogEntry>>,
}

/// The catalog compiled into this binary; a unit test proves it parses.
pub static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::parse(CATALOG_JSON).unwrap_or_else(|e| {
        log::error!(
            "the built-in price catalog does not parse ({e}); no model has a catalog price"
        );
        Catalog {
            retrieved: String::new(),
            families: HashMap::new(),
        }
    })
});

/// Where a provider's models are priced: its kind, and for OpenAI-compatible hosts the host.
/// `None` for hosts the catalog does not know (a local vLLM or Ollama): their targets need a
/// configured price.
pub fn family_of(kind: ProviderKind, host: &str) -> Option<&'static str> {
    let family = match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::AzureOpenAi => "azure",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Vertex => "vertex",
        ProviderKind::Bedrock => "bedrock",
        ProviderKind::OpenAiCompatible => {
            const HOSTS: &[(&str, &str)] = &[
                ("api.openai.com", "openai"),
                ("api.groq.com", "groq"),
                ("api.mistral.ai", "mistral"),
                ("api.deepseek.com", "deepseek"),
                ("api.together.xyz", "together"),
                ("api.together.ai", "together"),
                ("api.fireworks.ai", "fireworks"),
                ("api.x.ai", "xai"),
                ("api.deepinfra.com", "deepinfra"),
                ("api.perplexity.ai", "perplexity"),
                ("api.cerebras.ai", "cerebras"),
                ("openrouter.ai", "openrouter"),
            ];
            return HOSTS
                .iter()
                .find(|(known, _)| host.eq_ignore_ascii_case(known))
                .map(|(_, family)| *family);
        }
        _ => return None,
    };
    Some(family)
}

impl Catalog {
    pub fn parse(json: &str) -> Result<Catalog, serde_json::Error> {
        let file: CatalogFile = serde_json::from_str(json)?;
        Ok(Catalog {
            retrieved: file.retrieved,
            families: file.models,
        })
    }

    /// The entry for `model` of `family`, under the names vendors use for the same model:
    /// Gemini's `models/` prefix, Bedrock's cross-region inference profiles (`us.`, `eu.`, ...),
    /// Azure deployments named after their OpenAI model, Vertex's Gemini and Claude models.
    pub fn lookup(&self, family: &str, model: &str) -> Option<CatalogEntry> {
        let get = |family: &str, model: &str| self.families.get(family)?.get(model).copied();
        let model = model.trim_start_matches("models/");
        get(family, model).or_else(|| match family {
            "azure" => get("openai", model),
            "vertex" => get("gemini", model),
            "bedrock" => {
                let (_, rest) = model.split_once('.')?;
                get("bedrock", rest)
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_parses_and_prices_the_common_models() {
        let catalog = Catalog::parse(CATALOG_JSON).expect("data/model-prices.json parses");
        assert!(!catalog.retrieved.is_empty());
        for (family, model) in [
            ("openai", "gpt-4o-mini"),
            ("anthropic", "claude-sonnet-4-5"),
            ("gemini", "gemini-2.5-flash"),
            ("gemini", "models/gemini-2.5-flash"),
            ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
            ("azure", "gpt-4o"),
        ] {
            let entry = catalog
                .lookup(family, model)
                .unwrap_or_else(|| panic!("{family}/{model} has no price"));
            assert!(entry.input > 0.0 && entry.output > 0.0, "{family}/{model}");
        }
        let sonnet = catalog.lookup("anthropic", "claude-sonnet-4-5").unwrap();
        assert!(sonnet.cache_write.is_some() && sonnet.cached_input.is_some());
        assert!(catalog.lookup("openai", "no-such-model").is_none());
    }

    #[test]
    fn aliases_fall_back_to_the_family_that_prices_them() {
        let catalog = Catalog::parse(
            r#"{"retrieved": "2026-12-04", "models": {
                "openai": {"gpt-x": {"input": 1.0, "output": 2.0}},
                "gemini": {"gemini-x": {"input": 0.5, "output": 1.5, "context_window": 1000}},
                "bedrock": {"anthropic.claude-x-v1:0": {"input": 3.0, "output": 15.0,
                            "cached_input": 0.3, "cache_write": 3.75}}}}"#,
        )
        .unwrap();
        assert_eq!(catalog.lookup("azure", "gpt-x").unwrap().input, 1.0);
        assert_eq!(
            catalog.lookup("vertex", "gemini-x").unwrap().context_window,
            Some(1000)
        );
        let profile = catalog
            .lookup("bedrock", "us.anthropic.claude-x-v1:0")
            .unwrap()
            .price();
        assert_eq!(profile.cache_write_per_mtok, Some(3.75));
        assert!(catalog.lookup("openai", "gemini-x").is_none());
    }

    #[test]
    fn hosts_pick_their_family() {
        assert_eq!(
            family_of(ProviderKind::OpenAiCompatible, "api.groq.com"),
            Some("groq")
        );
        assert_eq!(family_of(ProviderKind::OpenAiCompatible, "localhost"), None);
        assert_eq!(family_of(ProviderKind::Bedrock, ""), Some("bedrock"));
    }
}
