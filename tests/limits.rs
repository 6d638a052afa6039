//! Client keys' limits and budgets through the real binary: requests, tokens and concurrency per
//! minute, budgets that stop a key at the right cent (streams and fallbacks included), the
//! `x-ratelimit-*` headers and errors in both dialects, `/admin/keys`, counters kept across
//! reloads, and — with a real `redis-server` (`.ci/run` installs it) — two instances enforcing one
//! limit and one budget together, and Redis dying mid-run under `fail_open` and `fail_closed`.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use support::{client, free_port, redis_available, Gateway, MockResponse, MockUpstream, Redis};

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

/// Spend of a memory-backend key, from `/admin/keys`.
async fn spent(gw: &Gateway) -> f64 {
    admin_keys(gw).await["keys"][0]["budget"]["spent_usd"]
        .as_f64()
        .expect("a budget")
}

async fn wait_for_spent(gw: &Gateway, expected: f64) -> f64 {
    let mut now = spent(gw).await;
    for _ in 0..40 {
        if (now - expected).abs() < 1e-9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = spent(gw).await;
    }
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_spending_survives_an_upgrade_and_a_restart() {
    let state_dir = tempfile::tempdir().unwrap();
    let snapshot = state_dir.path().join("spend.json");
    // 0.001 USD an answer; `slow` streams its four tokens over a second.
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}", grace_period_s: 1,
          upgrade_sock: "{{{{dir}}}}/upgrade.sock", pid_file: "{{{{dir}}}}/switchyard.pid" }}
state: {{ backend: memory, snapshot_path: "{}", snapshot_interval_s: 1 }}
auth:
  keys:
    - {{ name: team, key: {KEY}, budget_usd: {{ amount: 0.004, period: monthly }} }}
providers:
  mock: {{ kind: mock, reply: "one two three four" }}
  slow: {{ kind: mock, reply: "one two three four", tokens_per_second: 4 }}
models:
  mock: {{ targets: [{{ provider: mock, model: m, price: {{ input_per_mtok: 0, output_per_mtok: 250 }} }}] }}
  slow: {{ targets: [{{ provider: slow, model: m, price: {{ input_per_mtok: 0, output_per_mtok: 250 }} }}] }}
