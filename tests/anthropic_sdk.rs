//! The official `anthropic` Python SDK against the gateway's Anthropic Messages endpoint
//! (`POST /v1/messages`), with every upstream vendor behind it.
//!
//! One scripted mock upstream per vendor answers in that vendor's real wire format (see
//! the vendors' API references):
//!
//! | public model    | provider kind       | upstream path                                                    |
//! |-----------------|---------------------|------------------------------------------------------------------|
//! | `via-openai`    | `openai-compatible` | `/v1/chat/completions`                                           |
//! | `via-azure`     | `azure-openai`      | `/openai/deployments/sy-deploy/chat/completions?api-version=...` |
//! | `via-gemini`    | `gemini`            | `/v1beta/models/gemini-2.5-flash:{generateContent, streamGenerateContent?alt=sse}` |
//! | `via-anthropic` | `anthropic`         | `/v1/messages`                                                   |
//!
//! Each mock picks its answer from the last user message the gateway sent it: "Hi" gets a text
//! answer, "...weather..." two parallel `get_weather` calls (Paris, Rome), "Think..." reasoning
//! followed by text. `tests/sdk/anthropic_sdk_smoke.py` is run once per public model and checks,
//! through the SDK's own parsing, the translated `Message`s and streams: text, `stop_reason`,
//! usage (`input_tokens = prompt - cached`, `output_tokens = completion (+ thoughts)`), the event
//! order of streams, `tool_use` blocks with parsed `input`, and `thinking` blocks before the text.
//!
//! This test further checks that every request reached the upstream exactly once, that the mock
//! scripts' own assertions about the translated requests held (`script_panics()` is empty), that
//! each upstream got the provider's key in the vendor's auth header, and that the client's key
//! (`sk-client-abc`; the SDK sends it as `x-api-key`, or, from anthropic 2.x on, as
//! `Authorization: Bearer`) never reached any upstream, in a header, the path or the body.
//!
//! Needs `$SWITCHYARD_PYTHON` (else `python3`) with the `anthropic` package (`.ci/run` installs
//! it in a virtualenv). Without it the test says so loudly and passes, so that `cargo test` works
//! on a machine with only the Rust toolchain — except under CI (`CI` set), where it fails.

mod support;

use std::process::{Command, Output};

use serde_json::{json, Value};
use support::{Gateway, MockResponse, MockUpstream, RecordedRequest};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/sdk/anthropic_sdk_smoke.py"
);

/// The key the SDK sends (`x-api-key` or `Authorization: Bearer`); configured in `auth.keys`.
const CLIENT_KEY: &str = "sk-client-abc";
/// The key every provider is configured with; the only one upstreams may see.
const UPSTREAM_KEY: &str = "sk-upstream";

// Scenario data: must match tests/sdk/anthropic_sdk_smoke.py.
const TEXT_PIECES: [&str; 3] = ["Hello", " from the", " upstream!"];
const REASONING_PIECES: [&str; 2] = ["The user asks for 2 + 2.", " Adding the numbers gives 4."];
const THINK_ANSWER_PIECES: [&str; 2] = ["2 + 2", " = 4."];
const ANTHROPIC_SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds";
const CITIES: [&str; 2] = ["Paris", "Rome"];
/// Tool-call ids the OpenAI-style upstreams send (the client must get them unchanged).
const OPENAI_TOOL_IDS: [&str; 2] = ["call_paris_01", "call_rome_02"];
/// Tool-use ids the Anthropic upstream sends (the client must get them unchanged).
const ANTHROPIC_TOOL_IDS: [&str; 2] = ["toolu_01ParisWeather", "toolu_02RomeWeather"];
/// Cached prompt tokens reported in the text scenario.
const TEXT_CACHED: u64 = 3;
/// Reasoning / thought tokens reported in the thinking scenario (part of the output tokens).
const THINK_THOUGHTS: u64 = 6;

const AZURE_DEPLOYMENT: &str = "sy-deploy";
const GEMINI_MODEL: &str = "gemini-2.5-flash";
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
const OPENAI_MODEL: &str = "served-model";

fn text() -> String {
    TEXT_PIECES.concat()
}

fn reasoning() -> String {
    REASONING_PIECES.concat()
}

fn think_answer() -> String {
    THINK_ANSWER_PIECES.concat()
}

