//! The Anthropic Messages dialect (`POST /v1/messages`) through the real binary: pass-through
//! to Anthropic upstreams (byte for byte but `model` and keys), translation from OpenAI-format
//! upstreams and the mock, errors in Anthropic's shape (also mid-stream), `count_tokens`,
//! `dialect` labels, and failover on every vendor's bad key.

mod support;

use serde_json::{json, Value};
use support::{client, Gateway, MockResponse, MockUpstream, RecordedRequest};

const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic/stream_tools.anthropic.sse");
const ANTHROPIC_ANSWER: &str = include_str!("fixtures/anthropic/response_tool_use.anthropic.json");

/// Named SSE events of an Anthropic stream as `(event, data)`.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            let value = serde_json::from_str(&data)
                .unwrap_or_else(|err| panic!("event data is not JSON ({err}): {data}"));
            (name, value)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn openai_upstream(req: &RecordedRequest) -> MockResponse {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("?").to_string();
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].to_string())
        .unwrap_or_default();
    if body["stream"] != json!(true) {
        return MockResponse::json(
            200,
            json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour"},
                                "logprobs": null, "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10,
                             "prompt_tokens_details": {"cached_tokens": 4}}}),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        )
    };
    let mut chunks = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Bon"}), Value::Null),
        chunk(json!({"content": "jour"}), Value::Null),
    ];
    if last.contains("cut") {
        // The upstream dies mid-answer: no finish, no [DONE].
        return MockResponse::sse(chunks);
    }
    chunks.push(chunk(json!({}), json!("stop")));
    chunks.push(format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
    ));
    chunks.push("data: [DONE]\n\n".into());
    MockResponse::sse(chunks)
}

fn config(anthropic: &str, openai: &str) -> String {
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
auth:
  keys: [{{ name: team, key: sk-client-key, models: ["claude", "gpt", "mock", "flaky", "nope"] }}]
providers:
  anthropic: {{ kind: anthropic, base_url: "{anthropic}", api_key: sk-ant-upstream }}
  openai: {{ kind: openai-compatible, base_url: "{openai}/v1", api_key: sk-oai-upstream }}
  badgem: {{ kind: gemini, base_url: "{anthropic}", api_key: wrong-gemini-key }}
  mock: {{ kind: mock, reply: "Hello from the mock" }}
models:
  claude: {{ targets: [{{ provider: anthropic, model: claude-sonnet-4-5 }}] }}
  gpt: {{ targets: [{{ provider: openai, model: gpt-4o-mini, price: {{ input_per_mtok: 1, output_per_mtok: 2 }} }}] }}
  mock: {{ targets: [{{ provider: mock, model: mock-1 }}] }}
  flaky:
    strategy: fallback
    targets: [{{ provider: badgem, model: gemini-2.5-flash }}, {{ provider: openai, model: gpt-4o-mini }}]
    retry: {{ attempts: 1, backoff_ms: 0 }}
"#
    )
}

/// The Anthropic upstream: answers the fixture, or Gemini's bad-key error on Gemini paths.
fn anthropic_upstream(req: &RecordedRequest) -> MockResponse {
    if req.path.contains(":generateContent") || req.path.contains(":streamGenerateContent") {
        return MockResponse::json(
            400,
            json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
        );
    }
    if req.path.ends_with("/count_tokens") {
        return MockResponse::json(200, json!({"input_tokens": 1234}));
    }
    if req.json()["stream"] == json!(true) {
        MockResponse::sse(vec![ANTHROPIC_STREAM.to_string()])
    } else {
        MockResponse::text(200, "application/json", ANTHROPIC_ANSWER)
    }
}

async fn start() -> (MockUpstream, MockUpstream, Gateway) {
    let anthropic = MockUpstream::start(|req, _| anthropic_upstream(req)).await;
    let openai = MockUpstream::start(|req, _| openai_upstream(req)).await;
    let gw = Gateway::start(&config(&anthropic.url(), &openai.url())).await;
    (anthropic, openai, gw)
}

