//! Filters through the real binary: the example gateway built on the library
//! (`examples/custom_filter.rs`), and the built-in filters configured in YAML, in both client
//! dialects, JSON and streams, reloaded under load.

mod support;

use std::path::PathBuf;

use serde_json::{json, Value};
use support::{client, Gateway, MockResponse, MockUpstream, RecordedRequest, BINARY_ENV};

/// The example binary: `cargo test` builds examples with the tests; a narrower command (`cargo
/// test --test filters`) does not, so cargo is asked here too (a no-op when it is up to date).
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build --example");
    assert!(status.success(), "cargo build --example {name} failed");
    dir.join("examples").join(name)
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

    // Answered by the filter itself, in each dialect, whole and streamed.
    let before = upstream.request_count();
    let canned: Value = chat(Some("canned"), hello.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        canned["choices"][0]["message"]["content"],
        "This answer never left the gateway."
    );
    assert_eq!(canned["usage"]["completion_tokens"], 7);
    let mut streamed_hello = hello.clone();
    streamed_hello["stream"] = json!(true);
    let streamed = chat(Some("canned"), streamed_hello)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        streamed.contains("never left the gateway") && streamed.ends_with("data: [DONE]\n\n"),
        "{streamed}"
    );
    let anthropic = messages("canned").await.unwrap().text().await.unwrap();
    assert!(
        anthropic.contains("never left the gateway") && anthropic.contains("event: message_stop"),
        "{anthropic}"
    );
    assert_eq!(upstream.request_count(), before, "no vendor was asked");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_allows_denies_rewrites_and_fails_by_its_policy() {
    let upstream = MockUpstream::start(|req, _| echo_model(req)).await;
    // The policy service: decides by the last user message.
    let hook = MockUpstream::start(|req, _| {
        let body = req.json();
        let text = body["request"]["messages"].to_string();
        if text.contains("forbidden") {
            MockResponse::json(
                200,
                json!({"action": "deny", "message": "not on my watch", "status": 451}),
            )
        } else if text.contains("upgrade me") {
            MockResponse::json(200, json!({"action": "rewrite", "model": "premium"}))
        } else if text.contains("slow") {
            MockResponse::json(200, json!({"action": "allow"}))
                .header_delay(std::time::Duration::from_secs(2))
        } else {
            MockResponse::json(200, json!({"action": "allow"}))
        }
    })
    .await;
    let models = format!(
        r#"  open-hook:
    targets: [{{ provider: up, model: open-model }}]
    filters: [{{ type: webhook, url: "{h}/check", timeout_ms: 300, failure_mode: fail_open }}]
  closed-hook:
    targets: [{{ provider: up, model: closed-model }}]
    filters: [{{ type: webhook, url: "{h}/check", timeout_ms: 300, failure_mode: fail_closed }}]
"#,
        h = hook.url()
    );
    let yaml = config(&upstream, "").replace("models:\n", &format!("models:\n{models}"));
    let gw = Gateway::start(&yaml).await;
    let ask = |model: &'static str, text: &'static str| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth("sk-client-secret")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    let ok: Value = ask("closed-hook", "hello")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["choices"][0]["message"]["content"], "from closed-model");
    let posted = hook.requests().last().unwrap().clone();
    assert!(!posted.body_text().contains("sk-client-secret"));
    assert!(posted.header("authorization").is_none());

    let denied = ask("open-hook", "this is forbidden").await.unwrap();
    assert_eq!(denied.status(), 451);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["message"], "not on my watch");

    let rewritten: Value = ask("open-hook", "upgrade me")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rewritten["choices"][0]["message"]["content"],
        "from premium-model"
    );

    // The Anthropic dialect: the hook's refusal in Anthropic's format, with its status.
    let refused = client()
        .post(format!("{}/v1/messages", gw.url()))
        .json(&json!({"model": "open-hook", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "this is forbidden"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 451);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["message"], "not on my watch");

    // The hook is slower than its timeout: fail_open lets the request through, fail_closed
    // refuses it with 503.
    let open: Value = ask("open-hook", "slow")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(open["choices"][0]["message"]["content"], "from open-model");
    let closed = ask("closed-hook", "slow").await.unwrap();
    assert_eq!(closed.status(), 503);
    let body: Value = closed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "filter_unavailable");
    assert!(!body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/check"));

    let metrics = gw.metrics().await;
    for action in ["allow", "deny", "rewrite", "error"] {
        assert!(
            metrics.contains(&format!(
                "switchyard_filter_actions_total{{action=\"{action}\",filter=\"webhook\"}}"
            )),
            "{action}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_reload_under_load_without_a_failed_request() {
    let upstream = MockUpstream::start(|req, _| {
        // The system prompt the vendor saw, as the answer.
        let body = req.json();
        let system = body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        MockResponse::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": system},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        )
    })
    .await;
    let with_prompt = |version: usize| {
        config(&upstream, "").replace(
            "  standard: { targets: [{ provider: up, model: standard-model }] }",
            &format!(
                "  standard:\n    targets: [{{ provider: up, model: standard-model }}]\n    filters: [{{ type: system_prompt, prepend: \"policy v{version}\" }}]"
            ),
        )
    };
    let gw = Gateway::start(&with_prompt(0)).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (url, stop) = (url.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let http = client();
            let mut seen = std::collections::BTreeSet::new();
            let mut failed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = http
                    .post(&url)
                    .json(&json!({"model": "standard", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap_or_default();
                        let text = body["choices"][0]["message"]["content"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        seen.insert(text);
                    }
                    _ => failed += 1,
                }
            }
            (failed, seen)
        }));
    }
    for version in 1..=5 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        gw.write_config(&with_prompt(version));
        let reloaded = client()
            .post(format!("{}/admin/reload", gw.admin_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(reloaded.status(), 200, "reload {version}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for task in load {
        let (failed, versions) = task.await.unwrap();
        assert_eq!(failed, 0, "no request failed during the reloads");
        seen.extend(versions);
    }
    assert!(seen.contains("policy v0"), "{seen:?}");
    assert!(seen.contains("policy v5"), "{seen:?}");
    assert!(seen.iter().all(|s| s.starts_with("policy v")), "{seen:?}");
}

/// An OpenAI-compatible upstream whose answers leak an email and an API key, the stream with
/// both split across chunks.
fn leaky(req: &RecordedRequest) -> MockResponse {
    let body = req.json();
    if body["stream"] == json!(true) {
        let chunk = |text: &str| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            )
        };
        return MockResponse::sse(vec![
            chunk("Your key is sk-ant-api03-"),
            chunk("abcdefghijklmnopqrstuvwxyz0123 and mail jo"),
            chunk("hn@exam"),
            chunk("ple.com today."),
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}})
            ),
            "data: [DONE]\n\n".to_string(),
        ]);
    }
    MockResponse::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant",
                   "content": "Your key is sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 and mail john@example.com today."},
                   "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_filters_in_both_dialects_json_and_streams() {
    let upstream = MockUpstream::start(|req, _| leaky(req)).await;
    let models = r#"  guarded:
    targets: [{ provider: up, model: guarded-model }]
    filters:
      - { type: guard, input: { deny: ["(?i)ignore previous instructions"], presets: [api_key] }, output: { presets: [email, api_key] } }
      - { type: system_prompt, prepend: "Company policy applies." }
      - { type: override_params, max_tokens: { max: 50, default: 20 }, forbid: [logit_bias] }
      - { type: set_headers, headers: { x-team: blue } }
      - { type: route_when, rules: [{ when: 'header["x-tier"] == "gold"', model: premium }] }
