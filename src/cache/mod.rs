//! The exact-match answer cache: an answer served again, at once and for nothing, to a request
//! identical to one answered before.
//!
//! A model opts in with `models.NAME.cache`. Its requests are keyed by
//! [`fingerprint::key`] (the canonical request, so the dialect a request came in does not
//! matter), per client key unless the model's `scope` is `shared`. Answers are kept in the
//! state backend (`store::ANSWERS`: in the process, least recently used first out past
//! `state.cache_max_mib`, or in Redis shared by every instance) and replayed in whatever
//! dialect, whole or streamed, the next client asks for. A JSON answer that passed through from
//! a vendor of the client's own dialect is kept as its bytes ([`Kept::Native`]): storing it
//! costs no decoding, a hit in that dialect sends the bytes again, and a hit in another dialect
//! decodes them as a live request to that vendor would. Other answers (translated, streamed,
//! or read by other filters) are kept in the canonical model.
//!
//! Only complete answers are stored: a JSON answer the vendor gave in full, or a stream that
//! reached its end with every choice finished ([`CacheFill`] collects it as it passes). A
//! request with a `temperature` above 0 asked for variety and is not cached unless the model
//! says `sampled: true`. The client steers with `Cache-Control` ([`Directives`]).

pub mod fingerprint;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::accounting::Usage;
use crate::chat::{self, Collector, Event, EventSink};
use crate::dialect::Dialect;
use crate::filters::{Filter, FilterError, RequestInfo, StreamFilter};
use crate::providers;

/// What the client's `Cache-Control` header asks of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`: neither read nor write the cache.
    pub no_store: bool,
    /// `no-cache`: ask the vendor (and store its answer) even when a cached one exists.
    pub no_cache: bool,
    /// `max-age=N`: only an answer at most N seconds old will do, and a new one is kept at
    /// most N seconds.
    pub max_age: Option<u64>,
}

impl Directives {
    /// Reads `Cache-Control` values; unknown directives are ignored, as HTTP caches do.
    pub fn parse<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> Directives {
        let mut directives = Directives::default();
        for value in values {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            for directive in value.split(',') {
                let directive = directive.trim();
                let (name, argument) = match directive.split_once('=') {
                    Some((name, argument)) => {
                        (name.trim(), Some(argument.trim().trim_matches('"')))
                    }
                    None => (directive, None),
                };
                if name.eq_ignore_ascii_case("no-store") {
                    directives.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    directives.no_cache = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    if let Some(seconds) = argument.and_then(|a| a.parse().ok()) {
                        directives.max_age = Some(seconds);
                    }
                }
            }
        }
        directives
    }
}

/// An answer as the cache keeps it: in the canonical model, or, when a vendor of the client's
/// own dialect answered in JSON and the answer passed through, as those bytes (stored without
/// decoding, served as they are to a client of that dialect and decoded for any other).
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    Canonical(chat::Response),
    Native {
        dialect: Dialect,
        body: Bytes,
        usage: Option<Usage>,
    },
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAnswer {
    /// When it was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// What the answer cost when the vendor gave it (each hit saves that much).
    pub cost_usd: Option<f64>,
    pub answer: Kept,
}

/// What a hit sends: bytes in the client's dialect, or a canonical answer to encode for it.
#[derive(Debug)]
pub enum Served {
    Bytes { body: Bytes, usage: Option<Usage> },
    Canonical(chat::Response),
}

/// An encoded entry, in two parts: the stored value is `head` then `body`.
#[derive(Debug)]
pub struct Entry {
    pub head: Vec<u8>,
    pub body: Bytes,
}

impl Entry {
    /// Bytes stored.
    pub fn size(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// The stored value, joined.
    #[cfg(test)]
    fn joined(&self) -> Bytes {
        Bytes::from([&self.head[..], &self.body].concat())
    }
}

/// The stored form, after a length-prefixed header: the canonical answer as JSON, or the
/// vendor's bytes in one dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Form {
    Canonical,
    OpenAi,
    Anthropic,
}

/// An entry's header (MessagePack; the answer's bytes follow it as they are).
#[derive(Serialize, Deserialize)]
struct EntryHeader {
    stored_at_ms: u64,
    cost_usd: Option<f64>,
    form: Form,
    usage: Option<Usage>,
}

impl CachedAnswer {
    pub fn new(answer: Kept, cost_usd: Option<f64>) -> Self {
        CachedAnswer {
            stored_at_ms: now_ms(),
            cost_usd,
            answer,
        }
    }