async fn post(gw: &Gateway, path: &str, body: &str) -> reqwest::Response {
    client()
        .post(format!("{}{path}", gw.url()))
        .header("x-api-key", "sk-client-key")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("gateway answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_to_anthropic_passes_the_request_through_byte_for_byte() {
    let (anthropic, _openai, gw) = start().await;
    // Odd spacing, key order, a signed thinking block, cache_control and a field newer than the
    // gateway: all must reach Anthropic exactly as sent, but for the model.
    let body = r#"{ "max_tokens" : 1024,"model":"claude",
 "system":[{"type":"text","text":"Be terse.","cache_control":{"type":"ephemeral"}}],
 "messages":[{"role":"user","content":"Weather in Paris?"},
  {"role":"assistant","content":[{"type":"thinking","thinking":"Let me check.","signature":"EqQBCgIYAhIM1gbcDa9GJwZA"},
   {"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"city":"Paris"}}]},
  {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"18C"}]}],
 "thinking":{"type":"enabled","budget_tokens":512}, "future_field": {"x": 1.50} }"#;
    let resp = post(&gw, "/v1/messages", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "anthropic");
    let answer = resp.text().await.unwrap();
    // The answer passes through unchanged as well, but for its price (the catalog prices
    // claude-sonnet-4-5), spliced into `usage` as OpenRouter does.
    let cost = serde_json::from_str::<Value>(&answer).unwrap()["usage"]["cost"]
        .as_f64()
        .unwrap_or_else(|| panic!("no usage.cost in {answer}"));
    assert!(cost > 0.0, "{answer}");
    let expected = switchyard::accounting::with_usage_cost(ANTHROPIC_ANSWER.as_bytes(), cost)
        .expect("the fixture has a usage object");
    assert_eq!(answer, String::from_utf8(expected).unwrap());

    let seen = &anthropic.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(
        seen.body_text(),
        body.replace(r#""model":"claude""#, r#""model":"claude-sonnet-4-5""#)
    );
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-upstream"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    assert!(seen
        .headers
        .iter()
        .all(|(_, v)| !v.contains("sk-client-key")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_to_anthropic_streams_pass_through_event_for_event() {
    let (_anthropic, _openai, gw) = start().await;
    let resp = post(
        &gw,
        "/v1/messages",
        r#"{"model":"claude","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    // Event for event, but for the price added to the closing usage.
    let mut costs = 0;
    let mut normalise = |s: &str| -> Vec<(String, Value)> {
        let mut events = events(s);
        for (_, data) in &mut events {
            if let Some(usage) = data.get_mut("usage").and_then(Value::as_object_mut) {
                costs += usize::from(usage.remove("cost").is_some());
            }
        }
        events
    };
    assert_eq!(normalise(&text), normalise(ANTHROPIC_STREAM));
    assert_eq!(costs, 1, "one usage.cost, in message_delta: {text}");
    // Framing: every event named as its data's type, nothing else added.
    assert!(text.starts_with("event: message_start\ndata: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_upstream_answers_in_anthropic_shape_json_and_stream() {
    let (_anthropic, openai, gw) = start().await;
    let resp = post(
        &gw,
        "/v1/messages",
        r#"{"model":"gpt","max_tokens":1,"system":"Speak French.","metadata":{"user_id":"u-7"},
            "stop_sequences":["END"],"messages":[{"role":"user","content":"Hello"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"id": "msg_chatcmpl-9", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
               "content": [{"type": "text", "text": "Bonjour"}],
               "stop_reason": "max_tokens", "stop_sequence": null,
               "usage": {"input_tokens": 5, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 4, "output_tokens": 1,
                         // (5 + 4) prompt tokens at 1 USD/M, 1 completion token at 2 USD/M.
                         "cost": 0.000011}})
    );
    let sent = openai.requests()[0].json();
    assert_eq!(
        sent,
        json!({"model": "gpt-4o-mini",
               "messages": [{"role": "system", "content": "Speak French."},
                            {"role": "user", "content": "Hello"}],
               "stop": ["END"], "max_tokens": 1, "user": "u-7"})
    );
    assert_eq!(
        openai.requests()[0].header("authorization"),
        Some("Bearer sk-oai-upstream")
    );

    let resp = post(
        &gw,
        "/v1/messages",
        r#"{"model":"gpt","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hello"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let evs = events(&resp.text().await.unwrap());
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &evs {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(evs[0].1["message"]["model"], "gpt-4o-mini");
    assert_eq!(
        evs[3].1["delta"],
        json!({"type": "text_delta", "text": "Bon"})
    );
    assert_eq!(evs[6].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(evs[6].1["usage"]["input_tokens"], 9);
    assert_eq!(evs[6].1["usage"]["output_tokens"], 2);
    // The gateway asked the OpenAI upstream for usage.
    assert_eq!(
        openai.requests()[1].json()["stream_options"],
        json!({"include_usage": true})
    );

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("switchyard_gateway_overhead_seconds_count{dialect=\"anthropic\"} 2"),
        "{metrics}"
    );
    assert!(
        gw.wait_for_log(
            "\"dialect\":\"anthropic\"",
            std::time::Duration::from_secs(5)
        )
        .await,
        "access lines name the dialect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_speaks_anthropic_through_the_same_path() {
    let (_anthropic, _openai, gw) = start().await;
    let resp = post(
        &gw,
        "/v1/messages",
        r#"{"model":"mock","max_tokens":50,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Hello from the mock"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 4);

    let resp = post(
        &gw,
        "/v1/messages",
        r#"{"model":"mock","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    let evs = events(&resp.text().await.unwrap());
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text, "Hello from the mock");
    assert_eq!(names(&evs).last(), Some(&"message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_anthropic_shape_with_the_right_status() {
    let (_anthropic, _openai, gw) = start().await;
    let cases = [
        (
            None,
            r#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            401,
            "authentication_error",
        ),
        (
            Some("sk-client-key"),
            r#"{"model":"nope","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            404,
            "not_found_error",
        ),
        (
            Some("sk-client-key"),
            r#"{"model":"claude","messages":[{"role":"user","content":"x"}]}"#,
            400,
            "invalid_request_error",
        ),
        (
            Some("sk-client-key"),
            r#"{"model":"#,
            400,
            "invalid_request_error",
        ),
    ];
    for (key, body, status, kind) in cases {
        let mut req = client()
            .post(format!("{}/v1/messages", gw.url()))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            // Bearer works as well as x-api-key.
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_after_its_start_ends_with_an_anthropic_error_event() {
    let (_anthropic, _openai, gw) = start().await;
    let resp = post(
        &gw,
        "/v1/messages",
        r#"{"model":"gpt","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"please cut"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let evs = events(&resp.text().await.unwrap());
    let (last_name, last) = evs.last().expect("some events");
    assert_eq!(last_name, "error");
    assert_eq!(last["type"], "error");
    assert_eq!(last["error"]["type"], "api_error");
    assert!(!names(&evs).contains(&"message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_bad_key_fails_over_in_both_dialects() {
    let (_anthropic, openai, gw) = start().await;
    let resp = post(
        &gw,
        "/v1/messages",
        r#"{"model":"flaky","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "openai");
    assert_eq!(resp.headers()["x-switchyard-attempts"], "2");
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("sk-client-key")
        .json(&json!({"model": "flaky", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "openai");
    assert_eq!(openai.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_asks_anthropic_and_estimates_for_the_rest() {
    let (anthropic, _openai, gw) = start().await;
    let count = |v: Value| v["input_tokens"].as_u64().expect("input_tokens");
    // An Anthropic target counts itself: the client's body, but for the model, goes upstream.
    let body = r#"{"model":"claude","messages":[{"role":"user","content":"Hi"}]}"#;
    let resp = post(&gw, "/v1/messages/count_tokens", body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "anthropic");
    assert_eq!(count(resp.json().await.unwrap()), 1234);
    let seen = &anthropic.requests()[0];
    assert_eq!(seen.path, "/v1/messages/count_tokens");
    assert_eq!(
        seen.body_text(),
        body.replace("\"claude\"", "\"claude-sonnet-4-5\"")
    );
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-upstream"));

    // Other vendors cannot count: the gateway estimates, about four characters a token.
    let short = post(
        &gw,
        "/v1/messages/count_tokens",
        r#"{"model":"gpt","messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(short.status(), 200);
    let short = count(short.json().await.unwrap());
    let long = post(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": "gpt", "system": "You are terse.",
                "messages": [{"role": "user", "content": "word ".repeat(400)}]})
        .to_string(),
    )
    .await;
    let long = count(long.json().await.unwrap());
    assert!((1..20).contains(&short), "{short}");
    assert!((450..700).contains(&long), "{long}");
    let unknown = post(
        &gw,
        "/v1/messages/count_tokens",
        r#"{"model":"nope","messages":[{"role":"user","content":"Hi"}]}"#,
    )
    .await;
    assert_eq!(unknown.status(), 404);
}
