//! Money and what operators see of it, through the real binary: direct routes priced from the
//! catalog and counted against budgets, unpriced models refused to keys with a budget, money in
//! micro-dollars, per-key Prometheus series, the model list a key may see, and config
//! warnings.

mod support;

use serde_json::{json, Value};
use support::{client, Gateway, MockResponse, MockUpstream};

/// An upstream that answers every chat request with 3 prompt and 1 completion tokens.
async fn openai_upstream() -> MockUpstream {
    MockUpstream::start(|req, _| {
        let model = req.json()["model"].as_str().unwrap_or("?").to_string();
        MockResponse::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
        )
    })
    .await
}

/// `openai` is priced by the catalog whatever its host; `local` (an OpenAI-compatible server
/// on loopback) is not.
fn config(upstream: &MockUpstream) -> String {
    let u = upstream.url();
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
auth:
  keys:
    - name: capped
      key: sk-capped
      models: ["openai/*", "local/*", "mock"]
      budget_usd: {{ amount: 0.000001, period: total }}
      limits: [{{ models: ["mock"], rpm: 50 }}]
    - {{ name: free, key: sk-free, models: ["local/*", "mock"] }}
providers:
  openai: {{ kind: openai, base_url: "{u}/v1", api_key: sk-up, health_check: {{ enabled: false }} }}
  local: {{ kind: openai-compatible, base_url: "{u}/v1", health_check: {{ enabled: false }} }}
  mock: {{ kind: mock }}
models:
  mock: {{ targets: [{{ provider: mock, model: mock-1 }}] }}
  pricey: {{ targets: [{{ provider: local, model: big, price: {{ input_per_mtok: 1, output_per_mtok: 2 }} }}] }}
"#
    )
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request to the gateway");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON answer"))
}