    /// `u32` big-endian header length, the header, then the answer: JSON of the canonical
    /// answer, or the vendor's bytes. `None` for bytes in a dialect the cache cannot decode
    /// again (a [`CacheFill`] never keeps those).
    pub fn encode(&self) -> Option<Entry> {
        let (form, usage) = match &self.answer {
            Kept::Canonical(_) => (Form::Canonical, None),
            Kept::Native { dialect, usage, .. } => match dialect {
                Dialect::OpenAi => (Form::OpenAi, *usage),
                Dialect::Anthropic => (Form::Anthropic, *usage),
                Dialect::Responses | Dialect::Completions => return None,
            },
        };
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(&[0; 4]);
        // MessagePack with field names, not JSON: no escaping and no decimal floats to write
        // on every store or read on every hit. Plain data: encoding into a Vec cannot fail.
        rmp_serde::encode::write_named(
            &mut head,
            &EntryHeader {
                stored_at_ms: self.stored_at_ms,
                cost_usd: self.cost_usd,
                form,
                usage,
            },
        )
        .ok()?;
        let length = u32::try_from(head.len() - 4).ok()?;
        head[..4].copy_from_slice(&length.to_be_bytes());
        let body = match &self.answer {
            Kept::Canonical(response) => {
                serde_json::to_writer(&mut head, response).ok()?;
                Bytes::new()
            }
            // Not copied: the store writes it into its command straight from here.
            Kept::Native { body, .. } => body.clone(),
        };
        Some(Entry { head, body })
    }

    /// `None` for bytes this version did not write (a stale format after an upgrade). A kept
    /// answer's bytes are a slice of `entry`, not a copy.
    pub fn decode(entry: &Bytes) -> Option<CachedAnswer> {
        let length = u32::from_be_bytes(entry.get(..4)?.try_into().ok()?) as usize;
        let end = length.checked_add(4).filter(|&end| end <= entry.len())?;
        let header: EntryHeader = rmp_serde::from_slice(&entry[4..end]).ok()?;
        let payload = entry.slice(end..);
        let native = |dialect| Kept::Native {
            dialect,
            body: payload.clone(),
            usage: header.usage,
        };
        let answer = match header.form {
            Form::Canonical => Kept::Canonical(serde_json::from_slice(&payload).ok()?),
            Form::OpenAi => native(Dialect::OpenAi),
            Form::Anthropic => native(Dialect::Anthropic),
        };
        Some(CachedAnswer {
            stored_at_ms: header.stored_at_ms,
            cost_usd: header.cost_usd,
            answer,
        })
    }

    /// Whole seconds since it was stored.
    pub fn age_s(&self) -> u64 {
        now_ms().saturating_sub(self.stored_at_ms) / 1000
    }

