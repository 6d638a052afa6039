//! End-to-end tests of the gateway core: the real binary in front of scripted upstreams.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::{client, sse_data, Gateway, MockResponse, MockUpstream};

const PROVIDER_KEY: &str = "sk-provider-secret-0123456789";
const CLIENT_KEY: &str = "sk-client-secret-abcdef";

/// A config with the mock provider and one OpenAI-compatible provider at `upstream`.
fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
server:
  listen: ["{{{{listen}}}}"]
  admin_listen: "{{{{admin}}}}"
  threads: 2
  max_body_bytes: 3000000
providers:
  mock: {{ kind: mock }}
  local:
    kind: openai-compatible
    base_url: {upstream}/v1
    api_key: ${{LOCAL_KEY}}
    timeouts: {{ connect_ms: 500, first_byte_ms: 1500, idle_ms: 1000, total_ms: 10000 }}
    # These tests are about single requests; resilience.rs covers breakers and probes.
    circuit_breaker: {{ failure_threshold: 100 }}
    health_check: {{ enabled: false }}
{extra}
models:
  mock: {{ targets: [{{ provider: mock, model: mock-1 }}] }}
  local-model:
    targets: [{{ provider: local, model: upstream-model-v2, price: {{ input_per_mtok: 1.0, output_per_mtok: 2.0 }} }}]
"#
    )
}

async fn start(upstream: &MockUpstream) -> Gateway {
    Gateway::start_with_env(&config(&upstream.url(), ""), &[("LOCAL_KEY", PROVIDER_KEY)]).await
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hi"}]})
}

fn completion(model: &str, content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    })
}

fn chunk(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "upstream-model-v2",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    )
}

