//! Client keys' limits and budgets through the real binary: requests, tokens and concurrency per
//! minute, budgets that stop a key at the right cent (streams and fallbacks included), the
//! `x-ratelimit-*` headers and errors in both dialects, `/admin/keys`, counters kept across
//! reloads, and — with a real `redis-server` (`.ci/run` installs it) — two instances enforcing one
//! limit and one budget together, and Redis dying mid-run under `fail_open` and `fail_closed`.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{client, free_port, Gateway, MockResponse, MockUpstream};

const KEY: &str = "sk-team-limited";

/// Rate windows are clock minutes: a test that counts requests starts early in one, so that it
/// cannot straddle two.
async fn fresh_minute() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let into = secs % 60.0;
    if into > 45.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.0 - into + 0.1)).await;
    }
}

async fn chat(gw: &Gateway, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(KEY)
        .json(&json!({"model": model, "stream": stream, "max_tokens": 50,
                      "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .expect("gateway answers")
}

async fn admin_keys(gw: &Gateway) -> Value {
    client()
        .get(format!("{}/admin/keys", gw.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A config with one limited key; `state` and `extra_key` vary per test. The mock answers
/// "one two three four" (4 completion tokens) at 250 USD per million output tokens: 0.001 USD
/// a request. `flaky` tries a failing upstream first, then the mock.
fn config(state: &str, key: &str, failing: &str) -> String {
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
{state}
auth:
  keys:
    - {{ name: team, key: {KEY}, {key} }}
    - {{ name: free, key: sk-free }}
providers:
  mock: {{ kind: mock, reply: "one two three four" }}
  broken: {{ kind: openai-compatible, base_url: "{failing}/v1", api_key: k, circuit_breaker: {{ failure_threshold: 1000 }} }}
models:
  mock:
    targets: [{{ provider: mock, model: m, price: {{ input_per_mtok: 0, output_per_mtok: 250 }} }}]
  flaky:
    targets:
      - {{ provider: broken, model: x, price: {{ input_per_mtok: 1000000, output_per_mtok: 1000000 }} }}
      - {{ provider: mock, model: m, price: {{ input_per_mtok: 0, output_per_mtok: 250 }} }}
    retry: {{ attempts: 1, backoff_ms: 0 }}
"#
    )
}

async fn failing_upstream() -> MockUpstream {
    MockUpstream::start(|_, _| {
        MockResponse::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_are_enforced_with_headers_in_both_dialects() {
    let failing = failing_upstream().await;
    let gw = Gateway::start(&config("", "rpm: 2", &failing.url())).await;
    fresh_minute().await;
    for remaining in ["1", "0"] {
        let resp = chat(&gw, "mock", false).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "2");
        assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], remaining);
    }
    let resp = chat(&gw, "mock", false).await;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    assert!(resp.headers()["x-ratelimit-reset-requests"]
        .to_str()
        .unwrap()
        .ends_with('s'));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 requests per minute"));

    // The same key through the Anthropic dialect, with x-api-key.
    let resp = client()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", KEY)
        .json(&json!({"model": "mock", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // Other keys are not limited by it.
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("api-key", "sk-free")
        .json(&json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-ratelimit-limit-requests"));
    assert!(gw
        .metrics()
        .await
        .contains("switchyard_rate_limited_total{key=\"team\",reason=\"rpm\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reservations_settle_with_real_usage() {
    let failing = failing_upstream().await;
    // Each request reserves its size (~40 tokens) plus max_tokens (50) and really uses
    // ~6 + 4; settling frees the rest, so many more than 300 / 90 requests fit.
    let gw = Gateway::start(&config("", "tpm: 300", &failing.url())).await;
    fresh_minute().await;
    for i in 0..8 {
        let resp = chat(&gw, "mock", i % 2 == 1).await;
        assert_eq!(resp.status(), 200, "request {i}");
        let _ = resp.bytes().await;
    }
    // A request that may need more than the whole limit never fits.
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(KEY)
        .json(&json!({"model": "mock", "max_tokens": 400, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("300 tokens per minute"));
    let keys = admin_keys(&gw).await;
    let team = &keys["keys"][0];
    assert_eq!(team["name"], "team");
    let used = team["usage"]["tokens_this_minute"].as_u64().unwrap();
    assert!(
        (40..200).contains(&used),
        "{used}: real usage, not reservations"
    );
    assert_eq!(team["usage"]["in_flight"], 0);
    assert!(!keys.to_string().contains(KEY), "no key in the admin API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_stops_the_key_at_the_right_cent_streams_and_fallbacks_included() {
    let failing = failing_upstream().await;
    let gw = Gateway::start(&config(
        "",
        "budget_usd: { amount: 0.0035, period: daily }",
        &failing.url(),
    ))
    .await;
    // 0.001 USD each: a JSON answer, a stream, and a fallback whose failed first attempt (at a
    // huge price) costs nothing.
    assert_eq!(chat(&gw, "mock", false).await.status(), 200);
    let stream = chat(&gw, "mock", true).await;
    assert_eq!(stream.status(), 200);
    assert!(stream.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    let fallback = chat(&gw, "flaky", false).await;
    assert_eq!(fallback.status(), 200);
    assert_eq!(fallback.headers()["x-switchyard-attempts"], "2");
    let keys = admin_keys(&gw).await;
    let spent = keys["keys"][0]["budget"]["spent_usd"].as_f64().unwrap();
    assert!((spent - 0.003).abs() < 1e-9, "{spent}");
    // 0.003 < 0.0035: one more is admitted (and goes over); then the key is stopped.
    assert_eq!(chat(&gw, "mock", false).await.status(), 200);
    let resp = chat(&gw, "mock", false).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    let keys = admin_keys(&gw).await;
    assert_eq!(keys["keys"][0]["budget"]["remaining_usd"], 0.0);

    // A reload that keeps the key keeps its spending.
    gw.write_config(&config(
        "",
        "budget_usd: { amount: 0.0035, period: daily }, rpm: 100",
        &failing.url(),
    ));
    let reloaded = client()
        .post(format!("{}/admin/reload", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(chat(&gw, "mock", false).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_capped() {
    let failing = failing_upstream().await;
    let yaml = config("", "max_concurrent: 1", &failing.url()).replace(
        r#"reply: "one two three four""#,
        r#"reply: "slow", latency_ms: 400"#,
    );
    let gw = Gateway::start(&yaml).await;
    let (a, b) = tokio::join!(chat(&gw, "mock", false), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        chat(&gw, "mock", false).await
    });
    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 429);
    let body: Value = b.json().await.unwrap();
    assert_eq!(body["error"]["code"], "concurrency_limit_exceeded");
    // The slot is free again once the first answer is done.
    assert_eq!(chat(&gw, "mock", false).await.status(), 200);
}

/// A `redis-server` on a free port, killed on drop.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start_on(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Redis { port, child };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_one_limit_and_one_budget() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start_on(free_port()).expect("redis-server starts");
    let failing = failing_upstream().await;
    let state = format!(
        "state: {{ backend: redis, url: \"{}\", key_prefix: \"t{}:\" }}",
        redis.url(),
        std::process::id()
    );
    let yaml = config(
        &state,
        "rpm: 5, budget_usd: { amount: 0.0055, period: monthly }",
        &failing.url(),
    );
    let (a, b) = (Gateway::start(&yaml).await, Gateway::start(&yaml).await);
    fresh_minute().await;
    // Five requests per minute between them, whichever instance gets them.
    for i in 0..5 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = chat(gw, "mock", i == 3).await;
        assert_eq!(resp.status(), 200, "request {i}");
        let _ = resp.bytes().await;
    }
    for gw in [&a, &b] {
        let resp = chat(gw, "mock", false).await;
        assert_eq!(resp.status(), 429);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }
    // Both see the same spending: five answers at 0.001 USD.
    for gw in [&a, &b] {
        let keys = admin_keys(gw).await;
        let team = &keys["keys"][0];
        let spent = team["budget"]["spent_usd"].as_f64().unwrap();
        assert!((spent - 0.005).abs() < 1e-9, "{spent}");
        assert_eq!(team["usage"]["requests_this_minute"], 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_mid_run_follows_the_failure_mode() {
    if !redis_available() {
        return;
    }
    let port = free_port();
    let redis = Redis::start_on(port).expect("redis-server starts");
    let failing = failing_upstream().await;
    let state = |mode: &str| {
        format!(
            "state: {{ backend: redis, url: \"{}\", failure_mode: {mode}, key_prefix: \"d{}{mode}:\" }}",
            redis.url(),
            std::process::id()
        )
    };
    let open = Gateway::start(&config(&state("fail_open"), "rpm: 100", &failing.url())).await;
    let closed = Gateway::start(&config(&state("fail_closed"), "rpm: 100", &failing.url())).await;
    for gw in [&open, &closed] {
        assert_eq!(chat(gw, "mock", false).await.status(), 200);
    }
    drop(redis);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = chat(&open, "mock", false).await;
    assert_eq!(resp.status(), 200, "fail_open admits");
    let resp = chat(&closed, "mock", false).await;
    assert_eq!(resp.status(), 503, "fail_closed refuses");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "limits_unavailable");
    assert!(open
        .metrics()
        .await
        .contains("switchyard_state_errors_total{failure_mode=\"fail_open\"}"));
    assert!(
        open.wait_for_log("limits backend failed", Duration::from_secs(5))
            .await
    );
    // Keys without limits never touch Redis.
    let resp = client()
        .post(format!("{}/v1/chat/completions", closed.url()))
        .bearer_auth("sk-free")
        .json(&json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Redis comes back on the same port: counting resumes.
    let _redis = Redis::start_on(port).expect("redis-server restarts");
    let mut recovered = false;
    for _ in 0..40 {
        if chat(&closed, "mock", false).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "fail_closed recovers once Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_report_their_cost_in_both_dialects_json_and_stream() {
    let failing = failing_upstream().await;
    let gw = Gateway::start(&config("", "rpm: 100", &failing.url())).await;
    let close = |v: &Value| (v.as_f64().expect("a cost") - 0.001).abs() < 1e-12;

    let body: Value = chat(&gw, "mock", false).await.json().await.unwrap();
    assert!(close(&body["usage"]["cost"]), "{body}");

    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(KEY)
        .json(
            &json!({"model": "mock", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hello"}]}),
        )
        .send()
        .await
        .unwrap();
    let data = support::sse_data(&resp.text().await.unwrap());
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(close(&usage_chunk["usage"]["cost"]), "{usage_chunk}");

    let anthropic = |stream: bool| {
        client()
            .post(format!("{}/v1/messages", gw.url()))
            .header("x-api-key", KEY)
            .json(&json!({"model": "mock", "max_tokens": 50, "stream": stream,
                          "messages": [{"role": "user", "content": "hello"}]}))
            .send()
    };
    let body: Value = anthropic(false).await.unwrap().json().await.unwrap();
    assert!(close(&body["usage"]["cost"]), "{body}");
    let text = anthropic(true).await.unwrap().text().await.unwrap();
    let delta = text
        .split("\n\n")
        .find(|e| e.starts_with("event: message_delta"))
        .and_then(|e| e.lines().nth(1))
        .and_then(|l| l.strip_prefix("data: "))
        .expect("a message_delta event");
    let delta: Value = serde_json::from_str(delta).unwrap();
    assert!(close(&delta["usage"]["cost"]), "{delta}");
}
