//! Random, truncated and mutated bytes into every stream decoder: never a panic, always either a
//! clean result or a clean error. Bounded case counts keep this to a few seconds in CI.

use proptest::prelude::*;

use switchyard::config::ProviderKind;
use switchyard::dialect::Dialect;
use switchyard::providers::anthropic::AnthropicAdapter;
use switchyard::providers::azure::AzureAdapter;
use switchyard::providers::gemini::GeminiAdapter;
use switchyard::providers::openai::OpenAiAdapter;
use switchyard::providers::{client_stream, ProviderAdapter, StreamFailure, StreamSettings};

const ANTHROPIC: &str = include_str!("fixtures/anthropic/stream_tools.anthropic.sse");
const GEMINI: &str = include_str!("fixtures/gemini/stream_function_call.gemini.sse");
const OPENAI: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\n\
data: [DONE]\n\n";

fn adapters() -> Vec<(Box<dyn ProviderAdapter>, &'static str)> {
    vec![
        (Box::new(OpenAiAdapter::new(ProviderKind::OpenAi)), OPENAI),
        (
            Box::new(OpenAiAdapter::new(ProviderKind::OpenAiCompatible)),
            OPENAI,
        ),
        (Box::new(AzureAdapter::new(None)), OPENAI),
        (Box::new(AnthropicAdapter), ANTHROPIC),
        (Box::new(GeminiAdapter), GEMINI),
    ]
}

/// Both client dialects: each vendor's stream is passed through for one, translated for the other.
const CLIENTS: [Dialect; 2] = [Dialect::OpenAi, Dialect::Anthropic];

/// Feeds `input` in pieces of the given sizes to the decoder for a `client`; returns the
/// outcome of the whole stream.
fn run(
    adapter: &dyn ProviderAdapter,
    client: Dialect,
    input: &[u8],
    sizes: &[usize],
) -> Result<Vec<u8>, StreamFailure> {
    let mut decoder = client_stream(
        adapter,
        client,
        StreamSettings {
            include_usage: true,
            price: None,
        },
    );
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len());
        decoder.push(&rest[..n], &mut out)?;
        rest = &rest[n..];
        i += 1;
    }
    decoder.finish(&mut out)?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                sizes in proptest::collection::vec(1usize..64, 1..8)) {
        for (adapter, _) in adapters() {
            for client in CLIENTS {
                let _ = run(adapter.as_ref(), client, &bytes, &sizes);
            }
        }
    }

    #[test]
    fn truncated_streams_fail_cleanly(cut in 0usize..10_000, sizes in proptest::collection::vec(1usize..200, 1..6)) {
        for (adapter, fixture) in adapters() {
            let full = fixture.as_bytes();
            let cut = cut % full.len();
            for client in CLIENTS {
            let outcome = run(adapter.as_ref(), client, &full[..cut], &sizes);
            // A cut anywhere before the closing event is never a clean end.
            // Gemini has no closing event: the chunk with finishReason is the last one.
            let closing = match fixture {
                OPENAI => full.len() - "[DONE]\n\n".len(),
                GEMINI => fixture.rfind("data:").unwrap_or(0) + "data: {\"candidates\"".len(),
                _ => full.len() - "\n\n".len() - 1,
            };
            if cut < closing {
                prop_assert!(outcome.is_err(), "{:?} for {client:?} cut at {cut} looked complete", adapter.kind());
            }
            }
        }
    }

    #[test]
    fn mutated_streams_never_panic(pos in 0usize..10_000, byte in any::<u8>(), sizes in proptest::collection::vec(1usize..100, 1..6)) {
        for (adapter, fixture) in adapters() {
            let mut bytes = fixture.as_bytes().to_vec();
            let at = pos % bytes.len();
            bytes[at] = byte;
            for client in CLIENTS {
                let _ = run(adapter.as_ref(), client, &bytes, &sizes);
            }
        }
    }

    #[test]
    fn whole_streams_decode_the_same_in_any_pieces(sizes in proptest::collection::vec(1usize..300, 1..8)) {
        for (adapter, fixture) in adapters() {
            for client in CLIENTS {
                let whole = run(adapter.as_ref(), client, fixture.as_bytes(), &[usize::MAX]);
                let pieces = run(adapter.as_ref(), client, fixture.as_bytes(), &sizes);
                prop_assert!(whole.is_ok(), "{:?} for {client:?}: {whole:?}", adapter.kind());
                // Ids and timestamps are per decoder; compare the structure of the output.
                let shape = |out: &[u8]| String::from_utf8_lossy(out).matches("data: ").count();
                prop_assert_eq!(shape(&whole.unwrap()), shape(&pieces.unwrap()));
            }
        }
    }
}

/// A ConverseStream answer in AWS's binary event-stream framing.
fn bedrock_stream() -> Vec<u8> {
    use switchyard::providers::bedrock::eventstream::encode;
    let ev = |kind: &str, payload: &str| {
        encode(
            &[(":event-type", kind), (":message-type", "event")],
            payload.as_bytes(),
        )
    };
    [
        ev("messageStart", r#"{"role":"assistant"}"#),
        ev(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ),
        ev(
            "contentBlockStart",
            r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t","name":"f"}}}"#,
        ),
        ev(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{}"}}}"#,
        ),
        ev("messageStop", r#"{"stopReason":"tool_use"}"#),
        ev(
            "metadata",
            r#"{"usage":{"inputTokens":1,"outputTokens":2}}"#,
        ),
    ]
    .concat()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn bedrock_event_streams_never_panic(pos in 0usize..10_000, byte in any::<u8>(),
                                         cut in 0usize..10_000,
                                         sizes in proptest::collection::vec(1usize..100, 1..6)) {
        let adapter = switchyard::providers::bedrock::BedrockAdapter::new("us-east-1", None);
        let full = bedrock_stream();
        for client in CLIENTS {
            let whole = run(&adapter, client, &full, &sizes);
            prop_assert!(whole.is_ok(), "{whole:?}");
            let mut bad = full.clone();
            let at = pos % bad.len();
            bad[at] ^= byte | 1;
            let _ = run(&adapter, client, &bad, &sizes);
            let cut = cut % full.len();
            prop_assert!(run(&adapter, client, &full[..cut], &sizes).is_err(), "cut at {cut} looked complete");
        }
    }
}

/// The slowest way an upstream can send: one byte per read. Every vendor's stream, SSE and
/// AWS event-stream alike, decodes to the same client stream as when it arrives whole.
#[test]
fn streams_fed_one_byte_per_read_decode_as_when_whole() {
    let shape = |out: &[u8]| String::from_utf8_lossy(out).matches("data: ").count();
    let bedrock = switchyard::providers::bedrock::BedrockAdapter::new("us-east-1", None);
    let bedrock_bytes = bedrock_stream();
    let mut cases: Vec<(&dyn ProviderAdapter, &[u8])> = vec![(&bedrock, &bedrock_bytes)];
    let vendors = adapters();
    for (adapter, fixture) in &vendors {
        cases.push((adapter.as_ref(), fixture.as_bytes()));
    }
    for (adapter, bytes) in cases {
        for client in CLIENTS {
            let whole = run(adapter, client, bytes, &[usize::MAX]).unwrap();
            let drip = run(adapter, client, bytes, &[1]).unwrap_or_else(|e| {
                panic!("{:?} for {client:?}, byte by byte: {e}", adapter.kind())
            });
            assert_eq!(shape(&whole), shape(&drip), "{:?}", adapter.kind());
        }
    }
}
