//! The exact-match answer cache: an answer served again, at once and for nothing, to a request
//! identical to one answered before.
//!
//! A model opts in with `models.NAME.cache`. Its requests are keyed by
//! [`fingerprint::key`] (the canonical request, so the dialect a request came in does not
//! matter), per client key unless the model's `scope` is `shared`. Answers are kept in the
//! state backend (`store::ANSWERS`: in the process, least recently used first out past
//! `state.cache_max_mib`, or in Redis shared by every instance) as canonical answers, and are
//! replayed in whatever dialect, whole or streamed, the next client asks for.
//!
//! Only complete answers are stored: a JSON answer the vendor gave in full, or a stream that
//! reached its end with every choice finished ([`CacheFill`] collects it as it passes). A
//! request with a `temperature` above 0 asked for variety and is not cached unless the model
//! says `sampled: true`. The client steers with `Cache-Control` ([`Directives`]).

pub mod fingerprint;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chat::{self, Collector, Event, EventSink};
use crate::filters::{Filter, FilterError, RequestInfo, StreamFilter};

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

/// An answer as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// When it was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// What the answer cost when the vendor gave it (each hit saves that much).
    pub cost_usd: Option<f64>,
    pub response: chat::Response,
}

impl CachedAnswer {
    pub fn new(response: chat::Response, cost_usd: Option<f64>) -> Self {
        CachedAnswer {
            stored_at_ms: now_ms(),
            cost_usd,
            response,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Plain data: serializing into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for bytes this version did not write (a stale format after an upgrade).
    pub fn decode(bytes: &[u8]) -> Option<CachedAnswer> {
        serde_json::from_slice(bytes).ok()
    }

    /// Whole seconds since it was stored.
    pub fn age_s(&self) -> u64 {
        now_ms().saturating_sub(self.stored_at_ms) / 1000
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
pub type Captured = Arc<Mutex<Option<chat::Response>>>;

/// Takes what was captured.
pub fn take(captured: &Captured) -> Option<chat::Response> {
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

    fn on_response(
        &self,
        _info: &RequestInfo,
        response: &mut chat::Response,
    ) -> Result<(), FilterError> {
        *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = Some(response.clone());
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
            *self.captured.lock().unwrap_or_else(PoisonError::into_inner) = collected;
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
            chat::Response {
                id: "x".into(),
                model: "m".into(),
                choices: vec![chat::Choice {
                    content: Some("hi".into()),
                    finish_reason: StopReason::MaxTokens,
                    ..chat::Choice::default()
                }],
                ..chat::Response::default()
            },
            Some(0.25),
        );
        assert_eq!(CachedAnswer::decode(&answer.encode()), Some(answer.clone()));
        assert_eq!(CachedAnswer::decode(b"{\"v\":2}"), None);
        assert!(answer.age_s() < 2);
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
        let kept = take(&captured).unwrap();
        assert_eq!(kept.choices[0].content.as_deref(), Some("a"));
    }
}