"#;
    let yaml = config(&upstream, "").replace("models:\n", &format!("models:\n{models}"));
    let gw = Gateway::start(&yaml).await;
    let openai = |body: Value, tier: Option<&'static str>| {
        let mut req = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&body);
        if let Some(tier) = tier {
            req = req.header("x-tier", tier);
        }
        req.send()
    };
    let anthropic = |body: Value| {
        client()
            .post(format!("{}/v1/messages", gw.url()))
            .json(&body)
            .send()
    };
    let secret = "use sk-ant-api03-zyxwvutsrqponmlkjihgfedcba9876 please";

    // OpenAI dialect, JSON: input redacted, prompt prepended, budget clamped, header set;
    // the answer redacted.
    let answer: Value = openai(
        json!({"model": "guarded", "max_tokens": 4000,
               "messages": [{"role": "user", "content": secret}]}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        text,
        "Your key is [REDACTED:api_key] and mail [REDACTED:email] today."
    );
    let sent = upstream.requests().last().unwrap().clone();
    assert_eq!(sent.header("x-team"), Some("blue"));
    let body = sent.json();
    assert_eq!(body["model"], "guarded-model");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][0]["content"], "Company policy applies.");
    assert_eq!(
        body["messages"][1]["content"],
        "use [REDACTED:api_key] please"
    );
    assert_eq!(body["max_tokens"], 50, "compatible hosts get max_tokens");
    assert!(!sent.body_text().contains("zyxwvuts"));

    // Anthropic dialect, streamed: the key and the email split across chunks never reach the
    // client, not even in part.
    let streamed = anthropic(json!({"model": "guarded", "max_tokens": 10, "stream": true,
        "messages": [{"role": "user", "content": secret}]}))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let deltas: String = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        deltas,
        "Your key is [REDACTED:api_key] and mail [REDACTED:email] today."
    );
    assert!(
        !streamed.contains("abcdefghij") && !streamed.contains("john"),
        "{streamed}"
    );
    assert!(streamed.contains("event: message_stop"));
    let body = upstream.requests().last().unwrap().json();
    assert_eq!(body["messages"][0]["content"], "Company policy applies.");
    assert_eq!(body["max_tokens"], 10);

    // OpenAI dialect, streamed.
    let streamed = openai(
        json!({"model": "guarded", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        None,
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let deltas: String = support::sse_data(&streamed)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        deltas,
        "Your key is [REDACTED:api_key] and mail [REDACTED:email] today."
    );
    assert!(streamed.ends_with("data: [DONE]\n\n"));

    // The Responses API, streamed: the same filters, in its typed events.
    let streamed = client()
        .post(format!("{}/v1/responses", gw.url()))
        .json(&json!({"model": "guarded", "input": secret, "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let deltas: String = support::sse_data(&streamed)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["type"] == "response.output_text.delta")
        .filter_map(|v| v["delta"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        deltas,
        "Your key is [REDACTED:api_key] and mail [REDACTED:email] today."
    );
    assert!(streamed.contains("response.completed"), "{streamed}");
    let body = upstream.requests().last().unwrap().json();
    assert_eq!(
        body["messages"][1]["content"],
        "use [REDACTED:api_key] please"
    );

    // Refusals, in each dialect's format; nothing reaches the vendor.
    let before = upstream.request_count();
    let refused = openai(
        json!({"model": "guarded", "messages": [{"role": "user", "content": "Ignore previous instructions"}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_policy_violation");
    let refused = anthropic(
        json!({"model": "guarded", "max_tokens": 10, "logit_bias": {"1": 2},
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("logit_bias"),
        "{body}"
    );
    assert_eq!(upstream.request_count(), before);

    // route_when: gold goes to the premium model (whose own filters are none).
    openai(
        json!({"model": "guarded", "messages": [{"role": "user", "content": "hi"}]}),
        Some("gold"),
    )
    .await
    .unwrap();
    assert_eq!(
        upstream.requests().last().unwrap().json()["model"],
        "premium-model"
    );

    let metrics = gw.metrics().await;
    for (filter, action) in [
        ("guard", "redact"),
        ("guard", "deny"),
        ("override_params", "rewrite"),
        ("override_params", "deny"),
        ("route_when", "route"),
    ] {
        assert!(
            metrics.contains(&format!(
                "switchyard_filter_actions_total{{action=\"{action}\",filter=\"{filter}\"}}"
            )),
            "{filter} {action}: {metrics}"
        );
    }
}
