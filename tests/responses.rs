//! The OpenAI Responses API (`POST /v1/responses`, `GET|DELETE /v1/responses/{id}`) through the
//! real binary: translated to every vendor through the canonical model, passed through to hosts
//! that serve it (OpenAI, Azure), with stored conversations (`previous_response_id`) scoped to
//! the client key, typed SSE events in OpenAI's order, and the official `openai` SDK on top.

mod support;

use serde_json::{json, Value};
use support::{client, Gateway, MockResponse, MockUpstream, RecordedRequest};
use switchyard::providers::bedrock::eventstream;

const ANTHROPIC_TEXT_STREAM: &str = include_str!("fixtures/anthropic/stream_text.anthropic.sse");
const ANTHROPIC_TOOL_ANSWER: &str =
    include_str!("fixtures/anthropic/response_tool_use.anthropic.json");
const GEMINI_TEXT_STREAM: &str = include_str!("fixtures/gemini/stream_text.gemini.sse");

fn sse(text: &str) -> MockResponse {
    MockResponse::sse(text.split_inclusive("\n\n").map(str::to_string).collect())
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

/// A response object as OpenAI's Responses API answers.
fn responses_object(id: &str, model: &str, output: Value, status: &str) -> Value {
    json!({"id": id, "object": "response", "created_at": 1_700_000_000, "status": status,
           "error": null, "incomplete_details": null, "model": model, "output": output,
           "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
           "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2},
                     "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": 15}})
}

fn responses_event(kind: &str, seq: u64, mut data: Value) -> String {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(seq);
    format!("event: {kind}\ndata: {data}\n\n")
}

