//! Anthropic streams: translated into canonical events for other dialects (docs/translation.md
//! §5.3), or relayed event for event to Anthropic clients.

use serde::Deserialize;

use super::errors::decode_anthropic_error;
use super::response::{finish_reason, UsageWire};
use super::JSON_TOOL;
use crate::accounting::{with_usage_cost, Usage};
use crate::chat::{Event, EventSink, StopReason};
use crate::config::Price;
use crate::providers::sse::SseEvent;
use crate::providers::stream::SseHandler;
use crate::providers::StreamFailure;

/// What the stream decoder knows about each content block, by Anthropic's block index.
#[derive(Clone)]
enum OpenBlock {
    Text,
    Thinking,
    /// A tool call with its dense OpenAI tool index, and whether any argument text was sent.
    Tool(u32, bool),
    /// The `response_format` tool: its input is streamed as content.
    JsonAnswer,
    Other,
}

#[derive(Default)]
pub struct AnthropicStreamDecoder {
    blocks: Vec<OpenBlock>,
    next_tool: u32,
    saw_tool: bool,
    finish: Option<StopReason>,
    usage: Usage,
    /// Cumulative usage as Anthropic reports it, merged event by event.
    wire: UsageWire,
    saw_usage: bool,
    stopped: bool,
}

/// The parts of a stream event the decoder reads.
#[derive(Deserialize)]
struct EventWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    message: Option<StartMessageWire>,
    #[serde(default)]
    content_block: Option<BlockStartWire>,
    #[serde(default)]
    delta: Option<DeltaWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct StartMessageWire {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
struct BlockStartWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct DeltaWire {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

impl<'s> SseHandler<dyn EventSink + 's> for AnthropicStreamDecoder {
    fn event(
        &mut self,
        event: SseEvent,
        sink: &mut (dyn EventSink + 's),
    ) -> Result<(), StreamFailure> {
        self.handle(event, sink)
    }

    /// Anthropic closes every stream with `message_stop`; without it the answer was cut.
    fn end(&mut self, _sink: &mut (dyn EventSink + 's)) -> Result<(), StreamFailure> {
        if self.stopped {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then_some(self.usage)
    }
}

impl AnthropicStreamDecoder {
    fn handle(&mut self, event: SseEvent, sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        if self.stopped {
            return Ok(());
        }
        if event.event.as_deref() == Some("ping") || event.data.trim().is_empty() {
            return Ok(());
        }
        let in_stream_error = || {
            StreamFailure::Upstream(Box::new(decode_anthropic_error(
                None,
                200,
                event.data.as_bytes(),
                None,
            )))
        };
        let ev: EventWire = match serde_json::from_str(&event.data) {
            Ok(ev) => ev,
            Err(_) if event.event.as_deref() == Some("error") => return Err(in_stream_error()),
            Err(e) => return Err(StreamFailure::Malformed(format!("event is not JSON: {e}"))),
        };
        if ev.kind == "error" {
            return Err(in_stream_error());
        }
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = ev.message {
                    sink.emit(Event::Identity {
                        id: m.id.as_deref(),
                        model: m.model.as_deref(),
                    });
                    if let Some(u) = m.usage {
                        u.merge_into(&mut self.wire);
                        self.saw_usage = true;
                    }
                }
                sink.emit(Event::Start { choice: 0 });
            }
            "content_block_start" => {
                let index = ev.index.unwrap_or(self.blocks.len());
                let block = match ev.content_block {
                    Some(b) if b.kind == "tool_use" && b.name.as_deref() == Some(JSON_TOOL) => {
                        OpenBlock::JsonAnswer
                    }
                    Some(b) if b.kind == "tool_use" => {
                        let tool_index = self.next_tool;
                        self.next_tool += 1;
                        self.saw_tool = true;
                        sink.emit(Event::ToolCallStart {
                            choice: 0,
                            index: tool_index,
                            id: b.id.as_deref().unwrap_or(""),
                            name: b.name.as_deref().unwrap_or(""),
                            arguments: "",
                        });
                        OpenBlock::Tool(tool_index, false)
                    }
                    Some(b) if b.kind == "text" => {
                        if let Some(t) = b.text.filter(|t| !t.is_empty()) {
                            sink.emit(Event::Text {
                                choice: 0,
                                text: &t,
                            });
                        }
                        OpenBlock::Text
                    }
                    Some(b) if b.kind == "thinking" => OpenBlock::Thinking,
                    _ => OpenBlock::Other,
                };
                if self.blocks.len() <= index {
                    self.blocks.resize(index + 1, OpenBlock::Other);
                }
                self.blocks[index] = block;
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else { return Ok(()) };
                let block = ev
                    .index
                    .and_then(|i| self.blocks.get(i))
                    .cloned()
                    .unwrap_or(OpenBlock::Other);
                match (delta.kind.as_deref(), block) {
                    (Some("text_delta"), _) => {
                        if let Some(t) = delta.text.filter(|t| !t.is_empty()) {
                            sink.emit(Event::Text {
                                choice: 0,
                                text: &t,
                            });
                        }
                    }
                    (Some("thinking_delta"), _) => {
                        if let Some(t) = delta.thinking.filter(|t| !t.is_empty()) {
                            sink.emit(Event::Reasoning {
                                choice: 0,
                                text: &t,
                            });
                        }
                    }
                    (Some("signature_delta"), _) => {
                        if let Some(s) = delta.signature.filter(|s| !s.is_empty()) {
                            sink.emit(Event::ReasoningSignature {
                                choice: 0,
                                signature: &s,
                            });
                        }
                    }
                    (Some("input_json_delta"), OpenBlock::Tool(tool_index, _)) => {
                        if let Some(j) = delta.partial_json.filter(|j| !j.is_empty()) {
                            sink.emit(Event::ToolCallArguments {
                                choice: 0,
                                index: tool_index,
                                fragment: &j,
                            });
                            if let Some(i) = ev.index {
                                self.blocks[i] = OpenBlock::Tool(tool_index, true);
                            }
                        }
                    }
                    (Some("input_json_delta"), OpenBlock::JsonAnswer) => {
                        if let Some(j) = delta.partial_json.filter(|j| !j.is_empty()) {
                            sink.emit(Event::Text {
                                choice: 0,
                                text: &j,
                            });
                        }
                    }
                    // citations_delta and future kinds carry nothing canonical.
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A tool called without arguments streams none; clients parse the arguments
                // they accumulated, and "" is not JSON.
                if let Some(OpenBlock::Tool(tool_index, false)) =
                    ev.index.and_then(|i| self.blocks.get(i))
                {
                    sink.emit(Event::ToolCallArguments {
                        choice: 0,
                        index: *tool_index,
                        fragment: "{}",
                    });
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    u.merge_into(&mut self.wire);
                    self.saw_usage = true;
                }
                let stop = ev.delta.and_then(|d| d.stop_reason);
                self.finish = Some(match stop.as_deref() {
                    // The JSON-answer tool was the only "tool": the answer is plain content.
                    Some("tool_use") if !self.saw_tool => StopReason::EndTurn,
                    other => finish_reason(other, self.saw_tool),
                });
            }
            "message_stop" => {
                self.stopped = true;
                self.usage = self.wire.to_usage();
                sink.emit(Event::Finish {
                    choice: 0,
                    reason: self.finish.unwrap_or(if self.saw_tool {
                        StopReason::ToolUse
                    } else {
                        StopReason::EndTurn
                    }),
                });
                sink.emit(Event::End {
                    usage: Some(&self.usage),
                });
            }
            // ping and event types added later carry nothing to translate.
            _ => {}
        }
        if self.saw_usage {
            self.usage = self.wire.to_usage();
        }
        Ok(())
    }
}

/// An Anthropic stream for an Anthropic client: every event goes on as Anthropic framed it,
/// while usage, the closing `message_stop` and in-stream errors are watched. An error event is
/// not forwarded but reported, so that it can still fail over before the first byte, or end the
/// stream with the gateway's own error event (which names the provider) after it.
#[derive(Default)]
pub struct AnthropicPassthrough {
    /// The answering target's price: `message_delta.usage` gets the cost.
    price: Option<Price>,
    wire: UsageWire,
    saw_usage: bool,
    stopped: bool,
}

/// What the relay reads of each event.
#[derive(Deserialize)]
struct RelayEventWire {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<StartMessageWire>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

impl AnthropicPassthrough {
    pub fn new(price: Option<Price>) -> Self {
        AnthropicPassthrough {
            price,
            ..AnthropicPassthrough::default()
        }
    }
}

impl SseHandler<Vec<u8>> for AnthropicPassthrough {
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        let name = event.event.as_deref();
        let error = || {
            StreamFailure::Upstream(Box::new(decode_anthropic_error(
                None,
                200,
                event.data.as_bytes(),
                None,
            )))
        };
        if name == Some("error") {
            return Err(error());
        }
        let mut priced = None;
        if let Ok(ev) = serde_json::from_str::<RelayEventWire>(&event.data) {
            let delta = ev.kind == "message_delta";
            let usage = match ev.kind.as_str() {
                "error" => return Err(error()),
                "message_start" => ev.message.and_then(|m| m.usage),
                "message_delta" => ev.usage,
                "message_stop" => {
                    self.stopped = true;
                    None
                }
                _ => None,
            };
            if let Some(u) = usage {
                u.merge_into(&mut self.wire);
                self.saw_usage = true;
            }
            if let (true, Some(price)) = (delta, &self.price) {
                let cost = self.wire.to_usage().cost(price);
                priced = with_usage_cost(event.data.as_bytes(), cost);
            }
        }
        if let Some(name) = name {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(priced.as_deref().unwrap_or(event.data.as_bytes()));
        out.extend_from_slice(b"\n\n");
        Ok(())
    }

    /// Anthropic closes every stream with `message_stop`; without it the answer was cut.
    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.stopped {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then(|| self.wire.to_usage())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use serde_json::Value;

    #[test]
    fn golden_streams_whatever_the_read_boundaries() {
        for (input, expected) in [
            (
                fixture!("stream_text.anthropic.sse"),
                fixture!("stream_text.openai.sse"),
            ),
            (
                fixture!("stream_tools.anthropic.sse"),
                fixture!("stream_tools.openai.sse"),
            ),
        ] {
            for piece in [1, 7, 64, 100_000] {
                let (r, out, _) = stream(input, true, piece);
                r.unwrap();
                assert_eq!(out, expected, "piece size {piece}");
            }
            let crlf = input.replace('\n', "\r\n");
            assert_eq!(stream(&crlf, true, 5).1, expected, "CRLF framing");
        }
    }

    #[test]
    fn stream_usage_takes_the_cumulative_message_delta_values() {
        // message_start says 0 input tokens; message_delta has the real figure (rig#2236).
        let (_, _, usage) = stream(fixture!("stream_tools.anthropic.sse"), false, 50);
        let u = usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (472, 89));
    }

    #[test]
    fn stream_without_message_stop_is_truncated() {
        let full = fixture!("stream_text.anthropic.sse");
        let cut = &full[..full.find("event: message_stop").unwrap()];
        assert!(matches!(
            stream(cut, true, 9).0,
            Err(StreamFailure::Truncated)
        ));
    }

    #[test]
    fn error_event_after_200_fails_the_stream_with_overloaded() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\nevent: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        match stream(input, false, 11).0 {
            Err(StreamFailure::Upstream(e)) => {
                assert_eq!(e.status(), 503);
                assert_eq!(e.to_string(), "Overloaded");
                assert_eq!(e.openai_code(), Some("overloaded"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tool_without_arguments_streams_an_empty_object() {
        let s = "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
                 data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"now\",\"input\":{}}}\n\n\
                 data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
                 data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
                 data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\n\
                 data: {\"type\":\"message_stop\"}\n\n";
        let (r, out, _) = stream(s, false, 10);
        r.unwrap();
        let args: String = out
            .split("\n\n")
            .filter(|e| e.starts_with("data: {"))
            .filter_map(|e| serde_json::from_str::<Value>(&e[6..]).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(args, "{}");
    }

    fn relay(input: &str, piece: usize) -> (Result<(), StreamFailure>, String, Option<Usage>) {
        use crate::providers::StreamDecoder;
        let mut d = crate::providers::stream::SseFrame::new(AnthropicPassthrough::default());
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(piece) {
            if let Err(e) = d.push(c, &mut out) {
                return (Err(e), String::from_utf8(out).unwrap(), d.usage());
            }
        }
        let r = d.finish(&mut out);
        (r, String::from_utf8(out).unwrap(), d.usage())
    }

    #[test]
    fn anthropic_clients_get_the_stream_event_for_event() {
        for fixture in [
            fixture!("stream_text.anthropic.sse"),
            fixture!("stream_tools.anthropic.sse"),
        ] {
            for piece in [1, 7, 64, 100_000] {
                let (r, out, usage) = relay(fixture, piece);
                r.unwrap();
                // Anthropic frames every event as `event: NAME\ndata: JSON\n\n`; so does the relay.
                assert_eq!(out, fixture.replace("\r\n", "\n"), "in pieces of {piece}");
                assert!(usage.is_some_and(|u| u.completion_tokens > 0));
            }
        }
    }

    #[test]
    fn relay_reports_errors_and_cuts_instead_of_forwarding_them() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (r, out, _) = relay(&format!("{start}{error}"), 9);
        match r {
            Err(StreamFailure::Upstream(e)) => assert_eq!(e.status(), 503),
            other => panic!("{other:?}"),
        }
        assert_eq!(out, start, "the error event itself is not forwarded");
        let (r, out, usage) = relay(start, 9);
        assert!(matches!(r, Err(StreamFailure::Truncated)));
        assert_eq!(out, start);
        assert_eq!(usage.map(|u| u.prompt_tokens), Some(3));
    }
}
