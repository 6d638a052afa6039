//! `kind: bedrock` through the real binary, against a fake Bedrock runtime that recomputes each
//! request's SigV4 signature (with `aws-sigv4`, from the request it received) and answers with
//! Converse JSON or the binary event stream: OpenAI and Anthropic clients, tool calls, usage,
//! an exception inside the stream, and failover when Bedrock rejects the gateway's credentials.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde_json::{json, Value};
use support::{client, sse_data, Gateway, MockResponse, MockUpstream, RecordedRequest};
use switchyard::providers::bedrock::eventstream;

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// `20261203T071500Z` as a time.
fn amz_date(text: &str) -> SystemTime {
    let n = |r: std::ops::Range<usize>| text[r].parse::<u64>().expect("digits");
    let (y, m, d) = (n(0..4) as i64, n(4..6) as i64, n(6..8) as i64);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days as u64 * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Recomputes the request's signature from what arrived; `Err` says why it does not match.
fn verify(req: &RecordedRequest, secret: &str) -> Result<(), String> {
    verify_with(req, ACCESS_KEY, secret, None)
}

fn verify_with(
    req: &RecordedRequest,
    access_key: &str,
    secret: &str,
    session_token: Option<&str>,
) -> Result<(), String> {
    let auth = req.header("authorization").ok_or("no authorization")?;
    let date = req.header("x-amz-date").ok_or("no x-amz-date")?;
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .ok_or("no SignedHeaders")?
        .split(';')
        .collect();
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .filter(|h| **h != "host" && **h != "x-amz-date")
        .map(|h| (*h, req.header(h).unwrap_or("")))
        .collect();
    let url = format!(
        "http://{}{}",
        req.header("host").ok_or("no host")?,
        req.path
    );
    let identity: Identity = Credentials::new(
        access_key,
        secret,
        session_token.map(str::to_string),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(amz_date(date))
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.into_iter(),
        SignableBody::Bytes(&req.body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let expected = instructions
        .headers()
        .find(|(n, _)| *n == "authorization")
        .map(|(_, v)| v.to_string())
        .ok_or("signer made no authorization")?;
    if expected == auth {
        Ok(())
    } else {
        Err(format!("signature mismatch:\n got {auth}\nwant {expected}"))
    }
}

fn event(kind: &str, payload: Value) -> Vec<u8> {
    eventstream::encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// A binary event-stream answer (one body; the gateway decodes it in whatever pieces arrive).
fn event_stream(frames: Vec<Vec<u8>>) -> MockResponse {
    MockResponse::text(200, "application/vnd.amazon.eventstream", frames.concat())
}

fn bedrock(req: &RecordedRequest) -> MockResponse {
    if let Err(why) = verify(req, SECRET) {
        return MockResponse::json(
            403,
            json!({"message": format!("The request signature we calculated does not match ({why})")}),
        );
    }
    let body = req.json();
    if req.path.starts_with("/model/amazon.titan-embed") {
        return titan(&body);
    }
    if req.path.ends_with("/invoke") {
        assert_eq!(req.path, "/model/cohere.embed-english-v3/invoke");
        assert_eq!(
            body,
            json!({"texts": ["a", "b"], "input_type": "search_document"})
        );
        return MockResponse::json(
            200,
            json!({"embeddings": [[0.5, 0.5], [1.0, 0.0]], "id": "e1"}),
        );
    }
    assert!(body["messages"].is_array(), "{body}");
    // As AWS documents and real Bedrock answers: tool blocks need declared tools.
    let tool_blocks = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .any(|b| b.get("toolUse").is_some() || b.get("toolResult").is_some());
    if tool_blocks && body.get("toolConfig").is_none() {
        return MockResponse::json(
            400,
            json!({"message": "The toolConfig field must be defined when using toolUse and toolResult content blocks."}),
        )
        .with_header("x-amzn-errortype", "ValidationException");
    }
    let weather = body.to_string().contains("weather");
    if req.path.ends_with("/converse") {
        let content = if weather {
            json!([{"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}])
        } else {
            json!([{"text": "Bonjour"}])
        };
        return MockResponse::json(
            200,
            json!({"output": {"message": {"role": "assistant", "content": content}},
                   "stopReason": if weather { "tool_use" } else { "end_turn" },
                   "usage": {"inputTokens": 11, "outputTokens": 2, "totalTokens": 13}}),
        );
    }
    let mut frames = vec![event("messageStart", json!({"role": "assistant"}))];
    frames.push(event(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "Bon"}}),
    ));
    if body.to_string().contains("throttle me") {
        let ex = eventstream::encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"Too many requests, please wait."}"#,
        );
        frames.push(ex);
        return event_stream(frames);
    }
    frames.push(event(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "jour"}}),
    ));
    frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    frames.push(event("messageStop", json!({"stopReason": "end_turn"})));
    frames.push(event("metadata", json!({"usage": {"inputTokens": 11, "outputTokens": 2, "totalTokens": 13}, "metrics": {"latencyMs": 5}})));
    event_stream(frames)
}

