//! `override_params`: bounds, defaults, forced values and forbidden parameters.
//!
//! ```yaml
//! filters:
//!   - type: override_params
//!     max_tokens: {max: 1024, default: 512}   # the output budget
//!     temperature: {min: 0, max: 1}
//!     top_p: {max: 0.95}
//!     set: {top_p: 0.9, reasoning_effort: low}
//!     forbid: [logit_bias, seed]
//! ```
//!
//! - `max_tokens`: the output budget (`max_completion_tokens`, else `max_tokens`) is lowered to
//!   `max`, and `default` is added when the client sent none; a changed budget is written as
//!   `max_completion_tokens` (and `max_tokens` cleared).
//! - `temperature`, `top_p`: a value the client sent is brought within `min`..`max`.
//! - `set`: forces `temperature`, `top_p`, `max_tokens`, `reasoning_effort`,
//!   `parallel_tool_calls`, `seed` or `stop`, over the client's value and over the bounds.
//! - `forbid`: a request carrying one of these parameters (non-null, by its OpenAI Chat name:
//!   `logit_bias`, `tools`, `n`, ..., `thinking` for Anthropic's thinking, or any other
//!   top-level field) is refused with a 400 naming it (action `deny`).
//!
//! The request is rewritten (action `rewrite`) only when a value changes.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::chat;
use crate::config::FilterSpec;
use crate::error::GatewayError;
use crate::filters::{record, Filter, FilterError, FilterRequest, Verdict};

/// Refuses settings other than `allowed`, naming the first unknown one by its path.
pub(super) fn check_keys(spec: &FilterSpec, allowed: &[&str]) -> Result<(), String> {
    check_map(&spec.path, &spec.settings, allowed)
}

/// Refuses keys of `map` (at `path`) other than `allowed`.
pub(super) fn check_map(
    path: &str,
    map: &Map<String, Value>,
    allowed: &[&str],
) -> Result<(), String> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(format!(
            "{path}.{key}: unknown setting (settings: {})",
            allowed.join(", ")
        )),
    }
}

/// A gateway error met while reading the request, as the filter's error.
pub(super) fn filter_error(e: GatewayError) -> FilterError {
    FilterError {
        status: e.status(),
        message: e.to_string(),
        code: "invalid_request",
    }
}

/// The parameters `set` may force.
const SETTABLE: [&str; 7] = [
    "temperature",
    "top_p",
    "max_tokens",
    "reasoning_effort",
    "parallel_tool_calls",
    "seed",
    "stop",
];

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Range {
    min: Option<f64>,
    max: Option<f64>,
}

impl Range {
    fn clamp(self, mut x: f64) -> f64 {
        if let Some(min) = self.min {
            x = x.max(min);
        }
        if let Some(max) = self.max {
            x = x.min(max);
        }
        x
    }
}

/// Values `set` forces.
#[derive(Debug, Default, Clone, PartialEq)]
struct Forced {
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u64>,
    reasoning_effort: Option<String>,
    parallel_tool_calls: Option<bool>,
    seed: Option<i64>,
    stop: Option<Value>,
}

pub struct OverrideParams {
    name: String,
    max_tokens_max: Option<u64>,
    max_tokens_default: Option<u64>,
    temperature: Range,
    top_p: Range,
    set: Forced,
    forbid: Vec<String>,
}

fn number(path: &str, v: &Value) -> Result<f64, String> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("{path}: must be a number"))
}

fn count(path: &str, v: &Value) -> Result<u64, String> {
    v.as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{path}: must be a positive integer"))
}

fn object<'a>(path: &str, v: &'a Value) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{path}: must be a map"))
}

fn range(path: &str, v: &Value) -> Result<Range, String> {
    let map = object(path, v)?;
    check_map(path, map, &["min", "max"])?;
    let get = |k: &str| {
        map.get(k)
            .map(|v| number(&format!("{path}.{k}"), v))
            .transpose()
    };
    let range = Range {
        min: get("min")?,
        max: get("max")?,
    };
    match (range.min, range.max) {
        (None, None) => Err(format!("{path}: give min, max or both")),
        (Some(min), Some(max)) if min > max => Err(format!("{path}: min is above max")),
        _ => Ok(range),
    }
}

