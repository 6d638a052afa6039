//! Fault injection through the real binary: one test per failure scenario, each checking what the
//! client got and what the upstreams saw (how many attempts, how far apart).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{client, sse_data, Gateway, MockResponse, MockUpstream, RecordedRequest};

/// `primary` and `backup` are OpenAI-compatible upstreams; `solo` uses only the primary, `duo`
/// falls back from the primary to the backup. Both retry twice with a 300 ms backoff.
fn config(primary: &MockUpstream, backup: &MockUpstream, primary_extra: &str) -> String {
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  primary:
    kind: openai-compatible
    base_url: {primary}/v1
    timeouts: {{ connect_ms: 300, first_byte_ms: 700, idle_ms: 600, total_ms: 8000 }}
    health_check: {{ enabled: false }}
{primary_extra}
  backup:
    kind: openai-compatible
    base_url: {backup}/v1
    health_check: {{ enabled: false }}
models:
  solo:
    targets: [{{ provider: primary, model: primary-model }}]
    retry: {{ attempts: 2, backoff_ms: 300, on: [429, 5xx, timeout, connect] }}
  duo:
    strategy: fallback
    targets:
      - {{ provider: primary, model: primary-model, price: {{ input_per_mtok: 1, output_per_mtok: 1 }} }}
      - {{ provider: backup, model: backup-model, price: {{ input_per_mtok: 2, output_per_mtok: 4 }} }}
    retry: {{ attempts: 2, backoff_ms: 300, on: [429, 5xx, timeout, connect] }}
"#,
        primary = primary.url(),
        backup = backup.url(),
    )
}

fn completion(req: &RecordedRequest, content: &str, prompt: u64, completion: u64) -> MockResponse {
    let model = req.json()["model"].as_str().unwrap_or("?").to_string();
    MockResponse::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}),
    )
}

fn chunk(content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    )
}

