//! `kind: vertex` through the real binary: a fake Google token endpoint checks the service
//! account's signed JWT (RS256, with the public half of the test-only key in
//! `tests/fixtures/vertex/`) and issues a token, once; a fake Vertex AI checks the token and
//! answers for Gemini models (generateContent, SSE) and Anthropic models (rawPredict, SSE).

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};
use support::{client, sse_data, Gateway, MockResponse, MockUpstream, RecordedRequest};

const SERVICE_ACCOUNT: &str = include_str!("fixtures/vertex/service_account.json");
const PUBLIC_KEY: &[u8] = include_bytes!("fixtures/vertex/public_key.der");
const TOKEN: &str = "ya29.test-token";

/// Checks a JWT-bearer grant; the reason when it is not a valid one.
fn check_grant(req: &RecordedRequest, audience: &str) -> Result<(), String> {
    let body = req.body_text();
    let assertion = body
        .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
        .ok_or("not a jwt-bearer grant")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWT".into());
    }
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| e.to_string())?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, PUBLIC_KEY)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .map_err(|_| "bad signature")?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let ok = header["alg"] == "RS256"
        && header["kid"] == "test-key-1"
        && claims["iss"] == "gateway@switchyard-test.iam.gserviceaccount.com"
        && claims["aud"] == audience
        && claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        && claims["exp"].as_u64() == claims["iat"].as_u64().map(|i| i + 3600);
    if ok {
        Ok(())
    } else {
        Err(format!("wrong claims {header} {claims}"))
    }
}

fn vertex(req: &RecordedRequest) -> MockResponse {
    if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        return MockResponse::json(
            401,
            json!({"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}}),
        );
    }
    let base = "/v1/projects/switchyard-test/locations/us-east5/publishers";
    let body = req.json();
    if req.path == format!("{base}/google/models/gemini-2.5-flash:generateContent") {
        return MockResponse::json(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hola"}]}, "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1, "totalTokenCount": 5}}),
        );
    }
    if req.path == format!("{base}/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse") {
        return MockResponse::sse(vec![
            "data: {\"candidates\": [{\"content\": {\"role\": \"model\", \"parts\": [{\"text\": \"Ho\"}]}, \"index\": 0}]}\r\n\r\n".into(),
            "data: {\"candidates\": [{\"content\": {\"role\": \"model\", \"parts\": [{\"text\": \"la\"}]}, \"finishReason\": \"STOP\", \"index\": 0}], \"usageMetadata\": {\"promptTokenCount\": 4, \"candidatesTokenCount\": 1}}\r\n\r\n".into(),
        ]);
    }
    let claude = format!("{base}/anthropic/models/claude-sonnet-4-5@20250929");
    assert_eq!(body["anthropic_version"], "vertex-2023-10-16", "{body}");
    assert!(body.get("model").is_none(), "{body}");
    if req.path == format!("{claude}:rawPredict") {
        return MockResponse::json(
            200,
            json!({"id": "msg_v", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                   "content": [{"type": "text", "text": "Bonjour"}], "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 6, "output_tokens": 1}}),
        );
    }
    if req.path == format!("{claude}:streamRawPredict") {
        return MockResponse::sse(vec![
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_v\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":6,\"output_tokens\":1}}}\n\n".into(),
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".into(),
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bonjour\"}}\n\n".into(),
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into(),
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n".into(),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into(),
        ]);
    }
    panic!("unexpected path {}", req.path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_and_claude_on_vertex_with_service_account_tokens() {
    let tokens = MockUpstream::start(|req, _| {
        let audience = format!("http://{}/token", req.header("host").unwrap_or(""));
        match check_grant(req, &audience) {
            Ok(()) => MockResponse::json(
                200,
                json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            ),
            Err(why) => MockResponse::json(
                400,
                json!({"error": "invalid_grant", "error_description": why}),
            ),
        }
    })
    .await;
    let api = MockUpstream::start(|req, _| vertex(req)).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sa.json");
    std::fs::write(
        &key_file,
        SERVICE_ACCOUNT.replace("TOKEN_URI", &format!("{}/token", tokens.url())),
    )
    .unwrap();
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
providers:
  gcp: {{ kind: vertex, project: switchyard-test, region: us-east5, base_url: "{}", service_account: "{}" }}
models:
  gemini: {{ targets: [{{ provider: gcp, model: gemini-2.5-flash }}] }}
  claude: {{ targets: [{{ provider: gcp, model: "claude-sonnet-4-5@20250929" }}] }}
"#,
        api.url(),
        key_file.display()
    );
    let gw = Gateway::start(&yaml).await;
    let chat = |model: &str, stream: bool| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
    };
    for (model, text) in [("gemini", "Hola"), ("claude", "Bonjour")] {
        let resp = chat(model, false).await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "{model}: {:?}",
            tokens
                .requests()
                .last()
                .map(support::RecordedRequest::body_text)
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], text, "{model}");
        let resp = chat(model, true).await.unwrap();
        let data = sse_data(&resp.text().await.unwrap());
        let streamed: String = data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(streamed, text, "{model}");
        assert_eq!(data.last().unwrap(), "[DONE]");
    }
    // The Anthropic dialect reaches Claude on Vertex too.
    let resp = client()
        .post(format!("{}/v1/messages", gw.url()))
        .json(&json!({"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "Bonjour", "{v}");
    // The health probe (a publisher model's metadata) uses the same token.
    for _ in 0..60 {
        if api.probe_count() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(api.probe_count() > 0, "the provider was probed");
    // One token served every request and the probe.
    assert_eq!(tokens.request_count(), 1);
    assert_eq!(api.request_count(), 5);
    assert!(api.script_panics().is_empty(), "{:?}", api.script_panics());
}