"#,
        snapshot.display()
    );
    let mut old = Gateway::start(&yaml).await;
    for _ in 0..2 {
        assert_eq!(chat(&old, "mock", false).await.status(), 200);
    }
    assert!((spent(&old).await - 0.002).abs() < 1e-9);

    // Graceful upgrade; a stream that started on the old process settles there after the new
    // one has loaded the file.
    let slow = tokio::spawn({
        let url = old.url();
        async move {
            client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&json!({"model": "slow", "stream": true,
                              "messages": [{"role": "user", "content": "hello"}]}))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut new = old.start_upgrade();
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    new.wait_ready().await;
    let body = slow.await.unwrap();
    assert!(body.contains("[DONE]"), "{body}");
    assert!(
        old.wait_exit(Duration::from_secs(20)).await.is_some(),
        "the old process did not exit"
    );
    assert!(
        old.logs().contains("budget spending of 1 key(s) written"),
        "the old process merged at exit: {}",
        old.logs()
    );
    // The new process picks up what the old one added, at its next merge.
    let after_upgrade = wait_for_spent(&new, 0.003).await;
    assert!(
        (after_upgrade - 0.003).abs() < 1e-9,
        "after the upgrade: {after_upgrade}\n{}",
        new.logs()
    );
    // One more answer reaches the budget; the next is refused.
    assert_eq!(chat(&new, "mock", false).await.status(), 200);
    let resp = chat(&new, "mock", false).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");

    // A plain restart on the same file: the key stays at its budget.
    new.signal("TERM");
    assert!(new.wait_exit(Duration::from_secs(20)).await.is_some());
    let restarted = Gateway::start(&yaml).await;
    let after_restart = spent(&restarted).await;
    assert!(
        (after_restart - 0.004).abs() < 1e-9,
        "after the restart: {after_restart}"
    );
    let resp = chat(&restarted, "mock", false).await;
    assert_eq!(resp.status(), 429, "the first request after the restart");
    let file: Value = serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
    assert_eq!(file["keys"]["team"]["period"], "monthly");
    assert_eq!(file["keys"]["team"]["spent_nano_usd"], 4_000_000);
}

/// One command to Redis in RESP, its reply's first line.
fn redis_command(port: u16, args: &[&str]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(cmd.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_redis_connections_cost_no_request() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start_on(free_port()).expect("redis-server starts");
    let failing = failing_upstream().await;
    let state = |mode: &str| {
        format!(
            "state: {{ backend: redis, url: \"{}\", failure_mode: {mode}, key_prefix: \"k{}{mode}:\" }}",
            redis.url(),
            std::process::id()
        )
    };
    let open = Gateway::start(&config(&state("fail_open"), "rpm: 1000", &failing.url())).await;
    let closed = Gateway::start(&config(&state("fail_closed"), "rpm: 1000", &failing.url())).await;
    fresh_minute().await;
    for gw in [&open, &closed] {
        assert_eq!(chat(gw, "mock", false).await.status(), 200);
    }
    let mut expected = 1;
    for round in 0..3 {
        // Answers go out before their settlements' replies are back (those are not awaited):
        // a read through each instance's connection is answered after them, so the connections
        // are idle when they are killed, as this test means them to be. (A connection killed
        // with a settlement in flight fails that settlement: it may have run and is not resent.)
        for gw in [&open, &closed] {
            admin_keys(gw).await;
        }
        let killed = redis_command(redis.port, &["CLIENT", "KILL", "TYPE", "normal"]);
        assert!(
            killed.starts_with(':') && killed != ":0",
            "CLIENT KILL: {killed}"
        );
        expected += 1;
        for gw in [&open, &closed] {
            let resp = chat(gw, "mock", false).await;
            assert_eq!(
                resp.status(),
                200,
                "round {round}: {}",
                resp.text().await.unwrap()
            );
        }
    }
    // The server's own idle timeout closes both connections.
    assert_eq!(
        redis_command(redis.port, &["CONFIG", "SET", "timeout", "1"]),
        "+OK"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    expected += 1;
    for gw in [&open, &closed] {
        assert_eq!(
            chat(gw, "mock", false).await.status(),
            200,
            "after an idle cut"
        );
    }
    // Every request was counted (fail_open did not admit one blind) and none failed over.
    for gw in [&open, &closed] {
        let keys = admin_keys(gw).await;
        assert_eq!(keys["keys"][0]["usage"]["requests_this_minute"], expected);
        let metrics = gw.metrics().await;
        assert!(
            !metrics.contains("switchyard_state_errors_total{"),
            "{}",
            metrics
                .lines()
                .filter(|l| l.contains("state_errors"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_under_load_gives_no_wrong_answer() {
    if !redis_available() {
        return;
    }
    let port = free_port();
    let redis = Redis::start_on(port).expect("redis-server starts");
    let failing = failing_upstream().await;
    let state = format!(
        "state: {{ backend: redis, url: \"{}\", failure_mode: fail_closed, key_prefix: \"r{}:\" }}",
        redis.url(),
        std::process::id()
    );
    let gw = Gateway::start(&config(&state, "rpm: 100000", &failing.url())).await;
    let url = gw.url();
    let t0 = std::time::Instant::now();
    // 200 requests, four at a time, over about three seconds.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = client();
                let mut seen = Vec::new();
                for _ in 0..50 {
                    let started = t0.elapsed();
                    let resp = http
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(KEY)
                        .json(&json!({"model": "mock", "max_tokens": 5,
                                      "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await
                        .expect("gateway answers");
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    seen.push((started, t0.elapsed(), status, body));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let down_at = t0.elapsed();
    drop(redis);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let redis = Redis::start_on(port).expect("redis-server restarts");
    let back_at = t0.elapsed();
    // The first request once Redis is back is answered.
    let resp = chat(&gw, "mock", false).await;
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(
        status,
        200,
        "first request after the restart: {body}\n{}",
        gw.logs()
    );
    let mut seen = Vec::new();
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    let mut wrong = Vec::new();
    let (mut refused, mut after) = (0, 0);
    for (started, ended, status, body) in &seen {
        after += usize::from(*started > back_at);
        let right = match status {
            200 => true,
            // fail_closed while Redis is down: only for requests that overlapped the outage.
            503 => {
                refused += 1;
                body["error"]["code"] == "limits_unavailable"
                    && *ended >= down_at
                    && *started <= back_at
            }
            _ => false,
        };
        if !right {
            wrong.push(format!("{status} at {started:?}..{ended:?}: {body}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers (Redis down {down_at:?}..{back_at:?}): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(after >= 40, "too few requests after the restart: {after}");
    assert_eq!(seen.len(), 200);
    eprintln!("{refused} of 200 refused while Redis was down; {after} after it was back");
    drop(redis);
}