fn sdk_available() -> bool {
    support::python::sdk_available("anthropic")
}

/// What the client asked for, read off the last user message the upstream received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// "Hi": a plain text answer.
    Text,
    /// "What's the weather in Paris and Rome?": two parallel `get_weather` calls.
    Tools,
    /// "Think it through: ...": reasoning, then a text answer.
    Think,
}

impl Scenario {
    fn of(user_text: &str) -> Scenario {
        let t = user_text.to_lowercase();
        if t.contains("weather") {
            Scenario::Tools
        } else if t.contains("think") {
            Scenario::Think
        } else if t.contains("hi") {
            Scenario::Text
        } else {
            panic!("the last user message matches no scenario: {user_text}")
        }
    }

    /// `(input_tokens, output_tokens)` the client must see, whatever the vendor.
    fn usage(self) -> (u64, u64) {
        match self {
            Scenario::Text => (12, 5),
            Scenario::Tools => (20, 9),
            Scenario::Think => (12, 10),
        }
    }

    fn cached(self) -> u64 {
        if self == Scenario::Text {
            TEXT_CACHED
        } else {
            0
        }
    }

    fn thoughts(self) -> u64 {
        if self == Scenario::Think {
            THINK_THOUGHTS
        } else {
            0
        }
    }
}

/// The content of the last user turn in `body[list]` (`messages` or Gemini's `contents`, whose
/// `role` may be absent), as text: a string as is, anything else (parts, blocks) as JSON.
fn last_user_text(body: &Value, list: &str, content: &str) -> String {
    let turns = body[list]
        .as_array()
        .unwrap_or_else(|| panic!("the upstream request has no `{list}` array: {body}"));
    let turn = turns
        .iter()
        .rev()
        .find(|t| t["role"] == "user" || t["role"].is_null())
        .unwrap_or_else(|| panic!("no user turn in `{list}` of the upstream request: {body}"));
    match &turn[content] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI-compatible and Azure OpenAI upstreams (Chat Completions)

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    OpenAi,
    Azure,
}

fn openai_usage(s: Scenario) -> Value {
    let (input, output) = s.usage();
    let prompt = input + s.cached();
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": s.cached(), "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": s.thoughts(), "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

/// Azure's per-choice / per-prompt content filter verdict.
fn azure_filter_results() -> Value {
    json!({
        "hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"}
    })
}

fn azure_prompt_filter_results() -> Value {
    json!([{"prompt_index": 0, "content_filter_results": azure_filter_results()}])
}

fn openai_tool_call(i: usize) -> Value {
    json!({"id": OPENAI_TOOL_IDS[i], "type": "function",
           "function": {"name": "get_weather", "arguments": format!("{{\"city\": \"{}\"}}", CITIES[i])}})
}

/// Checks on the Chat Completions request the gateway built; a panic here fails the test.
fn check_openai_request(req: &RecordedRequest, flavor: Flavor, scenario: Scenario, body: &Value) {
    assert_eq!(req.method, "POST", "{flavor:?}: method of {}", req.path);
    match flavor {
        Flavor::OpenAi => assert_eq!(
            req.path, "/v1/chat/completions",
            "openai-compatible: unexpected upstream path"
        ),
        Flavor::Azure => {
            let prefix = format!("/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions?");
            assert!(
                req.path.starts_with(&prefix) && req.path.contains("api-version="),
                "azure-openai: unexpected upstream path {} (expected {prefix}api-version=...)",
                req.path
            );
        }
    }
    if body["stream"] == json!(true) {
        assert_eq!(
            body["stream_options"]["include_usage"],
            json!(true),
            "{flavor:?}: a streamed request must ask for stream_options.include_usage: {body}"
        );
    }
    if scenario == Scenario::Tools {
        let tool = &body["tools"][0];
        assert_eq!(
            tool["type"], "function",
            "{flavor:?}: tools not translated: {body}"
        );
        assert_eq!(
            tool["function"]["name"], "get_weather",
            "{flavor:?}: tools not translated: {body}"
        );
        assert!(
            tool["function"]["parameters"]["properties"]["city"].is_object(),
            "{flavor:?}: input_schema not passed as function.parameters: {body}"
        );
    }
}

