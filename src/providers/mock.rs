//! The built-in `mock` provider: answers in OpenAI format without any network.
//!
//! It stands in for a real model in demos, smoke tests and load tests: the answer echoes the last
//! user message (or a configured `reply`), token counts are estimated the way real models roughly
//! count (about four characters per prompt token, one token per word of the answer), `max_tokens`
//! truncates with `finish_reason: "length"`, and optional `latency_ms` / `tokens_per_second` make
//! it as slow as a real model.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::accounting::Usage;
use crate::config::MockSettings;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::openai::ChatRequest;
use crate::providers::UpstreamRequest;
use crate::transport::{AttemptError, Exchange, LocalExchange};

/// How much of the user's message the default reply quotes back.
const ECHO_LIMIT_CHARS: usize = 200;

#[derive(Debug, Clone)]
pub struct MockProvider {
    settings: MockSettings,
}

/// One generated answer, rendered as JSON or as stream chunks.
#[derive(Debug, Clone)]
pub struct MockAnswer {
    id: String,
    created: u64,
    model: String,
    /// Answer pieces, one per token; concatenated they are the full text.
    pub tokens: Vec<String>,
    pub finish_reason: &'static str,
    pub usage: Usage,
}

impl MockProvider {
    pub fn new(settings: MockSettings) -> Self {
        MockProvider { settings }
    }

    /// Delay before the first byte of every answer.
    pub fn latency(&self) -> Duration {
        self.settings.latency
    }

    /// Pause between streamed tokens, when a token rate is configured.
    pub fn token_interval(&self) -> Option<Duration> {
        self.settings
            .tokens_per_second
            .map(|rate| Duration::from_secs_f64(1.0 / rate))
    }

    pub fn answer(&self, request: &ChatRequest, model: &str) -> MockAnswer {
        let text = match &self.settings.reply {
            Some(reply) => reply.clone(),
            None => default_reply(request),
        };
        let mut tokens = split_tokens(&text);
        let limit = max_tokens(request);
        let finish_reason = match limit {
            Some(limit) if tokens.len() > limit => {
                tokens.truncate(limit);
                "length"
            }
            _ => "stop",
        };
        let usage = Usage {
            prompt_tokens: estimate_prompt_tokens(request),
            completion_tokens: tokens.len() as u64,
            cached_tokens: 0,
            reasoning_tokens: 0,
            cache_write_tokens: 0,
        };
        MockAnswer {
            id: format!("chatcmpl-mock{:016x}", fastrand::u64(..)),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            model: model.to_string(),
            tokens,
            finish_reason,
            usage,
        }
    }
}

impl MockProvider {
    /// Embeddings of the request's texts (or token arrays): unit vectors of `dimensions`
    /// (default 8) that depend only on the input, so equal texts embed equally; usage as for
    /// prompts (about four characters a token).
    pub fn embed(&self, request: &EmbeddingsRequest) -> (Vec<Vec<f32>>, Usage) {
        let inputs: Vec<String> = match request.rest.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let dims = request.dimensions().unwrap_or(8).clamp(1, 4096) as usize;
        let vectors = inputs
            .iter()
            .map(|text| {
                // FNV-1a of the text seeds a tiny xorshift generator.
                let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                }) | 1;
                let raw: Vec<f32> = (0..dims)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state % 2001) as f32 / 1000.0 - 1.0
                    })
                    .collect();
                let norm = raw
                    .iter()
                    .map(|x| x * x)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::EPSILON);
                raw.into_iter().map(|x| x / norm).collect()
            })
            .collect();
        let chars: usize = inputs.iter().map(String::len).sum();
        let usage = Usage {
            prompt_tokens: (chars as u64).div_ceil(4).max(1),
            ..Usage::default()
        };
        (vectors, usage)
    }
}

impl MockAnswer {
    fn usage_json(&self) -> Value {
        self.usage.openai_json()
    }

    /// The whole answer as a `chat.completion` object.
    pub fn json(&self) -> Bytes {
        let body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.tokens.concat(), "refusal": null},
                "logprobs": null,
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage_json(),
        });
        Bytes::from(body.to_string())
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, include_usage: bool) -> Vec<u8> {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        sse_data(&chunk)
    }

    /// The opening chunk: the assistant role with empty content, as OpenAI sends it.
    pub fn role_chunk(&self, include_usage: bool) -> Bytes {
        Bytes::from(self.chunk(
            json!({"role": "assistant", "content": ""}),
            None,
            include_usage,
        ))
    }

    /// The chunk carrying token `index`.
    pub fn token_chunk(&self, index: usize, include_usage: bool) -> Bytes {
        let content = self.tokens.get(index).map(String::as_str).unwrap_or("");
        Bytes::from(self.chunk(json!({"content": content}), None, include_usage))
    }

    /// The finish chunk, the usage chunk when asked for, and `[DONE]`.
    pub fn closing_chunks(&self, include_usage: bool) -> Bytes {
        let mut out = self.chunk(json!({}), Some(self.finish_reason), include_usage);
        if include_usage {
            out.extend(sse_data(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage_json(),
            })));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }
}

fn sse_data(value: &Value) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

fn max_tokens(request: &ChatRequest) -> Option<usize> {
    request.max_output_tokens().map(|n| n as usize)
}