impl OverrideParams {
    pub fn build(spec: &FilterSpec) -> Result<Arc<dyn Filter>, String> {
        check_keys(
            spec,
            &["max_tokens", "temperature", "top_p", "set", "forbid"],
        )?;
        if spec.settings.is_empty() {
            return Err(format!(
                "{}: give max_tokens, temperature, top_p, set or forbid",
                spec.path
            ));
        }
        let at = |key: &str| format!("{}.{key}", spec.path);
        let mut filter = OverrideParams {
            name: spec.name.clone(),
            max_tokens_max: None,
            max_tokens_default: None,
            temperature: Range::default(),
            top_p: Range::default(),
            set: Forced::default(),
            forbid: Vec::new(),
        };
        if let Some(v) = spec.settings.get("max_tokens") {
            let path = at("max_tokens");
            let map = object(&path, v)?;
            check_map(&path, map, &["max", "default"])?;
            let get = |k: &str| {
                map.get(k)
                    .map(|v| count(&format!("{path}.{k}"), v))
                    .transpose()
            };
            filter.max_tokens_max = get("max")?;
            filter.max_tokens_default = get("default")?;
            match (filter.max_tokens_max, filter.max_tokens_default) {
                (None, None) => return Err(format!("{path}: give max, default or both")),
                (Some(max), Some(default)) if default > max => {
                    return Err(format!("{path}.default: above max ({max})"))
                }
                _ => {}
            }
        }
        if let Some(v) = spec.settings.get("temperature") {
            filter.temperature = range(&at("temperature"), v)?;
        }
        if let Some(v) = spec.settings.get("top_p") {
            filter.top_p = range(&at("top_p"), v)?;
        }
        if let Some(v) = spec.settings.get("set") {
            let path = at("set");
            let map = object(&path, v)?;
            if map.is_empty() {
                return Err(format!("{path}: sets nothing"));
            }
            for (key, value) in map {
                let p = format!("{path}.{key}");
                let set = &mut filter.set;
                match key.as_str() {
                    "temperature" => set.temperature = Some(number(&p, value)?),
                    "top_p" => set.top_p = Some(number(&p, value)?),
                    "max_tokens" => set.max_tokens = Some(count(&p, value)?),
                    "reasoning_effort" => match value {
                        Value::String(s) if !s.is_empty() => set.reasoning_effort = Some(s.clone()),
                        _ => return Err(format!("{p}: must be a string (low, medium, high, ...)")),
                    },
                    "parallel_tool_calls" => {
                        let b = value.as_bool();
                        set.parallel_tool_calls =
                            Some(b.ok_or_else(|| format!("{p}: must be true or false"))?);
                    }
                    "seed" => {
                        let n = value.as_i64();
                        set.seed = Some(n.ok_or_else(|| format!("{p}: must be an integer"))?);
                    }
                    "stop" => {
                        let ok = match value {
                            Value::String(_) => true,
                            Value::Array(items) => items.iter().all(Value::is_string),
                            _ => false,
                        };
                        if !ok {
                            return Err(format!("{p}: must be a string or a list of strings"));
                        }
                        set.stop = Some(value.clone());
                    }
                    _ => {
                        return Err(format!(
                            "{p}: cannot be set (settable: {})",
                            SETTABLE.join(", ")
                        ))
                    }
                }
            }
        }
        if let Some(v) = spec.settings.get("forbid") {
            let path = at("forbid");
            let Value::Array(list) = v else {
                return Err(format!("{path}: must be a list of parameter names"));
            };
            for (i, item) in list.iter().enumerate() {
                let p = format!("{path}[{i}]");
                let name = match item {
                    Value::String(s) if !s.is_empty() => s.as_str(),
                    _ => return Err(format!("{p}: must be a parameter name")),
                };
                if matches!(name, "model" | "messages") {
                    return Err(format!("{p}: every request has '{name}'"));
                }
                if SETTABLE.contains(&name) && filter.sets(name) {
                    return Err(format!("{p}: '{name}' is also in set"));
                }
                filter.forbid.push(name.to_string());
            }
        }
        Ok(Arc::new(filter))
    }

