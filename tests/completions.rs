//! `POST /v1/completions` (OpenAI's legacy text completions) through the real binary: mapped
//! onto chat for the mock, Anthropic, Gemini, Azure and Bedrock (answers and streams as
//! `text_completion` objects, usage and cost counted), passed through to an OpenAI-compatible
//! host with `completions_api: true` (the client's fields byte for byte but `model`), refusals
//! in OpenAI's error format, the `dialect="completions"` metrics label, and the official
//! `openai` Python SDK's `client.completions.create` against every vendor kind (when installed;
//! CI installs it).

mod support;

use serde_json::{json, Value};
use support::{client, sse_data, Gateway, MockResponse, MockUpstream, RecordedRequest};
use switchyard::providers::bedrock::eventstream;

const BEDROCK_MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

fn sse(events: Vec<Value>) -> MockResponse {
    let mut out: Vec<String> = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    out.push("data: [DONE]\n\n".into());
    MockResponse::sse(out)
}

fn anthropic_event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn bedrock_event(kind: &str, payload: Value) -> Vec<u8> {
    eventstream::encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// Every vendor's answer "Hello there", chosen by the request path.
fn vendor(req: &RecordedRequest) -> MockResponse {
    let body = req.json();
    let stream = body["stream"] == json!(true);
    let path = req.path.as_str();
    if path == "/v1/messages" {
        if !stream {
            return MockResponse::json(
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                       "content": [{"type": "text", "text": "Hello there"}],
                       "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 2}}),
            );
        }
        let delta = |text: &str| {
            anthropic_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
            )
        };
        return MockResponse::sse(vec![
            anthropic_event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                       "content": [], "model": "claude-x", "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            ),
            anthropic_event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            delta("Hello"),
            delta(" there"),
            anthropic_event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            anthropic_event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
            ),
            anthropic_event("message_stop", json!({"type": "message_stop"})),
        ]);
    }
    if path.starts_with("/v1beta/models/") {
        let candidate = |text: &str, last: bool| {
            let mut c =
                json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
            let mut answer = json!({"modelVersion": "gemini-2.5-flash", "responseId": "g1"});
            if last {
                c["finishReason"] = json!("STOP");
                answer["usageMetadata"] =
                    json!({"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6});
            }
            answer["candidates"] = json!([c]);
            answer
        };
        if path.contains(":streamGenerateContent") {
            let events = [candidate("Hello", false), candidate(" there", true)];
            return MockResponse::sse(events.iter().map(|e| format!("data: {e}\n\n")).collect());
        }
        return MockResponse::json(200, candidate("Hello there", true));
    }
    if path.starts_with("/model/") {
        if path.ends_with("/converse") {
            return MockResponse::json(
                200,
                json!({"output": {"message": {"role": "assistant", "content": [{"text": "Hello there"}]}},
                       "stopReason": "end_turn", "usage": {"inputTokens": 6, "outputTokens": 2, "totalTokens": 8}}),
            );
        }
        let frames = [
            bedrock_event("messageStart", json!({"role": "assistant"})),
            bedrock_event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
            ),
            bedrock_event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": " there"}}),
            ),
            bedrock_event("contentBlockStop", json!({"contentBlockIndex": 0})),
            bedrock_event("messageStop", json!({"stopReason": "end_turn"})),
            bedrock_event(
                "metadata",
                json!({"usage": {"inputTokens": 6, "outputTokens": 2, "totalTokens": 8}, "metrics": {"latencyMs": 5}}),
            ),
        ];
        return MockResponse::text(200, "application/vnd.amazon.eventstream", frames.concat());
    }
    let model = body["model"].clone();
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
    if path == "/v1/completions" {
        let chunk = |text: &str, finish: Value| {
            json!({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": model,
                   "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]})
        };
        if !stream {
            let mut answer = chunk("Hello there", json!("stop"));
            answer["usage"] = usage;
            return MockResponse::json(200, answer);
        }
        let mut events = vec![
            chunk("Hello", Value::Null),
            chunk(" there", Value::Null),
            chunk("", json!("stop")),
        ];
        if body["stream_options"]["include_usage"] == json!(true) {
            events.push(
                json!({"id": "cmpl-up", "object": "text_completion", "created": 1,
                               "model": model, "choices": [], "usage": usage}),
            );
        }
        return sse(events);
    }
    // Chat Completions: OpenAI-compatible hosts without the endpoint, and Azure.
    assert!(path.contains("/chat/completions"), "{path}");
    if !stream {
        return MockResponse::json(
            200,
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                                "logprobs": null, "finish_reason": "stop"}], "usage": usage}),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    sse(vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " there"}), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [], "usage": usage}),
    ])
}

