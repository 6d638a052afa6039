//! `set_headers` and `remove_headers`: headers of the vendor request, per attempt.
//!
//! ```yaml
//! filters:
//!   - {type: set_headers, headers: {x-team: blue}}
//!   - {type: remove_headers, headers: [x-debug]}
//! ```
//!
//! Names and values are checked at load. The provider's credentials (`authorization`,
//! `x-api-key`, `api-key`, `x-goog-api-key`) and the headers the transport owns (`host`,
//! `content-length`, `transfer-encoding`, `connection`) can be neither set nor removed; a
//! header whose value the adapter marked sensitive is never overwritten or removed either.
//! Action `rewrite` is counted when an attempt's headers changed.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::params::check_keys;
use crate::config::FilterSpec;
use crate::filters::{record, AttemptRequest, Filter, FilterError};

/// Headers no filter may set or remove.
const PROTECTED: [&str; 8] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

fn header_name(path: &str, name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{path}: '{name}' is not a valid header name"))?;
    if PROTECTED.contains(&header.as_str()) {
        return Err(format!(
            "{path}: '{name}' cannot be changed by a filter (protected: {})",
            PROTECTED.join(", ")
        ));
    }
    Ok(header)
}

pub struct SetHeaders {
    name: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl SetHeaders {
    pub fn build(spec: &FilterSpec) -> Result<Arc<dyn Filter>, String> {
        check_keys(spec, &["headers"])?;
        let path = format!("{}.headers", spec.path);
        let Some(Value::Object(map)) = spec.settings.get("headers") else {
            return Err(format!("{path}: required: a map of header names to values"));
        };
        if map.is_empty() {
            return Err(format!("{path}: sets no header"));
        }
        let mut headers = Vec::with_capacity(map.len());
        for (name, value) in map {
            let at = format!("{path}.{name}");
            let header = header_name(&at, name)?;
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("{at}: the value must be a string")),
            };
            let value = HeaderValue::from_str(&text)
                .map_err(|_| format!("{at}: not a valid header value"))?;
            if headers.iter().any(|(h, _)| *h == header) {
                return Err(format!("{at}: set twice (names are case-insensitive)"));
            }
            headers.push((header, value));
        }
        Ok(Arc::new(SetHeaders {
            name: spec.name.clone(),
            headers,
        }))
    }
}

impl Filter for SetHeaders {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_attempt(&self, attempt: &mut AttemptRequest<'_>) -> Result<(), FilterError> {
        let mut changed = false;
        for (name, value) in &self.headers {
            let current = attempt.request.headers.iter().filter(|(n, _)| n == name);
            if current.clone().any(|(_, v)| v.is_sensitive()) {
                continue;
            }
            if current.map(|(_, v)| v).eq(std::iter::once(value)) {
                continue;
            }
            attempt.set_header(name.clone(), value.clone());
            changed = true;
        }
        if changed {
            record(&self.name, "rewrite", &attempt.info.request_id);
        }
        Ok(())
    }
}

pub struct RemoveHeaders {
    name: String,
    headers: Vec<HeaderName>,
}

impl RemoveHeaders {
    pub fn build(spec: &FilterSpec) -> Result<Arc<dyn Filter>, String> {
        check_keys(spec, &["headers"])?;
        let path = format!("{}.headers", spec.path);
        let Some(Value::Array(list)) = spec.settings.get("headers") else {
            return Err(format!("{path}: required: a list of header names"));
        };
        if list.is_empty() {
            return Err(format!("{path}: removes no header"));
        }
        let mut headers = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let Value::String(name) = item else {
                return Err(format!("{at}: must be a header name"));
            };
            headers.push(header_name(&at, name)?);
        }
        Ok(Arc::new(RemoveHeaders {
            name: spec.name.clone(),
            headers,
        }))
    }
}

