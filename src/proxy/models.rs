//! `GET /v1/models`: the public models in OpenAI's list format, with pricing and providers.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::routing::RoutingTable;

pub fn list_body(table: &RoutingTable) -> Bytes {
    let data: Vec<Value> = table
        .routes()
        .map(|route| {
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
                })
            });
            json!({
                "id": route.public_name,
                "object": "model",
                "created": table.built_at,
                "owned_by": "switchyard",
                "strategy": route.strategy.as_str(),
                "providers": providers,
                "pricing": pricing,
            })
        })
        .collect();
    Bytes::from(json!({"object": "list", "data": data}).to_string())
}
