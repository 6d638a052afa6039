//! The answer cache through the real binary: misses, hits and bypasses in both dialects, JSON
//! and streams (a hit filled by one dialect replayed in the other), `Cache-Control`, per-key and
//! shared scopes, TTLs, budgets not charged for hits, broken streams never cached, and — with a
//! real `redis-server` — two instances sharing one cache; answers from a vendor of the client's
//! dialect kept as they came.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{
    client, free_port, metric_value as metric, redis_available, sse_data, Gateway, MockResponse,
    MockUpstream, RecordedRequest, Redis,
};

const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic/stream_text.anthropic.sse");

/// An Anthropic upstream: "Hello world" whole or streamed, 25 input and 15 output tokens.
fn anthropic(req: &RecordedRequest) -> MockResponse {
    if req.json()["stream"] == json!(true) {
        // One chunk per event, so that a test can cut the stream between two.
        return MockResponse::sse(
            ANTHROPIC_STREAM
                .split_inclusive("\n\n")
                .map(str::to_string)
                .collect(),
        );
    }
    MockResponse::json(200, anthropic_answer())
}

/// [`anthropic`]'s JSON answer, a field only this vendor knows included.
fn anthropic_answer() -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
           "content": [{"type": "text", "text": "Hello world"}], "stop_reason": "end_turn",
           "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 15},
           "vendor_extra": {"kept": true}})
}

fn config(upstream: &MockUpstream, state: &str) -> String {
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
{state}
auth:
  keys:
    - {{ name: team-a, key: sk-a, budget_usd: {{ amount: 100, period: monthly }} }}
    - {{ name: team-b, key: sk-b }}
providers:
  anthropic: {{ kind: anthropic, base_url: "{u}", api_key: sk-ant, health_check: {{ enabled: false }} }}
models:
  cached:
    targets: [{{ provider: anthropic, model: claude-sonnet-4-5, price: {{ input_per_mtok: 3, output_per_mtok: 15 }} }}]
    cache: {{ ttl_s: 60 }}
  shared:
    targets: [{{ provider: anthropic, model: claude-sonnet-4-5, price: {{ input_per_mtok: 3, output_per_mtok: 15 }} }}]
    cache: {{ ttl_s: 60, scope: shared }}
  brief:
    targets: [{{ provider: anthropic, model: claude-sonnet-4-5, price: {{ input_per_mtok: 3, output_per_mtok: 15 }} }}]
    cache: {{ ttl_s: 1 }}
  uncached:
    targets: [{{ provider: anthropic, model: claude-sonnet-4-5, price: {{ input_per_mtok: 3, output_per_mtok: 15 }} }}]
"#,
        u = upstream.url()
    )
}

struct Answer {
    status: u16,
    cache: Option<String>,
    age: Option<u64>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(
    gw: &Gateway,
    key: &str,
    path: &str,
    body: Value,
    cache_control: Option<&str>,
) -> Answer {
    let mut req = client()
        .post(format!("{}{path}", gw.url()))
        .bearer_auth(key)
        .json(&body);
    if let Some(value) = cache_control {
        req = req.header("cache-control", value);
    }
    let resp = req.send().await.expect("gateway answers");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Answer {
        status: resp.status().as_u16(),
        cache: header("x-switchyard-cache"),
        age: header("age").and_then(|a| a.parse().ok()),
        body: resp.text().await.unwrap(),
    }
}

fn openai(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 50,
           "messages": [{"role": "user", "content": "hello"}]})
}

async fn chat(gw: &Gateway, key: &str, model: &str, stream: bool) -> Answer {
    send(gw, key, "/v1/chat/completions", openai(model, stream), None).await
}