/// A `chat.completion` answer.
fn openai_json(flavor: Flavor, scenario: Scenario, model: &str) -> Value {
    let (message, finish) = match scenario {
        Scenario::Text => (
            json!({"role": "assistant", "content": text(), "refusal": null, "annotations": []}),
            "stop",
        ),
        Scenario::Tools => (
            json!({"role": "assistant", "content": null, "refusal": null, "annotations": [],
                   "tool_calls": [openai_tool_call(0), openai_tool_call(1)]}),
            "tool_calls",
        ),
        Scenario::Think => (
            json!({"role": "assistant", "content": think_answer(), "reasoning_content": reasoning()}),
            "stop",
        ),
    };
    let mut choice =
        json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish});
    let mut answer = json!({
        "id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1_700_000_000,
        "model": model, "choices": [],
        "usage": openai_usage(scenario),
        "system_fingerprint": "fp_44709d6fcb"
    });
    if flavor == Flavor::Azure {
        choice["content_filter_results"] = azure_filter_results();
        answer["prompt_filter_results"] = azure_prompt_filter_results();
    } else {
        answer["service_tier"] = json!("default");
    }
    answer["choices"] = json!([choice]);
    answer
}

/// The `chat.completion.chunk` SSE events of a streamed answer, ending with the usage chunk
/// (`choices: []`) and `data: [DONE]`; Azure's opens with its choice-less filter chunk.
fn openai_sse(flavor: Flavor, scenario: Scenario, model: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let finished = !finish.is_null();
        let mut choice =
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish});
        if flavor == Flavor::Azure {
            choice["content_filter_results"] = if finished {
                json!({})
            } else {
                azure_filter_results()
            };
        }
        let data = json!({"id": "chatcmpl-AbC123", "object": "chat.completion.chunk",
                          "created": 1_700_000_000, "model": model,
                          "system_fingerprint": "fp_44709d6fcb",
                          "choices": [choice], "usage": null});
        format!("data: {data}\n\n")
    };
    let mut events = Vec::new();
    if flavor == Flavor::Azure {
        let filter = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                            "prompt_filter_results": azure_prompt_filter_results()});
        events.push(format!("data: {filter}\n\n"));
    }
    match scenario {
        Scenario::Text => {
            events.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            for piece in TEXT_PIECES {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
        Scenario::Tools => {
            for (i, city) in CITIES.iter().enumerate() {
                let opening = json!({"index": i, "id": OPENAI_TOOL_IDS[i], "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}});
                let delta = if i == 0 {
                    json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [opening]})
                } else {
                    json!({"tool_calls": [opening]})
                };
                events.push(chunk(delta, Value::Null));
                for fragment in ["{\"ci".to_string(), format!("ty\": \"{city}\"}}")] {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}),
                        Value::Null,
                    ));
                }
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        }
        Scenario::Think => {
            // DeepSeek-style reasoning deltas, with the null fields such hosts send.
            events.push(chunk(
                json!({"role": "assistant", "content": null, "reasoning_content": ""}),
                Value::Null,
            ));
            for piece in REASONING_PIECES {
                events.push(chunk(
                    json!({"content": null, "reasoning_content": piece}),
                    Value::Null,
                ));
            }
            for piece in THINK_ANSWER_PIECES {
                events.push(chunk(
                    json!({"content": piece, "reasoning_content": null}),
                    Value::Null,
                ));
            }
            events.push(chunk(
                json!({"content": "", "reasoning_content": null}),
                json!("stop"),
            ));
        }
    }
    let usage = json!({"id": "chatcmpl-AbC123", "object": "chat.completion.chunk",
                       "created": 1_700_000_000, "model": model,
                       "system_fingerprint": "fp_44709d6fcb",
                       "choices": [], "usage": openai_usage(scenario)});
    events.push(format!("data: {usage}\n\n"));
    events.push("data: [DONE]\n\n".to_string());
    events
}

fn openai_style_answer(req: &RecordedRequest, flavor: Flavor) -> MockResponse {
    let body = req.json();
    let scenario = Scenario::of(&last_user_text(&body, "messages", "content"));
    check_openai_request(req, flavor, scenario, &body);
    let model = match flavor {
        Flavor::OpenAi => "served-model-2025-01-01",
        Flavor::Azure => "gpt-4o-2024-11-20",
    };
    if body["stream"] == json!(true) {
        MockResponse::sse(openai_sse(flavor, scenario, model))
    } else {
        MockResponse::json(200, openai_json(flavor, scenario, model))
    }
}

