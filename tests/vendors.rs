//! End-to-end translation through the binary: OpenAI clients in front of mock upstreams that
//! answer in each vendor's own wire format, JSON and SSE.

mod support;

use serde_json::{json, Value};
use support::{client, sse_data, Gateway, MockResponse, MockUpstream, RecordedRequest};

const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic/stream_tools.anthropic.sse");
const ANTHROPIC_ANSWER: &str = include_str!("fixtures/anthropic/response_tool_use.anthropic.json");
const GEMINI_STREAM: &str = include_str!("fixtures/gemini/stream_function_call.gemini.sse");
const GEMINI_TEXT_STREAM: &str = include_str!("fixtures/gemini/stream_text.gemini.sse");

fn config(upstream: &str) -> String {
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  anthropic: {{ kind: anthropic, base_url: "{upstream}", api_key: sk-ant-secret, circuit_breaker: {{ failure_threshold: 100 }} }}
  azure: {{ kind: azure-openai, base_url: "{upstream}", api_key: az-secret }}
  gemini: {{ kind: gemini, base_url: "{upstream}", api_key: g-secret }}
models:
  claude: {{ targets: [{{ provider: anthropic, model: claude-sonnet-4-5, price: {{ input_per_mtok: 3, output_per_mtok: 15 }} }}] }}
  azure-gpt: {{ targets: [{{ provider: azure, model: gpt-4o-deployment }}] }}
  gemini-flash: {{ targets: [{{ provider: gemini, model: gemini-2.5-flash }}] }}
"#
    )
}

/// Splits a vendor stream into small pieces so events straddle HTTP chunks.
fn pieces(stream: &str, size: usize) -> Vec<String> {
    stream
        .as_bytes()
        .chunks(size)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect()
}

fn anthropic_upstream(req: &RecordedRequest) -> MockResponse {
    let body = req.json();
    match body["messages"][0]["content"][0]["text"].as_str() {
        Some("overload me") => MockResponse::json(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        Some("fail midway") => MockResponse::sse(vec![
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_x\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n".into(),
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into(),
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Partial\"}}\n\n".into(),
            "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n".into(),
        ]),
        _ if body["stream"] == json!(true) => MockResponse::sse(pieces(ANTHROPIC_STREAM, 37)),
        _ => MockResponse::text(200, "application/json", ANTHROPIC_ANSWER),
    }
}

fn weather_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in SF?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
        "tool_choice": "auto"
    })
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("sk-client")
        .json(body)
        .send()
        .await
        .expect("request to the gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_json_answer_with_tool_calls_and_usage() {
    let upstream = MockUpstream::start(|req, _| anthropic_upstream(req)).await;
    let gw = Gateway::start(&config(&upstream.url())).await;

    let mut request = weather_request("claude", false);
    request.as_object_mut().unwrap().remove("stream_options");
    let resp = post(&gw, &request).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "anthropic");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "Checking.");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(answer["usage"]["prompt_tokens"], 582);
    assert_eq!(answer["usage"]["total_tokens"], 671);

    let seen = &upstream.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-ant-secret"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the client's key must not reach the upstream"
    );
    let sent = seen.json();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(
        sent["tools"][0]["input_schema"]["properties"]["location"]["type"],
        "string"
    );
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_becomes_openai_chunks_with_tool_calls() {
    let upstream = MockUpstream::start(|req, _| anthropic_upstream(req)).await;
    let gw = Gateway::start(&config(&upstream.url())).await;

    let resp = post(&gw, &weather_request("claude", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut args = [String::new(), String::new()];
    let mut names = Vec::new();
    for c in &chunks {
        for call in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = call["index"].as_u64().unwrap() as usize;
            if let Some(name) = call["function"]["name"].as_str() {
                names.push((i, name.to_string()));
            }
            args[i].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(
        names,
        vec![(0, "get_weather".to_string()), (1, "get_time".to_string())]
    );
    assert_eq!(args[0], "{\"location\": \"San Francisco, CA\"}");
    assert_eq!(args[1], "{}");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("tool_calls"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(472), Some(89))
    );
    assert_eq!(upstream.requests()[0].json()["stream"], true);

    // Usage and cost are counted even for the stream.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = gw.logs();
    let line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "access" && l["stream"] == true)
        .expect("access log line");
    assert_eq!(line["prompt_tokens"], 472);
    assert!((line["cost_usd"].as_f64().unwrap() - (472.0 * 3.0 + 89.0 * 15.0) / 1e6).abs() < 1e-12);
    assert!(!logs.contains("sk-ant-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_errors_before_and_during_the_stream() {
    let upstream = MockUpstream::start(|req, _| anthropic_upstream(req)).await;
    let gw = Gateway::start(&config(&upstream.url())).await;
    let ask = |text: &str, stream: bool| json!({"model": "claude", "stream": stream, "messages": [{"role": "user", "content": text}]});

    let resp = post(&gw, &ask("overload me", false)).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Overloaded"));

    let resp = post(&gw, &ask("fail midway", true)).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert!(data.iter().any(|d| d.contains("Partial")));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Overloaded"),
        "{last}"
    );
    assert!(!data.iter().any(|d| d == "[DONE]"));

    // What Anthropic cannot honour is refused before any upstream call.
    let before = upstream.request_count();
    let mut n2 = ask("hi", false);
    n2["n"] = json!(2);
    let resp = post(&gw, &n2).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "n");
    assert_eq!(upstream.request_count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_deployment_urls_api_key_and_filter_preamble() {
    let upstream = MockUpstream::start(|req, _| {
        if req.json()["stream"] == json!(true) {
            MockResponse::sse(vec![
                "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n".into(),
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n".into(),
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n".into(),
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n".into(),
                "data: [DONE]\n\n".into(),
            ])
        } else {
            MockResponse::json(200, json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}))
        }
    })
    .await;
    let gw = Gateway::start(&config(&upstream.url())).await;
    let ask = |stream: bool| json!({"model": "azure-gpt", "stream": stream, "messages": [{"role": "user", "content": "x"}]});

    let answer: Value = post(&gw, &ask(false)).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello");
    let seen = &upstream.requests()[0];
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt-4o-deployment/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.header("api-key"), Some("az-secret"));
    assert_eq!(seen.header("authorization"), None);

    let data = sse_data(&post(&gw, &ask(true)).await.text().await.unwrap());
    assert!(
        data.iter().all(|d| !d.contains("prompt_filter_results")),
        "{data:?}"
    );
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(data.last().unwrap(), "[DONE]");
}

