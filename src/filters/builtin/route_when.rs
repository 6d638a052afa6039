//! `route_when`: routes a request to another model when a condition on it holds.
//!
//! ```yaml
//! filters:
//!   - type: route_when
//!     rules:
//!       - {when: 'header["x-tier"] == "gold"', model: premium}
//!       - {when: 'estimated_tokens > 50000', model: long-context}
//!     default: null        # or a model for requests no rule matched
//! ```
//!
//! The first rule whose `when` is true routes the request to its `model` (action `route`);
//! without a match the request goes to `default`, or stays where it was when there is none.
//! Conditions are in the language of [`super::expr`], parsed at load. Target models are not
//! checked here: an unknown one is a 404 when the request is routed.

use std::sync::Arc;

use serde_json::Value;

use super::expr::{Context, Expr};
use super::params::{check_keys, check_map, filter_error};
use crate::config::FilterSpec;
use crate::filters::{record, Filter, FilterError, FilterRequest, Verdict};

struct Rule {
    when: Expr,
    model: String,
}

pub struct RouteWhen {
    name: String,
    rules: Vec<Rule>,
    default: Option<String>,
    /// Whether a condition reads `param[...]`, and so the canonical request.
    uses_params: bool,
}

fn model_name(path: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(format!("{path}: must be a model name")),
    }
}

impl RouteWhen {
    pub fn build(spec: &FilterSpec) -> Result<Arc<dyn Filter>, String> {
        check_keys(spec, &["rules", "default"])?;
        let path = format!("{}.rules", spec.path);
        let list = match spec.settings.get("rules") {
            Some(Value::Array(list)) if !list.is_empty() => list,
            _ => return Err(format!("{path}: required: a list of {{when, model}}")),
        };
        let mut rules = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let Value::Object(map) = item else {
                return Err(format!("{at}: must be a map with `when` and `model`"));
            };
            check_map(&at, map, &["when", "model"])?;
            let when = match map.get("when") {
                Some(Value::String(source)) => {
                    Expr::parse(source).map_err(|e| format!("{at}.when: {e}"))?
                }
                Some(_) => return Err(format!("{at}.when: must be a string (an expression)")),
                None => return Err(format!("{at}.when: required")),
            };
            let model = match map.get("model") {
                Some(v) => model_name(&format!("{at}.model"), v)?,
                None => return Err(format!("{at}.model: required")),
            };
            rules.push(Rule { when, model });
        }
        let default = match spec.settings.get("default") {
            None | Some(Value::Null) => None,
            Some(v) => Some(model_name(&format!("{}.default", spec.path), v)?),
        };
        let uses_params = rules.iter().any(|r| r.when.uses_params());
        Ok(Arc::new(RouteWhen {
            name: spec.name.clone(),
            rules,
            default,
            uses_params,
        }))
    }

    /// The model this request goes to, if any rule (or the default) says so.
    fn target(&self, request: &FilterRequest) -> Result<Option<&str>, FilterError> {
        let canonical = match self.uses_params {
            true => Some(request.canonical().map_err(filter_error)?),
            false => None,
        };
        let ctx = Context::of(request, canonical.as_ref());
        Ok(self
            .rules
            .iter()
            .find(|rule| rule.when.eval(&ctx))
            .map(|rule| rule.model.as_str())
            .or(self.default.as_deref()))
    }
}

#[async_trait::async_trait]
impl Filter for RouteWhen {
    fn name(&self) -> &str {
        &self.name
    }