async fn start() -> (MockUpstream, Gateway) {
    let upstream = MockUpstream::start(|req, _| vendor(req)).await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  mock: {{ kind: mock, reply: "Hello there" }}
  anthropic: {{ kind: anthropic, base_url: "{u}", api_key: sk-ant }}
  gemini: {{ kind: gemini, base_url: "{u}", api_key: g-key }}
  azure: {{ kind: azure-openai, base_url: "{u}", api_key: az-key }}
  bedrock: {{ kind: bedrock, region: us-east-1, base_url: "{u}", api_key: br-key, health_check: {{ enabled: false }} }}
  vllm: {{ kind: openai-compatible, base_url: "{u}/v1", completions_api: true }}
  chatonly: {{ kind: openai-compatible, base_url: "{u}/v1" }}
models:
  mock-model: {{ targets: [{{ provider: mock, model: mock-1 }}] }}
  claude: {{ targets: [{{ provider: anthropic, model: claude-x, price: {{ input_per_mtok: 1, output_per_mtok: 2 }} }}] }}
  gem: {{ targets: [{{ provider: gemini, model: gemini-2.5-flash }}] }}
  az: {{ targets: [{{ provider: azure, model: gpt-4o-dep }}] }}
  nova: {{ targets: [{{ provider: bedrock, model: "{BEDROCK_MODEL}" }}] }}
  instruct: {{ targets: [{{ provider: vllm, model: served-model, price: {{ input_per_mtok: 1, output_per_mtok: 2 }} }}] }}
  chatty: {{ targets: [{{ provider: chatonly, model: served-model }}] }}
"#,
        u = upstream.url()
    );
    let gw = Gateway::start(&yaml).await;
    (upstream, gw)
}

