//! Google Gemini API (`kind: gemini`): `generateContent` and `streamGenerateContent?alt=sse`.
//! [`request`] (canonical → Gemini, with [`schema`] reducing JSON schemas to Gemini's subset),
//! [`response`] and [`stream`] (Gemini → canonical), [`errors`].
//!
//! Translation follows docs/translation.md (§3, §5.4, §5.5, §5.8–5.10). Decisions:
//! - System and developer messages become `systemInstruction`, in order; consecutive turns of
//!   one role are merged, and empty parts are never sent (Gemini rejects them).
//! - Tool results need the function *name*, which OpenAI tool messages lack: it is looked up from
//!   the assistant tool call with the same id; an unknown id is a 400.
//! - Gemini 3 requires the `thoughtSignature` of a function call when the call is replayed. The
//!   signature is carried inside the OpenAI tool-call id (`call_<8 hex>_ts_<signature>`) and put
//!   back when the client replays the call, so no state is kept in the gateway. A replayed model
//!   turn whose calls carry no signature at all (history from another provider) gets Google's
//!   documented `skip_thought_signature_validator` stand-in when the model is Gemini 3 or later.
//! - JSON schemas (tool parameters, `response_format`) are reduced to Gemini's OpenAPI subset:
//!   `$ref`/`$defs` inlined, `anyOf` with `null` and type lists become `nullable`, `const` becomes
//!   `enum`, unsupported keywords, string formats and non-string enums are removed. Recursive
//!   `$ref`s cannot be expressed and are refused, as are schemas that inlining would blow up.
//! - Refused with a 400 naming the parameter: `logit_bias`, `n` > 1 with `stream`, `audio` and
//!   `modalities` with audio, `file_id`, non-function tools, more than 5 `stop` sequences,
//!   `input_audio` other than wav/mp3, unknown fields (named in the message).
//! - Dropped (no Gemini equivalent, no effect on the answer's meaning): `parallel_tool_calls`,
//!   `user`, `safety_identifier`, `store`, `metadata`, `service_tier`, `prompt_cache_key`,
//!   `stream_options` (the gateway writes the usage chunk itself), `verbosity`, image `detail`.
//! - Not translated back: `logprobs` are requested from Gemini but answers carry
//!   `"logprobs": null`.
//! - Streams have no closing event; a stream that ends before any `finishReason` is a failure.
//!   Old models repeat `finishReason` on every chunk, so the finish chunk is written at the end.

// First, so that its `fixture!` macro is in scope in the modules below.
#[cfg(test)]
#[macro_use]
mod test_support;

mod embeddings;
mod errors;
mod request;
mod response;
mod schema;
mod stream;

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderValue;

use super::model_id::ModelIdRule;
use super::stream::SseFrame;
use super::{
    push_credentials, Answer, AttemptTarget, KeyScheme, ProbeRequest, ProviderAdapter,
    RenderedAnswer, StreamFailure, StreamReader, StreamSettings, UpstreamRequest,
};
use crate::config::ProviderKind;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::ClientRequest;
use crate::dialect::Dialect;
use crate::error::GatewayError;

pub use errors::decode_gemini_error;
pub use response::finish_reason;
pub use schema::sanitize_schema;
pub use stream::GeminiStreamDecoder;

const MAX_STOP_SEQUENCES: usize = 5;
/// Gemini's `candidateCount` limit; a stream naming a higher index is not Gemini's.
const MAX_CANDIDATES: usize = 8;
/// Separates a synthesized call id from the thought signature it carries.
const SIGNATURE_MARK: &str = "_ts_";
/// Google's documented stand-in for a signature that was never issued (calls replayed from
/// another model's history); Gemini 3 otherwise rejects the request.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";
/// Bytes of `$defs` one schema may inline: a few hundred bytes of nested references would
/// otherwise expand into gigabytes.
const MAX_INLINED_BYTES: usize = 2 * 1024 * 1024;
const DROPPED_FIELDS: [&str; 5] = [
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "verbosity",
];

#[derive(Debug, Default)]
pub struct GeminiAdapter;