/// The text of an OpenAI stream, checked to end with `[DONE]`.
fn streamed_text(body: &str) -> String {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    data.iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

async fn spent(gw: &Gateway) -> f64 {
    let keys: Value = client()
        .get(format!("{}/admin/keys", gw.admin_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "team-a")
        .and_then(|k| k["budget"]["spent_usd"].as_f64())
        .expect("team-a has a budget")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_misses_and_bypasses_in_both_dialects_json_and_streams() {
    let upstream = MockUpstream::start(|req, _| anthropic(req)).await;
    let gw = Gateway::start(&config(&upstream, "")).await;

    // A miss asks the vendor and is charged; the same request again is a hit, free.
    let first = chat(&gw, "sk-a", "cached", false).await;
    assert_eq!((first.status, first.cache.as_deref()), (200, Some("miss")));
    assert_eq!(upstream.request_count(), 1);
    let charged = spent(&gw).await;
    assert!(charged > 0.0);
    let hit = chat(&gw, "sk-a", "cached", false).await;
    assert_eq!(
        (hit.status, hit.cache.as_deref()),
        (200, Some("hit")),
        "{}",
        hit.body
    );
    assert!(hit.age.is_some_and(|age| age < 5), "age header");
    assert_eq!(
        upstream.request_count(),
        1,
        "a hit does not reach the vendor"
    );
    let (a, b) = (first.json(), hit.json());
    assert_eq!(b["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert_eq!(b["usage"]["completion_tokens"], 15);
    assert_eq!(spent(&gw).await, charged, "a hit costs the budget nothing");

    // The same question streamed, and in Anthropic's dialect, whole and streamed: hits too.
    let streamed = chat(&gw, "sk-a", "cached", true).await;
    assert_eq!(streamed.cache.as_deref(), Some("hit"));
    assert_eq!(streamed_text(&streamed.body), "Hello world");
    let anthropic_body = |stream: bool| {
        json!({"model": "cached", "max_tokens": 50, "stream": stream,
               "messages": [{"role": "user", "content": "hello"}]})
    };
    let whole = send(&gw, "sk-a", "/v1/messages", anthropic_body(false), None).await;
    assert_eq!(whole.cache.as_deref(), Some("hit"), "{}", whole.body);
    let whole = whole.json();
    assert_eq!(whole["type"], "message");
    assert_eq!(whole["content"][0]["text"], "Hello world");
    let events = send(&gw, "sk-a", "/v1/messages", anthropic_body(true), None).await;
    assert_eq!(events.cache.as_deref(), Some("hit"));
    assert!(
        events.body.starts_with("event: message_start"),
        "{}",
        events.body
    );
    assert!(
        events.body.contains("\"text\":\"Hello world\""),
        "{}",
        events.body
    );
    assert!(
        events.body.contains("event: message_stop"),
        "{}",
        events.body
    );
    assert_eq!(upstream.request_count(), 1);

    // A stream fills the cache for JSON clients as well.
    let other = |stream: bool| {
        json!({"model": "cached", "stream": stream, "max_tokens": 50,
               "messages": [{"role": "user", "content": "something else"}]})
    };
    let filled = send(&gw, "sk-a", "/v1/chat/completions", other(true), None).await;
    assert_eq!(filled.cache.as_deref(), Some("miss"));
    assert_eq!(streamed_text(&filled.body), "Hello world");
    let replayed = send(&gw, "sk-a", "/v1/chat/completions", other(false), None).await;
    assert_eq!(replayed.cache.as_deref(), Some("hit"));
    assert_eq!(replayed.json()["usage"]["completion_tokens"], 15);
    assert_eq!(upstream.request_count(), 2);

    // Cache-Control: no-cache asks again (and refreshes), no-store leaves the cache alone,
    // max-age=0 takes nothing stored.
    for (directive, expected) in [
        ("no-cache", "miss"),
        ("no-store", "bypass"),
        ("max-age=0", "bypass"),
    ] {
        let before = upstream.request_count();
        let resp = send(
            &gw,
            "sk-a",
            "/v1/chat/completions",
            openai("cached", false),
            Some(directive),
        )
        .await;
        assert_eq!(resp.cache.as_deref(), Some(expected), "{directive}");
        assert_eq!(upstream.request_count(), before + 1, "{directive}");
    }
    let resp = send(
        &gw,
        "sk-a",
        "/v1/chat/completions",
        openai("cached", false),
        Some("max-age=60"),
    )
    .await;
    assert_eq!(resp.cache.as_deref(), Some("hit"));

    // A sampled request asked for variety: not cached unless the model says so.
    let mut sampled = openai("cached", false);
    sampled["temperature"] = json!(0.7);
    let before = upstream.request_count();
    for _ in 0..2 {
        let resp = send(&gw, "sk-a", "/v1/chat/completions", sampled.clone(), None).await;
        assert_eq!(resp.cache.as_deref(), Some("bypass"));
    }
    assert_eq!(upstream.request_count(), before + 2);

    // Per key by default: another key's identical request is its own miss; a shared model's
    // answer serves every key.
    let b = chat(&gw, "sk-b", "cached", false).await;
    assert_eq!(b.cache.as_deref(), Some("miss"));
    assert_eq!(
        chat(&gw, "sk-a", "shared", false).await.cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        chat(&gw, "sk-b", "shared", false).await.cache.as_deref(),
        Some("hit")
    );

    // A model without a cache says nothing about one.
    assert_eq!(chat(&gw, "sk-a", "uncached", false).await.cache, None);

    // Answers expire with their model's TTL.
    assert_eq!(
        chat(&gw, "sk-a", "brief", false).await.cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        chat(&gw, "sk-a", "brief", false).await.cache.as_deref(),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        chat(&gw, "sk-a", "brief", false).await.cache.as_deref(),
        Some("miss")
    );

    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "switchyard_cache_lookups_total{model=\"cached\",result=\"hit\"}"
        ),
        6.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "switchyard_cache_lookups_total{model=\"cached\",result=\"bypass\"}"
        ) >= 4.0
    );
    assert!(
        metric(
            &metrics,
            "switchyard_cache_stored_bytes_total{model=\"cached\"}"
        ) > 0.0
    );
    // Each hit saved what the first answer cost: 25 input and 15 output tokens.
    let saved = metric(
        &metrics,
        "switchyard_cache_saved_usd_total{model=\"cached\"}",
    );
    assert!(
        (saved - 6.0 * (25.0 * 3.0 + 15.0 * 15.0) / 1e6).abs() < 1e-9,
        "{saved}"
    );
}

/// A miss in the vendor's own dialect: the vendor gets the client's bytes (fields it alone
/// knows, in the client's order), and its answer is kept as it came: a JSON hit in that dialect
/// gets the vendor's bytes again, a stream or another dialect a decoded answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_in_the_vendors_dialect_passes_the_request_through_and_keeps_the_answer() {
    let upstream = MockUpstream::start(|req, _| anthropic(req)).await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let body = |stream: bool| {
        format!(
            r#"{{"max_tokens":50,"model":"cached","stream":{stream},"messages":[{{"role":"user","content":"pass me through"}}],"vendor_only":{{"keep":[1,2]}}}}"#
        )
    };
    // In Anthropic's own way: `x-api-key`, `anthropic-version`, the body's bytes as written.
    let ask = |stream: bool| {
        client()
            .post(format!("{}/v1/messages", gw.url()))
            .header("x-api-key", "sk-a")
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(body(stream))
            .send()
    };
    for stream in [false, true] {
        let resp = ask(stream).await.unwrap();
        assert_eq!(resp.status(), 200);
        let cache = resp.headers().get("x-switchyard-cache").cloned();
        let text = resp.text().await.unwrap();
        if stream {
            // The stream asked the same question: the JSON miss's answer serves it.
            assert_eq!(cache.unwrap(), "hit");
            assert!(text.contains("event: message_stop"), "{text}");
        } else {
            assert_eq!(cache.unwrap(), "miss");
            let answer: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(answer["type"], "message", "{text}");
            assert_eq!(answer["content"][0]["text"], "Hello world", "{text}");
            assert_eq!(answer["usage"]["output_tokens"], 15, "{text}");
        }
        assert!(text.contains("Hello world"), "{text}");
    }
    let sent = upstream.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body_text(),
        body(false).replace("\"cached\"", "\"claude-sonnet-4-5\""),
        "the vendor gets the client's bytes but for the model"
    );
    // The same JSON question again: the vendor's answer as it came (a field only the vendor
    // knows included; the price the miss's answer reported is not part of what was kept).
    let again = ask(false).await.unwrap();
    assert_eq!(again.headers()["x-switchyard-cache"], "hit");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, anthropic_answer());
    // And an OpenAI client asking the same hits the Anthropic client's answer.
    let openai_body = json!({"model": "cached", "stream": false, "max_tokens": 50,
        "vendor_only": {"keep": [1, 2]},
        "messages": [{"role": "user", "content": "pass me through"}]});
    let hit = send(&gw, "sk-a", "/v1/chat/completions", openai_body, None).await;
    assert_eq!(hit.cache.as_deref(), Some("hit"), "{}", hit.body);
    assert_eq!(
        hit.json()["choices"][0]["message"]["content"],
        "Hello world"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_is_not_cached() {
    // The first stream is cut after its first text delta; the next ones are whole.
    let upstream = MockUpstream::start(|req, i| {
        let answer = anthropic(req);
        if i == 0 {
            answer.cut_after(4)
        } else {
            answer
        }
    })
    .await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let broken = chat(&gw, "sk-a", "cached", true).await;
    assert_eq!(broken.cache.as_deref(), Some("miss"));
    assert!(
        sse_data(&broken.body)
            .iter()
            .any(|d| d.contains("\"error\"")),
        "{}",
        broken.body
    );
    let next = chat(&gw, "sk-a", "cached", true).await;
    assert_eq!(
        next.cache.as_deref(),
        Some("miss"),
        "nothing was kept of the broken one"
    );
    assert_eq!(streamed_text(&next.body), "Hello world");
    assert_eq!(
        chat(&gw, "sk-a", "cached", true).await.cache.as_deref(),
        Some("hit")
    );
    assert_eq!(upstream.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_cache_through_redis() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start_on(free_port()).expect("redis-server starts");
    let upstream = MockUpstream::start(|req, _| anthropic(req)).await;
    let state = format!(
        "state: {{ backend: redis, url: \"{}\", key_prefix: \"c{}:\" }}",
        redis.url(),
        std::process::id()
    );
    let one = Gateway::start(&config(&upstream, &state)).await;
    let two = Gateway::start(&config(&upstream, &state)).await;
    assert_eq!(
        chat(&one, "sk-a", "cached", false).await.cache.as_deref(),
        Some("miss")
    );
    let hit = chat(&two, "sk-a", "cached", true).await;
    assert_eq!(hit.cache.as_deref(), Some("hit"));
    assert_eq!(streamed_text(&hit.body), "Hello world");
    // Still per key across instances.
    assert_eq!(
        chat(&two, "sk-b", "cached", false).await.cache.as_deref(),
        Some("miss")
    );
    // The TTL is Redis's: a 1 s answer is gone for both.
    assert_eq!(
        chat(&two, "sk-a", "brief", false).await.cache.as_deref(),
        Some("miss")
    );
    assert_eq!(
        chat(&one, "sk-a", "brief", false).await.cache.as_deref(),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        chat(&one, "sk-a", "brief", false).await.cache.as_deref(),
        Some("miss")
    );
    assert_eq!(upstream.request_count(), 4);
}

/// An OpenAI vendor's JSON answer to an OpenAI client is kept as it came: the same question
/// again gets those bytes (fields only the vendor sends included), and a stream or an
/// Anthropic client gets them decoded, as a live answer from that vendor would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_answer_is_kept_as_it_came_and_replayed_in_any_dialect() {
    let answer = json!({"id": "chatcmpl-9", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_9",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Kept as sent"},
                     "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}});
    let sent = answer.clone();
    let upstream = MockUpstream::start(move |_, _| MockResponse::json(200, sent.clone())).await;
    let gw = Gateway::start(&format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
auth:
  keys:
    - {{ name: team-a, key: sk-a }}
providers:
  openai: {{ kind: openai, base_url: "{u}/v1", api_key: sk-up, health_check: {{ enabled: false }} }}
models:
  cached:
    targets: [{{ provider: openai, model: gpt-4o, price: {{ input_per_mtok: 2.5, output_per_mtok: 10 }} }}]
    cache: {{ ttl_s: 60 }}
"#,
        u = upstream.url()
    ))
    .await;

    let miss = chat(&gw, "sk-a", "cached", false).await;
    assert_eq!((miss.status, miss.cache.as_deref()), (200, Some("miss")));
    assert_eq!(miss.json()["system_fingerprint"], "fp_9");
    let hit = chat(&gw, "sk-a", "cached", false).await;
    assert_eq!(hit.cache.as_deref(), Some("hit"));
    assert_eq!(hit.json(), answer, "the vendor's bytes, as they came");

    let streamed = chat(&gw, "sk-a", "cached", true).await;
    assert_eq!(streamed.cache.as_deref(), Some("hit"));
    assert_eq!(streamed_text(&streamed.body), "Kept as sent");
    assert!(
        streamed.body.contains(r#""finish_reason":"length""#),
        "{}",
        streamed.body
    );

    let anthropic_body = json!({"model": "cached", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello"}]});
    let translated = send(&gw, "sk-a", "/v1/messages", anthropic_body, None).await;
    assert_eq!(
        translated.cache.as_deref(),
        Some("hit"),
        "{}",
        translated.body
    );
    let message = translated.json();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "Kept as sent");
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(message["usage"]["output_tokens"], 3);
    assert_eq!(upstream.request_count(), 1);
}