    fn sets(&self, name: &str) -> bool {
        let s = &self.set;
        match name {
            "temperature" => s.temperature.is_some(),
            "top_p" => s.top_p.is_some(),
            "max_tokens" => s.max_tokens.is_some(),
            "reasoning_effort" => s.reasoning_effort.is_some(),
            "parallel_tool_calls" => s.parallel_tool_calls.is_some(),
            "seed" => s.seed.is_some(),
            "stop" => s.stop.is_some(),
            _ => false,
        }
    }

    /// What changes for this request.
    fn changes(&self, r: &chat::Request<'_>) -> Forced {
        let set = &self.set;
        let mut out = Forced::default();
        let budget = r.max_output_tokens();
        let target = match (set.max_tokens, budget) {
            (Some(forced), _) => Some(forced),
            (None, None) => self.max_tokens_default,
            (None, Some(n)) => Some(self.max_tokens_max.map_or(n, |max| n.min(max))),
        };
        if target.is_some() && target != budget {
            out.max_tokens = target;
        }
        let float = |forced: Option<f64>, range: Range, current: Option<f64>| {
            let target = forced.or(current.map(|x| range.clamp(x)));
            target.filter(|_| target != current)
        };
        out.temperature = float(set.temperature, self.temperature, r.temperature);
        out.top_p = float(set.top_p, self.top_p, r.top_p);
        out.reasoning_effort = set
            .reasoning_effort
            .clone()
            .filter(|v| r.reasoning_effort.as_deref() != Some(v.as_str()));
        out.parallel_tool_calls = set
            .parallel_tool_calls
            .filter(|v| r.parallel_tool_calls != Some(*v));
        out.seed = set.seed.filter(|v| r.seed != Some(*v));
        out.stop = set.stop.clone().filter(|v| r.stop.as_ref() != Some(v));
        out
    }
}

/// Whether the request carries the parameter `name` (not null).
fn present(r: &chat::Request<'_>, name: &str) -> bool {
    // Another dialect's request carries an OpenAI name it has no field for in `rest` (an
    // Anthropic request's `logit_bias`).
    r.rest.get(name).is_some_and(|v| !v.is_null()) || typed_present(r, name)
}

fn typed_present(r: &chat::Request<'_>, name: &str) -> bool {
    match name {
        "stream" => r.stream,
        "thinking" => r.thinking_budget.is_some(),
        "tools" => r.tools.is_some(),
        "tool_choice" => r.tool_choice.as_ref().is_some_and(|v| !v.is_null()),
        "parallel_tool_calls" => r.parallel_tool_calls.is_some(),
        "response_format" => r.response_format.as_ref().is_some_and(|v| !v.is_null()),
        "stop" => r.stop.as_ref().is_some_and(|v| !v.is_null()),
        "max_tokens" => r.max_tokens.is_some(),
        "max_completion_tokens" => r.max_completion_tokens.is_some(),
        "temperature" => r.temperature.is_some(),
        "top_p" => r.top_p.is_some(),
        "top_k" => r.top_k.is_some(),
        "n" => r.n.is_some(),
        "seed" => r.seed.is_some(),
        "logprobs" => r.logprobs.is_some(),
        "top_logprobs" => r.top_logprobs.is_some(),
        "presence_penalty" => r.presence_penalty.is_some(),
        "frequency_penalty" => r.frequency_penalty.is_some(),
        "logit_bias" => r.logit_bias.as_ref().is_some_and(|v| !v.is_null()),
        "user" => r.user.is_some(),
        "safety_identifier" => r.safety_identifier.is_some(),
        "reasoning_effort" => r.reasoning_effort.is_some(),
        _ => false,
    }
}

#[async_trait::async_trait]
impl Filter for OverrideParams {
    fn name(&self) -> &str {
        &self.name
    }

