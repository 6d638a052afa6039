//! `POST /v1/embeddings` through the real binary: OpenAI-compatible hosts and Azure get the
//! client's body (but `model`), Gemini gets `batchEmbedContents` and answers come back as
//! OpenAI's `list` (floats or base64), the mock embeds without network; fallbacks, usage and
//! cost as for chat; vendors without embeddings refuse with a 400; and the official `openai`
//! Python SDK gets its embeddings (when installed; CI installs it).

mod support;

use base64::Engine as _;
use serde_json::{json, Value};
use support::{client, Gateway, MockResponse, MockUpstream, RecordedRequest};

/// A deterministic vector per text, so that equal texts embed equally.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let seed = text
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..dims)
        .map(|i| ((seed.wrapping_add(i as u32 * 97) % 1000) as f32) / 1000.0)
        .collect()
}

fn texts(input: &Value) -> Vec<String> {
    match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("?").to_string())
            .collect(),
        _ => vec![],
    }
}

/// An OpenAI-format embeddings server (also Azure's); `/fail` paths answer 500.
fn openai_upstream(req: &RecordedRequest) -> MockResponse {
    if req.path.contains("/fail/") {
        return MockResponse::json(
            500,
            json!({"error": {"message": "down", "type": "server_error"}}),
        );
    }
    let body = req.json();
    let dims = body["dimensions"].as_u64().unwrap_or(4) as usize;
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = texts(&body["input"])
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = vector(t, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    MockResponse::json(
        200,
        json!({"object": "list", "data": data, "model": body["model"],
               "usage": {"prompt_tokens": 10, "total_tokens": 10}}),
    )
}

/// Gemini's `batchEmbedContents`.
fn gemini_upstream(req: &RecordedRequest) -> MockResponse {
    assert!(
        req.path
            .ends_with("/v1beta/models/text-embedding-004:batchEmbedContents"),
        "{}",
        req.path
    );
    assert_eq!(req.header("x-goog-api-key"), Some("g-key"));
    let body = req.json();
    let embeddings: Vec<Value> = body["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| {
            assert_eq!(r["model"], "models/text-embedding-004");
            let dims = r["outputDimensionality"].as_u64().unwrap_or(4) as usize;
            let text = r["content"]["parts"][0]["text"].as_str().expect("text");
            json!({"values": vector(text, dims)})
        })
        .collect();
    MockResponse::json(200, json!({ "embeddings": embeddings }))
}

async fn start() -> (MockUpstream, MockUpstream, Gateway) {
    let openai = MockUpstream::start(|req, _| openai_upstream(req)).await;
    let gemini = MockUpstream::start(|req, _| gemini_upstream(req)).await;
    let yaml = format!(
        r#"
server: {{ listen: ["{{{{listen}}}}"], admin_listen: "{{{{admin}}}}" }}
auth: {{ keys: [{{ name: app, key: sk-client }}] }}
providers:
  compat: {{ kind: openai-compatible, base_url: "{o}/v1", api_key: sk-compat }}
  down: {{ kind: openai-compatible, base_url: "{o}/fail/v1", api_key: sk-down }}
  azure: {{ kind: azure-openai, base_url: "{o}", api_key: az-key }}
  gemini: {{ kind: gemini, base_url: "{g}", api_key: g-key }}
  claude: {{ kind: anthropic, base_url: "{o}", api_key: a-key }}
  mock: {{ kind: mock }}
models:
  embed-compat:
    targets:
      - {{ provider: down, model: x }}
      - {{ provider: compat, model: bge-large, price: {{ input_per_mtok: 100, output_per_mtok: 0 }} }}
    retry: {{ attempts: 1, backoff_ms: 0 }}
  embed-azure: {{ targets: [{{ provider: azure, model: emb-deploy }}] }}
  embed-gemini: {{ targets: [{{ provider: gemini, model: text-embedding-004 }}] }}
  embed-claude: {{ targets: [{{ provider: claude, model: claude-sonnet-4-5 }}] }}
  mock: {{ targets: [{{ provider: mock, model: mock-embed }}] }}
"#,
        o = openai.url(),
        g = gemini.url()
    );
    let gw = Gateway::start(&yaml).await;
    (openai, gemini, gw)
}