fn stream_tail() -> Vec<String> {
    vec![
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "upstream-model-v2",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "upstream-model-v2",
                   "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
        ),
        "data: [DONE]\n\n".to_string(),
    ]
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(CLIENT_KEY)
        .json(body)
        .send()
        .await
        .expect("request to the gateway")
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("error body is JSON");
    for key in ["message", "type", "param", "code"] {
        assert!(
            body["error"].get(key).is_some(),
            "error.{key} missing in {body}"
        );
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_answers_json_and_stream() {
    let upstream = MockUpstream::start(|_, _| MockResponse::json(500, json!({}))).await;
    let gw = start(&upstream).await;

    let resp = post(&gw, &chat_body("mock", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "mock");
    assert_eq!(resp.headers()["x-switchyard-attempts"], "1");
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock-1");
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Say hi"));
    let u = &body["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );

    let mut req = chat_body("mock", true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = post(&gw, &req).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Without include_usage there is no usage chunk. (The mock is an OpenAI server that the
    // gateway asked for usage, so its chunks say `"usage": null`, as OpenAI's do.)
    let data = sse_data(
        &post(&gw, &chat_body("mock", true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(data.last().unwrap(), "[DONE]");
    for chunk in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(chunk).unwrap();
        assert!(chunk["usage"].is_null(), "{chunk}");
        assert_eq!(
            chunk["choices"].as_array().map(Vec::len),
            Some(1),
            "{chunk}"
        );
    }
    assert_eq!(
        upstream.request_count(),
        0,
        "the mock provider needs no network"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_pass_through_swaps_model_and_credentials() {
    let upstream = MockUpstream::start(|req, _| {
        MockResponse::json(
            200,
            completion(req.json()["model"].as_str().unwrap_or("?"), "hello"),
        )
    })
    .await;
    let gw = start(&upstream).await;

    let mut body = chat_body("local-model", false);
    body["temperature"] = json!(0.3);
    body["custom_field"] = json!({"kept": true});
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", "trace-123")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "local");
    assert_eq!(resp.headers()["x-request-id"], "trace-123");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "hello");
    assert_eq!(answer["model"], "upstream-model-v2");

    let seen = &upstream.requests()[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains(CLIENT_KEY)),
        "the client's key reached the upstream: {:?}",
        seen.headers
    );
    let sent = seen.json();
    assert_eq!(sent["model"], "upstream-model-v2");
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["custom_field"], json!({"kept": true}));
    assert_eq!(sent["messages"], body["messages"]);
    assert!(sent.get("stream_options").is_none());

    // Direct PROVIDER/MODEL addressing reaches the same provider with that upstream model.
    let resp = post(&gw, &chat_body("local/some-other-model", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests()[1].json()["model"], "some-other-model");

    // Access log: one JSON line per request, with tokens, and never a secret.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gw.logs();
    assert!(
        !logs.contains(PROVIDER_KEY) && !logs.contains(CLIENT_KEY),
        "secret in logs"
    );
    let line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["request_id"] == "trace-123")
        .expect("access log line for the request");
    assert_eq!(line["provider"], "local");
    assert_eq!(line["status"], 200);
    assert_eq!(line["prompt_tokens"], 7);
    assert_eq!(line["completion_tokens"], 3);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    assert!((line["cost_usd"].as_f64().unwrap() - (7.0 + 6.0) / 1e6).abs() < 1e-12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_reach_the_client_before_the_upstream_finishes() {
    let mut events = vec![chunk("first"), chunk(" second")];
    events.extend(stream_tail());
    let delays = vec![
        Duration::ZERO,
        Duration::from_millis(800),
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    ];
    let upstream =
        MockUpstream::start(move |_, _| MockResponse::sse(events.clone()).delays(delays.clone()))
            .await;
    let gw = start(&upstream).await;

    let sent = Instant::now();
    let resp = post(&gw, &chat_body("local-model", true)).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut first_at = None;
    while let Some(piece) = body.next().await {
        text.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
        if first_at.is_none() && text.contains("first") {
            first_at = Some(sent.elapsed());
        }
    }
    let total = sent.elapsed();
    let first_at = first_at.expect("first chunk arrived");
    assert!(
        first_at + Duration::from_millis(500) < total,
        "first chunk at {first_at:?}, stream ended at {total:?}: the stream was buffered"
    );
    let data = sse_data(&text);
    assert!(data[0].contains("first") && data[1].contains("second"));
    assert_eq!(data.last().unwrap(), "[DONE]");
    // The gateway asked for usage on its own behalf but the client did not: no usage chunk.
    assert!(
        data.iter().all(|d| !d.contains("\"choices\":[]")),
        "{data:?}"
    );
    assert_eq!(
        upstream.requests()[0].json()["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_reach_the_upstream_intact() {
    let upstream = MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok"))).await;
    let gw = start(&upstream).await;
    for size in [100 * 1024, 2 * 1024 * 1024] {
        let filler: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let body =
            json!({"model": "local-model", "messages": [{"role": "user", "content": filler}]});
        let resp = post(&gw, &body).await;
        assert_eq!(resp.status(), 200, "body of {size} bytes");
        let seen = upstream.requests().last().unwrap().json();
        assert_eq!(seen["messages"][0]["content"].as_str().unwrap().len(), size);
        assert_eq!(
            seen["messages"][0]["content"],
            body["messages"][0]["content"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok"))).await;
    let gw = start(&upstream).await;
    let body = chat_body("mock", false).to_string();
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf))
        .await
        .expect("100 Continue within 500 ms")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tcp.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
}

/// The gateway serves HTTP/1.1 itself (not through Pingora's proxy): a connection carries one
/// request after another, and a head that is not HTTP gets a 400 and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_and_broken_heads_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok"))).await;
    let gw = start(&upstream).await;
    let body = chat_body("mock", false).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    for round in 0..3 {
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
            .await
            .expect("an answer on the kept-alive connection")
            .unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "round {round}: {text}");
        assert!(text.contains("chat.completion"), "round {round}: {text}");
    }
    tcp.write_all(b"NOT A REQUEST\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the connection is closed after a broken head")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_in_openai_format() {
    let upstream = MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok"))).await;
    let gw = start(&upstream).await;
    let url = format!("{}/v1/chat/completions", gw.url());

    let resp = client().post(&url).body("{not json").send().await.unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    let (status, body) = error_of(
        post(
            &gw,
            &json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("model"))
    );

    let (status, body) = error_of(post(&gw, &json!({"model": "mock"})).await).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("messages"))
    );

    let (status, body) = error_of(post(&gw, &chat_body("no-such-model", false)).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");

    let huge = "x".repeat(3_100_000);
    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "request_too_large");

    let (status, _) = error_of(
        client()
            .get(format!("{}/v1/nope", gw.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = error_of(client().get(&url).send().await.unwrap()).await;
    assert_eq!(status, 405);
    assert_eq!(
        upstream.request_count(),
        0,
        "bad requests never reach an upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_back_with_status_and_message() {
    let upstream = MockUpstream::start(|req, _| {
        let model = req.json()["model"].as_str().unwrap_or("").to_string();
        match model.as_str() {
            "too-long" => MockResponse::json(400, json!({"error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})),
            "limited" => MockResponse::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})).with_header("retry-after", "7"),
            "bad-key" => MockResponse::json(401, json!({"error": {"message": format!("Incorrect API key provided: {PROVIDER_KEY}"), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})),
            _ => MockResponse::text(503, "text/html", "<h1>Service Unavailable</h1>"),
        }
    })
    .await;
    let gw = start(&upstream).await;

    let (status, body) = error_of(post(&gw, &chat_body("local/too-long", false)).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["param"], "messages");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum context length"));

    let (status, body) = error_of(post(&gw, &chat_body("local/bad-key", false)).await).await;
    assert_eq!(status, 401);
    assert!(
        !body.to_string().contains(PROVIDER_KEY),
        "provider key leaked: {body}"
    );

    let (status, body) = error_of(post(&gw, &chat_body("local/down", false)).await).await;
    assert_eq!(status, 503);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Service Unavailable"));

    // Last: a 429 pauses the provider (direct routes share one breaker per provider).
    let resp = post(&gw, &chat_body("local/limited", false)).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_slow_upstreams_give_502_and_504() {
    let slow = MockUpstream::start(|_, _| MockResponse::hang()).await;
    let closed_port = support::free_port();
    let extra = format!(
        "  dead:\n    kind: openai-compatible\n    base_url: http://127.0.0.1:{closed_port}/v1\n    health_check: {{ enabled: false }}\n"
    );
    let gw =
        Gateway::start_with_env(&config(&slow.url(), &extra), &[("LOCAL_KEY", PROVIDER_KEY)]).await;

    let (status, body) = error_of(post(&gw, &chat_body("dead/m", false)).await).await;
    assert_eq!(status, 502);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("dead"), "{message}");

    let started = Instant::now();
    let (status, body) = error_of(post(&gw, &chat_body("local-model", false)).await).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "first_byte_ms was not honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_stream_ends_with_an_error_event_not_a_clean_end() {
    let upstream = MockUpstream::start(|req, _| {
        let mut events = vec![chunk("partial"), chunk(" answer")];
        events.extend(stream_tail());
        match req.json()["model"].as_str() {
            Some("cut") => MockResponse::sse(events).cut_after(2),
            Some("no-done") => MockResponse::sse(events[..3].to_vec()),
            _ => MockResponse::sse(vec![
                chunk("ok"),
                "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"
                    .into(),
            ]),
        }
    })
    .await;
    let gw = start(&upstream).await;
    for model in ["local/cut", "local/no-done", "local/error"] {
        let resp = post(&gw, &chat_body(model, true)).await;
        assert_eq!(resp.status(), 200, "{model}");
        let data = sse_data(&resp.text().await.unwrap_or_default());
        assert!(data.len() >= 2, "{model}: {data:?}");
        assert_ne!(
            data.last().unwrap(),
            "[DONE]",
            "{model} looked like a clean end"
        );
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{model}: {last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled() {
    let upstream = MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok"))).await;
    let gw = start(&upstream).await;
    for _ in 0..5 {
        assert_eq!(
            post(&gw, &chat_body("local-model", false)).await.status(),
            200
        );
    }
    assert_eq!(upstream.request_count(), 5);
    assert_eq!(
        upstream.connection_count(),
        1,
        "each request opened a new connection"
    );
}

/// An upstream that closes each connection after answering, as vendors close idle keep-alive
/// connections: the gateway notices the closed connection in its pool, or re-sends on a new one
/// when the close comes too late to notice; every request is served once, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_upstream_closed_are_not_reused() {
    let upstream =
        MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok")).close_after())
            .await;
    let gw = start(&upstream).await;
    for i in 0..4 {
        assert_eq!(
            post(&gw, &chat_body("local-model", false)).await.status(),
            200,
            "request {i}"
        );
        if i % 2 == 0 {
            // Time for the close to arrive: found closed in the pool, not on sending.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        upstream.request_count(),
        4,
        "a request was lost or sent twice"
    );
    assert_eq!(upstream.connection_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_over_to_the_next_target_when_one_is_unreachable() {
    let upstream = MockUpstream::start(|req, _| {
        MockResponse::json(
            200,
            completion(req.json()["model"].as_str().unwrap_or("?"), "from backup"),
        )
    })
    .await;
    let closed_port = support::free_port();
    let yaml = config(&upstream.url(), &format!(
        "  dead:\n    kind: openai-compatible\n    base_url: http://127.0.0.1:{closed_port}/v1\n    health_check: {{ enabled: false }}\n"
    ))
    .replace(
        "models:\n",
        "models:\n  resilient: { targets: [{ provider: dead, model: a }, { provider: local, model: backup-model }] }\n",
    );
    let gw = Gateway::start_with_env(&yaml, &[("LOCAL_KEY", PROVIDER_KEY)]).await;
    let resp = post(&gw, &chat_body("resilient", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "local");
    assert_eq!(resp.headers()["x-switchyard-attempts"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "backup-model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_and_admin_endpoints() {
    let upstream = MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok"))).await;
    let gw = start(&upstream).await;
    let list: Value = client()
        .get(format!("{}/v1/models", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["local-model", "mock"]);
    let local = &list["data"][0];
    assert_eq!(local["object"], "model");
    assert_eq!(local["providers"], json!(["local"]));
    assert_eq!(local["pricing"]["input_per_mtok"], 1.0);

    assert_eq!(post(&gw, &chat_body("mock", false)).await.status(), 200);
    let admin = gw.admin_url();
    assert_eq!(
        client()
            .get(format!("{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = gw.metrics().await;
    for name in [
        "switchyard_requests_total{dialect=\"openai\",model=\"mock\",provider=\"mock\",status=\"200\"} 1",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_inflight_requests 0",
        "switchyard_tokens_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_are_enforced_when_configured() {
    let upstream = MockUpstream::start(|_, _| MockResponse::json(200, completion("m", "ok"))).await;
    let yaml = config(&upstream.url(), "").replace(
        "providers:\n",
        &format!("auth:\n  keys:\n    - {{ name: team-a, key: {CLIENT_KEY}, models: [\"mock\"] }}\nproviders:\n"),
    );
    let gw = Gateway::start_with_env(&yaml, &[("LOCAL_KEY", PROVIDER_KEY)]).await;
    assert_eq!(post(&gw, &chat_body("mock", false)).await.status(), 200);
    let (status, body) = error_of(post(&gw, &chat_body("local-model", false)).await).await;
    assert_eq!(status, 403, "{body}");
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("sk-wrong")
        .json(&chat_body("mock", false))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn check_validates_configs() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "providers:\n  mock: { kind: mock }\nmodels:\n  m: { targets: [{ provider: mock, model: x }] }\n").unwrap();
    let out = support::run_cli(&["check", "--config", good.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  anthropic: { kind: anthropic, base_url: \"not a url\", api_key: k }\n",
    )
    .unwrap();
    let out = support::run_cli(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("providers.anthropic.base_url: not a URL")
    );

    let unset = dir.path().join("unset.yaml");
    std::fs::write(
        &unset,
        "providers:\n  o: { kind: openai, api_key: \"${SWITCHYARD_TEST_UNSET_VAR}\" }\n",
    )
    .unwrap();
    let out = support::run_cli(&["check", "--config", unset.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHYARD_TEST_UNSET_VAR"));

    // The shipped example configs are valid as they are.
    let out = support::run_cli(&["check", "--config", "conf/switchyard.yaml"], &[]);
    assert!(out.status.success(), "{out:?}");
    let env = [
        ("SWITCHYARD_ADMIN_TOKEN", "t"),
        ("SWITCHYARD_CLIENT_KEY", "k"),
    ];
    let out = support::run_cli(
        &["check", "--config", "conf/switchyard.production.yaml"],
        &env,
    );
    assert!(out.status.success(), "{out:?}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/conf/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let exprs = dashboard["panels"].to_string();
    for name in [
        "switchyard_requests_total",
        "switchyard_time_to_first_token_seconds_bucket",
        "switchyard_target_healthy",
    ] {
        assert!(exprs.contains(name), "dashboard lacks {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_get_sni_and_a_verified_certificate() {
    let ca = support::TestCa::new();
    let upstream = MockUpstream::start_tls(
        |_, _| MockResponse::json(200, completion("m", "over tls")),
        &ca,
    )
    .await;
    let port = upstream.addr().port();
    let extra = format!(
        "  secure:\n    kind: openai\n    base_url: https://localhost:{port}/v1\n    api_key: sk-tls\n"
    );
    let ca_file = ca.ca_file();
    let env = [
        ("LOCAL_KEY", PROVIDER_KEY),
        ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
    ];
    let gw = Gateway::start_with_env(&config(&upstream.url(), &extra), &env).await;

    let resp = post(&gw, &chat_body("secure/gpt-test", false)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "over tls");
    let seen = &upstream.requests()[0];
    assert_eq!(seen.sni.as_deref(), Some("localhost"));
    assert_eq!(
        seen.header("host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert_eq!(seen.header("authorization"), Some("Bearer sk-tls"));

    // Without the CA the certificate is not trusted, and the request fails instead of going out.
    let gw = Gateway::start_with_env(
        &config(&upstream.url(), &extra),
        &[("LOCAL_KEY", PROVIDER_KEY)],
    )
    .await;
    let (status, _) = error_of(post(&gw, &chat_body("secure/gpt-test", false)).await).await;
    assert_eq!(status, 502);
    assert_eq!(upstream.request_count(), 1);
}
