//! `type: webhook`: asks an HTTP service about each request before it is routed.
//!
//! ```yaml
//! - type: webhook
//!   url: https://policy.internal/check     # http or https
//!   timeout_ms: 500                        # default 1000: bounds the whole exchange
//!   failure_mode: fail_closed              # fail_open (default) | fail_closed
//!   headers: { authorization: "Bearer ${POLICY_TOKEN}" }
//! ```
//!
//! The filter POSTs `{"request_id", "key", "dialect", "model", "stream", "metadata", "request"}`,
//! `request` being the canonical request as an OpenAI Chat Completions body. Nothing of the
//! client's own headers (its API key included) is sent. The webhook answers (2xx, JSON):
//! - `{"action": "allow"}`, an empty body or 204: the request goes on;
//! - `{"action": "deny", "message"?, "status"?}`: the client gets `status` (403 unless given,
//!   kept within 400–499) with `message`, code `content_policy_violation`;
//! - `{"action": "rewrite", "model"?, "messages"?, "metadata"?}`: routes to `model`, replaces
//!   the messages (OpenAI's shape), merges `metadata` into the request's metadata.
//!
//! Any other answer (a non-2xx status, a body that is not one of these), a timeout or a
//! connection failure is the webhook's failure: `fail_open` lets the request through with a
//! warning, `fail_closed` refuses it with 503 `filter_unavailable`. Either way the action is
//! counted as `error`.
//!
//! Requests go through the gateway's own transport (TLS included), on keep-alive connections
//! this filter keeps: [`super::build`] gets no handle on the proxy's transport, so each webhook
//! filter has its own connector and pool.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::time::fast_timeout::fast_timeout;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::chat::{self, Content, ContentPart};
use crate::config::{FilterSpec, Timeouts};
use crate::error::GatewayError;
use crate::filters::{record, Filter, FilterError, FilterRequest, Verdict};
use crate::transport::{Endpoint, Transport, Upstream, UpstreamRequest};

const SETTINGS: &str = "url, timeout_ms, failure_mode, headers";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// The largest answer read: a rewrite may carry a whole conversation.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// What a failed exchange with the webhook does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// The request goes on, with a warning in the log.
    FailOpen,
    /// The request is refused with 503 `filter_unavailable`.
    FailClosed,
}

/// A configured webhook filter.
pub struct Webhook {
    name: String,
    upstream: Upstream,
    path_and_query: String,
    /// The configured headers (sensitive, never logged), with `content-type` and `accept`.
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    failure_mode: FailureMode,
    transport: Transport,
}

/// Builds a webhook filter from its settings; errors name the setting at fault.
pub fn build(spec: &FilterSpec) -> Result<Arc<dyn Filter>, String> {
    Ok(Arc::new(Webhook::from_spec(spec)?))
}

impl Webhook {
    pub fn from_spec(spec: &FilterSpec) -> Result<Webhook, String> {
        let path = &spec.path;
        let settings = &spec.settings;
        if let Some(key) = settings
            .keys()
            .find(|k| !SETTINGS.split(", ").any(|s| s == k.as_str()))
        {
            return Err(format!(
                "{path}.{key}: unknown setting (webhook settings: {SETTINGS})"
            ));
        }

        let url = match settings.get("url") {
            Some(Value::String(url)) => url::Url::parse(url).map_err(|e| {
                format!("{path}.url: not a URL ({e}); give the webhook's http:// or https:// URL")
            })?,
            None => {
                return Err(format!(
                    "{path}.url: required: the webhook's http:// or https:// URL"
                ))
            }
            Some(_) => return Err(format!("{path}.url: must be a string")),
        };
        let endpoint = Endpoint::from_url(&url)
            .filter(|e| !e.host.is_empty())
            .ok_or_else(|| format!("{path}.url: must be an http:// or https:// URL with a host"))?;
        let mut path_and_query = url.path().to_string();
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if let Some(query) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }

        let timeout = match settings.get("timeout_ms") {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.as_u64() {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "{path}.timeout_ms: must be a positive number of milliseconds"
                    ))
                }
            },
        };

        let failure_mode = match settings.get("failure_mode") {
            None => FailureMode::FailOpen,
            Some(Value::String(m)) if m == "fail_open" => FailureMode::FailOpen,
            Some(Value::String(m)) if m == "fail_closed" => FailureMode::FailClosed,
            Some(_) => {
                return Err(format!(
                    "{path}.failure_mode: must be fail_open or fail_closed"
                ))
            }
        };

        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        match settings.get("headers") {
            None => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let at = format!("{path}.headers.{name}");
                    let header = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("{at}: not a valid header name"))?;
                    if header == http::header::CONTENT_LENGTH
                        || header == http::header::TRANSFER_ENCODING
                    {
                        return Err(format!("{at}: set by the gateway, not configurable"));
                    }
                    let Value::String(value) = value else {
                        return Err(format!("{at}: must be a string"));
                    };
                    let mut value = HeaderValue::from_str(value)
                        .map_err(|_| format!("{at}: not a valid header value"))?;
                    value.set_sensitive(true);
                    headers.push((header, value));
                }
            }
            Some(_) => {
                return Err(format!(
                    "{path}.headers: must be a map of header names to values"
                ))
            }
        }
        // Credentials in the URL (`https://user:pass@host/`) become Basic auth, unless an
        // `authorization` header is configured.
        if !url.username().is_empty() && !has(&headers, &http::header::AUTHORIZATION) {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let pair = format!(
                "{}:{}",
                decode(url.username()),
                decode(url.password().unwrap_or(""))
            );
            let mut value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair)))
                .map_err(|_| format!("{path}.url: its credentials cannot be sent"))?;
            value.set_sensitive(true);
            headers.push((http::header::AUTHORIZATION, value));
        }
        for (name, value) in [
            (http::header::CONTENT_TYPE, "application/json"),
            (http::header::ACCEPT, "application/json"),
        ] {
            if !has(&headers, &name) {
                headers.push((name, HeaderValue::from_static(value)));
            }
        }

        let timeouts = Timeouts {
            connect: timeout,
            first_byte: timeout,
            idle: timeout,
            total: timeout,
        };
        Ok(Webhook {
            name: spec.name.clone(),
            upstream: Upstream::new(endpoint, timeouts),
            path_and_query,
            headers,
            timeout,
            failure_mode,
            transport: Transport::default(),
        })
    }

    /// What the webhook is sent about `request`.
    fn payload(&self, request: &FilterRequest) -> Result<Bytes, FilterError> {
        let canonical = request.canonical().map_err(refused)?;
        let info = &request.info;
        let payload = json!({
            "request_id": info.request_id,
            "key": info.key,
            "dialect": info.dialect.as_str(),
            "model": request.model(),
            "stream": request.stream(),
            "metadata": info.metadata,
            "request": openai_request(request.model(), &canonical),
        });
        serde_json::to_vec(&payload)
            .map(Bytes::from)
            .map_err(|e| FilterError {
                status: 500,
                message: format!("webhook filter '{}': {e}", self.name),
                code: "filter_error",
            })
    }

    /// One exchange with the webhook: its decision, or why there is none. Never names the URL.
    async fn ask(&self, body: Bytes) -> Result<Answer, String> {
        let req = UpstreamRequest {
            path_and_query: self.path_and_query.clone(),
            headers: self.headers.clone(),
            body,
        };
        let mut exchange = self
            .transport
            .send(&self.upstream, &req, Instant::now())
            .await
            .map_err(|e| e.to_string())?;
        let status = exchange.status();
        let answer = exchange.read_all(MAX_ANSWER_BYTES).await;
        if answer.is_ok() {
            self.transport.release(exchange);
        }
        if !(200..300).contains(&status) {
            return Err(format!("it answered HTTP {status}"));
        }
        let answer = answer.map_err(|e| format!("reading its answer: {e}"))?;
        Answer::parse(status, &answer)
    }

    /// The webhook failed: the request goes on or is refused, as configured.
    fn failed(&self, request: &FilterRequest, why: &str) -> Result<Verdict, FilterError> {
        let request_id = &request.info.request_id;
        record(&self.name, "error", request_id);
        match self.failure_mode {
            FailureMode::FailOpen => {
                log::warn!(
                    "webhook filter '{}' is unavailable ({why}); request {request_id} goes on \
                     unchecked (failure_mode: fail_open)",
                    self.name
                );
                Ok(Verdict::Continue)
            }
            FailureMode::FailClosed => Err(FilterError {
                status: 503,
                message: format!("webhook filter '{}' is unavailable: {why}", self.name),
                code: "filter_unavailable",
            }),
        }
    }
}