// ---------------------------------------------------------------------------------------------
// Gemini upstream (generateContent / streamGenerateContent?alt=sse)

fn gemini_usage(s: Scenario) -> Value {
    let (input, output) = s.usage();
    let prompt = input + s.cached();
    let mut usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": output - s.thoughts(),
        "totalTokenCount": prompt + output,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]
    });
    if s.cached() > 0 {
        usage["cachedContentTokenCount"] = json!(s.cached());
    }
    if s.thoughts() > 0 {
        usage["thoughtsTokenCount"] = json!(s.thoughts());
    }
    usage
}

fn gemini_call_parts() -> Vec<Value> {
    vec![
        json!({"functionCall": {"name": "get_weather", "args": {"city": CITIES[0]}},
               "thoughtSignature": "c2lnUGFyaXM"}),
        json!({"functionCall": {"name": "get_weather", "args": {"city": CITIES[1]}}}),
    ]
}

/// One `GenerateContentResponse`; `finish` and `usage` only where the vendor sends them.
fn gemini_response(parts: Vec<Value>, finish: bool, usage: Option<Value>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if finish {
        candidate["finishReason"] = json!("STOP");
    }
    let mut response = json!({"candidates": [candidate], "modelVersion": GEMINI_MODEL,
                              "responseId": "UxQ6aM_sKbjFnvgPocrJaA"});
    if let Some(usage) = usage {
        response["usageMetadata"] = usage;
    }
    response
}

fn gemini_answer(req: &RecordedRequest) -> MockResponse {
    assert_eq!(req.method, "POST", "gemini: method of {}", req.path);
    let base = format!("/v1beta/models/{GEMINI_MODEL}:");
    let stream = if req.path == format!("{base}generateContent") {
        false
    } else if req
        .path
        .starts_with(&format!("{base}streamGenerateContent"))
    {
        assert!(
            req.path.contains("alt=sse"),
            "gemini: a streamed request without alt=sse: {}",
            req.path
        );
        true
    } else {
        panic!("gemini: unexpected upstream path {}", req.path)
    };
    assert!(
        !req.path.contains("key="),
        "gemini: the key must go in x-goog-api-key, not the query: {}",
        req.path
    );
    let body = req.json();
    let scenario = Scenario::of(&last_user_text(&body, "contents", "parts"));
    if scenario == Scenario::Tools {
        let declaration = &body["tools"][0]["functionDeclarations"][0];
        assert_eq!(
            declaration["name"], "get_weather",
            "gemini: tools not translated to functionDeclarations: {body}"
        );
    }
    if scenario == Scenario::Think {
        // Without includeThoughts the real Gemini answers with no thought parts at all.
        assert_eq!(
            body["generationConfig"]["thinkingConfig"]["includeThoughts"],
            json!(true),
            "gemini: the client's thinking did not become thinkingConfig.includeThoughts: {body}"
        );
    }
    let usage = gemini_usage(scenario);
    if !stream {
        let parts = match scenario {
            Scenario::Text => vec![json!({"text": text()})],
            Scenario::Tools => gemini_call_parts(),
            Scenario::Think => vec![
                json!({"text": reasoning(), "thought": true}),
                json!({"text": think_answer()}),
            ],
        };
        return MockResponse::json(200, gemini_response(parts, true, Some(usage)));
    }
    // Chunks carry only the new parts; the last one the finish reason and the full usage. The
    // first carries Gemini's early partial usage (prompt only): the gateway must keep the last.
    let early_usage = json!({"promptTokenCount": usage["promptTokenCount"],
                             "totalTokenCount": usage["promptTokenCount"]});
    let chunks: Vec<Vec<Value>> = match scenario {
        Scenario::Text => TEXT_PIECES
            .iter()
            .map(|p| vec![json!({"text": p})])
            .collect(),
        Scenario::Tools => vec![gemini_call_parts()],
        Scenario::Think => REASONING_PIECES
            .iter()
            .map(|p| vec![json!({"text": p, "thought": true})])
            .chain(THINK_ANSWER_PIECES.iter().map(|p| vec![json!({"text": p})]))
            .collect(),
    };
    let last = chunks.len() - 1;
    let events: Vec<String> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, parts)| {
            let response = if i == last {
                gemini_response(parts, true, Some(usage.clone()))
            } else if i == 0 {
                gemini_response(parts, false, Some(early_usage.clone()))
            } else {
                gemini_response(parts, false, None)
            };
            // AI Studio frames its SSE events with CRLF.
            format!("data: {response}\r\n\r\n")
        })
        .collect();
    MockResponse::sse(events)
}

