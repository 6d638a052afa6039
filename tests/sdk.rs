//! The official `openai` Python SDK, used as a new user would, against the real binary.
//!
//! Needs `python3` with the `openai` package (`.ci/run` installs it). Without it the test says so
//! loudly and passes, so that `cargo test` works on a machine with only the Rust toolchain.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::{Gateway, MockResponse, MockUpstream};

fn sdk_available() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
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
        eprintln!(
            "SKIPPED: python3 with the `openai` package is not installed (pip install openai)"
        );
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
                Command::new("python3")
                    .args([script, &base_url, &model])
                    .output()
            }
        })
        .await
        .expect("join")
        .expect("run python3");
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