fn has(headers: &[(HeaderName, HeaderValue)], name: &HeaderName) -> bool {
    headers.iter().any(|(n, _)| n == name)
}

/// A request the canonical model cannot read is the client's error, as it would be later.
fn refused(e: GatewayError) -> FilterError {
    let status = e.status();
    FilterError {
        status,
        message: e.to_string(),
        code: if status == 400 {
            "invalid_request"
        } else {
            "filter_error"
        },
    }
}

#[async_trait::async_trait]
impl Filter for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    async fn on_request(&self, request: &mut FilterRequest) -> Result<Verdict, FilterError> {
        let body = self.payload(request)?;
        // Bounds the whole exchange, the address lookup included.
        let answer = match fast_timeout(self.timeout, self.ask(body)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(why)) => return self.failed(request, &why),
            Err(_) => {
                let why = format!("no answer within {} ms", self.timeout.as_millis());
                return self.failed(request, &why);
            }
        };
        let request_id = request.info.request_id.clone();
        match answer {
            Answer::Allow => {
                record(&self.name, "allow", &request_id);
                Ok(Verdict::Continue)
            }
            Answer::Deny { status, message } => {
                record(&self.name, "deny", &request_id);
                Err(FilterError {
                    status,
                    message: message.unwrap_or_else(|| {
                        format!("the request was denied by filter '{}'", self.name)
                    }),
                    code: "content_policy_violation",
                })
            }
            Answer::Rewrite {
                model,
                messages,
                metadata,
            } => {
                if let Some(messages) = messages {
                    request.edit().map_err(refused)?.messages = messages;
                }
                if let Some(model) = model {
                    request.set_model(model);
                }
                if let Some(metadata) = metadata {
                    request.info.metadata.extend(metadata);
                }
                record(&self.name, "rewrite", &request_id);
                Ok(Verdict::Continue)
            }
        }
    }
}

/// The webhook's decision.
#[derive(Debug)]
enum Answer {
    Allow,
    Deny {
        status: u16,
        message: Option<String>,
    },
    Rewrite {
        model: Option<String>,
        messages: Option<Vec<chat::Message<'static>>>,
        metadata: Option<Map<String, Value>>,
    },
}

impl Answer {
    /// A 2xx answer's decision; the error says what is wrong with it.
    fn parse(status: u16, body: &[u8]) -> Result<Answer, String> {
        if status == 204 || body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Answer::Allow);
        }
        let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(body) else {
            return Err("its answer is not a JSON object".into());
        };
        let Some(Value::String(action)) = answer.shift_remove("action") else {
            return Err("its answer has no \"action\"".into());
        };
        let string = |v: Option<Value>, field: &str| match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(format!(
                "its answer's \"{field}\" is not a non-empty string"
            )),
        };
        match action.as_str() {
            "allow" => Ok(Answer::Allow),
            "deny" => {
                let status = match answer.shift_remove("status") {
                    None | Some(Value::Null) => 403,
                    Some(v) => match v.as_i64() {
                        Some(s) => s.clamp(400, 499) as u16,
                        None => return Err("its answer's \"status\" is not an integer".into()),
                    },
                };
                let message = string(answer.shift_remove("message"), "message")?;
                Ok(Answer::Deny { status, message })
            }
            "rewrite" => {
                let model = string(answer.shift_remove("model"), "model")?;
                let messages = match answer.shift_remove("messages") {
                    None | Some(Value::Null) => None,
                    Some(value) => Some(messages(&value)?),
                };
                let metadata = match answer.shift_remove("metadata") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(map)) => Some(map),
                    Some(_) => return Err("its answer's \"metadata\" is not an object".into()),
                };
                Ok(Answer::Rewrite {
                    model,
                    messages,
                    metadata,
                })
            }
            other => Err(format!(
                "its answer's action '{other}' is not allow, deny or rewrite"
            )),
        }
    }
}

