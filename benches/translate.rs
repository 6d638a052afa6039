//! Translation cost per vendor and client dialect: a typical 4 KB chat request into the vendor's
//! request, and a 100-chunk stream from the vendor's SSE into the client's SSE (OpenAI chunks,
//! Anthropic events, or Responses events).
//!
//! Run: `cargo bench --bench translate`. Numbers go into BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

use switchyard::config::{ProviderKind, Secret};
use switchyard::dialect::anthropic::MessagesRequest;
use switchyard::dialect::openai::ChatRequest;
use switchyard::dialect::responses::ResponsesRequest;
use switchyard::dialect::{ClientRequest, Dialect};
use switchyard::providers::anthropic::AnthropicAdapter;
use switchyard::providers::azure::AzureAdapter;
use switchyard::providers::gemini::GeminiAdapter;
use switchyard::providers::openai::OpenAiAdapter;
use switchyard::providers::{
    client_stream, AttemptTarget, Endpoint, ProviderAdapter, StreamSettings,
};

/// About 4 KB: a system prompt, a few turns and one tool definition.
fn typical_request() -> Vec<u8> {
    let turn = "Please summarise the quarterly numbers for the northern region and flag anything unusual. ";
    json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "max_completion_tokens": 512,
        "stream": true,
        "messages": [
            {"role": "system", "content": turn.repeat(6)},
            {"role": "user", "content": turn.repeat(10)},
            {"role": "assistant", "content": turn.repeat(8)},
            {"role": "user", "content": turn.repeat(8)},
        ],
        "tools": [{"type": "function", "function": {"name": "get_sales", "description": "Sales figures",
            "parameters": {"type": "object", "properties": {"region": {"type": "string"}}, "required": ["region"]}}}]
    })
    .to_string()
    .into_bytes()
}

/// The same conversation as [`typical_request`], as an Anthropic Messages request.
fn typical_anthropic_request() -> Vec<u8> {
    let turn = "Please summarise the quarterly numbers for the northern region and flag anything unusual. ";
    json!({
        "model": "claude-sonnet-4-5",
        "temperature": 0.2,
        "max_tokens": 512,
        "stream": true,
        "system": turn.repeat(6),
        "messages": [
            {"role": "user", "content": turn.repeat(10)},
            {"role": "assistant", "content": turn.repeat(8)},
            {"role": "user", "content": turn.repeat(8)},
        ],
        "tools": [{"name": "get_sales", "description": "Sales figures",
            "input_schema": {"type": "object", "properties": {"region": {"type": "string"}}, "required": ["region"]}}]
    })
    .to_string()
    .into_bytes()
}

/// The same conversation as [`typical_request`], as a Responses API request.
fn typical_responses_request() -> Vec<u8> {
    let turn = "Please summarise the quarterly numbers for the northern region and flag anything unusual. ";
    json!({
        "model": "gpt-4.1",
        "temperature": 0.2,
        "max_output_tokens": 512,
        "stream": true,
        "instructions": turn.repeat(6),
        "input": [
            {"role": "user", "content": turn.repeat(10)},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": turn.repeat(8)}]},
            {"role": "user", "content": [{"type": "input_text", "text": turn.repeat(8)}]},
        ],
        "tools": [{"type": "function", "name": "get_sales", "description": "Sales figures",
            "parameters": {"type": "object", "properties": {"region": {"type": "string"}}, "required": ["region"]}}]
    })
    .to_string()
    .into_bytes()
}

fn parse(client: Dialect, body: &[u8]) -> ClientRequest {
    match client {
        Dialect::OpenAi => ClientRequest::OpenAi(ChatRequest::parse(body).unwrap()),
        Dialect::Anthropic => ClientRequest::Anthropic(
            MessagesRequest::parse(bytes::Bytes::copy_from_slice(body), &http::HeaderMap::new())
                .unwrap(),
        ),
        Dialect::Responses => ClientRequest::Responses(
            ResponsesRequest::parse(bytes::Bytes::copy_from_slice(body)).unwrap(),
        ),
        other => panic!("no bench for the {} dialect", other.as_str()),
    }
}

