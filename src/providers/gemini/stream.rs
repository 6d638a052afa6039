//! Gemini streams (`streamGenerateContent?alt=sse`) → canonical events. Gemini has no closing
//! event: a stream is whole once every candidate has a `finishReason` and the body ends.

use super::errors::decode_gemini_error;
use super::response::{finish_reason, ResponseWire, UsageWire};
use super::*;
use crate::accounting::Usage;
use crate::chat::{Event, EventSink, StopReason};
use crate::providers::sse::SseEvent;
use crate::providers::stream::SseHandler;

/// Per-candidate stream state.
#[derive(Default, Clone)]
struct CandidateState {
    started: bool,
    /// Tool calls written so far: the next call's dense index.
    tools: u32,
    /// The last `finishReason` seen; old models send one on every chunk.
    finish: Option<String>,
}

#[derive(Default)]
pub struct GeminiStreamDecoder {
    candidates: Vec<CandidateState>,
    usage: Option<UsageWire>,
    blocked: bool,
    identified: bool,
}

impl<'s> SseHandler<dyn EventSink + 's> for GeminiStreamDecoder {
    fn event(
        &mut self,
        event: SseEvent,
        sink: &mut (dyn EventSink + 's),
    ) -> Result<(), StreamFailure> {
        self.handle(event, sink)
    }

    fn end(&mut self, sink: &mut (dyn EventSink + 's)) -> Result<(), StreamFailure> {
        if self.blocked && self.candidates.is_empty() {
            sink.emit(Event::Start { choice: 0 });
            sink.emit(Event::Finish {
                choice: 0,
                reason: StopReason::ContentFilter,
            });
        } else {
            // Gemini has no closing event: a finishReason is the only sign the answer is whole.
            if self.candidates.is_empty() || self.candidates.iter().any(|c| c.finish.is_none()) {
                return Err(StreamFailure::Truncated);
            }
            for (i, c) in self.candidates.iter().enumerate() {
                sink.emit(Event::Finish {
                    choice: i as u32,
                    reason: finish_reason(c.finish.as_deref(), c.tools > 0),
                });
            }
        }
        let usage = self.usage();
        sink.emit(Event::End {
            usage: usage.as_ref(),
        });
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(UsageWire::to_usage)
    }
}

impl GeminiStreamDecoder {
    fn handle(&mut self, event: SseEvent, sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let response: ResponseWire = serde_json::from_str(data).map_err(|e| {
            StreamFailure::Malformed(format!("chunk is not a Gemini response: {e}"))
        })?;
        if response.error.is_some() {
            return Err(StreamFailure::Upstream(Box::new(decode_gemini_error(
                None,
                200,
                data.as_bytes(),
                None,
            ))));
        }
        if !self.identified {
            self.identified = true;
            sink.emit(Event::Identity {
                id: response.response_id.as_deref(),
                model: Some(response.model_version.as_deref().unwrap_or("gemini")),
            });
        }
        if let Some(u) = response.usage_metadata {
            // Usage may repeat on several chunks: the last one is the total.
            self.usage = Some(u);
        }
        if response.candidates.is_empty() && response.prompt_feedback.is_some_and(|f| f.blocked()) {
            self.blocked = true;
        }
        for candidate in response.candidates {
            let index = candidate.index.unwrap_or(0);
            let slot = index as usize;
            if slot >= MAX_CANDIDATES {
                return Err(StreamFailure::Malformed(format!(
                    "candidate index {index} is out of range"
                )));
            }
            if self.candidates.len() <= slot {
                self.candidates.resize(slot + 1, CandidateState::default());
            }
            if !self.candidates[slot].started {
                self.candidates[slot].started = true;
                sink.emit(Event::Start { choice: index });
            }
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    let tool_index = self.candidates[slot].tools;
                    self.candidates[slot].tools += 1;
                    let id = synthesize_call_id(part.thought_signature.as_deref());
                    let args = call
                        .args
                        .map_or_else(|| "{}".to_string(), |a| a.to_string());
                    sink.emit(Event::ToolCallStart {
                        choice: index,
                        index: tool_index,
                        id: &id,
                        name: &call.name,
                        arguments: &args,
                    });
                } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                    sink.emit(if part.thought {
                        Event::Reasoning {
                            choice: index,
                            text: &text,
                        }
                    } else {
                        Event::Text {
                            choice: index,
                            text: &text,
                        }
                    });
                }
            }
            if let Some(reason) = candidate.finish_reason {
                self.candidates[slot].finish = Some(reason);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn golden_text_stream_in_any_pieces() {
        for piece in [1, 7, 4096] {
            let (r, out, usage) = stream(fixture!("stream_text.gemini.sse"), true, piece);
            r.unwrap();
            assert_eq!(out, fixture!("stream_text.openai.sse"), "piece {piece}");
            assert_eq!(usage.unwrap().total(), 47);
        }
    }

    #[test]
    fn golden_function_call_stream_in_any_pieces() {
        for piece in [1, 7, 4096] {
            let (r, out, _) = stream(fixture!("stream_function_call.gemini.sse"), true, piece);
            r.unwrap();
            assert_eq!(
                out,
                fixture!("stream_function_call.openai.sse"),
                "piece {piece}"
            );
        }
    }

    // ---- request-side tricky cases (docs/translation.md §6) ----

    #[test]
    fn case35_crlf_split_reads_and_blank_events() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hé\"}]}}]}\r\n\r\n\r\n: keep-alive\r\n\r\ndata: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"llo\"}]}, \"finishReason\": \"STOP\"}]}\r\n\r\n";
        let outputs: Vec<String> = [1, 2, 7, 4096]
            .into_iter()
            .map(|piece| {
                let (r, out, _) = stream(input, false, piece);
                r.unwrap();
                out
            })
            .collect();
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        let text: String = chunks(&outputs[0])
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, "Héllo");
    }

