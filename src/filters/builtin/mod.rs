//! The filters configured in YAML (`filters: [{type: ..., ...}]` on a model or a client key).
//! Each kind is a module; [`build`] makes one from its settings, refusing unknown settings with
//! their key path.

pub mod expr;
pub mod guard;
pub mod headers;
pub mod params;
pub mod route_when;
pub mod system_prompt;
pub mod webhook;

use std::sync::Arc;

use super::Filter;
use crate::config::FilterSpec;

/// Builds a configured filter; the error names the setting at fault (`models.m.filters[0].x:
/// ...`).
pub fn build(spec: &FilterSpec) -> Result<Arc<dyn Filter>, String> {
    let built: Result<Arc<dyn Filter>, String> = match spec.kind.as_str() {
        "set_headers" => headers::SetHeaders::build(spec),
        "remove_headers" => headers::RemoveHeaders::build(spec),
        "override_params" => params::OverrideParams::build(spec),
        "system_prompt" => system_prompt::SystemPrompt::build(spec),
        "route_when" => route_when::RouteWhen::build(spec),
        "webhook" => webhook::build(spec),
        "guard" => guard::Guard::build(spec),
        other => Err(format!(
            "unknown filter type '{other}' (types: set_headers, remove_headers, override_params, system_prompt, route_when, guard, webhook)"
        )),
    };
    built.map_err(|e| {
        if e.starts_with(&spec.path) {
            e
        } else {
            format!("{}: {e}", spec.path)
        }
    })
}