/// The text of a message's `content`: a string, or the `text` of its text parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn messages(request: &ChatRequest) -> &[Value] {
    request
        .rest()
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn default_reply(request: &ChatRequest) -> String {
    let last_user = messages(request)
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default();
    let quoted: String = last_user.chars().take(ECHO_LIMIT_CHARS).collect();
    if quoted.trim().is_empty() {
        "Hello! This is the Switchyard mock provider.".to_string()
    } else {
        format!("Hello! This is the Switchyard mock provider. You said: {quoted}")
    }
}

/// Words with their trailing whitespace, so that the tokens concatenate back to the text.
fn split_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if !c.is_whitespace() && current.ends_with(char::is_whitespace) {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// Roughly what OpenAI's tokenizers count: ~4 characters a token plus a few per message.
fn estimate_prompt_tokens(request: &ChatRequest) -> u64 {
    let msgs = messages(request);
    let chars: usize = msgs
        .iter()
        .filter_map(|m| m.get("content"))
        .map(|c| content_text(c).chars().count())
        .sum();
    (chars as u64).div_ceil(4) + 4 * msgs.len() as u64 + 3
}

// The fake server's side of the exchange.

/// Answers `req` as an OpenAI server would, after the mock's configured latency: it reads the
/// request the OpenAI adapter built and answers with OpenAI JSON or SSE bytes.
pub async fn serve(mock: &MockProvider, req: &UpstreamRequest) -> Result<Exchange, AttemptError> {
    if req.path_and_query.ends_with("/embeddings") {
        return embeddings(mock, req).await;
    }
    // The adapter wrote this body; it always parses.
    let request = ChatRequest::parse(&req.body)
        .map_err(|e| AttemptError::Io(format!("mock cannot read the request: {e}")))?;
    let answer = mock.answer(&request, &request.model);
    let latency = mock.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let interval = mock.token_interval();
    let mut chunks = VecDeque::new();
    if !request.stream {
        chunks.push_back((false, answer.json()));
    } else {
        let usage = request.include_usage;
        match interval {
            Some(_) => {
                chunks.push_back((false, answer.role_chunk(usage)));
                chunks
                    .extend((0..answer.tokens.len()).map(|i| (true, answer.token_chunk(i, usage))));
                chunks.push_back((false, answer.closing_chunks(usage)));
            }
            // Without a token rate the whole stream is ready at once: one piece.
            None => {
                let mut all = answer.role_chunk(usage).to_vec();
                for i in 0..answer.tokens.len() {
                    all.extend_from_slice(&answer.token_chunk(i, usage));
                }
                all.extend_from_slice(&answer.closing_chunks(usage));
                chunks.push_back((false, Bytes::from(all)));
            }
        }
    }
    Ok(Exchange::Local(LocalExchange::new(
        chunks, interval, latency,
    )))
}

/// `POST /embeddings`: deterministic vectors, one per input.
async fn embeddings(mock: &MockProvider, req: &UpstreamRequest) -> Result<Exchange, AttemptError> {
    let request = EmbeddingsRequest::parse(&req.body)
        .map_err(|e| AttemptError::Io(format!("mock cannot read the request: {e}")))?;
    let latency = mock.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (vectors, usage) = mock.embed(&request);
    let body = request.answer(&request.model, &vectors, &usage);
    Ok(Exchange::Local(LocalExchange::new(
        VecDeque::from([(false, body)]),
        None,
        latency,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        ChatRequest::parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn tokens_concatenate_back_to_the_text() {
        let toks = split_tokens("Hello  big world\n!");
        assert_eq!(toks, vec!["Hello  ", "big ", "world\n", "!"]);
        assert_eq!(toks.concat(), "Hello  big world\n!");
    }

    #[test]
    fn echoes_the_last_user_message_with_consistent_usage() {
        let mock = MockProvider::new(MockSettings::default());
        let req = request(json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "ping pong"}]}
        ]}));
        let answer = mock.answer(&req, "mock-1");
        let body: Value = serde_json::from_slice(&answer.json()).unwrap();
        let text = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(text.ends_with("You said: ping pong"), "{text}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["model"], "mock-1");
        let u = &body["usage"];
        assert_eq!(
            u["completion_tokens"].as_u64().unwrap() as usize,
            answer.tokens.len()
        );
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        );
        assert!(u["prompt_tokens"].as_u64().unwrap() > 8);
    }

    #[test]
    fn max_tokens_truncates_with_length() {
        let mock = MockProvider::new(MockSettings {
            reply: Some("one two three four".into()),
            ..MockSettings::default()
        });
        let req = request(
            json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}),
        );
        let answer = mock.answer(&req, "m");
        assert_eq!(answer.tokens.concat(), "one two ");
        assert_eq!(answer.finish_reason, "length");
    }

    #[test]
    fn stream_chunks_follow_openai_framing() {
        let mock = MockProvider::new(MockSettings {
            reply: Some("a b".into()),
            ..MockSettings::default()
        });
        let answer = mock.answer(
            &request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
            "m",
        );
        let mut stream = answer.role_chunk(true).to_vec();
        for i in 0..answer.tokens.len() {
            stream.extend_from_slice(&answer.token_chunk(i, true));
        }
        stream.extend_from_slice(&answer.closing_chunks(true));
        let text = String::from_utf8(stream).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 6, "{text}");
        assert!(events[0].contains(r#""role":"assistant""#));
        assert!(events[3].contains(r#""finish_reason":"stop""#));
        assert!(
            events[4].contains(r#""choices":[]"#) && events[4].contains(r#""completion_tokens":2"#)
        );
        assert_eq!(events[5], "data: [DONE]");
    }
}