fn invalid(message: impl Into<String>, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// A new OpenAI tool-call id, carrying the call's thought signature when it has one.
fn synthesize_call_id(signature: Option<&str>) -> String {
    match signature {
        Some(sig) if !sig.is_empty() => {
            format!("call_{:08x}{SIGNATURE_MARK}{sig}", fastrand::u32(..))
        }
        _ => format!("call_{:08x}", fastrand::u32(..)),
    }
}

/// The thought signature a tool-call id carries, if it is one of ours: ids from other vendors
/// may contain `_ts_` too, and a garbled signature is itself a 400 from Gemini.
fn signature_of(id: &str) -> Option<&str> {
    let (random, sig) = id.strip_prefix("call_")?.split_once(SIGNATURE_MARK)?;
    (random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit()) && !sig.is_empty())
        .then_some(sig)
}

/// Whether the model validates thought signatures on replayed calls (Gemini 3 and later).
fn validates_signatures(model: &str) -> bool {
    let Some(version) = model.strip_prefix("gemini-") else {
        return false;
    };
    let major: String = version.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().is_ok_and(|m| m >= 3)
}

/// What Gemini accepts as a model name in its URLs (`gemini-2.5-flash`, `text-embedding-004`).
const GEMINI_MODEL: ModelIdRule = ModelIdRule {
    what: "a Gemini model name",
    punctuation: b"-._",
    literal: b"",
};

/// A target's model as Gemini names it in URLs (without `models/`), checked so that it cannot
/// change the URL's meaning.
fn gemini_model(upstream_model: &str) -> Result<Cow<'_, str>, GatewayError> {
    GEMINI_MODEL.segment(upstream_model.trim_start_matches("models/"))
}