/// Titan embeddings as AWS documents them: exactly one `inputText` per call (a list is a
/// ValidationException); the vector here is [its length, its dimensions or 2], and a text
/// "fail" is refused, to fail one part of a batch.
fn titan(body: &Value) -> MockResponse {
    let refuse = |message: &str| {
        MockResponse::json(400, json!({ "message": message }))
            .with_header("x-amzn-errortype", "ValidationException")
    };
    let Some(text) = body["inputText"].as_str() else {
        return refuse("inputText must be a string");
    };
    if text == "fail" {
        return refuse("Malformed input request: the text is refused");
    }
    let dims = body["dimensions"].as_u64().unwrap_or(2) as usize;
    let mut embedding = vec![0.5f32; dims];
    embedding[0] = text.len() as f32;
    MockResponse::json(
        200,
        json!({"embedding": embedding, "inputTextTokenCount": text.len()}),
    )
}

async fn start() -> (MockUpstream, MockUpstream, Gateway) {
    let upstream = MockUpstream::start(|req, _| bedrock(req)).await;
    let backup = MockUpstream::start(|req, _| {
        MockResponse::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": req.json()["model"],
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "from backup"},
                                "finish_reason": "stop", "logprobs": null}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}),
        )
    })
    .await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  aws: {{ kind: bedrock, region: us-east-1, base_url: "{u}", aws_access_key_id: {ACCESS_KEY}, aws_secret_access_key: "{SECRET}", health_check: {{ enabled: false }} }}
  wrongkey: {{ kind: bedrock, region: us-east-1, base_url: "{u}", aws_access_key_id: {ACCESS_KEY}, aws_secret_access_key: "not-the-secret", health_check: {{ enabled: false }} }}
  backup: {{ kind: openai-compatible, base_url: "{b}/v1", api_key: k }}
models:
  claude: {{ targets: [{{ provider: aws, model: "{MODEL}", price: {{ input_per_mtok: 3, output_per_mtok: 15 }} }}] }}
  embed: {{ targets: [{{ provider: aws, model: cohere.embed-english-v3 }}] }}
  titan: {{ targets: [{{ provider: aws, model: "amazon.titan-embed-text-v2:0" }}] }}
  guarded:
    strategy: fallback
    targets: [{{ provider: wrongkey, model: "{MODEL}" }}, {{ provider: backup, model: gpt }}]
    retry: {{ attempts: 1, backoff_ms: 0 }}
"#,
        u = upstream.url(),
        b = backup.url()
    );
    let gw = Gateway::start(&yaml).await;
    (upstream, backup, gw)
}