// ---------------------------------------------------------------------------------------------
// Anthropic upstream (Messages API)

fn anthropic_usage(s: Scenario, output_tokens: u64) -> Value {
    let (input, _) = s.usage();
    json!({"input_tokens": input, "cache_creation_input_tokens": 0,
           "cache_read_input_tokens": s.cached(), "output_tokens": output_tokens,
           "service_tier": "standard"})
}

fn named(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

fn anthropic_answer(req: &RecordedRequest) -> MockResponse {
    assert_eq!(req.method, "POST", "anthropic: method of {}", req.path);
    assert_eq!(
        req.path, "/v1/messages",
        "anthropic: unexpected upstream path"
    );
    let body = req.json();
    let scenario = Scenario::of(&last_user_text(&body, "messages", "content"));
    assert!(
        body["max_tokens"].is_u64(),
        "anthropic: max_tokens is required upstream: {body}"
    );
    match scenario {
        Scenario::Tools => {
            assert_eq!(
                body["tools"][0]["name"], "get_weather",
                "anthropic: tools not passed on: {body}"
            );
            assert!(
                body["tools"][0]["input_schema"]["properties"]["city"].is_object(),
                "anthropic: input_schema not passed on: {body}"
            );
        }
        Scenario::Think => assert_eq!(
            body["thinking"]["type"], "enabled",
            "anthropic: the client's thinking was not passed on: {body}"
        ),
        Scenario::Text => {}
    }
    let (_, output) = scenario.usage();
    let message_id = "msg_01XFDUDYJgAACzvnptvVoYEL";
    let upstream_model = "claude-sonnet-4-5-20250929";
    let stop_reason = if scenario == Scenario::Tools {
        "tool_use"
    } else {
        "end_turn"
    };
    if body["stream"] != json!(true) {
        let content = match scenario {
            Scenario::Text => json!([{"type": "text", "text": text()}]),
            Scenario::Tools => json!([
                {"type": "tool_use", "id": ANTHROPIC_TOOL_IDS[0], "name": "get_weather", "input": {"city": CITIES[0]}},
                {"type": "tool_use", "id": ANTHROPIC_TOOL_IDS[1], "name": "get_weather", "input": {"city": CITIES[1]}}
            ]),
            Scenario::Think => json!([
                {"type": "thinking", "thinking": reasoning(), "signature": ANTHROPIC_SIGNATURE},
                {"type": "text", "text": think_answer()}
            ]),
        };
        return MockResponse::json(
            200,
            json!({"id": message_id, "type": "message", "role": "assistant", "model": upstream_model,
                   "content": content, "stop_reason": stop_reason, "stop_sequence": null,
                   "usage": anthropic_usage(scenario, output)}),
        );
    }
    let mut events = vec![named(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "content": [],
            "model": upstream_model, "stop_reason": null, "stop_sequence": null,
            "usage": anthropic_usage(scenario, 1)}}),
    )];
    let block_start = |index: usize, block: Value| {
        named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        )
    };
    let delta = |index: usize, delta: Value| {
        named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    };
    let block_stop = |index: usize| {
        named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    };
    let text_block = |index: usize, pieces: &[&str], events: &mut Vec<String>| {
        events.push(block_start(index, json!({"type": "text", "text": ""})));
        for piece in pieces {
            events.push(delta(index, json!({"type": "text_delta", "text": piece})));
        }
        events.push(block_stop(index));
    };
    match scenario {
        Scenario::Text => {
            events.push(block_start(0, json!({"type": "text", "text": ""})));
            events.push(named("ping", json!({"type": "ping"})));
            for piece in TEXT_PIECES {
                events.push(delta(0, json!({"type": "text_delta", "text": piece})));
            }
            events.push(block_stop(0));
        }
        Scenario::Tools => {
            for (i, city) in CITIES.iter().enumerate() {
                events.push(block_start(
                    i,
                    json!({"type": "tool_use", "id": ANTHROPIC_TOOL_IDS[i], "name": "get_weather", "input": {}}),
                ));
                for fragment in [
                    String::new(),
                    "{\"city\": ".to_string(),
                    format!("\"{city}\"}}"),
                ] {
                    events.push(delta(
                        i,
                        json!({"type": "input_json_delta", "partial_json": fragment}),
                    ));
                }
                events.push(block_stop(i));
            }
        }
        Scenario::Think => {
            events.push(block_start(0, json!({"type": "thinking", "thinking": ""})));
            for piece in REASONING_PIECES {
                events.push(delta(
                    0,
                    json!({"type": "thinking_delta", "thinking": piece}),
                ));
            }
            events.push(delta(
                0,
                json!({"type": "signature_delta", "signature": ANTHROPIC_SIGNATURE}),
            ));
            events.push(block_stop(0));
            text_block(1, &THINK_ANSWER_PIECES[..], &mut events);
        }
    }
    events.push(named(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": output}}),
    ));
    events.push(named("message_stop", json!({"type": "message_stop"})));
    MockResponse::sse(events)
}