fn stream_end() -> Vec<String> {
    vec![
        format!(
            "data: {}\n\n",
            json!({"id": "s", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        ),
        "data: [DONE]\n\n".to_string(),
    ]
}

async fn backup_ok() -> MockUpstream {
    MockUpstream::start(|req, _| {
        if req.json()["stream"] == json!(true) {
            let mut events = vec![chunk("from backup")];
            events.extend(stream_end());
            MockResponse::sse(events)
        } else {
            completion(req, "from backup", 5, 7)
        }
    })
    .await
}

async fn ask(gw: &Gateway, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request to the gateway")
}

fn gaps(requests: &[RecordedRequest]) -> Vec<Duration> {
    requests
        .windows(2)
        .map(|w| w[1].received_at.duration_since(w[0].received_at))
        .collect()
}

fn provider_of(resp: &reqwest::Response) -> String {
    resp.headers()["x-switchyard-provider"]
        .to_str()
        .unwrap()
        .to_string()
}

fn attempts_of(resp: &reqwest::Response) -> String {
    resp.headers()["x-switchyard-attempts"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_once_moves_to_the_backup_and_pauses_the_primary() {
    let primary = MockUpstream::start(|_, _| {
        MockResponse::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}))
            .with_header("retry-after", "2")
    })
    .await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;

    let resp = ask(&gw, "duo", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (provider_of(&resp), attempts_of(&resp)),
        ("backup".into(), "2".into())
    );
    // The primary asked for 2 s: the next requests go straight to the backup.
    for _ in 0..3 {
        let resp = ask(&gw, "duo", false).await;
        assert_eq!(
            (provider_of(&resp), attempts_of(&resp)),
            ("backup".into(), "1".into())
        );
    }
    assert_eq!(
        primary.request_count(),
        1,
        "a rate-limited primary must not be hammered"
    );
    assert_eq!(backup.request_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_rate_limit_reaches_the_client_with_retry_after_and_no_hammering() {
    let primary = MockUpstream::start(|_, _| {
        MockResponse::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}))
            .with_header("retry-after", "30")
    })
    .await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;

    let resp = ask(&gw, "solo", false).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "30");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Rate limit reached"));

    let again = ask(&gw, "solo", false).await;
    assert_eq!(again.status(), 429);
    let after: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((28..=30).contains(&after), "retry-after {after}");
    assert_eq!(
        primary.request_count(),
        1,
        "the gateway answered the second 429 itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_once_is_retried_after_the_backoff() {
    let primary = MockUpstream::start(|req, i| {
        if i == 0 {
            MockResponse::json(
                500,
                json!({"error": {"message": "internal", "type": "server_error"}}),
            )
        } else {
            completion(req, "second time lucky", 3, 4)
        }
    })
    .await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;

    let resp = ask(&gw, "solo", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(attempts_of(&resp), "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "second time lucky"
    );
    let seen = primary.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        gaps(&seen)[0] >= Duration::from_millis(220),
        "backoff too short: {:?}",
        gaps(&seen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_unavailability_gives_up_after_the_policy() {
    let primary = MockUpstream::start(|_, _| {
        MockResponse::json(
            503,
            json!({"error": {"message": "The server is overloaded", "type": "server_error"}}),
        )
    })
    .await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;

    let resp = ask(&gw, "solo", false).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(attempts_of(&resp), "2");
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("overloaded"));
    let seen = primary.requests();
    assert_eq!(seen.len(), 2, "attempts: 2 means two tries, no more");
    assert!(gaps(&seen)[0] >= Duration::from_millis(220));

    // Two more failures open the breaker (threshold 3): the gateway then answers at once.
    let _ = ask(&gw, "solo", false).await;
    let started = Instant::now();
    let resp = ask(&gw, "solo", false).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_millis(200));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "targets_unavailable");
    assert_eq!(primary.request_count(), 3, "an open breaker sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_headers_fails_over() {
    let primary = MockUpstream::start(|_, _| MockResponse::reset()).await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;
    let resp = ask(&gw, "duo", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (provider_of(&resp), attempts_of(&resp)),
        ("backup".into(), "2".into())
    );
    assert_eq!(primary.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_at_all_times_out_and_fails_over() {
    let primary = MockUpstream::start(|_, _| MockResponse::hang()).await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;
    let started = Instant::now();
    let resp = ask(&gw, "duo", false).await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(provider_of(&resp), "backup");
    assert!(
        elapsed >= Duration::from_millis(650),
        "failed over before first_byte_ms: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");

    // Alone, the same primary gives a 504 after both tries.
    let resp = ask(&gw, "solo", false).await;
    assert_eq!(resp.status(), 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_first_token_within_the_timeout_is_waited_for() {
    let primary = MockUpstream::start(|req, _| {
        completion(req, "thought hard", 3, 4).header_delay(Duration::from_millis(1500))
    })
    .await;
    let backup = backup_ok().await;
    // A thinking model: the first byte may take long, so its timeout is raised.
    let gw = Gateway::start(
        &config(&primary, &backup, "").replace("first_byte_ms: 700", "first_byte_ms: 4000"),
    )
    .await;
    let resp = ask(&gw, "duo", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        (provider_of(&resp), attempts_of(&resp)),
        ("primary".into(), "1".into())
    );
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_failures_after_the_first_byte_end_with_an_error_event() {
    let primary = MockUpstream::start(|req, _| {
        let mut events = vec![chunk("Hello"), chunk(" there")];
        events.extend(stream_end());
        match req.json()["messages"][0]["content"].as_str() {
            // The pause lets the first chunk reach the client before the reset.
            Some("cut") => MockResponse::sse(events)
                .delays(vec![Duration::ZERO, Duration::from_millis(150)])
                .cut_after(2),
            Some("stall") => MockResponse::sse(events).stall_after(1),
            Some("garbage") => {
                MockResponse::sse(vec![chunk("Hello"), "data: {this is not json\n\n".into()])
                    .delays(vec![Duration::ZERO, Duration::from_millis(150)])
            }
            Some("no end") => MockResponse::sse(events[..3].to_vec()),
            _ => MockResponse::sse(events),
        }
    })
    .await;
    let backup = backup_ok().await;
    // Each broken stream counts against the primary; keep its breaker closed for all four cases.
    let breaker = "    circuit_breaker: { failure_threshold: 10 }";
    let gw = Gateway::start(&config(&primary, &backup, breaker)).await;
    for case in ["cut", "stall", "garbage", "no end"] {
        let started = Instant::now();
        let resp = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "duo", "stream": true, "messages": [{"role": "user", "content": case}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{case}");
        assert_eq!(provider_of(&resp), "primary", "{case}");
        let data = sse_data(&resp.text().await.unwrap());
        assert!(data[0].contains("Hello"), "{case}: {data:?}");
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap_or(Value::Null);
        assert!(
            last["error"]["message"].is_string(),
            "{case} did not end with an error event: {data:?}"
        );
        assert!(
            !data.iter().any(|d| d == "[DONE]"),
            "{case} looked like a clean end"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{case} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        backup.request_count(),
        0,
        "nothing fails over after the first byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_before_its_first_byte_fails_over() {
    let primary =
        MockUpstream::start(|_, _| MockResponse::sse(vec![chunk("never sent")]).cut_after(0)).await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;
    let resp = ask(&gw, "duo", true).await;
    assert_eq!(provider_of(&resp), "backup");
    let data = sse_data(&resp.text().await.unwrap());
    assert!(data[0].contains("from backup"));
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(primary.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_are_never_retried() {
    let primary = MockUpstream::start(|req, _| {
        match req.json()["messages"][0]["content"].as_str() {
            Some("too long") => MockResponse::json(400, json!({"error": {
                "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})),
            _ => MockResponse::json(400, json!({"error": {
                "message": "The response was filtered due to the prompt triggering content management policy.",
                "type": null, "param": "prompt", "code": "content_filter"}})),
        }
    })
    .await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;
    for (text, code, words) in [
        (
            "too long",
            "context_length_exceeded",
            "maximum context length",
        ),
        ("filtered", "content_filter", "content management policy"),
    ] {
        let resp = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "duo", "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(attempts_of(&resp), "1");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
        assert!(body["error"]["message"].as_str().unwrap().contains(words));
    }
    assert_eq!(primary.request_count(), 2);
    assert_eq!(
        backup.request_count(),
        0,
        "a 400 is the request's fault: no fallback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_primary_gets_its_traffic_back() {
    let down = Arc::new(AtomicBool::new(true));
    let primary = MockUpstream::start({
        let down = down.clone();
        move |req, _| {
            if down.load(Ordering::SeqCst) {
                MockResponse::json(502, json!({"error": {"message": "bad gateway"}}))
            } else {
                completion(req, "primary again", 1, 1)
            }
        }
    })
    .await;
    let backup = backup_ok().await;
    let breaker = "    circuit_breaker: { failure_threshold: 2, cooldown_ms: 600 }";
    let gw = Gateway::start(&config(&primary, &backup, breaker)).await;

    // Down: the backup answers; after two failures the breaker opens and the primary is skipped.
    for _ in 0..4 {
        assert_eq!(provider_of(&ask(&gw, "duo", false).await), "backup");
    }
    assert_eq!(
        primary.request_count(),
        2,
        "an open breaker keeps traffic off the primary"
    );

    down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Half-open: one trial goes to the primary, succeeds, and the breaker closes.
    let resp = ask(&gw, "duo", false).await;
    assert_eq!(provider_of(&resp), "primary");
    for _ in 0..3 {
        assert_eq!(provider_of(&ask(&gw, "duo", false).await), "primary");
    }
    assert_eq!(backup.request_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_answer_reports_its_own_model_and_only_its_usage() {
    let primary =
        MockUpstream::start(|_, _| MockResponse::json(500, json!({"error": {"message": "boom"}})))
            .await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;
    let resp = ask(&gw, "duo", false).await;
    assert_eq!(provider_of(&resp), "backup");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "backup-model");
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 7);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let line: Value = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "access" && l["endpoint"] == "chat")
        .expect("access log line");
    assert_eq!(line["provider"], "backup");
    assert_eq!(line["upstream_model"], "backup-model");
    assert_eq!(
        (
            line["prompt_tokens"].as_u64(),
            line["completion_tokens"].as_u64()
        ),
        (Some(5), Some(7))
    );
    // Priced at the backup's rates only.
    assert!((line["cost_usd"].as_f64().unwrap() - (5.0 * 2.0 + 7.0 * 4.0) / 1e6).abs() < 1e-12);

    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains("switchyard_upstream_attempts_total{outcome=\"5xx\",provider=\"primary\"} 1"),
        "{metrics}"
    );
    assert!(metrics
        .contains("switchyard_upstream_attempts_total{outcome=\"ok\",provider=\"backup\"} 1"));
    assert!(metrics.contains("switchyard_fallbacks_total{model=\"duo\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_health_probes_send_traffic_elsewhere_until_they_pass() {
    let primary = MockUpstream::start(|req, _| completion(req, "from primary", 1, 1)).await;
    primary.set_probe_status(503);
    let backup = backup_ok().await;
    let probes = "    health_check: { interval_s: 1 }";
    // Probes on for the primary only (its block comes first).
    let yaml = config(&primary, &backup, "").replacen(
        "    health_check: { enabled: false }\n",
        &format!("{probes}\n"),
        1,
    );
    let gw = Gateway::start(&yaml).await;
    let wait_for = |want: &'static str| {
        let gw = &gw;
        async move {
            for _ in 0..40 {
                if provider_of(&ask(gw, "duo", false).await) == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(
        wait_for("backup").await,
        "an unhealthy primary still got traffic first"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains("switchyard_target_healthy{model=\"duo\",provider=\"primary\",upstream_model=\"primary-model\"} 0"),
        "{metrics}"
    );
    let before = primary.request_count();
    primary.set_probe_status(200);
    assert!(
        wait_for("primary").await,
        "a healthy primary did not get its traffic back"
    );
    assert!(primary.probe_count() >= 2);
    assert!(primary.request_count() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_fallbacks_and_provider_preferences() {
    let primary =
        MockUpstream::start(|_, _| MockResponse::json(500, json!({"error": {"message": "down"}})))
            .await;
    let backup = backup_ok().await;
    let gw = Gateway::start(&config(&primary, &backup, "")).await;
    let post = |body: Value| {
        let gw = &gw;
        async move {
            client()
                .post(format!("{}/v1/chat/completions", gw.url()))
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let msgs = json!([{"role": "user", "content": "hi"}]);
    // `models`: the solo primary fails, the listed fallback model answers.
    let resp =
        post(json!({"model": "solo", "models": ["backup/any-model"], "messages": msgs})).await;
    assert_eq!(provider_of(&resp), "backup");
    // `provider.order` puts the backup first; `only` keeps just the primary.
    let resp =
        post(json!({"model": "duo", "provider": {"order": ["backup"]}, "messages": msgs})).await;
    assert_eq!(
        (provider_of(&resp), attempts_of(&resp)),
        ("backup".into(), "1".into())
    );
    let resp =
        post(json!({"model": "duo", "provider": {"only": ["primary"]}, "messages": msgs})).await;
    assert_eq!(resp.status(), 500);
    let resp =
        post(json!({"model": "duo", "provider": {"only": ["nobody"]}, "messages": msgs})).await;
    assert_eq!(resp.status(), 400);
    let resp =
        post(json!({"model": "duo", "provider": {"sort": "fastest"}, "messages": msgs})).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_is_not_a_provider_failure() {
    let primary = MockUpstream::start(|req, _| {
        if req.json()["stream"] == json!(true) {
            let mut events: Vec<String> = (0..20).map(|i| chunk(&format!("word{i} "))).collect();
            events.extend(stream_end());
            MockResponse::sse(events).chunk_delay(Duration::from_millis(50))
        } else {
            completion(req, "still here", 1, 1)
        }
    })
    .await;
    let backup = backup_ok().await;
    // One counted failure would open the breaker for a minute.
    let breaker = "    circuit_breaker: { failure_threshold: 1, cooldown_ms: 60000 }";
    let gw = Gateway::start(&config(&primary, &backup, breaker)).await;
    for _ in 0..2 {
        let resp = ask(&gw, "duo", true).await;
        assert_eq!(provider_of(&resp), "primary");
        let mut body = resp.bytes_stream();
        use futures_util::StreamExt;
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("word0"));
        // Hang up mid-stream.
        drop(body);
    }
    // The gateway notices at its next write to the closed connection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "switchyard_upstream_attempts_total{outcome=\"client_gone\",provider=\"primary\"} 2"
        ),
        "the hang-ups were not seen: {metrics}"
    );
    let resp = ask(&gw, "duo", false).await;
    assert_eq!(
        provider_of(&resp),
        "primary",
        "a client hang-up opened the provider's breaker"
    );
}