/// Messages in OpenAI's shape, read with the canonical types.
fn messages(value: &Value) -> Result<Vec<chat::Message<'static>>, String> {
    let list = Vec::<chat::Message<'_>>::deserialize(value)
        .map_err(|e| format!("its answer's \"messages\" are not chat messages: {e}"))?;
    if list.is_empty() {
        return Err("its answer's \"messages\" are empty".into());
    }
    Ok(list.into_iter().map(chat::Message::into_owned).collect())
}

/// The canonical request as an OpenAI Chat Completions body (content parts that OpenAI does not
/// have, such as earlier thinking, keep the canonical shape, so that they can be sent back).
pub fn openai_request(model: &str, request: &chat::Request<'_>) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(request.messages.iter().map(openai_message).collect()),
    );
    if let Some(tools) = &request.tools {
        let tools = tools
            .iter()
            .map(|tool| {
                let mut out = Map::new();
                out.insert("type".into(), json!(tool.kind));
                if let Some(f) = &tool.function {
                    let mut function = Map::new();
                    function.insert("name".into(), json!(f.name));
                    put(&mut function, "description", f.description.as_ref());
                    put(&mut function, "parameters", f.parameters.as_ref());
                    put(&mut function, "strict", f.strict);
                    out.insert("function".into(), Value::Object(function));
                }
                Value::Object(out)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    put(&mut body, "tool_choice", request.tool_choice.as_ref());
    put(
        &mut body,
        "parallel_tool_calls",
        request.parallel_tool_calls,
    );
    put(
        &mut body,
        "response_format",
        request.response_format.as_ref(),
    );
    put(&mut body, "stop", request.stop.as_ref());
    put(&mut body, "max_tokens", request.max_tokens);
    put(
        &mut body,
        "max_completion_tokens",
        request.max_completion_tokens,
    );
    put(&mut body, "temperature", request.temperature);
    put(&mut body, "top_p", request.top_p);
    put(&mut body, "top_k", request.top_k);
    put(&mut body, "n", request.n);
    put(&mut body, "seed", request.seed);
    put(&mut body, "logprobs", request.logprobs);
    put(&mut body, "top_logprobs", request.top_logprobs);
    put(&mut body, "presence_penalty", request.presence_penalty);
    put(&mut body, "frequency_penalty", request.frequency_penalty);
    put(&mut body, "logit_bias", request.logit_bias.as_ref());
    put(&mut body, "user", request.user.as_ref());
    put(
        &mut body,
        "safety_identifier",
        request.safety_identifier.as_ref(),
    );
    put(
        &mut body,
        "reasoning_effort",
        request.reasoning_effort.as_ref(),
    );
    for (key, value) in &request.rest {
        if !body.contains_key(key) {
            body.insert(key.clone(), value.clone());
        }
    }
    Value::Object(body)
}

fn put<T: Serialize>(body: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        body.insert(key.into(), json!(value));
    }
}

fn openai_message(message: &chat::Message<'_>) -> Value {
    let mut out = Map::new();
    out.insert("role".into(), json!(message.role));
    out.insert(
        "content".into(),
        match &message.content {
            None => Value::Null,
            Some(Content::Text(text)) => json!(text),
            Some(Content::Parts(parts)) => Value::Array(parts.iter().map(openai_part).collect()),
        },
    );
    if let Some(calls) = &message.tool_calls {
        let calls = calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                       "function": {"name": c.function.name, "arguments": c.function.arguments}})
            })
            .collect();
        out.insert("tool_calls".into(), Value::Array(calls));
    }
    put(&mut out, "tool_call_id", message.tool_call_id.as_ref());
    put(&mut out, "name", message.name.as_ref());
    Value::Object(out)
}