    #[test]
    fn case37_function_call_then_a_separate_stop_chunk_is_tool_calls() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\", \"args\": {\"a\": 1}}}]}}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\", \"args\": {\"a\": 2}}}]}}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}]}, \"finishReason\": \"STOP\"}]}\n\n";
        let (r, out, _) = stream(input, false, 4096);
        r.unwrap();
        let events = chunks(&out);
        let calls: Vec<&Value> = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(
            calls.iter().map(|c| c["index"].clone()).collect::<Vec<_>>(),
            vec![json!(0), json!(1)]
        );
        // Unique ids, compared before normalising.
        let mut d = client_stream_openai(StreamSettings {
            include_usage: false,
            price: None,
        });
        let mut raw = Vec::new();
        d.push(input.as_bytes(), &mut raw).unwrap();
        let ids: Vec<String> = chunks(std::str::from_utf8(&raw).unwrap())
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["id"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(
            events.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert!(out.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn case38_usage_counts_thoughts_as_completion_and_keeps_the_last_report() {
        let v = decode_as_openai(
            r#"{"candidates": [{"content": {"parts": [{"text": "hm", "thought": true}, {"text": "ok"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                                  "cachedContentTokenCount": 60, "totalTokenCount": 150}}"#,
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                   "prompt_tokens_details": {"cached_tokens": 60},
                   "completion_tokens_details": {"reasoning_tokens": 30}})
        );
        assert_eq!(v["choices"][0]["message"]["reasoning_content"], "hm");
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"t\", \"thought\": true}]}}], \"usageMetadata\": {\"promptTokenCount\": 9, \"thoughtsTokenCount\": 3}}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"finishReason\": \"STOP\"}], \"usageMetadata\": {\"promptTokenCount\": 9, \"candidatesTokenCount\": 4, \"thoughtsTokenCount\": 3}}\n\n";
        let (r, out, usage) = stream(input, true, 5);
        r.unwrap();
        let u = usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (9, 7, 3)
        );
        let events = chunks(&out);
        assert_eq!(events[1]["choices"][0]["delta"]["reasoning_content"], "t");
        assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 7);
    }

    #[test]
    fn case40_repeated_finish_reason_does_not_end_the_stream_early() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"finishReason\": \"STOP\"}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"b\"}]}, \"finishReason\": \"STOP\"}]}\n\n\
                     data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"c\"}]}, \"finishReason\": \"MAX_TOKENS\"}]}\n\n";
        let (r, out, _) = stream(input, false, 3);
        r.unwrap();
        let events = chunks(&out);
        let text: String = events
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "abc");
        let finishes: Vec<&Value> = events
            .iter()
            .map(|e| &e["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, vec![&json!("length")]);
    }

    #[test]
    fn stream_cut_before_any_finish_reason_fails() {
        let first_event = fixture!("stream_text.gemini.sse")
            .split("\r\n\r\n")
            .next()
            .unwrap();
        assert!(matches!(
            stream(&format!("{first_event}\r\n\r\n"), false, 5).0,
            Err(StreamFailure::Truncated)
        ));
        assert!(matches!(
            stream("", false, 5).0,
            Err(StreamFailure::Truncated)
        ));
    }

    #[test]
    fn error_event_mid_stream_fails_with_the_mapped_error() {
        let input = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"index\": 0}]}\n\ndata: {\"error\": {\"code\": 429, \"message\": \"Resource has been exhausted\", \"status\": \"RESOURCE_EXHAUSTED\", \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"7s\"}]}}\n\n";
        match stream(input, false, 8).0 {
            Err(StreamFailure::Upstream(e)) => {
                assert_eq!(
                    (e.status(), e.openai_type(), e.retry_after()),
                    (429, "rate_limit_error", Some("7"))
                );
                // The caller adds the provider's name.
                assert_eq!(e.to_string(), "Resource has been exhausted");
            }
            other => panic!("{other:?}"),
        }
        // Without a code, the gRPC status decides; unknown ones are server errors.
        for (error, status) in [
            (r#"{"status": "UNAVAILABLE", "message": "m"}"#, 503),
            (r#"{"status": "INVALID_ARGUMENT", "message": "m"}"#, 400),
            (r#"{"status": "DEADLINE_EXCEEDED"}"#, 504),
            (r#"{"message": "m"}"#, 500),
        ] {
            match stream(&format!("data: {{\"error\": {error}}}\n\n"), false, 4096).0 {
                Err(StreamFailure::Upstream(e)) => assert_eq!(e.status(), status, "{error}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