async fn embed(gw: &Gateway, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/embeddings", gw.url()))
        .bearer_auth("sk-client")
        .json(&body)
        .send()
        .await
        .expect("gateway answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_reach_every_kind_with_usage_cost_and_fallbacks() {
    let (openai, gemini, gw) = start().await;

    // OpenAI-compatible: the client's body but `model`, after a failed first target.
    let resp = embed(
        &gw,
        json!({"model": "embed-compat", "input": ["a", "b"], "user": "u1", "dimensions": 3}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-provider"], "compat");
    assert_eq!(resp.headers()["x-switchyard-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["embedding"].as_array().unwrap().len(), 3);
    // 10 prompt tokens at 100 USD per million.
    assert_eq!(v["usage"]["cost"], json!(0.001));
    let sent = openai
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/embeddings")
        .expect("the compatible host got the request");
    assert_eq!(
        sent.json(),
        json!({"model": "bge-large", "input": ["a", "b"], "user": "u1", "dimensions": 3})
    );
    assert_eq!(sent.header("authorization"), Some("Bearer sk-compat"));

    // Azure: the deployment's embeddings URL and `api-key`.
    let resp = embed(&gw, json!({"model": "embed-azure", "input": "hi"})).await;
    assert_eq!(resp.status(), 200);
    let azure = openai.requests().into_iter().last().unwrap();
    assert!(
        azure
            .path
            .starts_with("/openai/deployments/emb-deploy/embeddings?api-version="),
        "{}",
        azure.path
    );
    assert_eq!(azure.header("api-key"), Some("az-key"));

    // Gemini: batchEmbedContents, back as floats or as OpenAI's base64.
    let floats: Value = embed(
        &gw,
        json!({"model": "embed-gemini", "input": ["x", "yy"], "dimensions": 2}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "text-embedding-004");
    let expected: Vec<f64> = vector("yy", 2).iter().map(|f| f64::from(*f)).collect();
    assert_eq!(floats["data"][1]["embedding"], json!(expected));
    let b64: Value = embed(
        &gw,
        json!({"model": "embed-gemini", "input": ["yy"], "dimensions": 2, "encoding_format": "base64"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, vector("yy", 2));
    assert_eq!(gemini.request_count(), 2);

    // The mock embeds deterministically, without network.
    let m: Value = embed(&gw, json!({"model": "mock", "input": ["same", "same"]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(m["data"][0]["embedding"], m["data"][1]["embedding"]);
    assert_eq!(m["data"][0]["embedding"].as_array().unwrap().len(), 8);

    // Vendors without embeddings, and bad requests, get a 400 naming the parameter.
    let resp = embed(&gw, json!({"model": "embed-claude", "input": "x"})).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no embeddings API"),
        "{v}"
    );
    let resp = embed(&gw, json!({"model": "mock"})).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "input");
    assert!(openai.script_panics().is_empty() && gemini.script_panics().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_gets_embeddings() {
    // Skipped without the SDK, except under CI, where that fails the run.
    if !support::python::sdk_available("openai") {
        return;
    }
    let (_openai, gemini, gw) = start().await;
    let base_url = format!("{}/v1", gw.url());
    for (model, dims) in [("mock", "8"), ("embed-compat", "4"), ("embed-gemini", "4")] {
        support::python::run_script("openai_sdk_embeddings.py", &[&base_url, model, dims])
            .unwrap_or_else(|e| panic!("{model}: {e}"));
    }
    assert!(
        gemini.script_panics().is_empty(),
        "{:?}",
        gemini.script_panics()
    );
}