// ---------------------------------------------------------------------------------------------
// The test

#[derive(Clone, Copy, Debug)]
enum Vendor {
    OpenAi,
    Azure,
    Gemini,
    Anthropic,
}

/// Runs the SDK script against the gateway for one public model, without proxies from the
/// environment (the gateway is on 127.0.0.1).
async fn run_script(gateway_url: String, model: &str) -> Output {
    let model = model.to_string();
    tokio::task::spawn_blocking(move || {
        Command::new(support::python::python())
            .arg(SCRIPT)
            .arg(&gateway_url)
            .arg(&model)
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .env_remove("ANTHROPIC_BASE_URL")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output()
    })
    .await
    .expect("the thread running the SDK's Python panicked")
    .expect("could not start the SDK's Python")
}

/// Checks on every request one upstream received: the provider's key in the vendor's auth header,
/// the target's model, and no trace of the client's key anywhere.
fn check_upstream_requests(model: &str, vendor: Vendor, requests: &[RecordedRequest]) {
    for req in requests {
        let what = format!("{model}: upstream request {} {}", req.method, req.path);
        for (name, value) in &req.headers {
            assert!(
                !value.contains(CLIENT_KEY),
                "{what}: header {name} carries the client's key: {value}"
            );
        }
        assert!(
            !req.path.contains(CLIENT_KEY),
            "{what}: the path carries the client's key"
        );
        assert!(
            !req.body_text().contains(CLIENT_KEY),
            "{what}: the body carries the client's key: {}",
            req.body_text()
        );
        match vendor {
            Vendor::OpenAi => {
                assert_eq!(
                    req.header("authorization"),
                    Some(format!("Bearer {UPSTREAM_KEY}").as_str()),
                    "{what}: Authorization header"
                );
                assert_eq!(req.json()["model"], OPENAI_MODEL, "{what}: upstream model");
            }
            Vendor::Azure => {
                assert_eq!(
                    req.header("api-key"),
                    Some(UPSTREAM_KEY),
                    "{what}: api-key header"
                );
                assert!(
                    req.header("x-api-key").is_none(),
                    "{what}: an x-api-key header reached Azure"
                );
            }
            Vendor::Gemini => {
                assert_eq!(
                    req.header("x-goog-api-key"),
                    Some(UPSTREAM_KEY),
                    "{what}: x-goog-api-key header"
                );
                assert!(
                    req.header("x-api-key").is_none(),
                    "{what}: an x-api-key header reached Gemini"
                );
            }
            Vendor::Anthropic => {
                assert_eq!(
                    req.header("x-api-key"),
                    Some(UPSTREAM_KEY),
                    "{what}: x-api-key header"
                );
                assert!(
                    req.header("anthropic-version").is_some(),
                    "{what}: no anthropic-version header"
                );
                assert_eq!(
                    req.json()["model"],
                    ANTHROPIC_MODEL,
                    "{what}: upstream model"
                );
            }
        }
    }
}