async fn complete(gw: &Gateway, body: impl Into<reqwest::Body>) -> (u16, String) {
    let resp = client()
        .post(format!("{}/v1/completions", gw.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The `data:` payloads of a stream as JSON, `[DONE]` last.
fn chunks(body: &str) -> Vec<Value> {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .map(|c| c["text"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_for_vendors_without_the_endpoint() {
    let (upstream, gw) = start().await;
    for model in ["mock-model", "claude", "gem", "az", "nova", "chatty"] {
        let (status, body) = complete(
            &gw,
            json!({"model": model, "prompt": "Say hello", "max_tokens": 20}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{model}: {body}\n{}", gw.logs());
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["object"], "text_completion", "{model}: {v}");
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
        let choice = &v["choices"][0];
        assert_eq!(choice["text"], "Hello there", "{model}: {v}");
        assert_eq!(
            (
                &choice["index"],
                &choice["logprobs"],
                &choice["finish_reason"]
            ),
            (&json!(0), &Value::Null, &json!("stop")),
            "{model}: {v}"
        );
        let u = &v["usage"];
        assert_eq!(
            u["total_tokens"].as_u64(),
            Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()),
            "{model}: {v}"
        );

        let (status, body) = complete(
            &gw,
            json!({"model": model, "prompt": "Say hello", "max_tokens": 20, "stream": true,
                   "stream_options": {"include_usage": true}})
            .to_string(),
        )
        .await;
        assert_eq!(status, 200, "{model}: {body}");
        let chunks = chunks(&body);
        assert_eq!(text_of(&chunks), "Hello there", "{model}: {body}");
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]), "{model}: {body}");
        assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
        let finish = &chunks[chunks.len() - 2]["choices"][0];
        assert_eq!(
            (&finish["text"], &finish["finish_reason"]),
            (&json!(""), &json!("stop"))
        );
    }
    // Anthropic got the prompt as one user message, with OpenAI's legacy default budget.
    let (status, body) = complete(
        &gw,
        r#"{"model":"claude","prompt":["Once upon"],"temperature":0.5}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    // 5 input tokens at $1/M and 2 output at $2/M.
    assert_eq!(v["usage"]["cost"].as_f64(), Some(0.000009), "{v}");
    let sent = upstream.requests().last().unwrap().json();
    assert_eq!(sent["max_tokens"], 16, "{sent}");
    assert_eq!(sent["temperature"], 0.5, "{sent}");
    assert_eq!(sent["messages"].as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent["messages"][0]["role"], "user");
    assert!(sent["messages"][0]["content"]
        .to_string()
        .contains("Once upon"));
    // A stream without stream_options carries no usage.
    let (_, body) = complete(
        &gw,
        r#"{"model":"claude","prompt":"Say hello","stream":true}"#,
    )
    .await;
    assert!(!body.contains("usage"), "{body}");
    assert_eq!(text_of(&chunks(&body)), "Hello there");

    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_requests_total")
                && l.contains("dialect=\"completions\"")
                && l.contains("model=\"claude\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_through_to_hosts_with_the_endpoint() {
    let (upstream, gw) = start().await;
    let client_body = r#"{"model":"instruct","prompt":["caf\u00e9","b"],"max_tokens":5,"temperature":0.50,"echo":true,"logprobs":2,"best_of":3,"logit_bias":{"50256":-100},"future_field":{"x":[1, 2]}}"#;
    let (status, body) = complete(&gw, client_body).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], "cmpl-up", "the host's answer passes on: {v}");
    assert_eq!(v["choices"][0]["text"], "Hello there");
    // The answer reports its own price: 3 input tokens at $1/M, 2 output at $2/M.
    assert_eq!(v["usage"]["cost"].as_f64(), Some(0.000007), "{v}");
    let sent = upstream.requests().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/completions");
    assert_eq!(
        sent.body_text(),
        client_body.replace(r#""model":"instruct""#, r#""model":"served-model""#),
        "the client's fields byte for byte, but model"
    );

    // Streams: the gateway asks for usage, and drops the usage chunk when the client did not.
    let (status, body) = complete(
        &gw,
        r#"{"model":"instruct","prompt":"Say","stream":true,"stream_options":{"x":1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = upstream.requests().last().unwrap().body_text();
    assert_eq!(
        sent,
        r#"{"model":"served-model","prompt":"Say","stream":true,"stream_options":{"include_usage":true,"x":1}}"#
    );
    assert!(!body.contains("usage"), "{body}");
    assert_eq!(text_of(&chunks(&body)), "Hello there");
    let (_, body) = complete(
        &gw,
        r#"{"model":"instruct","prompt":"Say","stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    let chunks = chunks(&body);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{body}");
    assert_eq!(last["usage"]["total_tokens"], 5);
    assert_eq!(last["usage"]["cost"].as_f64(), Some(0.000007), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_openais_error_format() {
    let (upstream, gw) = start().await;
    let cases = [
        (
            r#"{"model":"instruct","prompt":"x","suffix":"end"}"#,
            "suffix",
        ),
        (r#"{"model":"claude","prompt":[1,2,3]}"#, "prompt"),
        (r#"{"model":"claude"}"#, "prompt"),
        (r#"{"model":"claude","prompt":["a","b"]}"#, "prompt"),
        (r#"{"model":"claude","prompt":"x","echo":true}"#, "echo"),
        (r#"{"model":"gem","prompt":"x","best_of":2}"#, "best_of"),
        (
            r#"{"model":"mock-model","prompt":"x","logprobs":1}"#,
            "logprobs",
        ),
        (r#"{"prompt":"x"}"#, "model"),
    ];
    for (body, param) in cases {
        let (status, answer) = complete(&gw, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        assert!(v["error"].get("code").is_some(), "{v}");
    }
    assert_eq!(upstream.request_count(), 0, "nothing refused was sent");
    let resp = client()
        .get(format!("{}/v1/completions", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

/// The official `openai` SDK's `client.completions.create`, plain and streamed, against every
/// vendor kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_completions_against_every_vendor() {
    // Skipped without the SDK, except under CI, where that fails the run.
    if !support::python::sdk_available("openai") {
        return;
    }
    let (_upstream, gw) = start().await;
    let base_url = format!("{}/v1", gw.url());
    for model in [
        "mock-model",
        "claude",
        "gem",
        "az",
        "nova",
        "instruct",
        "chatty",
    ] {
        let out = tokio::task::spawn_blocking({
            let base_url = base_url.clone();
            move || {
                support::python::run_script(
                    "openai_sdk_completions.py",
                    &[&base_url, model, "Hello there"],
                )
            }
        })
        .await
        .expect("join");
        let out = out.unwrap_or_else(|e| panic!("{model}: {e}\ngateway logs:\n{}", gw.logs()));
        let summary: Value = serde_json::from_str(out.trim()).expect("summary JSON");
        assert_eq!(summary["ok"], true, "{model}: {summary}");
    }
}