fn openai_part(part: &ContentPart<'_>) -> Value {
    let opt = |v: &Option<Cow<'_, str>>| v.as_ref().map_or(Value::Null, |s| json!(s));
    match part {
        ContentPart::Text {
            text,
            cache_control,
        } => {
            let mut out = json!({"type": "text", "text": text});
            if let Some(cache) = cache_control {
                out["cache_control"] = cache.clone();
            }
            out
        }
        ContentPart::ImageUrl { image_url } => {
            let mut url = json!({"url": image_url.url});
            if let Some(detail) = &image_url.detail {
                url["detail"] = json!(detail);
            }
            json!({"type": "image_url", "image_url": url})
        }
        ContentPart::InputAudio { input_audio } => {
            json!({"type": "input_audio", "input_audio": input_audio})
        }
        ContentPart::File { file } => {
            let mut out = Map::new();
            for (key, value) in [
                ("filename", &file.filename),
                ("file_data", &file.file_data),
                ("file_id", &file.file_id),
            ] {
                if value.is_some() {
                    out.insert(key.into(), opt(value));
                }
            }
            json!({"type": "file", "file": out})
        }
        ContentPart::Refusal { refusal } => json!({"type": "refusal", "refusal": refusal}),
        ContentPart::Thinking {
            thinking,
            signature,
        } => {
            let mut out = json!({"type": "thinking", "thinking": thinking});
            if signature.is_some() {
                out["signature"] = opt(signature);
            }
            out
        }
        ContentPart::RedactedThinking { data } => {
            json!({"type": "redacted_thinking", "data": data})
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use http::HeaderMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::dialect::openai::ChatRequest;
    use crate::dialect::{ClientRequest, Dialect};
    use crate::filters::RequestInfo;

    const CLIENT_KEY: &str = "sk-client-secret-4242";

    /// One request the test webhook received: its head (request line and headers) and body.
    #[derive(Debug, Clone)]
    struct Received {
        head: String,
        body: Vec<u8>,
    }

    impl Received {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("the posted body is JSON")
        }
    }

    type Log = Arc<Mutex<Vec<Received>>>;

    /// A local webhook answering every request with `answer` (a whole HTTP response) after
    /// `delay`; it records what it received.
    async fn webhook(answer: String, delay: Duration) -> (SocketAddr, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (answer, seen) = (answer.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = buf[head_end..head_end + length].to_vec();
                    seen.lock().unwrap().push(Received { head, body });
                    tokio::time::sleep(delay).await;
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (addr, log)
    }

    fn http_answer(status: u16, body: &str) -> String {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    async fn answering(status: u16, body: &str) -> (SocketAddr, Log) {
        webhook(http_answer(status, body), Duration::ZERO).await
    }

    fn spec(settings: Value) -> FilterSpec {
        FilterSpec {
            kind: "webhook".into(),
            name: "policy".into(),
            settings: settings.as_object().unwrap().clone(),
            path: "models.m.filters[0]".into(),
        }
    }

    fn filter(settings: Value) -> Webhook {
        Webhook::from_spec(&spec(settings)).unwrap()
    }

    fn filter_at(addr: SocketAddr, mode: &str, timeout_ms: u64) -> Webhook {
        filter(json!({
            "url": format!("http://{addr}/check?v=1"),
            "timeout_ms": timeout_ms,
            "failure_mode": mode,
            "headers": {"authorization": "Bearer policy-token", "x-team": "a"},
        }))
    }

    const BODY: &str = r#"{"model": "gpt-4o", "stream": true, "max_tokens": 50,
        "temperature": 0.5,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup",
                   "parameters": {"type": "object"}}}]}"#;

    fn request() -> FilterRequest {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {CLIENT_KEY}")).unwrap(),
        );
        headers.insert("x-api-key", HeaderValue::from_static(CLIENT_KEY));
        let mut metadata = Map::new();
        metadata.insert("team".into(), json!("a"));
        let info = RequestInfo {
            request_id: "req-123".into(),
            key: Some("team-a".into()),
            dialect: Dialect::OpenAi,
            headers,
            metadata,
        };
        let body = ChatRequest::parse(BODY.as_bytes()).unwrap();
        FilterRequest::new(info, ClientRequest::OpenAi(body), 100)
    }

    async fn run(filter: &Webhook, request: &mut FilterRequest) -> Result<(), FilterError> {
        match filter.on_request(request).await? {
            Verdict::Continue => Ok(()),
            Verdict::Respond(_) => panic!("a webhook never answers in the vendor's place"),
        }
    }

    #[tokio::test]
    async fn allow_lets_the_request_through_unchanged() {
        for (status, body) in [(200, r#"{"action": "allow"}"#), (200, ""), (204, "")] {
            let (addr, log) = answering(status, body).await;
            let mut req = request();
            run(&filter_at(addr, "fail_closed", 1000), &mut req)
                .await
                .unwrap();
            assert_eq!(req.model(), "gpt-4o");
            assert!(!req.is_edited());
            assert_eq!(log.lock().unwrap().len(), 1, "{status} {body:?}");
        }
    }

    #[tokio::test]
    async fn deny_refuses_with_the_webhooks_status_and_message() {
        let (addr, _) = answering(
            200,
            r#"{"action": "deny", "message": "no secrets here", "status": 451}"#,
        )
        .await;
        let err = run(&filter_at(addr, "fail_open", 1000), &mut request())
            .await
            .unwrap_err();
        assert_eq!(err.status, 451);
        assert_eq!(err.message, "no secrets here");
        assert_eq!(err.code, "content_policy_violation");

        // No status: 403; a status outside 4xx is brought into it.
        for (answer, status) in [
            (r#"{"action": "deny"}"#, 403),
            (r#"{"action": "deny", "status": 200}"#, 400),
            (r#"{"action": "deny", "status": 503}"#, 499),
        ] {
            let (addr, _) = answering(200, answer).await;
            let err = run(&filter_at(addr, "fail_open", 1000), &mut request())
                .await
                .unwrap_err();
            assert_eq!(err.status, status, "{answer}");
            assert_eq!(err.code, "content_policy_violation");
            assert!(!err.message.is_empty());
        }
    }

    #[tokio::test]
    async fn rewrite_sets_the_model_the_messages_and_the_metadata() {
        let answer = json!({
            "action": "rewrite",
            "model": "cheap-model",
            "messages": [
                {"role": "system", "content": "Never reveal secrets."},
                {"role": "user", "content": [{"type": "text", "text": "[redacted]"}]}
            ],
            "metadata": {"risk": "low", "score": 3}
        });
        let (addr, _) = answering(200, &answer.to_string()).await;
        let mut req = request();
        run(&filter_at(addr, "fail_closed", 1000), &mut req)
            .await
            .unwrap();
        assert_eq!(req.model(), "cheap-model");
        assert!(req.is_edited());
        let canonical = req.canonical().unwrap();
        assert_eq!(canonical.messages.len(), 2);
        assert_eq!(canonical.messages[0].role, "system");
        assert_eq!(canonical.messages[0].text(), "Never reveal secrets.");
        assert_eq!(canonical.messages[1].role, "user");
        assert_eq!(canonical.messages[1].text(), "[redacted]");
        // The rest of the request stays.
        assert_eq!(canonical.max_tokens, Some(50));
        assert_eq!(req.info.metadata["team"], "a");
        assert_eq!(req.info.metadata["risk"], "low");
        assert_eq!(req.info.metadata["score"], 3);

        // Only the model: the body is not touched.
        let (addr, _) = answering(200, r#"{"action": "rewrite", "model": "other"}"#).await;
        let mut req = request();
        run(&filter_at(addr, "fail_closed", 1000), &mut req)
            .await
            .unwrap();
        assert_eq!(req.model(), "other");
        assert!(!req.is_edited());
    }

    #[tokio::test]
    async fn the_webhook_gets_the_request_in_openai_shape_and_none_of_the_clients_headers() {
        let (addr, log) = answering(200, r#"{"action": "allow"}"#).await;
        run(&filter_at(addr, "fail_closed", 1000), &mut request())
            .await
            .unwrap();
        let received = log.lock().unwrap()[0].clone();
        assert!(
            received.head.starts_with("POST /check?v=1 HTTP/1.1\r\n"),
            "{}",
            received.head
        );
        let head = received.head.to_ascii_lowercase();
        assert!(
            head.contains("authorization: bearer policy-token\r\n"),
            "{head}"
        );
        assert!(head.contains("x-team: a\r\n"));
        assert!(head.contains("content-type: application/json\r\n"));
        assert!(!head.contains("x-api-key"));
        assert!(!received.head.contains(CLIENT_KEY));
        assert!(!String::from_utf8_lossy(&received.body).contains(CLIENT_KEY));

        let posted = received.json();
        assert_eq!(posted["request_id"], "req-123");
        assert_eq!(posted["key"], "team-a");
        assert_eq!(posted["dialect"], "openai");
        assert_eq!(posted["model"], "gpt-4o");
        assert_eq!(posted["stream"], true);
        assert_eq!(posted["metadata"], json!({"team": "a"}));
        let req = &posted["request"];
        assert_eq!(req["model"], "gpt-4o");
        assert_eq!(req["max_tokens"], 50);
        assert_eq!(req["temperature"], 0.5);
        assert_eq!(
            req["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
                ]}
            ])
        );
        assert_eq!(
            req["tools"],
            json!([{"type": "function",
                    "function": {"name": "lookup", "parameters": {"type": "object"}}}])
        );
        // What is posted reads back as the same messages.
        let back = messages(&req["messages"]).unwrap();
        assert_eq!(back[1].text(), "What is in this image?");
    }

    #[tokio::test]
    async fn credentials_in_the_url_become_basic_auth_and_never_reach_an_error() {
        let (addr, log) = answering(500, "{}").await;
        let hook = filter(json!({
            "url": format!("http://user:p%40ss@{addr}/check"),
            "failure_mode": "fail_closed",
        }));
        let err = run(&hook, &mut request()).await.unwrap_err();
        assert!(!err.message.contains("p%40ss") && !err.message.contains("p@ss"));
        let head = log.lock().unwrap()[0].head.to_ascii_lowercase();
        let basic = format!("authorization: basic {}\r\n", STANDARD.encode("user:p@ss"));
        assert!(head.contains(&basic.to_ascii_lowercase()), "{head}");
    }

    #[tokio::test]
    async fn a_timeout_lets_the_request_through_when_failing_open() {
        let (addr, _) = webhook(
            http_answer(200, r#"{"action":"deny"}"#),
            Duration::from_secs(5),
        )
        .await;
        let started = Instant::now();
        let mut req = request();
        run(&filter_at(addr, "fail_open", 200), &mut req)
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(req.model(), "gpt-4o");
    }

    #[tokio::test]
    async fn a_timeout_refuses_the_request_when_failing_closed() {
        let (addr, _) = webhook(
            http_answer(200, r#"{"action":"allow"}"#),
            Duration::from_secs(5),
        )
        .await;
        let started = Instant::now();
        let err = run(&filter_at(addr, "fail_closed", 200), &mut request())
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(err.status, 503);
        assert_eq!(err.code, "filter_unavailable");
        assert!(
            err.message
                .starts_with("webhook filter 'policy' is unavailable: "),
            "{}",
            err.message
        );
        assert!(!err.message.contains("127.0.0.1"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failure_of_the_webhook() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);

        let mut req = request();
        run(&filter_at(addr, "fail_open", 1000), &mut req)
            .await
            .unwrap();
        assert!(!req.is_edited());

        let err = run(&filter_at(addr, "fail_closed", 1000), &mut request())
            .await
            .unwrap_err();
        assert_eq!((err.status, err.code), (503, "filter_unavailable"));
        assert!(err.message.contains("'policy'"), "{}", err.message);
    }

    #[tokio::test]
    async fn an_error_status_or_an_unreadable_answer_is_a_failure_of_the_webhook() {
        for (status, body, why) in [
            (500, r#"{"action": "allow"}"#, "HTTP 500"),
            (404, "", "HTTP 404"),
            (200, "<html>", "not a JSON object"),
            (200, r#"{"decision": "allow"}"#, "no \"action\""),
            (200, r#"{"action": "maybe"}"#, "'maybe'"),
            (
                200,
                r#"{"action": "rewrite", "messages": "hi"}"#,
                "messages",
            ),
            (200, r#"{"action": "rewrite", "messages": []}"#, "empty"),
            (200, r#"{"action": "rewrite", "metadata": [1]}"#, "metadata"),
        ] {
            let (addr, _) = answering(status, body).await;
            let err = run(&filter_at(addr, "fail_closed", 1000), &mut request())
                .await
                .unwrap_err();
            assert_eq!((err.status, err.code), (503, "filter_unavailable"));
            assert!(err.message.contains(why), "{body}: {}", err.message);

            let (addr, _) = answering(status, body).await;
            let mut req = request();
            run(&filter_at(addr, "fail_open", 1000), &mut req)
                .await
                .unwrap();
            // A bad rewrite is not applied, not even in part.
            assert!(!req.is_edited());
            assert_eq!(req.model(), "gpt-4o");
            assert_eq!(req.info.metadata.len(), 1);
        }
    }

    #[test]
    fn settings_have_defaults() {
        let hook = filter(json!({"url": "https://policy.internal/check"}));
        assert_eq!(hook.timeout, Duration::from_millis(1000));
        assert_eq!(hook.failure_mode, FailureMode::FailOpen);
        assert!(hook.upstream.endpoint.tls);
        assert_eq!(hook.upstream.endpoint.port, 443);
        assert_eq!(hook.path_and_query, "/check");
        assert!(!has(&hook.headers, &http::header::AUTHORIZATION));
        assert_eq!(hook.name(), "policy");
    }

    #[test]
    fn bad_settings_are_refused_with_their_path() {
        let at = "models.m.filters[0]";
        for (settings, error) in [
            (json!({}), format!("{at}.url: required")),
            (json!({"url": 5}), format!("{at}.url: must be a string")),
            (json!({"url": "not a url"}), format!("{at}.url: not a URL")),
            (
                json!({"url": "ftp://policy.internal/"}),
                format!("{at}.url: must be an http:// or https:// URL"),
            ),
            (
                json!({"url": "http://h/", "retries": 3}),
                format!("{at}.retries: unknown setting"),
            ),
            (
                json!({"url": "http://h/", "failure_mode": "fail_sometimes"}),
                format!("{at}.failure_mode: must be fail_open or fail_closed"),
            ),
            (
                json!({"url": "http://h/", "timeout_ms": 0}),
                format!("{at}.timeout_ms: must be a positive"),
            ),
            (
                json!({"url": "http://h/", "timeout_ms": "1s"}),
                format!("{at}.timeout_ms: must be a positive"),
            ),
            (
                json!({"url": "http://h/", "headers": ["a"]}),
                format!("{at}.headers: must be a map"),
            ),
            (
                json!({"url": "http://h/", "headers": {"bad name": "x"}}),
                format!("{at}.headers.bad name: not a valid header name"),
            ),
            (
                json!({"url": "http://h/", "headers": {"x-a": "line\nbreak"}}),
                format!("{at}.headers.x-a: not a valid header value"),
            ),
            (
                json!({"url": "http://h/", "headers": {"content-length": "1"}}),
                format!("{at}.headers.content-length: set by the gateway"),
            ),
        ] {
            let Err(err) = Webhook::from_spec(&spec(settings.clone())) else {
                panic!("{settings} was accepted");
            };
            assert!(err.starts_with(&error), "{settings}: {err}");
        }
        // Through the registry of filter kinds.
        let Err(err) = super::super::build(&spec(json!({"url": "http://h/", "x": 1}))) else {
            panic!("accepted");
        };
        assert_eq!(
            err,
            format!("{at}.x: unknown setting (webhook settings: {SETTINGS})")
        );
    }

    #[test]
    fn every_canonical_part_is_posted_and_reads_back() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,AA"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}
        ], "stop": ["x"], "seed": 7, "tool_choice": "auto"});
        let chat = ChatRequest::parse(body.to_string().as_bytes()).unwrap();
        let canonical = chat.canonical().unwrap();
        let posted = openai_request("m", &canonical);
        let mut expected = body.clone();
        expected["messages"][1]["tool_calls"][0]["type"] = json!("function");
        assert_eq!(posted["messages"], expected["messages"]);
        assert_eq!(posted["stop"], json!(["x"]));
        assert_eq!(posted["seed"], 7);
        assert_eq!(posted["tool_choice"], "auto");
        let back = messages(&posted["messages"]).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].tool_call_id.as_deref(), Some("call_1"));
    }
}
