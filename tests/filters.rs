//! Filters through the real binary: the example gateway built on the library
//! (`examples/custom_filter.rs`), and the built-in filters configured in YAML, in both client
//! dialects, JSON and streams, reloaded under load.

mod support;

use std::path::PathBuf;

use serde_json::{json, Value};
use support::{client, Gateway, MockResponse, MockUpstream, RecordedRequest, BINARY_ENV};

/// The example binary cargo builds with the tests (`cargo test` builds examples); built here
/// when a narrower command did not.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join("examples").join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    path
}

/// An OpenAI-compatible upstream that answers with the model it was asked for.
fn echo_model(req: &RecordedRequest) -> MockResponse {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("?").to_string();
    if body["stream"] == json!(true) {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        return MockResponse::sse(vec![
            chunk(
                json!({"role": "assistant", "content": format!("from {model}")}),
                Value::Null,
            ),
            chunk(json!({}), json!("stop")),
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
            ),
            "data: [DONE]\n\n".to_string(),
        ]);
    }
    MockResponse::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {model}")},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
    )
}

fn config(upstream: &MockUpstream, extra: &str) -> String {
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  up: {{ kind: openai-compatible, base_url: "{}/v1", api_key: sk-up, health_check: {{ enabled: false }} }}
models:
  standard: {{ targets: [{{ provider: up, model: standard-model }}] }}
  premium: {{ targets: [{{ provider: up, model: premium-model }}] }}
{extra}"#,
        upstream.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_binary_routes_by_header_and_tags_vendor_requests() {
    let upstream = MockUpstream::start(|req, _| echo_model(req)).await;
    let binary = example_binary("custom_filter");
    let gw = Gateway::start_with_env(
        &config(&upstream, ""),
        &[(BINARY_ENV, binary.to_str().expect("UTF-8 path"))],
    )
    .await;
    let chat = |tier: Option<&'static str>, body: Value| {
        let mut req = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&body);
        if let Some(tier) = tier {
            req = req.header("x-tier", tier);
        }
        req.send()
    };
    let hello = json!({"model": "standard", "messages": [{"role": "user", "content": "hi"}]});

    let gold: Value = chat(Some("gold"), hello.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        gold["choices"][0]["message"]["content"],
        "from premium-model"
    );
    let sent = upstream.requests().last().unwrap().clone();
    assert_eq!(sent.json()["model"], "premium-model");
    assert_eq!(sent.header("x-tier"), Some("gold"));

    let standard: Value = chat(None, hello.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        standard["choices"][0]["message"]["content"],
        "from standard-model"
    );
    let sent = upstream.requests().last().unwrap().clone();
    assert_eq!(sent.header("x-tier"), Some("standard"));
    // Not rewritten: the client's body reached the vendor as it was, but for `model`.
    assert_eq!(
        sent.json(),
        json!({"model": "standard-model", "messages": [{"role": "user", "content": "hi"}]})
    );

    let before = upstream.request_count();
    let refused = chat(Some("platinum"), hello.clone()).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_policy_violation");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("platinum"));
    assert_eq!(
        upstream.request_count(),
        before,
        "a refused request reaches no vendor"
    );

    // The Anthropic dialect: routed the same, refused in Anthropic's error format.
    let messages = |tier: &'static str| {
        client()
            .post(format!("{}/v1/messages", gw.url()))
            .header("x-tier", tier)
            .json(
                &json!({"model": "standard", "max_tokens": 20, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
    };
    let streamed = messages("gold").await.unwrap().text().await.unwrap();
    assert!(streamed.contains("from premium-model"), "{streamed}");
    assert!(streamed.contains("event: message_stop"), "{streamed}");
    let refused: Value = messages("platinum").await.unwrap().json().await.unwrap();
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"]["type"], "invalid_request_error");

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "switchyard_filter_actions_total{action=\"route\",filter=\"tier_routing\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        gw.wait_for_log("tier gold request", std::time::Duration::from_secs(5))
            .await,
        "the filter's log phase ran: {}",
        gw.logs()
    );
}