    async fn on_request(&self, request: &mut FilterRequest) -> Result<Verdict, FilterError> {
        if let Some(model) = self.target(request)? {
            if model != request.model() {
                request.set_model(model);
                record(&self.name, "route", &request.info.request_id);
            }
        }
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::params::testing::{anthropic, build_error, openai, spec};
    use crate::filters::{Filter, FilterRequest};

    fn filter(rules: serde_json::Value, default: serde_json::Value) -> std::sync::Arc<dyn Filter> {
        super::super::build(&spec(
            json!({"type": "route_when", "rules": rules, "default": default}),
        ))
        .expect("build")
    }

    fn chat(extra: serde_json::Value, headers: &[(&str, &str)], tokens: u64) -> FilterRequest {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        openai(body, headers, tokens)
    }

    async fn routed(f: &dyn Filter, mut r: FilterRequest) -> (String, bool) {
        f.on_request(&mut r).await.map(|_| ()).expect("ok");
        (r.model().to_string(), r.is_edited())
    }

    #[tokio::test]
    async fn first_matching_rule_sets_the_model() {
        let f = filter(
            json!([
                {"when": "header[\"x-tier\"] == \"gold\"", "model": "premium"},
                {"when": "estimated_tokens > 50000", "model": "long-context"},
                {"when": "param.tools > 0", "model": "tool-model"}
            ]),
            json!(null),
        );
        let gold = chat(json!({}), &[("X-Tier", "gold")], 60_000);
        assert_eq!(routed(&*f, gold).await, ("premium".to_string(), false));
        let long = chat(json!({}), &[("x-tier", "silver")], 60_000);
        assert_eq!(routed(&*f, long).await, ("long-context".to_string(), false));
        let tools = chat(
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            &[],
            10,
        );
        assert_eq!(routed(&*f, tools).await, ("tool-model".to_string(), false));
        let none = chat(json!({}), &[], 10);
        assert_eq!(routed(&*f, none).await, ("m".to_string(), false));
    }

    #[tokio::test]
    async fn default_applies_when_no_rule_matches() {
        let f = filter(
            json!([{"when": "stream", "model": "streamer"}]),
            json!("fallback"),
        );
        let plain = chat(json!({}), &[], 10);
        assert_eq!(routed(&*f, plain).await.0, "fallback");
        let streamed = chat(json!({"stream": true}), &[], 10);
        assert_eq!(routed(&*f, streamed).await.0, "streamer");
    }

    #[tokio::test]
    async fn anthropic_request_by_dialect_and_params() {
        let f = filter(
            json!([{"when": "dialect == 'anthropic' && param.max_tokens >= 4096 && key == 'team-a'",
                    "model": "claude-big"}]),
            json!(null),
        );
        let body = |max: u64| {
            json!({"model": "claude", "max_tokens": max,
                   "messages": [{"role": "user", "content": "hi"}]})
        };
        assert_eq!(
            routed(&*f, anthropic(body(8192))).await,
            ("claude-big".to_string(), false)
        );
        assert_eq!(routed(&*f, anthropic(body(100))).await.0, "claude");
    }

    #[tokio::test]
    async fn routing_by_metadata() {
        let f = filter(
            json!([{"when": "metadata.team == 'ml'", "model": "ml-model"}]),
            json!(null),
        );
        let mut r = chat(json!({}), &[], 10);
        r.info.metadata.insert("team".into(), json!("ml"));
        assert_eq!(routed(&*f, r).await.0, "ml-model");
    }

    #[test]
    fn config_errors_name_the_rule() {
        let rules = |second: serde_json::Value| json!({"type": "route_when", "rules": [{"when": "stream", "model": "a"}, second]});
        assert_eq!(
            build_error(rules(json!({"when": "hedaer[\"x\"] == 'a'", "model": "b"}))),
            "models.m.filters[0].rules[1].when: unknown name 'hedaer' (names: key, dialect, model, stream, estimated_tokens, header[...], metadata[...], param[...]) at column 1"
        );
        assert_eq!(
            build_error(rules(json!({"when": "stream", "modle": "b"}))),
            "models.m.filters[0].rules[1].modle: unknown setting (settings: when, model)"
        );
        assert_eq!(
            build_error(rules(json!({"when": "stream"}))),
            "models.m.filters[0].rules[1].model: required"
        );
        assert_eq!(
            build_error(rules(json!({"when": true, "model": "b"}))),
            "models.m.filters[0].rules[1].when: must be a string (an expression)"
        );
        assert_eq!(
            build_error(rules(json!({"when": "stream", "model": ""}))),
            "models.m.filters[0].rules[1].model: must be a model name"
        );
        assert_eq!(
            build_error(json!({"type": "route_when", "rules": []})),
            "models.m.filters[0].rules: required: a list of {when, model}"
        );
        assert_eq!(
            build_error(
                json!({"type": "route_when", "rules": [{"when": "stream", "model": "a"}], "default": 3})
            ),
            "models.m.filters[0].default: must be a model name"
        );
        assert_eq!(
            build_error(json!({"type": "route_when", "rule": []})),
            "models.m.filters[0].rule: unknown setting (settings: rules, default)"
        );
    }
}
