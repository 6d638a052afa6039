//! The upstream body of an OpenAI client's request: its fields with the target's `model`,
//! stream usage requested, and the host's [`Quirks`] applied; spliced from the client's bytes
//! when no quirk applies.

use http::HeaderValue;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{canonical, OpenAiAdapter};
use crate::config::ProviderKind;
use crate::dialect::openai::{ChatRequest, MessagesSummary};
use crate::dialect::ClientRequest;
use crate::error::GatewayError;

/// Request rewrites some OpenAI-compatible hosts need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// Send `developer` messages as `system`.
    pub developer_as_system: bool,
    /// Tool-call ids must be exactly 9 characters of `[a-zA-Z0-9]` (Mistral).
    pub nine_char_tool_ids: bool,
    /// The host knows `max_tokens` but rejects `max_completion_tokens` (Mistral).
    pub legacy_max_tokens: bool,
}

impl Quirks {
    /// The quirks of a host, known by kind and hostname.
    pub fn for_host(kind: ProviderKind, host: &str) -> Quirks {
        if kind != ProviderKind::OpenAiCompatible {
            return Quirks::default();
        }
        let mistral = host == "api.mistral.ai" || host.ends_with(".mistral.ai");
        Quirks {
            developer_as_system: true,
            nine_char_tool_ids: mistral,
            legacy_max_tokens: mistral,
        }
    }
}

/// A deterministic 9-character alphanumeric id for `id` (FNV-1a, base 62), so that a tool call
/// and its result map to the same id in every request of a conversation.
pub fn nine_char_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_string();
    }
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (0..9)
        .map(|_| {
            let c = ALPHABET[(hash % 62) as usize] as char;
            hash /= 62;
            c
        })
        .collect()
}
impl OpenAiAdapter {
    /// The upstream JSON body: the client's fields with the target's `model`, usage requested for
    /// streams, and this host's quirks applied. Without a quirk to apply, the client's fields are
    /// copied as its bytes.
    pub fn request_body(
        &self,
        request: &ChatRequest,
        model: &str,
    ) -> Result<Vec<u8>, GatewayError> {
        let messages = request.messages_summary()?;
        if !needs_quirks(request, messages, self.quirks) {
            return Ok(spliced_body(request, model));
        }
        let rest = apply_quirks(request.rest(), self.quirks);
        let body = OutgoingBody {
            model,
            rest: &rest,
            stream: request.stream,
            stream_options: request.stream.then_some(OutgoingStreamOptions {
                include_usage: true,
                rest: &request.stream_options_rest,
            }),
        };
        serde_json::to_vec(&body)
            .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))
    }

    /// The upstream body for any client: the OpenAI client's own fields, or the canonical
    /// request of another dialect in OpenAI's shape.
    pub fn body_for(&self, request: &ClientRequest, model: &str) -> Result<Vec<u8>, GatewayError> {
        match request {
            ClientRequest::OpenAi(raw) => self.request_body(raw, model),
            ClientRequest::Completions(raw) if self.completions_api => {
                Ok(raw.body_with_model(model))
            }
            _ => canonical::request_body(&request.canonical()?, model, self.kind, self.quirks),
        }
    }

    /// `Content-Type` and `Accept` for a request.
    pub fn content_headers(stream: bool) -> [(http::HeaderName, HeaderValue); 2] {
        [
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                http::header::ACCEPT,
                HeaderValue::from_static(if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                }),
            ),
        ]
    }
}

/// `{"model":…, <the client's fields>, "stream":true, "stream_options":{…}}`, the client's fields
/// copied as they came; the same JSON as [`OutgoingBody`] without parsing the body.
fn spliced_body(request: &ChatRequest, model: &str) -> Vec<u8> {
    request
        .raw_fields()
        .openai_body(model, request.stream, &request.stream_options_rest)
}

/// Whether a quirk changes this request (from the messages' summary: no `Value` is built).
fn needs_quirks(request: &ChatRequest, messages: MessagesSummary, quirks: Quirks) -> bool {
    (quirks.legacy_max_tokens && request.raw_fields().get("max_completion_tokens").is_some())
        || (quirks.developer_as_system && messages.developer_role)
        || (quirks.nine_char_tool_ids && messages.tool_ids)
}

/// A copy of the request fields with the quirks applied.
fn apply_quirks(rest: &Map<String, Value>, quirks: Quirks) -> Map<String, Value> {
    let mut out = rest.clone();
    if quirks.legacy_max_tokens {
        if let Some(v) = out.shift_remove("max_completion_tokens") {
            out.insert("max_tokens".into(), v);
        }
    }
    if let Some(Value::Array(msgs)) = out.get_mut("messages") {
        for m in msgs.iter_mut() {
            if quirks.developer_as_system
                && m.get("role").and_then(Value::as_str) == Some("developer")
            {
                m["role"] = Value::String("system".into());
            }
            if quirks.nine_char_tool_ids {
                if let Some(Value::String(id)) = m.get_mut("tool_call_id") {
                    *id = nine_char_id(id);
                }
                if let Some(Value::Array(calls)) = m.get_mut("tool_calls") {
                    for call in calls {
                        if let Some(Value::String(id)) = call.get_mut("id") {
                            *id = nine_char_id(id);
                        }
                    }
                }
            }
        }
    }
    out
}

