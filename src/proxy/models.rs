//! `GET /v1/models` and `GET /v1/models/{id}`: the public models a client key may use, in
//! OpenAI's format, with pricing, context window and providers.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::accounting::catalog::CATALOG;
use crate::error::GatewayError;
use crate::routing::{ClientKey, Pricing, Route, RoutingTable};

/// The models `key` may use (all of them without client auth).
pub fn list_body(table: &RoutingTable, key: Option<&ClientKey>) -> Bytes {
    let data: Vec<Value> = table
        .routes()
        .filter(|route| key.is_none_or(|k| k.allows(&route.public_name)))
        .map(|route| model_json(table, route))
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}

/// One model, as the OpenAI SDK's `models.retrieve` expects it: a configured model, or a direct
/// `PROVIDER/MODEL`; 404 for anything else, and for a model the key may not use (as OpenAI
/// does, so a key cannot probe which models exist).
pub fn retrieve_body(
    table: &RoutingTable,
    key: Option<&ClientKey>,
    id: &str,
) -> Result<Bytes, GatewayError> {
    let not_found = || {
        GatewayError::UnknownModel(format!(
            "the model '{}' does not exist; GET /v1/models lists the available models",
            id.escape_debug()
        ))
    };
    if key.is_some_and(|k| !k.allows(id)) {
        return Err(not_found());
    }
    let route = table.resolve(id).map_err(|_| not_found())?;
    Ok(Bytes::from(model_json(table, &route).to_string()))
}

fn model_json(table: &RoutingTable, route: &Route) -> Value {
    let mut providers: Vec<&str> = Vec::new();
    for t in &route.targets {
        if !providers.contains(&t.provider.name.as_str()) {
            providers.push(&t.provider.name);
        }
    }
    let pricing = route.targets.iter().find_map(|t| t.price).map(|p| {
        json!({
            "input_per_mtok": p.input_per_mtok,
            "output_per_mtok": p.output_per_mtok,
            "cached_input_per_mtok": p.cached_input_per_mtok.unwrap_or(p.input_per_mtok),
            "cache_write_per_mtok": p.cache_write_per_mtok.unwrap_or(p.input_per_mtok),
        })
    });
    // OpenRouter's name for it; the smallest of the targets', since any of them may answer.
    let context_length = route
        .targets
        .iter()
        .filter_map(|t| match t.provider.pricing {
            Pricing::Catalog(family) => CATALOG.lookup(family, &t.upstream_model)?.context_window,
            _ => None,
        })
        .min();
    json!({
        "id": route.public_name,
        "object": "model",
        "created": table.built_at,
        "owned_by": "switchyard",
        "strategy": route.strategy.as_str(),
        "providers": providers,
        "pricing": pricing,
        "context_length": context_length,
    })
}
