//! Token usage and its price.

pub mod catalog;

use serde::{Deserialize, Serialize};

use crate::config::Price;

/// Tokens of one answered request, as the answering upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Part of `prompt_tokens` served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Part of `completion_tokens` spent on reasoning.
    pub reasoning_tokens: u64,
    /// Part of `prompt_tokens` written to the provider's prompt cache (Anthropic and Bedrock
    /// report it; it costs more than plain input there).
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// OpenAI's `usage` object; `total_tokens` is always `prompt + completion`.
    pub fn openai(&self) -> OpenAiUsageOut {
        OpenAiUsageOut {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total(),
            prompt_tokens_details: CachedTokens {
                cached_tokens: self.cached_tokens,
            },
            completion_tokens_details: ReasoningTokens {
                reasoning_tokens: self.reasoning_tokens,
            },
        }
    }

    /// [`Usage::openai`] as a JSON value, for answers built as values.
    pub fn openai_json(&self) -> serde_json::Value {
        serde_json::to_value(self.openai()).unwrap_or_default()
    }

    /// USD cost under `price`; cache reads and writes use their own prices when set. Exact:
    /// budgets add it up, and only what is shown is rounded ([`round_usd`]).
    pub fn cost(&self, price: &Price) -> f64 {
        let cached = self.cached_tokens.min(self.prompt_tokens);
        let written = self.cache_write_tokens.min(self.prompt_tokens - cached);
        let plain = self.prompt_tokens - cached - written;
        let cached_price = price.cached_input_per_mtok.unwrap_or(price.input_per_mtok);
        let write_price = price.cache_write_per_mtok.unwrap_or(price.input_per_mtok);
        (plain as f64 * price.input_per_mtok
            + cached as f64 * cached_price
            + written as f64 * write_price
            + self.completion_tokens as f64 * price.output_per_mtok)
            / 1_000_000.0
    }
}

/// `usd` rounded to whole micro-dollars, the unit money is shown and counted in: sums of
/// floats otherwise show as `4.3100000000000005`.
pub fn round_usd(usd: f64) -> f64 {
    (usd * 1_000_000.0).round() / 1_000_000.0
}

/// OpenAI's `usage` object, as [`Usage::openai`] writes it.
#[derive(Debug, Serialize)]
pub struct OpenAiUsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    completion_tokens_details: ReasoningTokens,
}

#[derive(Debug, Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Debug, Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

/// `json` (an object) with `"cost": cost` (in micro-dollars) added to its top-level `usage`
/// object, OpenRouter's way of reporting the price of an answer; `None` when it has no `usage`
/// object.
pub fn with_usage_cost(json: &[u8], cost: f64) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        usage: Option<&'a serde_json::value::RawValue>,
    }
    let envelope: Envelope = serde_json::from_slice(json).ok()?;
    let usage = envelope.usage?.get();
    let trimmed = usage.trim_end();
    if !usage.starts_with('{') || !trimmed.ends_with('}') {
        return None;
    }
    // The raw value borrows from `json`: its offset is where the usage object starts.
    let start = usage.as_ptr() as usize - json.as_ptr() as usize;
    let close = start + trimmed.len() - 1;
    let empty = usage[1..trimmed.len() - 1].trim().is_empty();
    let cost = serde_json::to_string(&round_usd(cost)).ok()?;
    let mut out = Vec::with_capacity(json.len() + cost.len() + 8);
    out.extend_from_slice(&json[..close]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"cost\":");
    out.extend_from_slice(cost.as_bytes());
    out.extend_from_slice(&json[close..]);
    Some(out)
}

/// OpenAI's `usage` object as it appears on the wire (fields vary by host, so all are optional).
#[derive(Debug, Default, Deserialize)]
pub struct OpenAiUsageWire {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetailsWire>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetailsWire>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PromptDetailsWire {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct CompletionDetailsWire {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl From<OpenAiUsageWire> for Usage {
    fn from(w: OpenAiUsageWire) -> Usage {
        Usage {
            prompt_tokens: w.prompt_tokens.unwrap_or(0),
            completion_tokens: w.completion_tokens.unwrap_or(0),
            cached_tokens: w
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            reasoning_tokens: w
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_spliced_into_the_usage_object() {
        let body = br#"{"id":"x","usage":{"prompt_tokens":3,"nested":{"a":1}} ,"model":"m"}"#;
        assert_eq!(
            String::from_utf8(with_usage_cost(body, 0.0015).unwrap()).unwrap(),
            r#"{"id":"x","usage":{"prompt_tokens":3,"nested":{"a":1},"cost":0.0015} ,"model":"m"}"#
        );
        assert_eq!(
            with_usage_cost(br#"{"usage":{ }}"#, 2.0).unwrap(),
            br#"{"usage":{ "cost":2.0}}"#.to_vec()
        );
        assert!(with_usage_cost(br#"{"usage":null}"#, 1.0).is_none());
        assert!(with_usage_cost(br#"{"choices":[]}"#, 1.0).is_none());
    }

    #[test]
    fn cost_uses_cached_price_for_cached_tokens() {
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            cached_tokens: 400_000,
            ..Usage::default()
        };
        let price = Price {
            input_per_mtok: 2.0,
            output_per_mtok: 10.0,
            cached_input_per_mtok: Some(0.5),
            cache_write_per_mtok: None,
        };
        let expected = 0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 10.0;
        assert!((usage.cost(&price) - expected).abs() < 1e-9);
        let no_cache_price = Price {
            cached_input_per_mtok: None,
            ..price
        };
        assert!((usage.cost(&no_cache_price) - (2.0 + 5.0)).abs() < 1e-9);
        // Anthropic-style: 100k written to the cache at 1.25x the input price.
        let writes = Usage {
            prompt_tokens: 1_000_000,
            cache_write_tokens: 100_000,
            ..Usage::default()
        };
        let anthropic = Price {
            cache_write_per_mtok: Some(2.5),
            ..price
        };
        assert!((writes.cost(&anthropic) - (0.9 * 2.0 + 0.1 * 2.5)).abs() < 1e-9);
    }

    #[test]
    fn money_is_whole_micro_dollars() {
        assert_eq!(round_usd(4.3100000000000005), 4.31);
        assert_eq!(round_usd(0.000_000_4), 0.0);
        assert_eq!(round_usd(0.000_000_6), 0.000_001);
    }
}