/// The upstream body: the client's fields with the gateway's `model` and `stream_options`.
#[derive(Serialize)]
struct OutgoingBody<'a> {
    model: &'a str,
    #[serde(flatten)]
    rest: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutgoingStreamOptions<'a>>,
}

#[derive(Serialize)]
struct OutgoingStreamOptions<'a> {
    include_usage: bool,
    #[serde(flatten)]
    rest: &'a Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The upstream body as `OutgoingBody` writes it from the parsed fields.
    fn value_path_body(req: &ChatRequest, model: &str) -> Vec<u8> {
        serde_json::to_vec(&OutgoingBody {
            model,
            rest: req.rest(),
            stream: req.stream,
            stream_options: req.stream.then_some(OutgoingStreamOptions {
                include_usage: true,
                rest: &req.stream_options_rest,
            }),
        })
        .unwrap()
    }

    #[test]
    fn spliced_body_is_the_clients_bytes_with_the_gateways_fields() {
        let text = r#"{ "messages" : [ {"role":"user","content":"caf\u00e9 \"x\""} ],
            "model":"public", "temperature": 0.50, "stream":true, "models":["b"],
            "stream_options":{"include_usage":false,"include_obfuscation":false},
            "provider":{"order":["p"]}, "k\"ey":1, "temperature": 0.7 }"#;
        let req = ChatRequest::parse(text.as_bytes()).unwrap();
        let body = OpenAiAdapter::new(ProviderKind::OpenAi)
            .request_body(&req, "up/\"m\"")
            .unwrap();
        // Values keep their bytes (spacing, escapes, `0.50`); a repeated key keeps its first
        // place and last value; the gateway's own fields are dropped or rewritten.
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"model":"up/\"m\"","messages":[ {"role":"user","content":"caf\u00e9 \"x\""} ],"temperature":0.7,"k\"ey":1,"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#
        );
        for text in [
            text,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false,"n":2}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"model":"m"}"#,
        ] {
            let req = ChatRequest::parse(text.as_bytes()).unwrap();
            let spliced: Value = serde_json::from_slice(&spliced_body(&req, "u")).unwrap();
            let parsed: Value = serde_json::from_slice(&value_path_body(&req, "u")).unwrap();
            assert_eq!(spliced, parsed, "{text}");
            let order = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(order(&spliced), order(&parsed), "{text}");
        }
    }

    #[test]
    fn quirks_are_looked_for_only_where_they_apply() {
        let quirks = Quirks::for_host(ProviderKind::OpenAiCompatible, "api.mistral.ai");
        let needs_with = |text: &str, quirks| {
            let req = ChatRequest::parse(text.as_bytes()).unwrap();
            needs_quirks(&req, req.messages_summary().unwrap(), quirks)
        };
        let needs = |text: &str| needs_with(text, quirks);
        assert!(!needs(
            r#"{"model":"m","messages":[{"role":"user","content":"developer"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"developer","content":"x"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"\u0064eveloper","content":"x"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"a","content":"x"}]}"#
        ));
        assert!(needs(
            r#"{"model":"m","messages":[{"role":"user"}],"max_completion_tokens":5}"#
        ));
        assert!(!needs(r#"{"model":"m","messages":[{"role":5}]}"#));
        assert!(!needs_with(
            r#"{"model":"m","messages":[{"role":"developer"}]}"#,
            Quirks::default()
        ));
        // A message that is not an object is refused before anything is sent.
        let req = ChatRequest::parse(br#"{"model":"m","messages":["hi"]}"#).unwrap();
        let err = OpenAiAdapter::new(ProviderKind::OpenAi)
            .request_body(&req, "u")
            .unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("messages")));
    }
    fn compat(host: &str) -> OpenAiAdapter {
        OpenAiAdapter::with_quirks(
            ProviderKind::OpenAiCompatible,
            Quirks::for_host(ProviderKind::OpenAiCompatible, host),
        )
    }

    #[test]
    fn compatible_hosts_get_developer_as_system_and_mistral_ids() {
        let req = ChatRequest::parse(
            json!({"model": "m", "max_completion_tokens": 50, "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_abcdefghijklmnop", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_abcdefghijklmnop", "content": "ok"}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let body: Value =
            serde_json::from_slice(&compat("localhost").request_body(&req, "m").unwrap()).unwrap();
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["max_completion_tokens"], 50);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["id"],
            "call_abcdefghijklmnop"
        );

        let body: Value =
            serde_json::from_slice(&compat("api.mistral.ai").request_body(&req, "m").unwrap())
                .unwrap();
        let id = body["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
        assert_eq!(id.len(), 9);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(
            body["messages"][2]["tool_call_id"], id,
            "call and result must keep the same id"
        );
        assert_eq!(body["max_tokens"], 50);
        assert!(body.get("max_completion_tokens").is_none());

        // OpenAI itself takes the request unchanged.
        let body: Value = serde_json::from_slice(
            &OpenAiAdapter::new(ProviderKind::OpenAi)
                .request_body(&req, "m")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(body["messages"][0]["role"], "developer");
    }
}