fn openai_stream(chunks: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..chunks {
        out.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    out.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":900,\"completion_tokens\":100,\"total_tokens\":1000}}\n\ndata: [DONE]\n\n");
    out.into_bytes()
}

fn anthropic_stream(chunks: usize) -> Vec<u8> {
    let mut out = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":900,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..chunks {
        out.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token{i} \"}}}}\n\n"
        ));
    }
    out.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":100}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    out.into_bytes()
}

fn gemini_stream(chunks: usize) -> Vec<u8> {
    let mut out = String::new();
    for i in 0..chunks {
        let last = i + 1 == chunks;
        out.push_str(&format!(
            "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"token{i} \"}}],\"role\": \"model\"}}{}, \"index\": 0}}]{}, \"modelVersion\": \"gemini-2.5-flash\", \"responseId\": \"r1\"}}\r\n\r\n",
            if last { ", \"finishReason\": \"STOP\"" } else { "" },
            if last { ", \"usageMetadata\": {\"promptTokenCount\": 900, \"candidatesTokenCount\": 100, \"totalTokenCount\": 1000}" } else { "" },
        ));
    }
    out.into_bytes()
}

/// Benches one vendor for one client dialect: parsing the client's 4 KB request and building the
/// vendor request, and decoding a 100-chunk vendor stream into the client's SSE (fed in 512-byte
/// reads).
fn vendor(
    c: &mut Criterion,
    client: Dialect,
    name: &str,
    adapter: &dyn ProviderAdapter,
    base_url: &str,
    stream: &[u8],
) {
    let body = match client {
        Dialect::OpenAi => typical_request(),
        Dialect::Anthropic => typical_anthropic_request(),
        Dialect::Responses => typical_responses_request(),
        other => panic!("no bench for the {} dialect", other.as_str()),
    };
    let endpoint = Endpoint::from_url(&url::Url::parse(base_url).unwrap()).unwrap();
    let key = Secret::new("sk-bench");
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("request_4kb_parse_and_build", |b| {
        b.iter(|| {
            let req = parse(client, black_box(&body));
            adapter
                .build_request(
                    &req,
                    &AttemptTarget {
                        upstream_model: "model-2025",
                        endpoint: &endpoint,
                        api_key: Some(&key),
                        extra_headers: &[],
                    },
                )
                .unwrap()
        });
    });
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("stream_100_chunks", |b| {
        b.iter(|| {
            let mut decoder = client_stream(
                adapter,
                client,
                StreamSettings {
                    include_usage: true,
                    price: None,
                },
            );
            let mut out = Vec::with_capacity(stream.len() * 2);
            for piece in black_box(stream).chunks(512) {
                decoder.push(piece, &mut out).unwrap();
            }
            decoder.finish(&mut out).unwrap();
            out
        });
    });
    group.finish();
}

fn vendors(c: &mut Criterion) {
    let openai = openai_stream(100);
    let anthropic = anthropic_stream(100);
    let gemini = gemini_stream(100);
    for (client, prefix) in [
        (Dialect::OpenAi, ""),
        (Dialect::Anthropic, "anthropic-client/"),
    ] {
        vendor(
            c,
            client,
            &format!("{prefix}openai"),
            &OpenAiAdapter::new(ProviderKind::OpenAi),
            "https://api.openai.com/v1",
            &openai,
        );
        vendor(
            c,
            client,
            &format!("{prefix}azure"),
            &AzureAdapter::new(None),
            "https://acme.openai.azure.com",
            &openai,
        );
        vendor(
            c,
            client,
            &format!("{prefix}anthropic"),
            &AnthropicAdapter,
            "https://api.anthropic.com",
            &anthropic,
        );
        vendor(
            c,
            client,
            &format!("{prefix}gemini"),
            &GeminiAdapter,
            "https://generativelanguage.googleapis.com",
            &gemini,
        );
    }
}

/// Responses clients, translated (Anthropic) as the load bench's Responses row is.
fn responses_client(c: &mut Criterion) {
    vendor(
        c,
        Dialect::Responses,
        "responses-client/anthropic",
        &AnthropicAdapter,
        "https://api.anthropic.com",
        &anthropic_stream(100),
    );
}

criterion_group!(benches, vendors, responses_client);
criterion_main!(benches);