/// OpenAI's (and Azure's) own `/responses`: a function call when tools are offered and no
/// result came back yet, else a text answer; streamed as OpenAI streams.
fn responses_host(req: &RecordedRequest) -> MockResponse {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("?").to_string();
    let input = body["input"].to_string();
    let answered = input.contains("function_call_output");
    let call = body["tools"].is_array() && !answered;
    let text = if answered {
        "It is 18 degrees."
    } else {
        "Hello there"
    };
    let item = if call {
        json!({"type": "function_call", "id": "fc_up", "call_id": "call_up", "name": "get_weather",
               "arguments": "{\"location\":\"SF\"}", "status": "completed"})
    } else {
        json!({"type": "message", "id": "msg_up", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": []}]})
    };
    let id = format!("resp_up{}", fastrand::u32(..));
    if body["stream"] != json!(true) {
        return MockResponse::json(
            200,
            responses_object(&id, &model, json!([item]), "completed"),
        );
    }
    let mut started = responses_object(&id, &model, json!([]), "in_progress");
    started["usage"] = Value::Null;
    let mut events: Vec<(&str, Value)> = vec![
        ("response.created", json!({"response": started})),
        ("response.in_progress", json!({"response": started})),
    ];
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    let arguments = "{\"location\":\"SF\"}";
    if call {
        added["arguments"] = json!("");
        events.extend([
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            ),
            (
                "response.function_call_arguments.delta",
                json!({"item_id": "fc_up", "output_index": 0, "delta": arguments}),
            ),
            (
                "response.function_call_arguments.done",
                json!({"item_id": "fc_up", "output_index": 0, "arguments": arguments}),
            ),
        ]);
    } else {
        added["content"] = json!([]);
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        let at = json!({"item_id": "msg_up", "output_index": 0, "content_index": 0});
        let with = |extra: Value| {
            let mut v = at.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        events.extend([
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            ),
            (
                "response.content_part.added",
                with(json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
            ),
            ("response.output_text.delta", with(json!({"delta": text}))),
            ("response.output_text.done", with(json!({"text": text}))),
            ("response.content_part.done", with(json!({"part": part}))),
        ]);
    }
    events.extend([
        (
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ),
        (
            "response.completed",
            json!({"response": responses_object(&id, &model, json!([item]), "completed")}),
        ),
    ]);
    let events = events
        .into_iter()
        .enumerate()
        .map(|(seq, (kind, data))| responses_event(kind, seq as u64, data))
        .collect();
    MockResponse::sse(events)
}

/// Every vendor's own wire format, chosen by the request path: a tool call when tools are
/// offered and no tool result came back yet, else text.
fn vendor(req: &RecordedRequest) -> MockResponse {
    if req.path.ends_with("/responses") {
        return responses_host(req);
    }
    let body = req.json();
    let text = body.to_string();
    let stream = body["stream"] == json!(true) || req.path.contains("stream");
    if req.path.starts_with("/v1/messages") {
        if text.contains("tool_result") {
            return MockResponse::json(
                200,
                json!({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude",
                       "content": [{"type": "text", "text": "It is 18 degrees."}],
                       "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 6}}),
            );
        }
        if body["tools"].is_array() {
            return MockResponse::text(200, "application/json", ANTHROPIC_TOOL_ANSWER);
        }
        return if stream {
            sse(ANTHROPIC_TEXT_STREAM)
        } else {
            MockResponse::json(
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                       "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 8, "output_tokens": 2}}),
            )
        };
    }
    if req.path.starts_with("/v1beta/models/") {
        if text.contains("functionResponse") {
            return MockResponse::json(
                200,
                json!({"candidates": [{"content": {"parts": [{"text": "It is 18 degrees."}], "role": "model"},
                       "finishReason": "STOP", "index": 0}],
                       "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 6, "totalTokenCount": 36}}),
            );
        }
        if body["tools"].is_array() {
            return MockResponse::json(
                200,
                json!({"candidates": [{"content": {"parts": [
                       {"functionCall": {"name": "get_weather", "args": {"location": "SF"}}}], "role": "model"},
                       "finishReason": "STOP", "index": 0}],
                       "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 5, "totalTokenCount": 16}}),
            );
        }
        return if stream {
            sse(GEMINI_TEXT_STREAM)
        } else {
            MockResponse::json(
                200,
                json!({"candidates": [{"content": {"parts": [{"text": "Hello there"}], "role": "model"},
                       "finishReason": "STOP", "index": 0}],
                       "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "totalTokenCount": 10}}),
            )
        };
    }
    if req.path.starts_with("/model/") {
        let converse = |content: Value, stop: &str| {
            MockResponse::json(
                200,
                json!({"output": {"message": {"role": "assistant", "content": content}},
                       "stopReason": stop, "usage": {"inputTokens": 11, "outputTokens": 2, "totalTokens": 13}}),
            )
        };
        if text.contains("toolResult") {
            return converse(json!([{"text": "It is 18 degrees."}]), "end_turn");
        }
        if body.get("toolConfig").is_some() {
            return converse(
                json!([{"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"location": "SF"}}}]),
                "tool_use",
            );
        }
        if !req.path.ends_with("/converse-stream") {
            return converse(json!([{"text": "Hello there"}]), "end_turn");
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
                json!({"usage": {"inputTokens": 11, "outputTokens": 2, "totalTokens": 13}, "metrics": {"latencyMs": 5}}),
            ),
        ];
        return MockResponse::text(200, "application/vnd.amazon.eventstream", frames.concat());
    }
    MockResponse::json(
        404,
        json!({"error": {"message": format!("no route {}", req.path)}}),
    )
}

const KEYS: &str = r#"
auth:
  keys:
    - { name: team-a, key: sk-team-a }
    - { name: team-b, key: sk-team-b }
"#;

async fn start(upstream: &MockUpstream, extra: &str) -> Gateway {
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
{KEYS}
providers:
  mock: {{ kind: mock }}
  openai: {{ kind: openai, base_url: "{u}/v1", api_key: sk-up, health_check: {{ enabled: false }} }}
  azure: {{ kind: azure-openai, base_url: "{u}", api_key: az-key, health_check: {{ enabled: false }} }}
  anthropic: {{ kind: anthropic, base_url: "{u}", api_key: sk-ant, health_check: {{ enabled: false }} }}
  gemini: {{ kind: gemini, base_url: "{u}", api_key: g-key, health_check: {{ enabled: false }} }}
  bedrock: {{ kind: bedrock, region: us-east-1, base_url: "{u}", api_key: br-key, health_check: {{ enabled: false }} }}
  compat: {{ kind: openai-compatible, base_url: "{u}/v1", api_key: c-key, health_check: {{ enabled: false }} }}
models:
  mock: {{ targets: [{{ provider: mock, model: mock-1 }}] }}
  claude:
    targets: [{{ provider: anthropic, model: claude-sonnet-4-5, price: {{ input_per_mtok: 3, output_per_mtok: 15 }} }}]
{extra}
"#,
        u = upstream.url()
    );
    Gateway::start(&yaml).await
}

async fn create(gw: &Gateway, key: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/v1/responses", gw.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

/// The `(event, data)` pairs of an SSE body, checking that every event names its own type.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).expect("event data is JSON"));
                }
            }
            let (event, data) = (event.expect("event line"), data.expect("data line"));
            assert_eq!(
                data["type"],
                json!(event),
                "event line names the data's type"
            );
            (event, data)
        })
        .collect()
}

async fn stream(gw: &Gateway, body: Value) -> Vec<(String, Value)> {
    let resp = client()
        .post(format!("{}/v1/responses", gw.url()))
        .bearer_auth("sk-team-a")
        .json(&body)
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let text = resp.text().await.expect("body");
    let events = events(&text);
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(
            data["sequence_number"],
            json!(i),
            "numbered in order: {text}"
        );
    }
    events
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_answers_are_response_objects_and_typed_streams() {
    let upstream = MockUpstream::start(|req, _| vendor(req)).await;
    let gw = start(&upstream, "").await;

    let (status, body) = create(
        &gw,
        "sk-team-a",
        json!({"model": "claude", "input": "Say hello", "instructions": "Be brief.", "temperature": 0.5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "response");
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(body["status"], "completed");
    assert_eq!(body["instructions"], "Be brief.");
    assert_eq!(body["temperature"], json!(0.5));
    assert_eq!(body["output"][0]["type"], "message");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello there");
    assert_eq!(body["usage"]["input_tokens"], 8);
    assert_eq!(body["usage"]["output_tokens"], 2);
    assert_eq!(body["usage"]["total_tokens"], 10);
    // 8 input at $3/M and 2 output at $15/M.
    assert_eq!(body["usage"]["cost"], json!(0.000054));
    let sent = upstream.requests();
    let anthropic = sent.last().unwrap().json();
    assert_eq!(
        anthropic["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    assert_eq!(
        anthropic["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );

    let events = stream(
        &gw,
        json!({"model": "claude", "input": "Say hello", "stream": true}),
    )
    .await;
    assert_eq!(
        kinds(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(events[6].1["text"], "Hello world");
    let completed = &events[9].1["response"];
    assert_eq!(completed["output"][0]["content"][0]["text"], "Hello world");
    assert_eq!(completed["usage"]["output_tokens"], 15);
    assert_eq!(events[0].1["response"]["id"], completed["id"]);

    // The mock provider, through the same encoder.
    let events = stream(
        &gw,
        json!({"model": "mock", "input": "echo me", "stream": true}),
    )
    .await;
    assert_eq!(events.last().unwrap().0, "response.completed");

    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_requests_total{")
                && l.contains("dialect=\"responses\"")
                && l.contains("model=\"claude\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_round_trip_through_a_stored_conversation_scoped_to_the_key() {
    let upstream = MockUpstream::start(|req, _| vendor(req)).await;
    let gw = start(&upstream, "").await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let (status, first) = create(
        &gw,
        "sk-team-a",
        json!({"model": "claude", "input": "Weather in Paris?", "tools": tools}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let output = first["output"].as_array().unwrap();
    let call = output
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("a call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["call_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let id = first["id"].as_str().unwrap();

    // Another key may not continue, read or delete it.
    let follow = json!({"model": "claude", "previous_response_id": id, "tools": tools,
        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "18C"}]});
    let (status, err) = create(&gw, "sk-team-b", follow.clone()).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["param"], "previous_response_id");
    let url = format!("{}/v1/responses/{id}", gw.url());
    let other = client()
        .get(&url)
        .bearer_auth("sk-team-b")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    let before = upstream.request_count();
    let (status, second) = create(&gw, "sk-team-a", follow).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["output"][0]["content"][0]["text"],
        "It is 18 degrees."
    );
    assert_eq!(second["previous_response_id"], json!(id));
    assert_eq!(upstream.request_count(), before + 1);
    // Anthropic got the whole conversation: the question, the call, and its result.
    let sent = upstream.requests().last().unwrap().json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{sent}");
    assert_eq!(messages[0]["content"][0]["text"], "Weather in Paris?");
    assert_eq!(messages[1]["role"], "assistant");
    assert!(messages[1]["content"].to_string().contains("tool_use"));
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], call["call_id"]);

    let got: Value = client()
        .get(&url)
        .bearer_auth("sk-team-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["id"], json!(id));
    assert_eq!(got["output"], first["output"]);
    let deleted = client()
        .delete(&url)
        .bearer_auth("sk-team-a")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.json::<Value>().await.unwrap(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    let gone = client()
        .get(&url)
        .bearer_auth("sk-team-a")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    // `store: false` keeps nothing.
    let (_, unstored) = create(
        &gw,
        "sk-team-a",
        json!({"model": "claude", "input": "hi", "store": false}),
    )
    .await;
    let url = format!(
        "{}/v1/responses/{}",
        gw.url(),
        unstored["id"].as_str().unwrap()
    );
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth("sk-team-a")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_serve_responses_get_the_body_unchanged_but_for_model() {
    let upstream = MockUpstream::start(|req, _| vendor(req)).await;
    let gw = start(&upstream, "").await;
    let raw = r#"{"model":"openai/gpt-4.1","input":[{"role":"user","content":"hi"}],"reasoning":{"effort":"low"},"future_field":{"x":1.50},"store":true}"#;
    let resp = client()
        .post(format!("{}/v1/responses", gw.url()))
        .bearer_auth("sk-team-a")
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["id"].as_str().unwrap().starts_with("resp_up"),
        "the host's own id: {body}"
    );
    let sent = upstream.requests().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(sent.body_text(), raw.replace("openai/gpt-4.1", "gpt-4.1"));
    assert_eq!(sent.header("authorization"), Some("Bearer sk-up"));

    // Continued on another host, the stored conversation is spelled out for it.
    let id = body["id"].as_str().unwrap();
    let (status, next) = create(
        &gw,
        "sk-team-a",
        json!({"model": "azure/my-deployment", "previous_response_id": id, "input": "and now?"}),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let sent = upstream.requests().last().unwrap().clone();
    assert_eq!(sent.path, "/openai/v1/responses");
    assert_eq!(sent.header("api-key"), Some("az-key"));
    let sent = sent.json();
    assert_eq!(sent["model"], "my-deployment");
    assert!(sent.get("previous_response_id").is_none());
    let input = sent["input"].as_array().unwrap();
    assert_eq!(input.len(), 3, "{sent}");
    assert_eq!(input[0]["content"], "hi");
    assert_eq!(input[1]["id"], "msg_up");
    assert_eq!(input[2]["content"], "and now?");

    // Streams pass through event by event, priced, and are stored as they completed.
    let events = stream(
        &gw,
        json!({"model": "openai/gpt-4.1", "input": "hi", "stream": true}),
    )
    .await;
    assert_eq!(kinds(&events).last(), Some(&"response.completed"));
    let id = events.last().unwrap().1["response"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got: Value = client()
        .get(format!("{}/v1/responses/{id}", gw.url()))
        .bearer_auth("sk-team-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["output"][0]["content"][0]["text"], "Hello there");

    // An OpenAI-compatible host without `responses_api` gets Chat Completions.
    let before = upstream.request_count();
    let (status, _) = create(
        &gw,
        "sk-team-a",
        json!({"model": "compat/llama", "input": "hi"}),
    )
    .await;
    assert_eq!(
        status, 404,
        "the fake has no chat route here, which proves the path"
    );
    assert_eq!(upstream.requests()[before].path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_failover_and_a_stream_that_breaks() {
    let upstream = MockUpstream::start(|req, _| vendor(req)).await;
    let broken = MockUpstream::start(|req, _| {
        if req.json()["stream"] == json!(true) {
            // Starts, then is cut before the end.
            MockResponse::sse(vec![
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n".to_string(),
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Par\"}}\n\n".to_string(),
            ])
        } else {
            MockResponse::json(500, json!({"type": "error", "error": {"type": "api_error", "message": "boom"}}))
        }
    })
    .await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  anthropic: {{ kind: anthropic, base_url: "{u}", api_key: sk-ant, health_check: {{ enabled: false }} }}
  down: {{ kind: anthropic, base_url: "{d}", api_key: sk-ant, health_check: {{ enabled: false }} }}
models:
  flaky:
    strategy: fallback
    targets: [{{ provider: down, model: c }}, {{ provider: anthropic, model: claude-sonnet-4-5 }}]
    retry: {{ attempts: 2, backoff_ms: 0 }}
  cut: {{ targets: [{{ provider: down, model: c }}] }}
"#,
        u = upstream.url(),
        d = broken.url()
    );
    let gw = Gateway::start(&yaml).await;

    let (status, body) = create(&gw, "none", json!({"model": "flaky", "input": "hi"})).await;
    assert_eq!(status, 200, "failed over before the first byte: {body}");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello there");

    let events = stream(&gw, json!({"model": "cut", "input": "hi", "stream": true})).await;
    let kinds = kinds(&events);
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["error", "response.failed"],
        "{kinds:?}"
    );
    assert_eq!(events.last().unwrap().1["response"]["status"], "failed");
    assert!(!kinds.contains(&"response.completed"));

    for (body, param, named) in [
        (
            json!({"model": "flaky", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools",
            "web_search",
        ),
        (
            json!({"model": "flaky", "input": "x", "background": true}),
            "background",
            "background",
        ),
        (json!({"model": "flaky"}), "input", "input"),
        (
            json!({"model": "flaky", "input": "x", "previous_response_id": "resp_nope"}),
            "previous_response_id",
            "resp_nope",
        ),
    ] {
        let (status, err) = create(&gw, "none", body.clone()).await;
        assert!(status == 400 || status == 404, "{body}: {status}");
        assert_eq!(err["error"]["param"], param, "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(named),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_speaks_responses_to_every_vendor() {
    if !support::python::sdk_available("openai") {
        return;
    }
    let upstream = MockUpstream::start(|req, _| vendor(req)).await;
    let gw = start(&upstream, "").await;
    let base_url = format!("{}/v1", gw.url());
    for model in [
        "openai/gpt-4.1",
        "azure/gpt-4o-deployment",
        "claude",
        "gemini/gemini-2.5-flash",
        "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
    ] {
        let out = tokio::task::spawn_blocking({
            let (base_url, model) = (base_url.clone(), model.to_string());
            move || support::python::run_script("openai_sdk_responses.py", &[&base_url, &model])
        })
        .await
        .expect("join");
        if let Err(why) = out {
            panic!(
                "SDK run for {model} failed:\n{why}\ngateway logs:\n{}",
                gw.logs()
            );
        }
    }
}