    async fn on_request(&self, request: &mut FilterRequest) -> Result<Verdict, FilterError> {
        let changes = {
            let canonical = request.canonical().map_err(filter_error)?;
            if let Some(name) = self.forbid.iter().find(|n| present(&canonical, n)) {
                record(&self.name, "deny", &request.info.request_id);
                return Err(FilterError {
                    status: 400,
                    message: format!("the parameter '{name}' is not allowed"),
                    code: "invalid_request",
                });
            }
            self.changes(&canonical)
        };
        if changes == Forced::default() {
            return Ok(Verdict::Continue);
        }
        let r = request.edit().map_err(filter_error)?;
        if let Some(n) = changes.max_tokens {
            r.max_completion_tokens = Some(n);
            r.max_tokens = None;
        }
        if let Some(t) = changes.temperature {
            r.temperature = Some(t);
        }
        if let Some(p) = changes.top_p {
            r.top_p = Some(p);
        }
        if let Some(effort) = changes.reasoning_effort {
            r.reasoning_effort = Some(effort.into());
        }
        if let Some(b) = changes.parallel_tool_calls {
            r.parallel_tool_calls = Some(b);
        }
        if let Some(seed) = changes.seed {
            r.seed = Some(seed);
        }
        if let Some(stop) = changes.stop {
            r.stop = Some(stop);
        }
        record(&self.name, "rewrite", &request.info.request_id);
        Ok(Verdict::Continue)
    }
}

/// Requests and specs for the tests of the built-in filters.
#[cfg(test)]
pub(super) mod testing {
    use bytes::Bytes;
    use http::HeaderMap;
    use serde_json::{Map, Value};

    use crate::config::FilterSpec;
    use crate::dialect::anthropic::MessagesRequest;
    use crate::dialect::openai::ChatRequest;
    use crate::dialect::{ClientRequest, Dialect};
    use crate::filters::{FilterRequest, RequestInfo};

    /// A spec from its YAML as JSON (`{"type": ..., settings...}`), at `models.m.filters[0]`.
    pub fn spec(config: Value) -> FilterSpec {
        let Value::Object(mut settings) = config else {
            panic!("a filter is an object")
        };
        let kind = settings
            .shift_remove("type")
            .and_then(|t| t.as_str().map(String::from))
            .expect("type");
        FilterSpec {
            name: kind.clone(),
            kind,
            settings,
            path: "models.m.filters[0]".to_string(),
        }
    }

    /// The error of building `config` (which must fail).
    pub fn build_error(config: Value) -> String {
        match super::super::build(&spec(config)) {
            Ok(_) => panic!("built"),
            Err(e) => e,
        }
    }