    /// The answer for a client of `dialect`: its kept bytes when they are in that dialect and
    /// the client wants JSON, else the canonical answer (decoded from the kept bytes, as their
    /// vendor's adapter would for a live request). `None` when kept bytes do not decode.
    pub fn serve(self, dialect: Dialect, stream: bool) -> Option<Served> {
        match self.answer {
            Kept::Canonical(response) => Some(Served::Canonical(response)),
            Kept::Native {
                dialect: kept,
                body,
                usage,
            } if kept == dialect && !stream => Some(Served::Bytes { body, usage }),
            Kept::Native {
                dialect: kept,
                body,
                ..
            } => match providers::decode_native_answer(kept, body)? {
                Ok(response) => Some(Served::Canonical(response)),
                Err(e) => {
                    log::debug!("a cached {kept:?} answer does not decode: {e:?}");
                    None
                }
            },
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where [`CacheFill`] leaves the complete answer for the proxy to store (with its cost, known
/// only once the attempt is accounted).
pub type Captured = Arc<Mutex<Option<Kept>>>;

/// Takes what was captured.
pub fn take(captured: &Captured) -> Option<Kept> {
    captured
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// The filter that captures a request's complete answer, JSON or streamed, for the cache. It
/// runs after the request's other filters, so it keeps what the client was sent.
pub struct CacheFill {
    captured: Captured,
}

impl CacheFill {
    pub fn new(captured: Captured) -> Self {
        CacheFill { captured }
    }
}

#[async_trait::async_trait]
impl Filter for CacheFill {
    fn name(&self) -> &str {
        "cache"
    }

    fn reads_answers(&self) -> bool {
        true
    }

    /// Kept as bytes only where a hit in another dialect can decode them.
    fn takes_answer_bytes(&self, info: &RequestInfo) -> bool {
        providers::decodes_native_answers(info.dialect)
    }

    fn on_answer_bytes(&self, info: &RequestInfo, body: &Bytes, usage: Option<Usage>) {
        *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = Some(Kept::Native {
            dialect: info.dialect,
            body: body.clone(),
            usage,
        });
    }

    fn on_response(
        &self,
        _info: &RequestInfo,
        response: &mut chat::Response,
    ) -> Result<(), FilterError> {
        *self.captured.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Kept::Canonical(response.clone()));
        Ok(())
    }

    fn on_stream(&self, _info: &RequestInfo) -> Option<Box<dyn StreamFilter>> {
        Some(Box::new(StreamFill {
            collector: Collector::default(),
            captured: self.captured.clone(),
        }))
    }
}

struct StreamFill {
    collector: Collector,
    captured: Captured,
}

impl StreamFilter for StreamFill {
    fn on_event(&mut self, event: Event<'_>, next: &mut dyn EventSink) -> Result<(), FilterError> {
        self.collector.push(&event);
        if matches!(event, Event::End { .. }) {
            let collected = std::mem::take(&mut self.collector).finish();
            *self.captured.lock().unwrap_or_else(PoisonError::into_inner) =
                collected.map(Kept::Canonical);
        }
        next.emit(event);
        Ok(())
    }
}

/// The TTL of an answer stored now: the model's, shortened by the client's `max-age`.
pub fn ttl(policy_ttl: Duration, directives: Directives) -> Duration {
    match directives.max_age {
        Some(seconds) => policy_ttl.min(Duration::from_secs(seconds)),
        None => policy_ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::StopReason;

    #[test]
    fn cache_control_directives() {
        let parse = |v: &str| Directives::parse([v.as_bytes()]);
        assert_eq!(parse(""), Directives::default());
        assert!(parse("no-store").no_store);
        assert!(parse("No-Cache").no_cache);
        assert_eq!(parse("max-age=60").max_age, Some(60));
        assert_eq!(
            parse("max-age=\"5\", no-cache"),
            Directives {
                no_store: false,
                no_cache: true,
                max_age: Some(5),
            }
        );
        // Nonsense is ignored, not an error.
        assert_eq!(parse("max-age=soon, private"), Directives::default());
        let two = Directives::parse([&b"no-cache"[..], &b"max-age=1"[..]]);
        assert!(two.no_cache && two.max_age == Some(1));
        assert_eq!(
            ttl(Duration::from_secs(300), parse("max-age=10")),
            Duration::from_secs(10)
        );
        assert_eq!(
            ttl(Duration::from_secs(300), parse("max-age=1000")),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn an_answer_round_trips_and_junk_is_no_answer() {
        let answer = CachedAnswer::new(
            Kept::Canonical(chat::Response {
                id: "x".into(),
                model: "m".into(),
                choices: vec![chat::Choice {
                    content: Some("hi".into()),
                    finish_reason: StopReason::MaxTokens,
                    ..chat::Choice::default()
                }],
                ..chat::Response::default()
            }),
            Some(0.25),
        );
        let entry = answer.encode().unwrap().joined();
        assert_eq!(CachedAnswer::decode(&entry), Some(answer.clone()));
        assert!(answer.age_s() < 2);
        // What an earlier version wrote (a JSON object), and broken entries, are no answer.
        for junk in [
            &b"{\"v\":2}"[..],
            b"",
            b"\0\0\0",
            b"\0\0\0\x09{\"a\":1}",
            &entry[..entry.len() - 1],
        ] {
            assert_eq!(CachedAnswer::decode(&Bytes::copy_from_slice(junk)), None);
        }
    }

    /// An OpenAI answer as a vendor sent it (`finish_reason` `length`: the canonical model
    /// says `MaxTokens`, so decoding is visible).
    const OPENAI_ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9},"vendor_extra":{"kept":true}}"#;

    #[test]
    fn a_native_answer_is_kept_as_its_bytes_and_decoded_only_for_another_dialect() {
        let usage = Usage {
            prompt_tokens: 7,
            completion_tokens: 2,
            ..Usage::default()
        };
        let answer = CachedAnswer {
            stored_at_ms: 1_700_000_000_000,
            cost_usd: Some(0.5),
            answer: Kept::Native {
                dialect: Dialect::OpenAi,
                body: Bytes::from_static(OPENAI_ANSWER.as_bytes()),
                usage: Some(usage),
            },
        };
        let entry = answer.encode().unwrap().joined();
        // Golden: the header (a MessagePack map of four: stored_at_ms as a u64, cost_usd as an
        // f64, form, usage), then the vendor's bytes unescaped.
        let header: &[u8] = b"\x84\xacstored_at_ms\xcf\0\0\x01\x8b\xcf\xe5h\0\
            \xa8cost_usd\xcb?\xe0\0\0\0\0\0\0\xa4form\xa7open_ai\
            \xa5usage\x85\xadprompt_tokens\x07\xb1completion_tokens\x02\xadcached_tokens\0\
            \xb0reasoning_tokens\0\xb2cache_write_tokens\0";
        let mut golden = (header.len() as u32).to_be_bytes().to_vec();
        golden.extend_from_slice(header);
        golden.extend_from_slice(OPENAI_ANSWER.as_bytes());
        assert_eq!(entry, golden);
        let decoded = CachedAnswer::decode(&entry).unwrap();
        assert_eq!(decoded, answer);

        // A JSON client of the same dialect gets the bytes (unknown fields and all).
        match decoded.clone().serve(Dialect::OpenAi, false).unwrap() {
            Served::Bytes { body, usage: u } => {
                assert_eq!(body, OPENAI_ANSWER.as_bytes());
                assert_eq!(u, Some(usage));
            }
            other => panic!("expected the kept bytes, got {other:?}"),
        }
        // A streaming client of that dialect, and any other dialect, get the decoded answer.
        for (dialect, stream) in [
            (Dialect::OpenAi, true),
            (Dialect::Anthropic, false),
            (Dialect::Responses, false),
        ] {
            match decoded.clone().serve(dialect, stream).unwrap() {
                Served::Canonical(response) => {
                    assert_eq!(response.choices[0].content.as_deref(), Some("Hi there"));
                    assert_eq!(response.choices[0].finish_reason, StopReason::MaxTokens);
                    assert_eq!(response.usage.prompt_tokens, 7);
                }
                other => panic!("expected a decoded answer for {dialect:?}, got {other:?}"),
            }
        }
        // Kept bytes that do not decode are no answer for another dialect.
        let broken = CachedAnswer {
            answer: Kept::Native {
                dialect: Dialect::Anthropic,
                body: Bytes::from_static(b"<html>not a message</html>"),
                usage: None,
            },
            ..answer
        };
        assert!(broken.clone().serve(Dialect::OpenAi, false).is_none());
        // Bytes in a dialect without a decoder are not kept at all.
        let responses = CachedAnswer {
            answer: Kept::Native {
                dialect: Dialect::Responses,
                body: Bytes::from_static(b"{}"),
                usage: None,
            },
            ..broken
        };
        assert!(responses.encode().is_none());
    }

    #[test]
    fn the_fill_keeps_bytes_only_in_dialects_it_can_decode() {
        let captured = Captured::default();
        let fill = CacheFill::new(captured.clone());
        let info = |dialect| RequestInfo {
            request_id: "r".into(),
            key: None,
            dialect,
            headers: http::HeaderMap::new(),
            metadata: serde_json::Map::new(),
        };
        assert!(fill.takes_answer_bytes(&info(Dialect::OpenAi)));
        assert!(fill.takes_answer_bytes(&info(Dialect::Anthropic)));
        assert!(!fill.takes_answer_bytes(&info(Dialect::Responses)));
        assert!(!fill.takes_answer_bytes(&info(Dialect::Completions)));
        let body = Bytes::from_static(b"{}");
        fill.on_answer_bytes(&info(Dialect::Anthropic), &body, None);
        assert_eq!(
            take(&captured),
            Some(Kept::Native {
                dialect: Dialect::Anthropic,
                body,
                usage: None
            })
        );
    }

    #[test]
    fn the_fill_captures_only_a_complete_stream() {
        struct Sink(usize);
        impl EventSink for Sink {
            fn emit(&mut self, _event: Event<'_>) {
                self.0 += 1;
            }
        }
        let captured = Captured::default();
        let fill = CacheFill::new(captured.clone());
        let info = RequestInfo {
            request_id: "r".into(),
            key: None,
            dialect: crate::dialect::Dialect::OpenAi,
            headers: http::HeaderMap::new(),
            metadata: serde_json::Map::new(),
        };
        let mut stream = fill.on_stream(&info).unwrap();
        let mut sink = Sink(0);
        stream
            .on_event(Event::Start { choice: 0 }, &mut sink)
            .unwrap();
        stream
            .on_event(
                Event::Text {
                    choice: 0,
                    text: "a",
                },
                &mut sink,
            )
            .unwrap();
        // Broken off before its end: nothing to keep.
        assert_eq!(take(&captured), None);
        stream
            .on_event(
                Event::Finish {
                    choice: 0,
                    reason: StopReason::EndTurn,
                },
                &mut sink,
            )
            .unwrap();
        stream
            .on_event(Event::End { usage: None }, &mut sink)
            .unwrap();
        assert_eq!(sink.0, 4, "every event passed on");
        let Some(Kept::Canonical(kept)) = take(&captured) else {
            panic!("a stream is kept in the canonical model");
        };
        assert_eq!(kept.choices[0].content.as_deref(), Some("a"));
    }
}