async fn get(url: String, key: Option<&str>) -> (u16, Value) {
    let mut req = client().get(url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.expect("request to the gateway");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A whole number of micro-dollars, never `4.3100000000000005` (nor `1.05e-6`, whatever
/// notation the number is written in).
fn is_micro_dollars(v: &Value) -> bool {
    let micros = v.as_f64().expect("a number") * 1e6;
    (micros - micros.round()).abs() < 1e-6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_routes_are_priced_from_the_catalog_and_count_against_budgets() {
    let upstream = openai_upstream().await;
    let gw = Gateway::start(&config(&upstream)).await;

    // A model the catalog prices: gpt-4o-mini, 3 input and 1 output token cost > $0.000001.
    let (status, body) = chat(&gw, "sk-capped", "openai/gpt-4o-mini").await;
    assert_eq!(status, 200, "{body}");
    let cost = body["usage"]["cost"]
        .as_f64()
        .expect("usage.cost on a priced answer");
    assert!(cost > 0.0, "{body}");
    assert!(is_micro_dollars(&body["usage"]["cost"]), "{body}");

    let (_, keys) = get(format!("{}/admin/keys", gw.admin_url()), None).await;
    let capped = &keys["keys"][0];
    let budget = &capped["budget"];
    assert!(budget["spent_usd"].as_f64().unwrap() > 0.0, "{keys}");
    for field in ["amount_usd", "spent_usd", "remaining_usd"] {
        assert!(is_micro_dollars(&budget[field]), "{field}: {keys}");
    }
    assert_eq!(
        capped["model_limits"][0]["models"],
        json!(["mock"]),
        "{keys}"
    );
    assert_eq!(capped["model_limits"][0]["rpm"], 50, "{keys}");

    // The budget is spent: the next paid call is refused, direct route or not.
    let (status, body) = chat(&gw, "sk-capped", "openai/gpt-4o").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_a_budget_only_reach_priced_models() {
    let upstream = openai_upstream().await;
    let gw = Gateway::start(&config(&upstream)).await;

    // Nothing prices a model of a local server: refused to the key with a budget, named.
    let (status, body) = chat(&gw, "sk-capped", "local/llama3").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_priced");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("local/llama3"),
        "{body}"
    );
    assert_eq!(upstream.request_count(), 0);
    // A key without a budget may use it; a configured price makes it usable with one.
    let (status, body) = chat(&gw, "sk-free", "local/llama3").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["usage"].get("cost").is_none(), "{body}");
    // The mock is free, and priced as such.
    let (status, body) = chat(&gw, "sk-capped", "mock").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["cost"], 0.0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_prometheus_series() {
    let upstream = openai_upstream().await;
    let gw = Gateway::start(&config(&upstream)).await;
    chat(&gw, "sk-capped", "openai/gpt-4o-mini").await;
    chat(&gw, "sk-free", "mock").await;
    chat(&gw, "sk-wrong", "mock").await;
    let metrics = gw.metrics().await;
    for line in [
        "switchyard_key_requests_total{key=\"capped\",status=\"200\"} 1",
        "switchyard_key_requests_total{key=\"free\",status=\"200\"} 1",
        "switchyard_key_tokens_total{key=\"capped\",kind=\"input\"} 3",
        "switchyard_key_tokens_total{key=\"capped\",kind=\"output\"} 1",
        "switchyard_key_cost_usd_total{key=\"capped\"} 0.00000",
        "switchyard_key_budget_remaining_usd{key=\"capped\",period=\"total\"} 0",
        "switchyard_requests_total{dialect=\"openai\",model=\"openai/*\",provider=\"openai\",status=\"200\"} 1",
        "switchyard_build_info{allocator=",
        "process_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // A key that does not exist never becomes a label.
    assert!(!metrics.contains("sk-wrong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sees_and_retrieves_only_its_own_models() {
    let upstream = openai_upstream().await;
    let gw = Gateway::start(&config(&upstream)).await;
    let models = |key| get(format!("{}/v1/models", gw.url()), Some(key));
    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, list) = models("sk-free").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), vec!["mock"], "{list}");

    let retrieve = |key, id: &str| get(format!("{}/v1/models/{id}", gw.url()), Some(key));
    let (status, model) = retrieve("sk-free", "mock").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["id"], "mock");
    assert_eq!(model["object"], "model");
    // Configured but not this key's: as if it did not exist.
    let (status, body) = retrieve("sk-free", "pricey").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    // Direct routes, slash and all (the SDK sends it unencoded, others encode it).
    for id in ["openai/gpt-4o-mini", "openai%2Fgpt-4o-mini"] {
        let (status, model) = retrieve("sk-capped", id).await;
        assert_eq!(status, 200, "{id}: {model}");
        assert_eq!(model["id"], "openai/gpt-4o-mini");
        assert!(model["pricing"]["input_per_mtok"].as_f64().unwrap() > 0.0);
        assert!(model["context_length"].as_u64().unwrap() > 0, "{model}");
    }
    let (status, _) = retrieve("sk-wrong", "mock").await;
    assert_eq!(status, 401);
}

#[test]
fn config_that_would_be_silently_meaningless_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warn.yaml");
    std::fs::write(
        &path,
        r#"
auth:
  keys: [{ name: a, key: sk-a, models: ["gtp-4o*", "mock", "mock/*"] }]
providers:
  mock: { kind: mock, api_key: sk-pointless }
models:
  mock: { targets: [{ provider: mock, model: m1, weight: 5 }] }
"#,
    )
    .unwrap();
    let out = support::run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for warning in [
        "models.mock.targets[0].weight: ignored",
        "providers.mock.api_key: ignored",
        "auth.keys[0].models[0]: 'gtp-4o*' matches no configured model",
    ] {
        assert!(text.contains(warning), "no warning {warning:?} in:\n{text}");
    }
    assert!(
        !text.contains("models[1]") && !text.contains("models[2]"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_log_level_is_said_not_swallowed() {
    let gw = Gateway::start_with_env(
        r#"
server: { listen: ["{{listen}}"], admin_listen: "{{admin}}" }
providers: { mock: { kind: mock } }
"#,
        &[("SWITCHYARD_LOG", "verbose")],
    )
    .await;
    assert!(
        gw.wait_for_log(
            "SWITCHYARD_LOG=\\\"verbose\\\" is not a level",
            std::time::Duration::from_secs(5)
        )
        .await,
        "{}",
        gw.logs()
    );
}

/// Every metric the shipped Grafana dashboard and Prometheus alert rules query is one the
/// gateway exports, so neither shows an empty panel or an alert that can never fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alert_rules_only_query_exported_metrics() {
    let upstream = openai_upstream().await;
    let gw = Gateway::start(&config(&upstream)).await;
    chat(&gw, "sk-capped", "mock").await;
    let metrics = gw.metrics().await;
    let read = |path: &str| {
        std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let dashboard: Value = serde_json::from_str(&read("conf/grafana-dashboard.json")).unwrap();
    let alerts: serde_yaml::Value = serde_yaml::from_str(&read("conf/prometheus-alerts.yaml"))
        .expect("the alert rules are YAML");
    let rules = alerts["groups"][0]["rules"].as_sequence().expect("rules");
    assert!(rules.len() >= 5);
    let mut exprs: Vec<String> = rules
        .iter()
        .map(|r| {
            r["expr"]
                .as_str()
                .expect("every rule has an expr")
                .to_string()
        })
        .collect();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(word.starts_with("switchyard_") || word.starts_with("process_")) {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            assert!(
                metrics.contains(&format!("# TYPE {family} ")),
                "{family} (in {expr}) is not exported"
            );
        }
    }
}

/// `count_tokens` goes through the same admission as every model endpoint: the key's models
/// and its rate limit (it uses no tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_is_admitted_like_every_model_request() {
    let gw = Gateway::start(
        r#"
server: { listen: ["{{listen}}"], admin_listen: "{{admin}}" }
auth:
  keys: [{ name: one, key: sk-one, models: ["mock"], rpm: 1 }]
providers: { mock: { kind: mock } }
models:
  mock: { targets: [{ provider: mock, model: m1 }] }
  other: { targets: [{ provider: mock, model: m2 }] }
"#,
    )
    .await;
    let count = |model: &str| {
        client()
            .post(format!("{}/v1/messages/count_tokens", gw.url()))
            .header("x-api-key", "sk-one")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let resp = count("other").await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = count("mock").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    let resp = count("mock").await.unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
}

/// `switchyard check` reads the spending snapshot as `serve` would: a file that is not one
/// fails the check, naming it, before a start would.
#[test]
fn check_refuses_a_snapshot_file_serve_could_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("spend.json");
    let path = dir.path().join("cfg.yaml");
    std::fs::write(
        &path,
        format!(
            "state: {{ backend: memory, snapshot_path: {} }}\nproviders: {{ mock: {{ kind: mock }} }}\n",
            snapshot.display()
        ),
    )
    .unwrap();
    let check = || support::run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    // No file yet: fine, the first merge writes it.
    assert!(check().status.success());
    std::fs::write(&snapshot, "not json").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.snapshot_path") && err.contains("spend.json"),
        "{err}"
    );
}

/// Every vendor's report of prompt-cache reads and writes, as its fake sends it: 200 fresh
/// input tokens, 800 read from the cache, 100 written to it (where the vendor reports writes),
/// and 100 output tokens.
fn prompt_cache_vendor(req: &support::RecordedRequest) -> MockResponse {
    let stream = req.json()["stream"] == json!(true);
    if req.path.starts_with("/v1/messages") {
        if stream {
            let events = [
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                       "content": [], "model": "claude", "stop_reason": null, "stop_sequence": null,
                       "usage": {"input_tokens": 200, "cache_read_input_tokens": 800,
                                 "cache_creation_input_tokens": 100, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": 100}}),
                json!({"type": "message_stop"}),
            ];
            return MockResponse::sse(
                events
                    .iter()
                    .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
                    .collect(),
            );
        }
        return MockResponse::json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                   "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 200, "cache_read_input_tokens": 800,
                             "cache_creation_input_tokens": 100, "output_tokens": 100}}),
        );
    }
    if req.path.starts_with("/v1beta/models/") {
        return MockResponse::json(
            200,
            json!({"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"},
                   "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 800,
                                     "candidatesTokenCount": 100, "totalTokenCount": 1100}}),
        );
    }
    if req.path.starts_with("/model/") {
        return MockResponse::json(
            200,
            json!({"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                   "stopReason": "end_turn",
                   "usage": {"inputTokens": 200, "outputTokens": 100, "totalTokens": 1200,
                             "cacheReadInputTokens": 800, "cacheWriteInputTokens": 100}}),
        );
    }
    MockResponse::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
                         "prompt_tokens_details": {"cached_tokens": 800}}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_cache_reads_and_writes_are_priced_once_per_vendor() {
    let upstream = MockUpstream::start(|req, _| prompt_cache_vendor(req)).await;
    let u = upstream.url();
    // Per million: fresh input 10, cached input 1, cache writes 12.5, output 20.
    let price = "price: { input_per_mtok: 10, cached_input_per_mtok: 1, cache_write_per_mtok: 12.5, output_per_mtok: 20 }";
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
auth:
  keys:
    - {{ name: team, key: sk-team, budget_usd: {{ amount: 100, period: total }} }}
providers:
  openai: {{ kind: openai, base_url: "{u}/v1", api_key: sk-up, health_check: {{ enabled: false }} }}
  anthropic: {{ kind: anthropic, base_url: "{u}", api_key: sk-ant, health_check: {{ enabled: false }} }}
  gemini: {{ kind: gemini, base_url: "{u}", api_key: g-key, health_check: {{ enabled: false }} }}
  bedrock: {{ kind: bedrock, region: us-east-1, base_url: "{u}", api_key: br-key, health_check: {{ enabled: false }} }}
models:
  gpt: {{ targets: [{{ provider: openai, model: gpt-4o, {price} }}] }}
  claude: {{ targets: [{{ provider: anthropic, model: claude-sonnet-4-5, {price} }}] }}
  gemini: {{ targets: [{{ provider: gemini, model: gemini-2.5-flash, {price} }}] }}
  nova: {{ targets: [{{ provider: bedrock, model: amazon.nova-pro-v1:0, {price} }}] }}
"#
    );
    let gw = Gateway::start(&yaml).await;
    // Reads only (OpenAI, Gemini): 200 x 10 + 800 x 1 + 100 x 20 per million.
    let reads_only = (200.0 * 10.0 + 800.0 + 100.0 * 20.0) / 1e6;
    // Reads and writes (Anthropic, Bedrock): 100 more prompt tokens, at the write price.
    let with_writes = (200.0 * 10.0 + 800.0 + 100.0 * 12.5 + 100.0 * 20.0) / 1e6;
    let mut total = 0.0;
    for (model, prompt, cost) in [
        ("gpt", 1000, reads_only),
        ("gemini", 1000, reads_only),
        ("claude", 1100, with_writes),
        ("nova", 1100, with_writes),
    ] {
        let (status, body) = chat(&gw, "sk-team", model).await;
        assert_eq!(status, 200, "{model}: {body}");
        let usage = &body["usage"];
        assert_eq!(usage["prompt_tokens"], prompt, "{model}: {usage}");
        assert_eq!(
            usage["prompt_tokens_details"]["cached_tokens"], 800,
            "{model}"
        );
        assert_eq!(usage["completion_tokens"], 100, "{model}");
        let billed = usage["cost"].as_f64().expect("usage.cost");
        assert!((billed - cost).abs() < 1e-9, "{model}: {billed} != {cost}");
        total += cost;
    }
    // Streamed, Anthropic reports its usage twice (message_start, message_delta): counted once.
    let body = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("sk-team")
        .json(
            &json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let usage: Value = support::sse_data(&body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|c| c["usage"].is_object())
        .map(|c| c["usage"].clone())
        .expect("a usage chunk");
    assert_eq!(usage["prompt_tokens"], 1100, "{usage}");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 800);
    assert_eq!(usage["completion_tokens"], 100);
    assert!(
        (usage["cost"].as_f64().unwrap() - with_writes).abs() < 1e-9,
        "{usage}"
    );
    total += with_writes;

    let (_, keys) = get(format!("{}/admin/keys", gw.admin_url()), None).await;
    let spent = keys["keys"][0]["budget"]["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - total).abs() < 1e-9,
        "spent {spent}, expected {total}"
    );
}