    pub fn info(dialect: Dialect, headers: &[(&str, &str)], metadata: Value) -> RequestInfo {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        let metadata: Map<String, Value> = match metadata {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        RequestInfo {
            request_id: "req-1".to_string(),
            key: Some("team-a".to_string()),
            dialect,
            headers: map,
            metadata,
        }
    }

    /// An OpenAI Chat request as a client sent it.
    pub fn openai(body: Value, headers: &[(&str, &str)], estimated_tokens: u64) -> FilterRequest {
        let request = ChatRequest::parse(body.to_string().as_bytes()).expect("parse");
        FilterRequest::new(
            info(Dialect::OpenAi, headers, Value::Null),
            ClientRequest::OpenAi(request),
            estimated_tokens,
        )
    }

    /// An Anthropic Messages request as a client sent it.
    pub fn anthropic(body: Value) -> FilterRequest {
        let raw = Bytes::from(body.to_string());
        let request = MessagesRequest::parse(raw, &HeaderMap::new()).expect("parse");
        FilterRequest::new(
            info(Dialect::Anthropic, &[], Value::Null),
            ClientRequest::Anthropic(request),
            100,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{anthropic, build_error, openai, spec};
    use crate::filters::{Filter, FilterError, FilterRequest};

    fn filter(settings: serde_json::Value) -> std::sync::Arc<dyn Filter> {
        let mut config = settings;
        config["type"] = json!("override_params");
        super::super::build(&spec(config)).expect("build")
    }

    async fn run(f: &dyn Filter, r: &mut FilterRequest) -> Result<(), FilterError> {
        f.on_request(r).await.map(|_| ())
    }

    fn chat(extra: serde_json::Value) -> FilterRequest {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        openai(body, &[], 10)
    }

    #[tokio::test]
    async fn max_tokens_is_lowered_to_max_as_max_completion_tokens() {
        let f = filter(json!({"max_tokens": {"max": 1024, "default": 512}}));
        let mut r = chat(json!({"max_tokens": 4000}));
        run(&*f, &mut r).await.expect("ok");
        assert!(r.is_edited());
        let c = r.canonical().expect("canonical");
        assert_eq!(c.max_completion_tokens, Some(1024));
        assert_eq!(c.max_tokens, None);

        let mut r = chat(json!({"max_completion_tokens": 2000, "max_tokens": 10}));
        run(&*f, &mut r).await.expect("ok");
        let c = r.canonical().expect("canonical");
        assert_eq!((c.max_completion_tokens, c.max_tokens), (Some(1024), None));
    }

    #[tokio::test]
    async fn max_tokens_default_is_added_when_absent() {
        let f = filter(json!({"max_tokens": {"max": 1024, "default": 512}}));
        let mut r = chat(json!({}));
        run(&*f, &mut r).await.expect("ok");
        assert_eq!(r.canonical().expect("c").max_completion_tokens, Some(512));
        // Without a default, an absent budget stays absent.
        let f = filter(json!({"max_tokens": {"max": 1024}}));
        let mut r = chat(json!({}));
        run(&*f, &mut r).await.expect("ok");
        assert!(!r.is_edited());
    }

    #[tokio::test]
    async fn values_within_bounds_leave_the_request_unedited() {
        let f = filter(json!({
            "max_tokens": {"max": 1024, "default": 512},
            "temperature": {"min": 0, "max": 1},
            "top_p": {"max": 0.95},
            "set": {"seed": 7},
            "forbid": ["logit_bias"]
        }));
        let mut r = chat(json!({"max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "seed": 7}));
        run(&*f, &mut r).await.expect("ok");
        assert!(!r.is_edited());
        // Bounds only apply to values the client sent.
        let f = filter(json!({"temperature": {"min": 0.2, "max": 1}}));
        let mut r = chat(json!({}));
        run(&*f, &mut r).await.expect("ok");
        assert!(!r.is_edited());
    }

    #[tokio::test]
    async fn temperature_and_top_p_are_clamped() {
        let f = filter(
            json!({"temperature": {"min": 0.2, "max": 1}, "top_p": {"min": 0.5, "max": 0.95}}),
        );
        let mut r = chat(json!({"temperature": 1.5, "top_p": 0.1}));
        run(&*f, &mut r).await.expect("ok");
        let c = r.canonical().expect("c");
        assert_eq!((c.temperature, c.top_p), (Some(1.0), Some(0.5)));
        let mut r = chat(json!({"temperature": 0, "top_p": 1}));
        run(&*f, &mut r).await.expect("ok");
        let c = r.canonical().expect("c");
        assert_eq!((c.temperature, c.top_p), (Some(0.2), Some(0.95)));
    }

    #[tokio::test]
    async fn set_forces_values_over_the_client_and_the_bounds() {
        let f = filter(json!({
            "temperature": {"max": 0.5},
            "set": {"top_p": 0.9, "reasoning_effort": "low", "seed": 7, "stop": ["END"],
                    "parallel_tool_calls": false, "temperature": 0.8, "max_tokens": 300}
        }));
        let mut r = chat(json!({"top_p": 0.3, "reasoning_effort": "high", "temperature": 0.1}));
        run(&*f, &mut r).await.expect("ok");
        let c = r.canonical().expect("c");
        assert_eq!(c.top_p, Some(0.9));
        assert_eq!(c.reasoning_effort.as_deref(), Some("low"));
        assert_eq!(c.seed, Some(7));
        assert_eq!(c.stop, Some(json!(["END"])));
        assert_eq!(c.parallel_tool_calls, Some(false));
        assert_eq!(c.temperature, Some(0.8));
        assert_eq!(c.max_completion_tokens, Some(300));
        // Already so: nothing to edit.
        let f = filter(json!({"set": {"reasoning_effort": "low", "stop": "x"}}));
        let mut r = chat(json!({"reasoning_effort": "low", "stop": "x"}));
        run(&*f, &mut r).await.expect("ok");
        assert!(!r.is_edited());
    }

    #[tokio::test]
    async fn forbidden_params_are_refused_by_name() {
        let f = filter(json!({"forbid": ["logit_bias", "seed", "prediction"]}));
        let e = run(&*f, &mut chat(json!({"logit_bias": {"50256": -100}})))
            .await
            .expect_err("denied");
        assert_eq!(e.status, 400);
        assert_eq!(e.message, "the parameter 'logit_bias' is not allowed");
        // A field the canonical model does not know, from `rest`.
        let e = run(
            &*f,
            &mut chat(json!({"prediction": {"type": "content", "content": "x"}})),
        )
        .await
        .expect_err("denied");
        assert_eq!(e.message, "the parameter 'prediction' is not allowed");
        // Null is absent.
        let mut r = chat(json!({"seed": null, "logit_bias": null, "temperature": 1}));
        run(&*f, &mut r).await.expect("allowed");
        assert!(!r.is_edited());
    }

    #[tokio::test]
    async fn anthropic_budget_and_temperature() {
        let f = filter(json!({"max_tokens": {"max": 1024}, "temperature": {"max": 0.7}}));
        let mut r = anthropic(json!({
            "model": "claude", "max_tokens": 4096, "temperature": 1.0,
            "system": "Be terse.", "messages": [{"role": "user", "content": "hi"}]
        }));
        run(&*f, &mut r).await.expect("ok");
        let c = r.canonical().expect("c");
        assert_eq!((c.max_completion_tokens, c.max_tokens), (Some(1024), None));
        assert_eq!(c.max_output_tokens(), Some(1024));
        assert_eq!(c.temperature, Some(0.7));
        let mut r = anthropic(json!({
            "model": "claude", "max_tokens": 512, "messages": [{"role": "user", "content": "hi"}]
        }));
        run(&*f, &mut r).await.expect("ok");
        assert!(!r.is_edited());
    }

    #[test]
    fn config_errors_name_the_setting() {
        let cases = [
            (
                json!({"maxtokens": {"max": 1}}),
                "models.m.filters[0].maxtokens: unknown setting (settings: max_tokens, temperature, top_p, set, forbid)",
            ),
            (
                json!({"max_tokens": {"max": 100, "defualt": 5}}),
                "models.m.filters[0].max_tokens.defualt: unknown setting (settings: max, default)",
            ),
            (
                json!({"max_tokens": {"max": 100, "default": 500}}),
                "models.m.filters[0].max_tokens.default: above max (100)",
            ),
            (
                json!({"max_tokens": {"max": 0}}),
                "models.m.filters[0].max_tokens.max: must be a positive integer",
            ),
            (
                json!({"temperature": {"min": 1, "max": 0.5}}),
                "models.m.filters[0].temperature: min is above max",
            ),
            (
                json!({"top_p": {"max": "high"}}),
                "models.m.filters[0].top_p.max: must be a number",
            ),
            (
                json!({"set": {"logit_bias": {}}}),
                "models.m.filters[0].set.logit_bias: cannot be set (settable: temperature, top_p, max_tokens, reasoning_effort, parallel_tool_calls, seed, stop)",
            ),
            (
                json!({"set": {"stop": [1]}}),
                "models.m.filters[0].set.stop: must be a string or a list of strings",
            ),
            (
                json!({"set": {"seed": 1}, "forbid": ["seed"]}),
                "models.m.filters[0].forbid[0]: 'seed' is also in set",
            ),
            (
                json!({"forbid": ["n", "messages"]}),
                "models.m.filters[0].forbid[1]: every request has 'messages'",
            ),
            (
                json!({}),
                "models.m.filters[0]: give max_tokens, temperature, top_p, set or forbid",
            ),
        ];
        for (mut config, expected) in cases {
            config["type"] = json!("override_params");
            assert_eq!(build_error(config), expected);
        }
    }
}
