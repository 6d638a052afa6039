//! Translation cost per vendor: a typical 4 KB chat request into the vendor's request, and a
//! 100-chunk stream from the vendor's SSE into the client's OpenAI SSE.
//!
//! Run: `cargo bench --bench translate`. Numbers go into BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

use switchyard::config::{ProviderKind, Secret};
use switchyard::dialect::openai::ChatRequest;
use switchyard::providers::openai::OpenAiAdapter;
use switchyard::providers::{AttemptTarget, Endpoint, ProviderAdapter, StreamSettings};

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

fn openai(c: &mut Criterion) {
    let body = typical_request();
    let adapter = OpenAiAdapter::new(ProviderKind::OpenAi);
    let endpoint =
        Endpoint::from_url(&url::Url::parse("https://api.openai.com/v1").unwrap()).unwrap();
    let key = Secret::new("sk-bench");
    let mut group = c.benchmark_group("openai");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("request_4kb_parse_and_build", |b| {
        b.iter(|| {
            let req = ChatRequest::parse(black_box(&body)).unwrap();
            adapter
                .build_request(
                    &req,
                    &AttemptTarget {
                        upstream_model: "gpt-4o-mini-2024-07-18",
                        endpoint: &endpoint,
                        api_key: Some(&key),
                        extra_headers: &[],
                    },
                )
                .unwrap()
        })
    });
    let stream = openai_stream(100);
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("stream_100_chunks", |b| {
        b.iter(|| {
            let mut decoder = adapter.stream_decoder(StreamSettings {
                include_usage: true,
            });
            let mut out = Vec::with_capacity(stream.len());
            // Upstream reads rarely align with events: feed 512-byte pieces.
            for piece in black_box(&stream).chunks(512) {
                decoder.push(piece, &mut out).unwrap();
            }
            decoder.finish(&mut out).unwrap();
            out
        })
    });
    group.finish();
}

criterion_group!(benches, openai);
criterion_main!(benches);
