//! Hostile and careless input, on both sides of the real binary: clients that send model names
//! meant to break a URL or a breaker, broken framing, pipelined requests and bytes that are not
//! UTF-8; upstreams that answer with bytes that are not UTF-8 or with answers nobody asked for.
//! Raw sockets where a well-behaved HTTP client could not send (or would not accept) the bytes.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::{client, Gateway, MockResponse, MockUpstream, RecordedRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OPENAI_COMPLETION: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

/// One upstream that speaks each vendor's format on that vendor's paths; Gemini does not know
/// `gemini-nope`.
fn every_vendor(req: &RecordedRequest, _: usize) -> MockResponse {
    let path = req.path.as_str();
    if path.contains("gemini-nope") {
        MockResponse::json(
            404,
            json!({"error": {"code": 404, "status": "NOT_FOUND",
                   "message": "models/gemini-nope is not found for API version v1beta"}}),
        )
    } else if path.contains(":generateContent") {
        MockResponse::json(
            200,
            json!({"candidates": [{"content": {"parts": [{"text": "hello"}], "role": "model"},
                   "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}}),
        )
    } else if path.ends_with("/converse") {
        MockResponse::json(
            200,
            json!({"output": {"message": {"role": "assistant", "content": [{"text": "hello"}]}},
                   "stopReason": "end_turn",
                   "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}),
        )
    } else {
        MockResponse::text(200, "application/json", OPENAI_COMPLETION)
    }
}

/// Every provider's breaker opens at the first failure and stays open for a minute: a single
/// attempt counted against a provider shows as a 503 on the next good request.
fn vendors_config(upstream: &MockUpstream) -> String {
    let u = upstream.url();
    let common = "health_check: { enabled: false }, circuit_breaker: { failure_threshold: 1, cooldown_ms: 60000 }";
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  gemini: {{ kind: gemini, base_url: "{u}", api_key: g-key, {common} }}
  azure: {{ kind: azure-openai, base_url: "{u}", api_key: az-key, {common} }}
  bedrock: {{ kind: bedrock, region: us-east-1, base_url: "{u}", aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret, {common} }}
  local: {{ kind: openai-compatible, base_url: "{u}/v1", {common} }}
  anthropic: {{ kind: anthropic, base_url: "{u}", api_key: sk-ant, {common} }}
"#
    )
}

async fn chat(gw: &Gateway, model: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request to the gateway");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_direct_models_are_400s_that_never_reach_a_provider_or_its_breaker() {
    let upstream = MockUpstream::start(every_vendor).await;
    let gw = Gateway::start(&vendors_config(&upstream)).await;
    let hostile: Vec<String> = [
        "gemini/a\r\nX",
        "gemini/a\tb",
        "gemini/a\u{1}",
        "gemini/a\u{7f}",
        "gemini/caf\u{e9}",
        "gemini/..",
        "gemini/a%2F..%2F..%2Fv1%2Ffiles",
        "gemini/a/../../v1/files",
        "azure/..",
        "azure/.",
        "azure/a\r\nX",
        "azure/dep%2F..",
        "bedrock/..",
        "bedrock/.",
        "bedrock/a/../../b",
        "bedrock/a b",
        "bedrock/a\u{0}",
        "local/a\r\nX",
        "local/caf\u{e9}",
        "anthropic/a\u{1}",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    for i in 0..100 {
        let model = &hostile[i % hostile.len()];
        let (status, body) = chat(&gw, model).await;
        assert_eq!(status, 400, "{model:?}: {body}");
        assert_eq!(body["error"]["param"], "model", "{model:?}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    assert_eq!(
        upstream.request_count(),
        0,
        "hostile names reached the upstream: {:?}",
        upstream
            .requests()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
    // Every breaker is still closed: each provider answers at once.
    for model in [
        "gemini/gemini-2.5-flash",
        "gemini/models/gemini-2.5-flash",
        "azure/gpt-4o-deployment",
        "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
        "local/meta-llama/Llama-3-8B",
    ] {
        let (status, body) = chat(&gw, model).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello", "{body}");
    }
    let metrics = gw.metrics().await;
    for outcome in ["connect_error", "io_error", "invalid_request", "4xx", "5xx"] {
        assert!(
            !metrics.contains(&format!("outcome=\"{outcome}\"")),
            "an attempt ended in {outcome}:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_an_object_is_the_same_400_passed_through_or_translated() {
    let upstream = MockUpstream::start(every_vendor).await;
    let gw = Gateway::start(&vendors_config(&upstream)).await;
    // An array of the message's fields in order: a derived struct would read it as a message.
    for messages in [json!([["user", "hi"]]), json!(["hi"]), json!([7])] {
        for model in ["local/m", "anthropic/claude-x", "gemini/gemini-2.5-flash"] {
            let resp = client()
                .post(format!("{}/v1/chat/completions", gw.url()))
                .json(&json!({"model": model, "messages": messages}))
                .send()
                .await
                .expect("request to the gateway");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("a JSON answer");
            assert_eq!(status, 400, "{model} {messages}: {body}");
            assert_eq!(
                body["error"]["message"], "each message must be an object",
                "{model} {messages}: {body}"
            );
            assert_eq!(body["error"]["param"], "messages", "{body}");
        }
    }
    assert_eq!(
        upstream.request_count(),
        0,
        "a malformed message reached a vendor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_ids_reach_the_vendor_as_one_encoded_path_segment() {
    let upstream = MockUpstream::start(every_vendor).await;
    let gw = Gateway::start(&vendors_config(&upstream)).await;
    let arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0";
    for model in [
        format!("bedrock/{arn}"),
        "gemini/models/gemini-2.5-flash".to_string(),
        "azure/my.deployment_1".to_string(),
    ] {
        let (status, body) = chat(&gw, &model).await;
        assert_eq!(status, 200, "{model}: {body}");
    }
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec![
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse".to_string(),
            "/v1beta/models/gemini-2.5-flash:generateContent".to_string(),
            "/openai/deployments/my.deployment_1/chat/completions?api-version=2024-10-21"
                .to_string(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_model_the_vendor_does_not_know_is_the_clients_404_not_an_outage() {
    let upstream = MockUpstream::start(every_vendor).await;
    let gw = Gateway::start(&vendors_config(&upstream)).await;
    for _ in 0..5 {
        let (status, body) = chat(&gw, "gemini/gemini-nope").await;
        assert_eq!(status, 404, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("gemini-nope"), "{body}");
    }
    let (status, body) = chat(&gw, "gemini/gemini-2.5-flash").await;
    assert_eq!(status, 200, "the breaker opened on a client's typo: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_target_with_an_impossible_model_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"
providers:
  az: { kind: azure-openai, base_url: "https://x.openai.azure.com", api_key: k }
models:
  m: { targets: [{ provider: az, model: ".." }] }
"#,
    )
    .unwrap();
    let out = support::run_cli(&["check", "--config", path.to_str().unwrap()], &[]);
    assert!(!out.status.success(), "{out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("models.m.targets[0].model"), "{text}");
}

/// Reads `count` HTTP/1.1 answers with a `Content-Length` from `tcp`, in order: (status, head,
/// body). Fails the test after 10 s.
async fn read_answers(tcp: &mut TcpStream, count: usize) -> Vec<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while answers.len() < count {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        if let Ok(httparse::Status::Complete(len)) = response.parse(&buf) {
            let length: usize = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .expect("answers carry a Content-Length");
            if buf.len() >= len + length {
                let status = response.code.unwrap_or_default();
                let head = String::from_utf8_lossy(&buf[..len]).to_lowercase();
                answers.push((status, head, buf[len..len + length].to_vec()));
                buf.drain(..len + length);
                continue;
            }
        }
        let mut piece = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, tcp.read(&mut piece))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {count} answers after 10 s; pending: {:?}",
                    answers.len(),
                    String::from_utf8_lossy(&buf)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "closed after {} of {count} answers; pending: {:?}",
            answers.len(),
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&piece[..n]);
    }
    answers
}

fn mock_config() -> &'static str {
    r#"
server: { listen: ["{{listen}}"], admin_listen: "{{admin}}" }
providers:
  mock: { kind: mock }
models:
  mock: { targets: [{ provider: mock, model: mock-1 }] }
"#
}

fn post_request(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let gw = Gateway::start(mock_config()).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let ask = |text: &str| {
        post_request(
            "/v1/chat/completions",
            &json!({"model": "mock", "messages": [{"role": "user", "content": text}]}).to_string(),
            "",
        )
    };
    let mut burst = ask("first");
    burst.push_str("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    burst.push_str(&ask("third"));
    tcp.write_all(burst.as_bytes()).await.unwrap();
    let answers = read_answers(&mut tcp, 3).await;
    let texts: Vec<String> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, 200, "{}", String::from_utf8_lossy(body));
            String::from_utf8_lossy(body).into_owned()
        })
        .collect();
    assert!(texts[0].contains("first"), "{}", texts[0]);
    assert!(texts[1].contains("\"object\":\"list\""), "{}", texts[1]);
    assert!(texts[2].contains("third"), "{}", texts[2]);
    // And the connection still serves a request sent on its own.
    tcp.write_all(ask("fourth").as_bytes()).await.unwrap();
    let answers = read_answers(&mut tcp, 1).await;
    assert!(String::from_utf8_lossy(&answers[0].2).contains("fourth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_400_in_the_clients_dialect_and_a_close() {
    let gw = Gateway::start(mock_config()).await;
    for (path, dialect_check) in [
        ("/v1/chat/completions", "\"invalid_request_error\""),
        ("/v1/messages", "\"type\":\"error\""),
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(b"5\r\n{\"mod\r\nzz-not-hex\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
            .await
            .expect("the connection closes after the 400")
            .unwrap();
        let text = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(text.starts_with("http/1.1 400"), "{path}: {text}");
        assert!(text.contains("connection: close"), "{path}: {text}");
        assert!(text.contains(dialect_check), "{path}: {text}");
        assert!(text.contains("framing"), "{path}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_utf8_are_refused_both_ways() {
    let upstream = MockUpstream::start(|req, _| {
        if req.path.ends_with("/v1/messages") {
            MockResponse::json(
                200,
                json!({"id": "msg", "type": "message", "role": "assistant", "model": "c",
                       "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 1, "output_tokens": 1}}),
            )
        } else {
            let mut body = OPENAI_COMPLETION.as_bytes().to_vec();
            let at = body.windows(5).position(|w| w == b"hello").unwrap();
            body[at] = 0xff;
            MockResponse::text(200, "application/json", body)
        }
    })
    .await;
    let gw = Gateway::start(&vendors_config(&upstream)).await;

    // Client -> upstream: the Anthropic pass-through would forward the bytes as they are.
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    let mut body = br#"{"model":"anthropic/claude-x","max_tokens":10,"messages":[{"role":"user","content":"caf"#.to_vec();
    body.extend_from_slice(b"\xe9\"}]}");
    let mut request = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    tcp.write_all(&request).await.unwrap();
    let answers = read_answers(&mut tcp, 1).await;
    let (status, _, answer) = &answers[0];
    let answer: Value = serde_json::from_slice(answer).unwrap();
    assert_eq!(*status, 400, "{answer}");
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("UTF-8"),
        "{answer}"
    );
    assert_eq!(upstream.request_count(), 0);

    // Upstream -> client: an answer that is not UTF-8 is a bad gateway, never a broken 200.
    let (status, body) = chat(&gw, "local/m").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("UTF-8"));
}

/// How a raw upstream misbehaves on its first answer.
#[derive(Clone, Copy, PartialEq)]
enum FirstAnswer {
    /// Sends another answer nobody asked for 100 ms after it.
    ThenUnsolicited,
    /// Framed two ways: chunked, with a `Content-Length` too.
    ChunkedAndSized,
}

/// A raw upstream: answers each request with a completion saying which request it was
/// (`answer-N`), the first one misbehaving as `first` says. Counts connections.
async fn raw_upstream(first: FirstAnswer) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: its head, then its Content-Length body.
                    let end = loop {
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= at + 4 + length {
                                break at + 4 + length;
                            }
                        }
                        let mut piece = [0u8; 4096];
                        match socket.read(&mut piece).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&piece[..n]),
                        }
                    };
                    buf.drain(..end);
                    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                    let body = OPENAI_COMPLETION.replace("hello", &format!("answer-{n}"));
                    let answer = if n == 1 && first == FirstAnswer::ChunkedAndSized {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                            body.len(),
                            body.len()
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if n == 1 && first == FirstAnswer::ThenUnsolicited {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let stolen = OPENAI_COMPLETION.replace("hello", "STOLEN");
                        let extra = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{stolen}",
                            stolen.len()
                        );
                        let _ = socket.write_all(extra.as_bytes()).await;
                    }
                }
            });
        }
    });
    (url, connections)
}

fn raw_config(url: &str) -> String {
    format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  raw: {{ kind: openai-compatible, base_url: "{url}/v1", health_check: {{ enabled: false }} }}
models:
  m: {{ targets: [{{ provider: raw, model: m }}] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_nobody_asked_for_never_reaches_the_next_client() {
    let (url, connections) = raw_upstream(FirstAnswer::ThenUnsolicited).await;
    let gw = Gateway::start(&raw_config(&url)).await;
    let (status, body) = chat(&gw, "m").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "answer-1");
    // The unsolicited answer arrives on the idle pooled connection meanwhile.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = chat(&gw, "m").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "answer-2",
        "another request's answer was handed out: {body}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the tainted connection was reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_answer_framing_is_in_doubt_is_not_reused() {
    // Chunked and a Content-Length at once: read as chunked (RFC 9112), but where the server
    // thinks it ends is in doubt, so its connection must not carry another request.
    let (url, connections) = raw_upstream(FirstAnswer::ChunkedAndSized).await;
    let gw = Gateway::start(&raw_config(&url)).await;
    let (status, body) = chat(&gw, "m").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "answer-1");
    let (status, body) = chat(&gw, "m").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "answer-2");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "an answer framed two ways left its connection in the pool"
    );
}