impl ProviderAdapter for GeminiAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        gemini_model(model).map(drop)
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = gemini_model(target.upstream_model)?;
        let body = Self::request_body(&request.canonical()?, &model)?;
        let method = if request.stream() {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let path_and_query = format!(
            "{}/v1beta/models/{model}:{method}",
            target.endpoint.base_path
        );
        let mut headers = Vec::with_capacity(2 + target.extra_headers.len());
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        // A header, never `?key=`: URLs end up in logs.
        push_credentials(&mut headers, target, KeyScheme::Header("x-goog-api-key"))?;
        Ok(UpstreamRequest {
            path_and_query,
            headers,
            body: crate::providers::convert::json_bytes(&body),
        })
    }

    fn decode_response(
        &self,
        body: Bytes,
        _native: Option<Dialect>,
    ) -> Result<Answer, StreamFailure> {
        response::decode(&body)
    }

    fn build_embeddings(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = gemini_model(target.upstream_model)?;
        let mut headers = Vec::with_capacity(2 + target.extra_headers.len());
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        push_credentials(&mut headers, target, KeyScheme::Header("x-goog-api-key"))?;
        Ok(UpstreamRequest {
            path_and_query: format!(
                "{}/v1beta/models/{model}:batchEmbedContents",
                target.endpoint.base_path
            ),
            headers,
            body: Bytes::from(embeddings::request_body(request, &model)?),
        })
    }

    fn decode_embeddings(
        &self,
        request: &EmbeddingsRequest,
        model: &str,
        body: Bytes,
    ) -> Result<RenderedAnswer, StreamFailure> {
        embeddings::decode(request, model.trim_start_matches("models/"), &body)
    }

    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let mut headers = Vec::new();
        push_credentials(&mut headers, target, KeyScheme::Header("x-goog-api-key")).ok()?;
        Some(ProbeRequest {
            path_and_query: format!("{}/v1beta/models?pageSize=1", target.endpoint.base_path),
            headers,
            endpoint: None,
        })
    }

    fn stream_decoder(&self, _native: Option<Dialect>, _settings: StreamSettings) -> StreamReader {
        StreamReader::Events(Box::new(SseFrame::new(
            stream::GeminiStreamDecoder::default(),
        )))
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        errors::decode_gemini_error(Some(provider), status, body, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn streaming_uses_sse_endpoint_under_the_base_path_and_never_a_key_in_the_url() {
        let mut v = json(fixture!("request_tools.openai.json"));
        v["stream"] = json!(true);
        let key = Secret::new("g-key");
        let ep = Endpoint::from_url(&url::Url::parse("http://proxy.local:8080/gemini/").unwrap())
            .unwrap();
        let out = GeminiAdapter
            .build_request(
                &ClientRequest::OpenAi(request(v)),
                &AttemptTarget {
                    upstream_model: "models/gemini-2.5-pro",
                    endpoint: &ep,
                    api_key: Some(&key),
                    extra_headers: &[],
                },
            )
            .unwrap();
        assert_eq!(
            out.path_and_query,
            "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert!(!out.path_and_query.contains("key="));
        let bad = GeminiAdapter.build_request(
            &ClientRequest::OpenAi(request(json!({"model": "g", "messages": hello()}))),
            &AttemptTarget {
                upstream_model: "gemini?key=x",
                endpoint: &ep,
                api_key: None,
                extra_headers: &[],
            },
        );
        assert_eq!(bad.unwrap_err().param(), Some("model"));
    }

    #[test]
    fn case23_thought_signature_round_trip_through_the_tool_call_id() {
        let answer = r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "find_theaters", "args": {"movie": "Barbie"}}, "thoughtSignature": "c2lnLTE+/w=="}, {"functionCall": {"name": "noargs"}}], "role": "model"}, "finishReason": "STOP", "index": 0}]}"#;
        let v = decode_as_openai(answer);
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        let signed = calls[0]["id"].as_str().unwrap();
        let unsigned = calls[1]["id"].as_str().unwrap();
        assert_eq!(signature_of(signed), Some("c2lnLTE+/w=="));
        assert_eq!(signature_of(unsigned), None);

        // The client replays the answer as OpenAI history; the signature goes back in place.
        let history = json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": calls},
            {"role": "tool", "tool_call_id": signed, "content": "none"},
            {"role": "tool", "tool_call_id": unsigned, "content": "{}"}]);
        for model in ["gemini-2.5-flash", "gemini-3-pro-preview"] {
            let replay = body_for_model(history.clone(), json!({}), model).unwrap();
            assert_eq!(
                replay["contents"][1]["parts"],
                json!([{"functionCall": {"name": "find_theaters", "args": {"movie": "Barbie"}}, "thoughtSignature": "c2lnLTE+/w=="},
                       {"functionCall": {"name": "noargs", "args": {}}}]),
                "{model}"
            );
        }

        // Streamed calls carry it the same way.
        let (r, out, _) = stream(&format!("data: {answer}\n\n"), false, 9);
        r.unwrap();
        assert!(
            out.contains("\"id\":\"call_XXXXXXXX_ts_c2lnLTE+/w==\""),
            "{out}"
        );

        // Only our own ids carry signatures.
        for foreign in [
            "toolu_ts_abc",
            "call_xyz_ts_abc",
            "call_1234567_ts_abc",
            "call_12345678_ts_",
        ] {
            assert_eq!(signature_of(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn case39_blocked_prompt_is_a_content_filter_answer() {
        let blocked = r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},"modelVersion":"gemini-2.5-flash"}"#;
        let v = decode_as_openai(blocked);
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(v["usage"]["prompt_tokens"], 12);
        let (r, out, _) = stream(&format!("data: {blocked}\n\n"), false, 10);
        r.unwrap();
        let events = chunks(&out);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["choices"][0]["finish_reason"], "content_filter");

        // Feedback without a block reason (ratings only) and no candidates is not an answer.
        let odd = r#"{"promptFeedback":{"safetyRatings":[]}}"#;
        assert!(matches!(
            client_answer_openai(Bytes::from(odd)),
            Err(StreamFailure::Malformed(_))
        ));
        assert!(matches!(
            stream(&format!("data: {odd}\n\n"), false, 4).0,
            Err(StreamFailure::Truncated)
        ));
    }

    #[test]
    fn malformed_streams_and_answers_fail() {
        assert!(matches!(
            stream("data: {oops\n\n", false, 3).0,
            Err(StreamFailure::Malformed(_))
        ));
        assert!(matches!(
            stream(
                "data: {\"candidates\": [{\"index\": 4000000000}]}\n\n",
                false,
                4096
            )
            .0,
            Err(StreamFailure::Malformed(_))
        ));
        for body in ["not json", "[]", r#"{"candidates": []}"#] {
            assert!(
                matches!(
                    client_answer_openai(Bytes::from(body)),
                    Err(StreamFailure::Malformed(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn probe_lists_one_model_with_the_key_header() {
        let key = Secret::new("g-key");
        let probe = GeminiAdapter
            .probe_request(&AttemptTarget {
                upstream_model: "gemini-2.5-flash",
                endpoint: &endpoint(),
                api_key: Some(&key),
                extra_headers: &[],
            })
            .unwrap();
        assert_eq!(probe.path_and_query, "/v1beta/models?pageSize=1");
        assert!(probe
            .headers
            .iter()
            .any(|(n, v)| n == "x-goog-api-key" && v == "g-key"));
    }
}
