//! Bedrock Converse answers → canonical answers: the JSON `output`, the ConverseStream
//! event-stream (`messageStart`, `contentBlockStart/Delta/Stop`, `messageStop`, `metadata`,
//! and exceptions inside the stream), stop reasons, usage and errors.

use serde::Deserialize;
use serde_json::Value;

use super::eventstream::{Decoder, Message};
use crate::accounting::Usage;
use crate::chat::{self, now_unix, Event, EventSink, StopReason, ToolCallOut};
use crate::error::GatewayError;
use crate::providers::convert::upstream_message;
use crate::providers::{openai_error_type, EventDecoder, StreamFailure};

/// The canonical stop reason for a Converse `stopReason` (docs/translation.md §5.8).
pub fn stop_reason(reason: Option<&str>, has_tool_calls: bool) -> StopReason {
    match reason {
        Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
        Some("tool_use") => StopReason::ToolUse,
        Some("guardrail_intervened" | "content_filtered") => StopReason::ContentFilter,
        _ if has_tool_calls => StopReason::ToolUse,
        Some("stop_sequence") => StopReason::StopSequence,
        _ => StopReason::EndTurn,
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageWire {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl UsageWire {
    /// Bedrock's input excludes cached tokens, like Anthropic's (docs/translation.md §5.9).
    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.input_tokens
                + self.cache_read_input_tokens
                + self.cache_write_input_tokens,
            completion_tokens: self.output_tokens,
            cached_tokens: self.cache_read_input_tokens,
            reasoning_tokens: 0,
            cache_write_tokens: self.cache_write_input_tokens,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseWire {
    output: OutputWire,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: UsageWire,
}

#[derive(Deserialize)]
struct OutputWire {
    message: MessageWire,
}

#[derive(Deserialize)]
struct MessageWire {
    #[serde(default)]
    content: Vec<BlockWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockWire {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseWire>,
    #[serde(default)]
    reasoning_content: Option<ReasoningWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseWire {
    #[serde(default)]
    tool_use_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReasoningWire {
    #[serde(default)]
    reasoning_text: Option<ReasoningTextWire>,
}

#[derive(Deserialize)]
struct ReasoningTextWire {
    #[serde(default)]
    text: String,
    #[serde(default)]
    signature: Option<String>,
}

/// A Converse answer as a canonical answer.
pub fn decode(body: &[u8], model: &str) -> Result<chat::Response, StreamFailure> {
    let wire: ConverseWire = serde_json::from_slice(body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not a Converse answer: {e}")))?;
    let mut choice = chat::Choice::default();
    let mut text = String::new();
    let mut reasoning = String::new();
    for block in wire.output.message.content {
        if let Some(t) = block.text {
            text.push_str(&t);
        }
        if let Some(call) = block.tool_use {
            choice.tool_calls.push(ToolCallOut {
                id: call.tool_use_id,
                name: call.name,
                arguments: match call.input {
                    Value::Null => "{}".to_string(),
                    v => v.to_string(),
                },
            });
        }
        if let Some(r) = block.reasoning_content.and_then(|r| r.reasoning_text) {
            reasoning.push_str(&r.text);
            choice.reasoning_signature = r.signature.or(choice.reasoning_signature);
        }
    }
    choice.finish_reason = stop_reason(wire.stop_reason.as_deref(), !choice.tool_calls.is_empty());
    choice.content = (!text.is_empty() || choice.tool_calls.is_empty()).then_some(text);
    choice.reasoning = (!reasoning.is_empty()).then_some(reasoning);
    Ok(chat::Response {
        id: format!("bedrock-{:016x}", fastrand::u64(..)),
        created: now_unix(),
        model: model.to_string(),
        choices: vec![choice],
        usage: wire.usage.to_usage(),
    })
}

#[derive(Deserialize)]
struct ErrorWire {
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

/// Maps a Bedrock error (an HTTP body, or an exception inside a stream, `exception` naming its
/// type) to the client's error (docs/translation.md §5.10).
pub fn decode_error(
    provider: Option<&str>,
    status: u16,
    exception: Option<&str>,
    body: &[u8],
    retry_after: Option<String>,
) -> GatewayError {
    let message = serde_json::from_slice::<ErrorWire>(body)
        .ok()
        .and_then(|e| e.message)
        .or_else(|| {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string();
            (!text.is_empty()).then_some(text)
        });
    let kind = exception.map(|e| e.trim_end_matches("Exception").to_ascii_lowercase());
    let status = match (status, kind.as_deref()) {
        // An unknown or bad key is the gateway's credentials: fail over like a 401.
        (_, Some("unrecognizedclient" | "invalidsignature" | "expiredtoken")) => 401,
        (_, Some("accessdenied")) => 403,
        (_, Some("throttling")) => 429,
        (_, Some("validation")) => 400,
        (_, Some("resourcenotfound")) => 404,
        (_, Some("serviceunavailable" | "modelnotready")) => 503,
        (_, Some("modeltimeout")) => 504,
        (_, Some("internalserver" | "modelstreamerror" | "modelerror")) => 502,
        (200, _) => 500,
        (424, _) => 502,
        (408, _) => 504,
        (s, _) => s,
    };
    GatewayError::Upstream {
        status,
        message: upstream_message(provider, status, message),
        kind: openai_error_type(status).to_string(),
        code: exception.map(str::to_string),
        param: None,
        retry_after,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamEventWire {
    #[serde(default)]
    content_block_index: Option<usize>,
    #[serde(default)]
    start: Option<StartWire>,
    #[serde(default)]
    delta: Option<DeltaWire>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<UsageWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartWire {
    #[serde(default)]
    tool_use: Option<ToolStartWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolStartWire {
    #[serde(default)]
    tool_use_id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaWire {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolDeltaWire>,
    #[serde(default)]
    reasoning_content: Option<ReasoningDeltaWire>,
}

#[derive(Deserialize)]
struct ToolDeltaWire {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
struct ReasoningDeltaWire {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

/// ConverseStream's event stream as canonical events.
#[derive(Default)]
pub struct StreamDecoder {
    frames: Decoder,
    messages: Vec<Message>,
    started: bool,
    /// Dense tool index by Bedrock content block index.
    tools: Vec<(usize, u32)>,
    stop: Option<String>,
    usage: Option<UsageWire>,
    stopped: bool,
    ended: bool,
}

impl StreamDecoder {
    fn handle(&mut self, message: Message, sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        if message.header(":message-type") == Some("exception")
            || message.header(":message-type") == Some("error")
        {
            let exception = message
                .header(":exception-type")
                .or(message.header(":error-code"));
            return Err(StreamFailure::Upstream(Box::new(decode_error(
                None,
                200,
                exception,
                &message.payload,
                None,
            ))));
        }
        let event_type = message.header(":event-type").unwrap_or("");
        let ev: StreamEventWire = serde_json::from_slice(&message.payload)
            .map_err(|e| StreamFailure::Malformed(format!("event is not JSON: {e}")))?;
        if !self.started {
            self.started = true;
            sink.emit(Event::Start { choice: 0 });
        }
        match event_type {
            "contentBlockStart" => {
                if let (Some(index), Some(call)) =
                    (ev.content_block_index, ev.start.and_then(|s| s.tool_use))
                {
                    let dense = self.tools.len() as u32;
                    self.tools.push((index, dense));
                    sink.emit(Event::ToolCallStart {
                        choice: 0,
                        index: dense,
                        id: &call.tool_use_id,
                        name: &call.name,
                        arguments: "",
                    });
                }
            }
            "contentBlockDelta" => {
                let Some(delta) = ev.delta else {
                    return Ok(());
                };
                if let Some(t) = delta.text.filter(|t| !t.is_empty()) {
                    sink.emit(Event::Text {
                        choice: 0,
                        text: &t,
                    });
                }
                if let Some(r) = delta.reasoning_content {
                    if let Some(t) = r.text.filter(|t| !t.is_empty()) {
                        sink.emit(Event::Reasoning {
                            choice: 0,
                            text: &t,
                        });
                    }
                    if let Some(s) = r.signature.filter(|s| !s.is_empty()) {
                        sink.emit(Event::ReasoningSignature {
                            choice: 0,
                            signature: &s,
                        });
                    }
                }
                if let Some(call) = delta.tool_use.filter(|c| !c.input.is_empty()) {
                    let dense = ev
                        .content_block_index
                        .and_then(|i| self.tools.iter().find(|(b, _)| *b == i))
                        .map(|(_, d)| *d);
                    if let Some(index) = dense {
                        sink.emit(Event::ToolCallArguments {
                            choice: 0,
                            index,
                            fragment: &call.input,
                        });
                    }
                }
            }
            "messageStop" => {
                self.stopped = true;
                self.stop = ev.stop_reason;
            }
            "metadata" => {
                if let Some(u) = ev.usage {
                    self.usage = Some(u);
                }
                self.close(sink);
            }
            // messageStart, contentBlockStop and newer events carry nothing to translate.
            _ => {}
        }
        Ok(())
    }

    /// At `metadata`, after `messageStop` (usage comes last): the finish and the end.
    fn close(&mut self, sink: &mut dyn EventSink) {
        if self.ended || !self.stopped {
            return;
        }
        self.ended = true;
        sink.emit(Event::Finish {
            choice: 0,
            reason: stop_reason(self.stop.as_deref(), !self.tools.is_empty()),
        });
        let usage = self.usage();
        sink.emit(Event::End {
            usage: usage.as_ref(),
        });
    }
}

impl EventDecoder for StreamDecoder {
    fn push(&mut self, chunk: &[u8], sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        let framed = self
            .frames
            .push(chunk, &mut self.messages)
            .map_err(|e| StreamFailure::Malformed(e.to_string()));
        let mut result = Ok(());
        let messages = std::mem::take(&mut self.messages);
        for message in messages {
            if result.is_ok() && !self.ended {
                result = self.handle(message, sink);
            }
        }
        framed.and(result)
    }

    fn finish(&mut self, sink: &mut dyn EventSink) -> Result<(), StreamFailure> {
        self.frames
            .finish()
            .map_err(|e| StreamFailure::Malformed(e.to_string()))?;
        let _ = sink;
        // Bedrock ends every stream with `metadata` (the usage) after `messageStop`; without it
        // the answer cannot be counted, so it was cut.
        if self.ended {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(UsageWire::to_usage)
    }
}