async fn chat(gw: &Gateway, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&body)
        .send()
        .await
        .expect("gateway answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_converse_answers_json_and_streams_for_both_dialects() {
    let (upstream, _backup, gw) = start().await;

    let resp = chat(
        &gw,
        json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(
        resp.status(),
        200,
        "{}",
        upstream
            .requests()
            .last()
            .map(support::RecordedRequest::body_text)
            .unwrap_or_default()
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    assert_eq!(v["usage"]["cost"], json!((11.0 * 3.0 + 2.0 * 15.0) / 1e6));
    let sent = &upstream.requests()[0];
    assert_eq!(
        sent.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );

    let resp = chat(&gw, json!({"model": "claude", "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]})).await;
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );

    let resp = chat(
        &gw,
        json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Bonjour");
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(upstream.requests()[2].path.ends_with("/converse-stream"));

    // The Anthropic dialect reaches Bedrock the same way.
    let resp = client()
        .post(format!("{}/v1/messages", gw.url()))
        .json(&json!({"model": "claude", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    assert!(body.contains("\"text\":\"Bon\""), "{body}");
    assert!(
        body.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{body}"
    );
    // Embeddings go through InvokeModel in the model family's body, signed the same way.
    let resp = client()
        .post(format!("{}/v1/embeddings", gw.url()))
        .json(&json!({"model": "embed", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"][1]["embedding"], json!([1.0, 0.0]));
    assert_eq!(v["object"], "list");
    assert!(
        upstream.script_panics().is_empty(),
        "{:?}",
        upstream.script_panics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_in_the_stream_and_bad_credentials() {
    let (upstream, backup, gw) = start().await;
    // Throttled inside the stream, before anything reached the client: the exception's
    // mapped status (429, as ThrottlingException) goes back as the answer.
    let resp = chat(
        &gw,
        json!({"model": "claude", "stream": true,
        "messages": [{"role": "user", "content": "please throttle me"}]}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Too many requests"));

    // The fake rejects the wrong secret's signature with 403: the gateway's credentials are
    // wrong for every request, so the next target answers.
    let resp = chat(
        &gw,
        json!({"model": "guarded", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "backup");
    assert_eq!(backup.request_count(), 1);
    let rejected = upstream.requests().into_iter().last().unwrap();
    assert!(
        verify(&rejected, "not-the-secret").is_ok(),
        "signed with its own secret"
    );
    assert!(verify(&rejected, SECRET).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_profile_keys_from_imds_sign_the_requests() {
    let imds = MockUpstream::start(|req, _| {
        let token_ok = req.header("x-aws-ec2-metadata-token") == Some("imds-token");
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                assert_eq!(
                    req.header("x-aws-ec2-metadata-token-ttl-seconds"),
                    Some("21600")
                );
                MockResponse::text(200, "text/plain", "imds-token")
            }
            ("GET", "/latest/meta-data/iam/security-credentials/") if token_ok => {
                MockResponse::text(200, "text/plain", "gateway-role")
            }
            ("GET", "/latest/meta-data/iam/security-credentials/gateway-role") if token_ok => {
                MockResponse::json(
                    200,
                    json!({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAROLE",
                           "SecretAccessKey": "role-secret", "Token": "session-token-1",
                           "Expiration": "2099-01-01T00:00:00Z"}),
                )
            }
            _ => MockResponse::text(401, "text/plain", "no"),
        }
    })
    .await;
    let runtime = MockUpstream::start(|req, _| {
        if req.header("x-amz-security-token") != Some("session-token-1") {
            return MockResponse::json(403, json!({"message": "no session token"}));
        }
        match verify_with(req, "ASIAROLE", "role-secret", Some("session-token-1")) {
            Ok(()) => MockResponse::json(
                200,
                json!({"output": {"message": {"role": "assistant", "content": [{"text": "from the role"}]}},
                       "stopReason": "end_turn", "usage": {"inputTokens": 1, "outputTokens": 3}}),
            ),
            Err(why) => MockResponse::json(403, json!({ "message": why })),
        }
    })
    .await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  aws: {{ kind: bedrock, region: us-east-1, base_url: "{}", health_check: {{ enabled: false }} }}
models:
  claude: {{ targets: [{{ provider: aws, model: "{MODEL}" }}] }}
"#,
        runtime.url()
    );
    let endpoint = imds.url();
    let gw = Gateway::start_with_env(
        &yaml,
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
        ],
    )
    .await;
    for _ in 0..3 {
        let resp = chat(
            &gw,
            json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
        assert_eq!(
            resp.status(),
            200,
            "{:?}",
            runtime
                .requests()
                .last()
                .map(support::RecordedRequest::body_text)
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "from the role");
    }
    // Fetched once (token, role, keys), then reused while they are fresh.
    assert_eq!(imds.request_count(), 3);
}

/// A conversation with tool calls in its history but no tools declared (none given, or
/// `tool_choice: "none"`, which Converse cannot express) is one Bedrock accepts: the history
/// goes as text, for both client dialects, JSON and streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_history_without_declared_tools_is_accepted() {
    let (upstream, _backup, gw) = start().await;
    let history = json!([
        {"role": "user", "content": "What time is it in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_time", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "14:05"},
        {"role": "user", "content": "Thanks. Say hello."}
    ]);
    let tools = json!([{"type": "function", "function": {"name": "get_time",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    for stream in [false, true] {
        for extra in [json!({}), json!({"tools": tools, "tool_choice": "none"})] {
            let mut body = json!({"model": "claude", "stream": stream, "messages": history});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let resp = chat(&gw, body.clone()).await;
            assert_eq!(resp.status(), 200, "{body}");
            let text = resp.text().await.unwrap();
            assert!(text.contains("Bon"), "{body}: {text}");
        }
    }
    // The same history from an Anthropic client, JSON and streamed.
    for stream in [false, true] {
        let resp = client()
            .post(format!("{}/v1/messages", gw.url()))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude", "max_tokens": 100, "stream": stream, "messages": [
                {"role": "user", "content": "What time is it in Paris?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "14:05"},
                                             {"type": "text", "text": "Thanks. Say hello."}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.contains("Bon"), "{text}");
    }
    let sent = upstream.requests();
    assert_eq!(sent.len(), 6);
    for req in &sent {
        let body = req.json();
        assert!(body.get("toolConfig").is_none(), "{body}");
        let text = body["messages"].to_string();
        assert!(
            text.contains("[tool call ") && text.contains("[tool result "),
            "{text}"
        );
        assert!(text.contains("14:05"), "{text}");
    }
    // With tools declared and left to choose, the blocks and the toolConfig stay.
    let resp = chat(
        &gw,
        json!({"model": "claude", "messages": history, "tools": tools}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let last = upstream.requests().pop().unwrap().json();
    assert!(last["toolConfig"]["tools"].is_array(), "{last}");
    assert!(last["messages"].to_string().contains("toolUse"), "{last}");
}

/// Titan takes one input per call: a batch is one signed InvokeModel per input, answered as one
/// list in input order with the tokens summed, in floats and in base64; one refused part fails
/// the whole request with Bedrock's status and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn titan_embeddings_take_a_batch_one_call_per_input() {
    use base64::Engine as _;
    let (upstream, _backup, gw) = start().await;
    let embed = |body: Value| {
        client()
            .post(format!("{}/v1/embeddings", gw.url()))
            .json(&body)
            .send()
    };
    let inputs = ["a", "bb", "ccc"];
    let resp = embed(json!({"model": "titan", "input": inputs, "encoding_format": "float"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    for (i, text) in inputs.iter().enumerate() {
        assert_eq!(v["data"][i]["index"], i, "{v}");
        assert_eq!(v["data"][i]["embedding"][0], text.len() as f64, "{v}");
    }
    assert_eq!(v["usage"]["prompt_tokens"], 6, "{v}");
    let calls: Vec<Value> = upstream
        .requests()
        .iter()
        .map(RecordedRequest::json)
        .collect();
    assert_eq!(calls.len(), 3);
    for req in &upstream.requests() {
        verify(req, SECRET).unwrap();
        assert_eq!(req.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    }

    // The SDKs' default: base64 of little-endian f32s, with dimensions.
    let resp = embed(
        json!({"model": "titan", "input": inputs, "encoding_format": "base64", "dimensions": 4}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    for (i, text) in inputs.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, vec![text.len() as f32, 0.5, 0.5, 0.5], "{v}");
    }

    // One refused part: the whole request fails with Bedrock's own status and message.
    let resp = embed(json!({"model": "titan", "input": ["a", "fail", "c"]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the text is refused"),
        "{v}"
    );
}

/// The official `openai` SDK (base64 by default, then float) gets Titan batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_gets_titan_batches() {
    // Skipped without the SDK, except under CI, where that fails the run.
    if !support::python::sdk_available("openai") {
        return;
    }
    let (_upstream, _backup, gw) = start().await;
    let base_url = format!("{}/v1", gw.url());
    support::python::run_script("openai_sdk_embeddings.py", &[&base_url, "titan", "2"])
        .unwrap_or_else(|e| panic!("titan: {e}"));
}
