//! Hedged requests through the real binary: a slow first target and a fast second one, JSON and
//! streams in both dialects. The fast one wins, the slow one's connection is closed, the
//! counts say so, a fast first target is never hedged, and the per-minute budget holds.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    client, metric_value as metric, sse_data, Gateway, MockResponse, MockUpstream, RecordedRequest,
};

/// An OpenAI-compatible upstream that says its own name, whole or streamed.
fn named(name: &'static str, req: &RecordedRequest) -> MockResponse {
    let text = format!("from {name}");
    if req.json()["stream"] == json!(true) {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        return MockResponse::sse(vec![
            chunk(json!({"role": "assistant", "content": text}), Value::Null),
            chunk(json!({}), json!("stop")),
            "data: [DONE]\n\n".to_string(),
        ]);
    }
    MockResponse::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
    )
}

struct Upstreams {
    slow: MockUpstream,
    slowish: MockUpstream,
    fast: MockUpstream,
}

async fn upstreams() -> Upstreams {
    Upstreams {
        slow: MockUpstream::start(|req, _| named("slow", req).header_delay(Duration::from_secs(3)))
            .await,
        slowish: MockUpstream::start(|req, _| {
            named("slowish", req).header_delay(Duration::from_millis(600))
        })
        .await,
        fast: MockUpstream::start(|req, _| named("fast", req)).await,
    }
}

fn config(u: &Upstreams) -> String {
    let provider = |name: &str, upstream: &MockUpstream| {
        format!(
            "  {name}: {{ kind: openai-compatible, base_url: \"{}/v1\", api_key: k, health_check: {{ enabled: false }} }}\n",
            upstream.url()
        )
    };
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
{}{}{}models:
  hedged:
    targets: [{{ provider: slow, model: m }}, {{ provider: fast, model: m }}]
    hedge: {{ after: 100, max_per_minute: 100 }}
  by-percentile:
    targets: [{{ provider: slow, model: m }}, {{ provider: fast, model: m }}]
    hedge: {{ after: p95, after_ms: 100 }}
  fast-first:
    targets: [{{ provider: fast, model: m }}, {{ provider: slow, model: m }}]
    hedge: {{ after: 500 }}
  budgeted:
    targets: [{{ provider: slowish, model: m }}, {{ provider: fast, model: m }}]
    hedge: {{ after: 100, max_per_minute: 1 }}
"#,
        provider("slow", &u.slow),
        provider("slowish", &u.slowish),
        provider("fast", &u.fast),
    )
}

struct Answer {
    provider: String,
    attempts: String,
    took: Duration,
    text: String,
}

async fn ask(gw: &Gateway, path: &str, model: &str, stream: bool) -> Answer {
    let started = Instant::now();
    let body = json!({"model": model, "stream": stream, "max_tokens": 20,
                      "messages": [{"role": "user", "content": "hi"}]});
    let resp = client()
        .post(format!("{}{path}", gw.url()))
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (provider, attempts) = (
        header("x-switchyard-provider"),
        header("x-switchyard-attempts"),
    );
    let body = resp.text().await.unwrap();
    let took = started.elapsed();
    let text = match (path, stream) {
        ("/v1/chat/completions", false) => serde_json::from_str::<Value>(&body).unwrap()["choices"]
            [0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        ("/v1/chat/completions", true) => sse_data(&body)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect(),
        (_, false) => serde_json::from_str::<Value>(&body).unwrap()["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_string(),
        (_, true) => sse_data(&body)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|e| e["delta"]["text"].as_str().map(str::to_string))
            .collect(),
    };
    Answer {
        provider,
        attempts,
        took,
        text,
    }
}

async fn wait_for_abandoned(upstream: &MockUpstream, n: usize) -> usize {
    for _ in 0..100 {
        if upstream.abandoned_count() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    upstream.abandoned_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_target_wins_and_the_slow_one_is_dropped() {
    let u = upstreams().await;
    let gw = Gateway::start(&config(&u)).await;
    let cases = [
        ("/v1/chat/completions", false),
        ("/v1/chat/completions", true),
        ("/v1/messages", false),
        ("/v1/messages", true),
    ];
    for (path, stream) in cases {
        let answer = ask(&gw, path, "hedged", stream).await;
        assert_eq!(answer.text, "from fast", "{path} stream={stream}");
        assert_eq!(answer.provider, "fast", "{path} stream={stream}");
        assert_eq!(answer.attempts, "2");
        assert!(
            answer.took < Duration::from_millis(1500),
            "{path} stream={stream}: {:?}, the slow target takes 3 s",
            answer.took
        );
    }
    // Each slow attempt was abandoned: its connection closed while it held its answer back.
    assert_eq!(wait_for_abandoned(&u.slow, 4).await, 4);
    assert_eq!(u.slow.request_count(), 4);
    assert_eq!(u.fast.request_count(), 4);

    // Percentile delays start at their fallback until the target has enough samples.
    let answer = ask(&gw, "/v1/chat/completions", "by-percentile", false).await;
    assert_eq!(answer.provider, "fast");
    assert!(
        answer.took < Duration::from_millis(1500),
        "{:?}",
        answer.took
    );

    // A first target that answers within the delay is never hedged.
    let answer = ask(&gw, "/v1/chat/completions", "fast-first", true).await;
    assert_eq!(
        (answer.provider.as_str(), answer.attempts.as_str()),
        ("fast", "1")
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        u.slow.request_count(),
        5,
        "nothing more went to the slow target"
    );

    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_hedges_total{model=\"hedged\",result=\"won\"}"
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "switchyard_upstream_attempts_total{outcome=\"cancelled\",provider=\"slow\"}"
        ),
        5.0
    );
    assert_eq!(
        metric(
            &metrics,
            "switchyard_upstream_attempts_total{outcome=\"ok\",provider=\"fast\"}"
        ),
        6.0
    );
    // A target that answered in time is never counted as cancelled.
    assert!(
        !metrics.contains("outcome=\"cancelled\",provider=\"fast\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_hedges_per_minute() {
    let u = upstreams().await;
    let gw = Gateway::start(&config(&u)).await;
    // One hedge a minute: of three requests, one or two (across a minute's turn) are hedged
    // and won by the fast target; the others wait for the slowish one.
    let mut by = Vec::new();
    for _ in 0..3 {
        by.push(
            ask(&gw, "/v1/chat/completions", "budgeted", false)
                .await
                .provider,
        );
    }
    let hedged = by.iter().filter(|p| *p == "fast").count();
    assert!((1..=2).contains(&hedged), "{by:?}");
    let metrics = gw.metrics().await;
    let won = metric(
        &metrics,
        "switchyard_hedges_total{model=\"budgeted\",result=\"won\"}",
    );
    let skipped = metric(
        &metrics,
        "switchyard_hedges_total{model=\"budgeted\",result=\"skipped\"}",
    );
    assert_eq!(
        (won as usize, skipped as usize),
        (hedged, 3 - hedged),
        "{metrics}"
    );
}