/// The official `anthropic` SDK gets correct `Message`s, streams, tool calls and thinking
/// through `POST /v1/messages` from an OpenAI-compatible, an Azure OpenAI, a Gemini and an
/// Anthropic upstream, each answering in its own wire format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_python_sdk_against_every_vendor() {
    if !sdk_available() {
        return;
    }
    let openai = MockUpstream::start(|req, _| openai_style_answer(req, Flavor::OpenAi)).await;
    let azure = MockUpstream::start(|req, _| openai_style_answer(req, Flavor::Azure)).await;
    let gemini = MockUpstream::start(|req, _| gemini_answer(req)).await;
    let anthropic = MockUpstream::start(|req, _| anthropic_answer(req)).await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
auth:
  keys:
    - {{ name: t, key: {CLIENT_KEY} }}
providers:
  up-openai: {{ kind: openai-compatible, base_url: "{openai_url}/v1", api_key: {UPSTREAM_KEY} }}
  up-azure: {{ kind: azure-openai, base_url: "{azure_url}", api_key: {UPSTREAM_KEY} }}
  up-gemini: {{ kind: gemini, base_url: "{gemini_url}", api_key: {UPSTREAM_KEY} }}
  up-anthropic: {{ kind: anthropic, base_url: "{anthropic_url}", api_key: {UPSTREAM_KEY} }}
models:
  via-openai: {{ targets: [{{ provider: up-openai, model: {OPENAI_MODEL} }}] }}
  via-azure: {{ targets: [{{ provider: up-azure, model: {AZURE_DEPLOYMENT} }}] }}
  via-gemini: {{ targets: [{{ provider: up-gemini, model: {GEMINI_MODEL} }}] }}
  via-anthropic: {{ targets: [{{ provider: up-anthropic, model: {ANTHROPIC_MODEL} }}] }}
"#,
        openai_url = openai.url(),
        azure_url = azure.url(),
        gemini_url = gemini.url(),
        anthropic_url = anthropic.url(),
    );
    let gw = Gateway::start(&yaml).await;
    let runs: [(&str, &MockUpstream, Vendor); 4] = [
        ("via-openai", &openai, Vendor::OpenAi),
        ("via-azure", &azure, Vendor::Azure),
        ("via-gemini", &gemini, Vendor::Gemini),
        ("via-anthropic", &anthropic, Vendor::Anthropic),
    ];
    let mut expected = Vec::new();
    for (model, upstream, vendor) in runs {
        let before = upstream.request_count();
        let out = run_script(gw.url(), model).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "the anthropic SDK run for {model} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
             --- mock upstream script panics\n{:#?}\n--- gateway logs\n{}",
            out.status,
            upstream.script_panics(),
            gw.logs()
        );
        print!("{stdout}");
        assert!(
            upstream.script_panics().is_empty(),
            "{model}: the mock upstream's checks failed: {:#?}",
            upstream.script_panics()
        );
        let summary_line = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("SUMMARY "))
            .unwrap_or_else(|| {
                panic!("{model}: no SUMMARY line in the script's stdout:\n{stdout}")
            });
        let summary: Value = serde_json::from_str(summary_line)
            .unwrap_or_else(|e| panic!("{model}: SUMMARY is not JSON ({e}): {summary_line}"));
        assert_eq!(summary["ok"], true, "{model}: summary {summary}");
        let calls = summary["upstream_calls"]
            .as_u64()
            .unwrap_or_else(|| panic!("{model}: summary without upstream_calls: {summary}"));
        let requests = upstream.requests();
        assert_eq!(
            (requests.len() - before) as u64,
            calls,
            "{model}: each SDK call must reach the upstream exactly once; the upstream got:\n{:#?}",
            requests[before..]
                .iter()
                .map(|r| format!("{} {}", r.method, r.path))
                .collect::<Vec<_>>()
        );
        check_upstream_requests(model, vendor, &requests[before..]);
        expected.push((model, upstream, calls));
    }
    // Each upstream served its own model only: no request went to another vendor's upstream.
    for (model, upstream, calls) in expected {
        assert_eq!(
            upstream.request_count() as u64,
            calls,
            "the upstream of {model} got requests meant for other models"
        );
        assert!(
            upstream.script_panics().is_empty(),
            "the mock upstream of {model}: checks failed: {:#?}",
            upstream.script_panics()
        );
    }
}