fn gemini_upstream(req: &RecordedRequest) -> MockResponse {
    let text = req.json()["contents"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if req.path.contains(":streamGenerateContent") {
        return match text.as_str() {
            "tell a story" => MockResponse::sse(pieces(GEMINI_TEXT_STREAM, 29)),
            "cut me off" => MockResponse::sse(vec![
                "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Once\"}],\"role\": \"model\"},\"index\": 0}]}\r\n\r\n".into(),
            ]),
            _ => MockResponse::sse(pieces(GEMINI_STREAM, 41)),
        };
    }
    match text.as_str() {
        "quota" => MockResponse::json(429, json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}))
            .with_header("retry-after", "30"),
        _ => MockResponse::json(200, json!({"candidates": [{"content": {"parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"location": "SF"}}}], "role": "model"},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 5, "thoughtsTokenCount": 2, "totalTokenCount": 18},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp1"})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_json_and_streams_with_function_calls() {
    let upstream = MockUpstream::start(|req, _| gemini_upstream(req)).await;
    let gw = Gateway::start(&config(&upstream.url())).await;

    let mut request = weather_request("gemini-flash", false);
    request["messages"] = json!([{"role": "user", "content": "weather?"}]);
    let answer: Value = post(&gw, &request).await.json().await.unwrap();
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "Checking.");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"location\":\"SF\"}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(answer["usage"]["completion_tokens"], 7);
    let seen = &upstream.requests()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.header("x-goog-api-key"), Some("g-secret"));
    assert_eq!(
        seen.json()["tools"][0]["functionDeclarations"][0]["parameters"]["properties"]["location"]
            ["type"],
        "STRING"
    );

    request["stream"] = json!(true);
    let data = sse_data(&post(&gw, &request).await.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let calls: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["index"], 1);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 20);
    assert_eq!(
        upstream.requests()[1].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );

    let story = json!({"model": "gemini-flash", "stream": true, "messages": [{"role": "user", "content": "tell a story"}]});
    let data = sse_data(&post(&gw, &story).await.text().await.unwrap());
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "In the quaint cottage... The end.");

    // A Gemini stream that ends without a finishReason is not a complete answer.
    let cut = json!({"model": "gemini-flash", "stream": true, "messages": [{"role": "user", "content": "cut me off"}]});
    let resp = post(&gw, &cut).await;
    let data = sse_data(&resp.text().await.unwrap());
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert!(last["error"]["message"].is_string(), "{data:?}");

    let quota =
        json!({"model": "gemini-flash", "messages": [{"role": "user", "content": "quota"}]});
    let resp = post(&gw, &quota).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "30");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}
