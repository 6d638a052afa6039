//! The official `openai` Python SDK, used as a new user would, against the real binary.
//!
//! Needs `$SWITCHYARD_PYTHON` (else `python3`) with the `openai` package (`.ci/run` installs it
//! in a virtualenv). Without it the test says so loudly and passes, so that `cargo test` works on
//! a machine with only the Rust toolchain — except under CI (`CI` set), where it fails.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{Gateway, MockResponse, MockUpstream};

fn sdk_available() -> bool {
    support::python::sdk_available("openai")
}

fn upstream_answer(req: &support::RecordedRequest) -> MockResponse {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("?").to_string();
    if body["stream"] == json!(true) {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                       "usage": null})
            )
        };
        MockResponse::sse(vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hello"}), Value::Null),
            chunk(json!({"content": " there"}), Value::Null),
            chunk(json!({}), json!("stop")),
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                       "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}})
            ),
            "data: [DONE]\n\n".to_string(),
        ])
    } else {
        MockResponse::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                                "logprobs": null, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}}),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_gets_completions_and_streams() {
    if !sdk_available() {
        return;
    }
    let upstream = MockUpstream::start(|req, _| upstream_answer(req)).await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  mock: {{ kind: mock }}
  local: {{ kind: openai-compatible, base_url: "{}/v1", api_key: sk-upstream }}
models:
  mock: {{ targets: [{{ provider: mock, model: mock-1 }}] }}
  local-model: {{ targets: [{{ provider: local, model: served-model }}] }}
"#,
        upstream.url()
    );
    let gw = Gateway::start(&yaml).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_smoke.py");
    for model in ["mock", "local-model"] {
        let base_url = format!("{}/v1", gw.url());
        let out = tokio::task::spawn_blocking({
            let model = model.to_string();
            move || {
                Command::new(support::python::python())
                    .args([script, &base_url, &model])
                    .output()
            }
        })
        .await
        .expect("join")
        .expect("run the SDK's Python");
        assert!(
            out.status.success(),
            "SDK run for {model} failed:\nstdout: {}\nstderr: {}\ngateway logs:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            gw.logs()
        );
        let summary: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
        assert_eq!(summary["ok"], true);
    }
    assert_eq!(
        upstream.request_count(),
        2,
        "one plain and one streamed call reached the upstream"
    );
}

const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic/stream_tools.anthropic.sse");
const ANTHROPIC_ANSWER: &str = include_str!("fixtures/anthropic/response_tool_use.anthropic.json");
const GEMINI_STREAM: &str = include_str!("fixtures/gemini/stream_function_call.gemini.sse");

/// Answers tool-calling requests in each vendor's own format, chosen by the request path.
fn vendor_tool_answer(req: &support::RecordedRequest) -> MockResponse {
    let body = req.json();
    let stream = body["stream"] == json!(true);
    let has_tool_result = body["messages"].to_string().contains("tool_result")
        || body["messages"].to_string().contains("\"role\":\"tool\"");
    if req.path.starts_with("/v1/messages") {
        if has_tool_result {
            return MockResponse::json(
                200,
                json!({"id": "msg_2", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "It is 18 degrees."}],
                "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 6}}),
            );
        }
        return if stream {
            MockResponse::sse(
                ANTHROPIC_STREAM
                    .split_inclusive("\n\n")
                    .map(str::to_string)
                    .collect(),
            )
        } else {
            MockResponse::text(200, "application/json", ANTHROPIC_ANSWER)
        };
    }
    if req.path.starts_with("/v1beta/models/") {
        if body["contents"].to_string().contains("functionResponse") {
            return MockResponse::json(
                200,
                json!({"candidates": [{"content": {"parts": [{"text": "It is 18 degrees."}], "role": "model"},
                "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 6, "totalTokenCount": 36}}),
            );
        }
        return if req.path.contains(":streamGenerateContent") {
            MockResponse::sse(
                GEMINI_STREAM
                    .split_inclusive("\n\n")
                    .map(str::to_string)
                    .collect(),
            )
        } else {
            MockResponse::json(
                200,
                json!({"candidates": [{"content": {"parts": [
                {"functionCall": {"name": "get_weather", "args": {"location": "SF"}}, "thoughtSignature": "c2ln"}], "role": "model"},
                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 5, "totalTokenCount": 16}}),
            )
        };
    }
    // Azure: OpenAI format.
    if has_tool_result {
        return MockResponse::json(
            200,
            json!({"id": "c2", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "It is 18 degrees."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}),
        );
    }
    let call = json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"SF\"}"}});
    if stream {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        MockResponse::sse(vec![
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"SF\"}"}}]}),
                Value::Null,
            ),
            chunk(json!({}), json!("tool_calls")),
            format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})
            ),
            "data: [DONE]\n\n".to_string(),
        ])
    } else {
        MockResponse::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [call]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_gets_tool_calls_from_every_vendor() {
    if !sdk_available() {
        return;
    }
    let upstream = MockUpstream::start(|req, _| vendor_tool_answer(req)).await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  anthropic: {{ kind: anthropic, base_url: "{url}", api_key: sk-ant }}
  azure: {{ kind: azure-openai, base_url: "{url}", api_key: az-key }}
  gemini: {{ kind: gemini, base_url: "{url}", api_key: g-key }}
models:
  claude: {{ targets: [{{ provider: anthropic, model: claude-sonnet-4-5 }}] }}
"#,
        url = upstream.url()
    );
    let gw = Gateway::start(&yaml).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_tools.py");
    for model in [
        "claude",
        "anthropic/claude-sonnet-4-5",
        "azure/gpt-4o-deployment",
    ] {
        let base_url = format!("{}/v1", gw.url());
        let out = tokio::task::spawn_blocking({
            let model = model.to_string();
            move || {
                Command::new(support::python::python())
                    .args([script, &base_url, &model])
                    .output()
            }
        })
        .await
        .expect("join")
        .expect("run the SDK's Python");
        assert!(
            out.status.success(),
            "SDK tool run for {model} failed:\nstdout: {}\nstderr: {}\ngateway logs:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            gw.logs()
        );
    }
}
