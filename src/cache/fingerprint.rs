//! The cache key of a request: SHA-256 over what decides its answer.
//!
//! The canonical request is hashed, not the client's bytes: the same question asked in OpenAI's,
//! Anthropic's or the Responses dialect, with its fields in any order, is one key. What only
//! labels or routes a request (`user`, `metadata`, `stream`, provider preferences, ...) is left
//! out; everything else that reaches a vendor is in, so two requests that could be answered
//! differently never share a key.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::chat::{self, Message, Tool};

/// Fields of [`chat::Request::rest`] that do not change the answer.
const IGNORED: &[&str] = &[
    "metadata",
    "stream_options",
    "store",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "session_id",
    "provider",
    "models",
    "route",
];

/// Bumped when the hashed form or the stored entry's form changes, so that instances of two
/// versions on one Redis (a rolling upgrade) keep apart instead of reading each other's entries
/// as misses and overwriting them. 3: entries keep a passed-through answer as its bytes. 4: the
/// entry's header is MessagePack.
const VERSION: u8 = 4;

/// What is hashed: the request's answer-deciding fields, in a fixed order.
#[derive(Serialize)]
struct Fingerprint<'r> {
    version: u8,
    model: &'r str,
    /// The client key's name when entries are per key.
    scope: Option<&'r str>,
    messages: &'r [Message<'r>],
    tools: Option<&'r [Tool<'r>]>,
    tool_choice: Option<&'r Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<&'r Value>,
    stop: Option<&'r Value>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    n: Option<u64>,
    seed: Option<i64>,
    logprobs: Option<bool>,
    top_logprobs: Option<u64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<&'r Value>,
    reasoning_effort: Option<&'r str>,
    thinking_budget: Option<u64>,
    /// Sorted: the client's field order does not matter.
    rest: BTreeMap<&'r str, &'r Value>,
}

/// A cache key: the hex SHA-256 of a request's fingerprint. Held inline, not in a `String`:
/// every cached request makes one, looks it up and stores under it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 64]);

impl Key {
    pub fn as_str(&self) -> &str {
        // Hex digits: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

thread_local! {
    /// Where fingerprints are encoded before hashing, kept between requests: an encoding is
    /// about the size of the prompt, and an allocation that large each time is one of glibc's
    /// slow ones.
    static ENCODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scratch kept above this size is given back after use.
const KEPT_SCRATCH: usize = 256 * 1024;

/// The key of `request` for public model `model`, within `scope`.
pub fn key(request: &chat::Request<'_>, model: &str, scope: Option<&str>) -> Key {
    let fingerprint = Fingerprint {
        version: VERSION,
        model,
        scope,
        messages: &request.messages,
        tools: request.tools.as_deref(),
        tool_choice: request.tool_choice.as_ref(),
        parallel_tool_calls: request.parallel_tool_calls,
        response_format: request.response_format.as_ref(),
        stop: request.stop.as_ref(),
        max_output_tokens: request.max_output_tokens(),
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        n: request.n,
        seed: request.seed,
        logprobs: request.logprobs,
        top_logprobs: request.top_logprobs,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        logit_bias: request.logit_bias.as_ref(),
        reasoning_effort: request.reasoning_effort.as_deref(),
        thinking_budget: request.thinking_budget,
        rest: request
            .rest
            .iter()
            .filter(|(k, _)| !IGNORED.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect(),
    };
    // MessagePack with field names: unambiguous like JSON (a skipped field cannot pass for
    // the next one), but strings go in length-prefixed rather than escaped, which made JSON
    // cost as much as the hashing for a long prompt. Into a buffer, then hashed in one call:
    // many small writes into the hasher cost more than the hashing.
    let digest = ENCODED.with_borrow_mut(|encoded| {
        encoded.clear();
        // Sized for the messages up front: grown from empty, its copies cost as much as
        // encoding.
        encoded.reserve(size_hint(request));
        // Plain data always encodes.
        let _ = rmp_serde::encode::write_named(encoded, &fingerprint);
        let digest = Sha256::digest(&encoded[..]);
        if encoded.capacity() > KEPT_SCRATCH {
            *encoded = Vec::new();
        }
        digest
    });
    // `hex::encode` builds a string a char at a time (1.6k instructions).
    let mut digits = [0u8; 64];
    // 32 bytes always fit 64 digits.
    let _ = hex::encode_to_slice(digest, &mut digits);
    Key(digits)
}

/// About the encoded size of `request`'s fingerprint: its messages' text, and some room.
fn size_hint(request: &chat::Request<'_>) -> usize {
    let messages: usize = request
        .messages
        .iter()
        .map(|m| match &m.content {
            Some(chat::Content::Text(text)) => text.len() + 32,
            Some(chat::Content::Parts(parts)) => parts.len() * 64 + 32,
            None => 32,
        })
        .sum();
    messages + 256
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(json: &str) -> chat::Request<'static> {
        let leaked: &'static str = Box::leak(json.to_string().into_boxed_str());
        serde_json::from_str(leaked).unwrap()
    }

    const BASE: &str = r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10}"#;
    const GOLDEN_BASE_KEY: &str =
        "edf84b56412b5209878a959749871b0c8e0dd2396cf4ac647a5c8300fad0e2ef";

    #[test]
    fn labels_and_field_order_do_not_change_the_key() {
        let base = key(&canonical(BASE), "m", None);
        // Instances of one version share entries: the hashed form changes only with VERSION.
        assert_eq!(base.as_str(), GOLDEN_BASE_KEY);
        for same in [
            r#"{"max_tokens":10,"messages":[{"role":"user","content":"Hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"user":"u1","metadata":{"a":"b"},"stream_options":{"include_usage":true}}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":10,"safety_identifier":"x"}"#,
        ] {
            assert_eq!(key(&canonical(same), "m", None), base, "{same}");
        }
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = key(&canonical(BASE), "m", None);
        assert_ne!(key(&canonical(BASE), "other", None), base, "model");
        assert_ne!(key(&canonical(BASE), "m", Some("team-a")), base, "scope");
        assert_ne!(
            key(&canonical(BASE), "m", Some("team-a")),
            key(&canonical(BASE), "m", Some("team-b")),
        );
        for different in [
            r#"{"messages":[{"role":"user","content":"Hi!"}],"max_tokens":10}"#,
            r#"{"messages":[{"role":"system","content":"Hi"}],"max_tokens":10}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":11}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"temperature":0}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"seed":1}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"response_format":{"type":"json_object"}}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":10,"verbosity":"low"}"#,
            r#"{"messages":[{"role":"user","content":"Hi","name":"a"}],"max_tokens":10}"#,
            r#"{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":""}],"max_tokens":10}"#,
        ] {
            assert_ne!(key(&canonical(different), "m", None), base, "{different}");
        }
        let mut thinking = canonical(BASE);
        thinking.thinking_budget = Some(1024);
        assert_ne!(key(&thinking, "m", None), base, "thinking budget");
    }
}