impl Filter for RemoveHeaders {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_attempt(&self, attempt: &mut AttemptRequest<'_>) -> Result<(), FilterError> {
        let before = attempt.request.headers.len();
        for name in &self.headers {
            attempt.remove_header(name);
        }
        if attempt.request.headers.len() != before {
            record(&self.name, "rewrite", &attempt.info.request_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue};
    use serde_json::{json, Value};

    use super::super::params::testing::{build_error, info, spec};
    use super::{RemoveHeaders, SetHeaders};
    use crate::dialect::Dialect;
    use crate::filters::{AttemptRequest, Filter};
    use crate::observability::metrics::METRICS;
    use crate::transport::UpstreamRequest;

    fn named(config: Value, name: &str) -> crate::config::FilterSpec {
        let mut spec = spec(config);
        spec.name = name.to_string();
        spec
    }

    fn upstream() -> UpstreamRequest {
        let mut secret = HeaderValue::from_static("Bearer sk-secret");
        secret.set_sensitive(true);
        let mut custom = HeaderValue::from_static("vendor-secret");
        custom.set_sensitive(true);
        UpstreamRequest {
            path_and_query: "/v1/chat/completions".to_string(),
            headers: vec![
                (http::header::AUTHORIZATION, secret),
                (HeaderName::from_static("x-vendor-key"), custom),
                (
                    HeaderName::from_static("x-team"),
                    HeaderValue::from_static("red"),
                ),
                (
                    HeaderName::from_static("x-debug"),
                    HeaderValue::from_static("1"),
                ),
                (
                    HeaderName::from_static("x-debug"),
                    HeaderValue::from_static("2"),
                ),
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            body: Bytes::from_static(b"{}"),
        }
    }

    fn attempt(f: &dyn Filter, request: &mut UpstreamRequest) {
        let info = info(Dialect::OpenAi, &[], Value::Null);
        let mut attempt = AttemptRequest {
            info: &info,
            provider: "openai",
            upstream_model: "gpt",
            request,
        };
        f.on_attempt(&mut attempt).expect("ok");
    }

    fn shown(request: &UpstreamRequest) -> Vec<(String, String)> {
        request
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn rewrites(name: &str) -> u64 {
        METRICS
            .filter_actions_total
            .with_label_values(&[name, "rewrite"])
            .get()
    }

    #[test]
    fn set_headers_replaces_and_adds_but_keeps_credentials() {
        let f = SetHeaders::build(&named(
            json!({"type": "set_headers",
                   "headers": {"X-Team": "blue", "x-version": 2, "x-vendor-key": "mine"}}),
            "test-set-headers",
        ))
        .expect("build");
        let mut request = upstream();
        attempt(&*f, &mut request);
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            shown(&request),
            pairs(&[
                ("authorization", "Bearer sk-secret"),
                ("x-vendor-key", "vendor-secret"),
                ("x-debug", "1"),
                ("x-debug", "2"),
                ("content-type", "application/json"),
                ("x-team", "blue"),
                ("x-version", "2"),
            ])
        );
        assert_eq!(rewrites("test-set-headers"), 1);
        // A second time nothing changes, and nothing is counted.
        attempt(&*f, &mut request);
        assert_eq!(shown(&request).len(), 7);
        assert_eq!(rewrites("test-set-headers"), 1);
    }

    #[test]
    fn remove_headers_removes_every_value_but_not_sensitive_ones() {
        let f = RemoveHeaders::build(&named(
            json!({"type": "remove_headers", "headers": ["X-Debug", "x-vendor-key", "x-absent"]}),
            "test-remove-headers",
        ))
        .expect("build");
        let mut request = upstream();
        attempt(&*f, &mut request);
        let names: Vec<String> = shown(&request).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["authorization", "x-vendor-key", "x-team", "content-type"]
        );
        assert_eq!(rewrites("test-remove-headers"), 1);
        attempt(&*f, &mut request);
        assert_eq!(rewrites("test-remove-headers"), 1);
    }

    #[test]
    fn config_errors() {
        let protected = "authorization, x-api-key, api-key, x-goog-api-key, host, content-length, transfer-encoding, connection";
        let cases = [
            (
                json!({"type": "set_headers", "headers": {"Authorization": "Bearer x"}}),
                format!("models.m.filters[0].headers.Authorization: 'Authorization' cannot be changed by a filter (protected: {protected})"),
            ),
            (
                json!({"type": "set_headers", "headers": {"x-goog-api-key": "k"}}),
                format!("models.m.filters[0].headers.x-goog-api-key: 'x-goog-api-key' cannot be changed by a filter (protected: {protected})"),
            ),
            (
                json!({"type": "remove_headers", "headers": ["x-ok", "api-key"]}),
                format!("models.m.filters[0].headers[1]: 'api-key' cannot be changed by a filter (protected: {protected})"),
            ),
            (
                json!({"type": "set_headers", "headers": {"bad name": "v"}}),
                "models.m.filters[0].headers.bad name: 'bad name' is not a valid header name".to_string(),
            ),
            (
                json!({"type": "set_headers", "headers": {"x-a": "line\nbreak"}}),
                "models.m.filters[0].headers.x-a: not a valid header value".to_string(),
            ),
            (
                json!({"type": "set_headers", "headers": {"x-a": {"b": 1}}}),
                "models.m.filters[0].headers.x-a: the value must be a string".to_string(),
            ),
            (
                json!({"type": "set_headers", "headers": {"x-a": "1", "X-A": "2"}}),
                "models.m.filters[0].headers.X-A: set twice (names are case-insensitive)".to_string(),
            ),
            (
                json!({"type": "set_headers", "headers": ["x-a"]}),
                "models.m.filters[0].headers: required: a map of header names to values".to_string(),
            ),
            (
                json!({"type": "remove_headers", "headers": [1]}),
                "models.m.filters[0].headers[0]: must be a header name".to_string(),
            ),
            (
                json!({"type": "remove_headers", "header": ["x-a"]}),
                "models.m.filters[0].header: unknown setting (settings: headers)".to_string(),
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(build_error(config), expected);
        }
    }
}
