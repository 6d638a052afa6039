//! Canonical answers → Responses API `response` objects and typed, numbered SSE events.
//!
//! A response object repeats the request's parameters ([`ResponseMeta::echo`]) in OpenAI's field
//! order, and lists the first choice as output items: a `reasoning` item (its summary is the
//! thinking text, its `encrypted_content` the vendor's thinking signature, so that the item sent
//! back later can replay the thinking to Anthropic), a `message` item, and one `function_call`
//! item per tool call.
//!
//! Streams follow OpenAI's order: `response.created` and `response.in_progress`, then per output
//! item `response.output_item.added`, its part and delta events and `response.output_item.done`,
//! then `response.completed` (or `response.incomplete`) with the whole object. Every event carries
//! a `sequence_number` counting from 0. A reasoning or message item closes when any other item
//! starts; function calls stay open until the choice finishes, because vendors interleave the
//! argument fragments of parallel calls, and then close in the order of their index.

use std::sync::Arc;

use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::{new_id, ResponseMeta};
use crate::accounting::{round_usd, Usage};
use crate::chat::{self, Event, StopReason};
use crate::config::Price;
use crate::error::GatewayError;

/// A finished answer as a `response` object. Its usage has no cost: the gateway adds it.
pub fn response_body(response: &chat::Response, meta: &ResponseMeta) -> Bytes {
    let default = chat::Choice::default();
    let choice = response.choices.first().unwrap_or(&default);
    let mut output = Vec::with_capacity(2 + choice.tool_calls.len());
    if let Some(reasoning) = choice.reasoning.as_deref().filter(|r| !r.is_empty()) {
        output.push(Item::Reasoning(ReasoningItem {
            id: new_id("rs"),
            kind: "reasoning",
            summary: vec![SummaryText::new(reasoning)],
            encrypted_content: choice.reasoning_signature.as_deref(),
        }));
    }
    let content = choice.content.as_deref().filter(|c| !c.is_empty());
    if content.is_some() || choice.tool_calls.is_empty() {
        output.push(Item::Message(MessageItem {
            id: new_id("msg"),
            kind: "message",
            status: "completed",
            role: "assistant",
            content: vec![OutputText::new(content.unwrap_or(""))],
        }));
    }
    for call in &choice.tool_calls {
        output.push(Item::Call(CallItem {
            id: new_id("fc"),
            kind: "function_call",
            status: "completed",
            call_id: &call.id,
            name: &call.name,
            arguments: &call.arguments,
        }));
    }
    let (status, incomplete) = outcome(choice.finish_reason);
    let body = ResponseObject {
        meta,
        status,
        error: None,
        incomplete,
        model: &response.model,
        output: &output,
        usage: Some(UsageOut::new(&response.usage, None)),
    };
    // Strings, numbers and JSON values: serializing cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// An `error` event for a stream whose encoder is gone.
pub fn stream_error_event(err: &GatewayError) -> Bytes {
    let mut out = Vec::new();
    write_event(&mut out, "error", &ErrorEvent::new(0, err));
    Bytes::from(out)
}

/// The response status and `incomplete_details.reason` a stop reason makes.
fn outcome(stop: StopReason) -> (&'static str, Option<&'static str>) {
    match stop {
        StopReason::MaxTokens => ("incomplete", Some("max_output_tokens")),
        StopReason::ContentFilter => ("incomplete", Some("content_filter")),
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => ("completed", None),
    }
}

/// `event: {kind}` and `data: {data}`, one SSE frame.
fn write_event(out: &mut Vec<u8>, kind: &str, data: &impl Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serialising plain structs of strings, numbers and JSON values into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

// ---- The response object ----

/// The echoed request parameters that come before `model` and `output`, between `output` and
/// `usage`, and after `usage`, in OpenAI's order.
const ECHO_HEAD: [&str; 2] = ["instructions", "max_output_tokens"];
const ECHO_MIDDLE: [&str; 10] = [
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
];
const ECHO_TAIL: [&str; 2] = ["user", "metadata"];
/// Fields the object writes itself, never taken from the echo.
const OWN_FIELDS: [&str; 9] = [
    "id",
    "object",
    "created_at",
    "status",
    "error",
    "incomplete_details",
    "model",
    "output",
    "usage",
];

struct ResponseObject<'a> {
    meta: &'a ResponseMeta,
    status: &'static str,
    error: Option<ResponseError<'a>>,
    /// `incomplete_details.reason`.
    incomplete: Option<&'static str>,
    model: &'a str,
    output: &'a [Item<'a>],
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct ResponseError<'a> {
    code: &'a str,
    message: String,
}

#[derive(Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

impl Serialize for ResponseObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let echo = &self.meta.echo;
        let mut map = serializer.serialize_map(None)?;
        let echoed = |map: &mut S::SerializeMap, keys: &[&str]| -> Result<(), S::Error> {
            for key in keys {
                if let Some(value) = echo.get(*key) {
                    map.serialize_entry(key, value)?;
                }
            }
            Ok(())
        };
        map.serialize_entry("id", &self.meta.id)?;
        map.serialize_entry("object", "response")?;
        map.serialize_entry("created_at", &self.meta.created_at)?;
        map.serialize_entry("status", self.status)?;
        map.serialize_entry("error", &self.error)?;
        map.serialize_entry(
            "incomplete_details",
            &self.incomplete.map(|reason| IncompleteDetails { reason }),
        )?;
        echoed(&mut map, &ECHO_HEAD)?;
        map.serialize_entry("model", self.model)?;
        map.serialize_entry("output", self.output)?;
        echoed(&mut map, &ECHO_MIDDLE)?;
        map.serialize_entry("usage", &self.usage)?;
        echoed(&mut map, &ECHO_TAIL)?;
        // Parameters a later meta may add, after OpenAI's own.
        for (key, value) in echo {
            let key = key.as_str();
            if !ECHO_HEAD.contains(&key)
                && !ECHO_MIDDLE.contains(&key)
                && !ECHO_TAIL.contains(&key)
                && !OWN_FIELDS.contains(&key)
            {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// The Responses `usage` object; `cost` only in streams, whose final object the gateway does
/// not rewrite.
#[derive(Serialize)]
struct UsageOut {
    input_tokens: u64,
    input_tokens_details: CachedTokens,
    output_tokens: u64,
    output_tokens_details: ReasoningTokens,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<f64>,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl UsageOut {
    fn new(usage: &Usage, cost: Option<f64>) -> Self {
        UsageOut {
            input_tokens: usage.prompt_tokens,
            input_tokens_details: CachedTokens {
                cached_tokens: usage.cached_tokens,
            },
            output_tokens: usage.completion_tokens,
            output_tokens_details: ReasoningTokens {
                reasoning_tokens: usage.reasoning_tokens,
            },
            total_tokens: usage.total(),
            cost,
        }
    }
}

// ---- Output items ----

#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Reasoning(ReasoningItem<'a>),
    Message(MessageItem<'a>),
    Call(CallItem<'a>),
}

/// Serialises as `[]`: annotations and logprobs, which the gateway never has.
type Nothing = [(); 0];

#[derive(Serialize)]
struct ReasoningItem<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    summary: Vec<SummaryText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted_content: Option<&'a str>,
}

#[derive(Serialize)]
struct SummaryText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

impl<'a> SummaryText<'a> {
    fn new(text: &'a str) -> Self {
        SummaryText {
            kind: "summary_text",
            text,
        }
    }
}

#[derive(Serialize)]
struct MessageItem<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    role: &'static str,
    content: Vec<OutputText<'a>>,
}

#[derive(Serialize)]
struct OutputText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: Nothing,
    logprobs: Nothing,
}

impl<'a> OutputText<'a> {
    fn new(text: &'a str) -> Self {
        OutputText {
            kind: "output_text",
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

#[derive(Serialize)]
struct CallItem<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    call_id: &'a str,
    name: &'a str,
    arguments: &'a str,
}

// ---- Stream events ----

/// `response.created`, `.in_progress`, `.completed`, `.incomplete`, `.failed`.
#[derive(Serialize)]
struct Lifecycle<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    response: ResponseObject<'a>,
}

/// `response.output_item.added` and `.done`.
#[derive(Serialize)]
struct ItemEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    output_index: usize,
    item: Item<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text(OutputText<'a>),
    Summary(SummaryText<'a>),
}

/// Every event about one item's content: parts, deltas and their done events; fields an event
/// does not have are left out.
#[derive(Serialize)]
struct Step<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<Part<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<Nothing>,
}

impl<'a> Step<'a> {
    fn new(
        kind: &'static str,
        sequence_number: u64,
        item_id: &'a str,
        output_index: usize,
    ) -> Self {
        Step {
            kind,
            sequence_number,
            item_id,
            output_index,
            content_index: None,
            summary_index: None,
            delta: None,
            text: None,
            name: None,
            arguments: None,
            part: None,
            logprobs: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    code: &'a str,
    message: String,
    param: Option<&'a str>,
}

impl<'a> ErrorEvent<'a> {
    fn new(sequence_number: u64, err: &'a GatewayError) -> Self {
        ErrorEvent {
            kind: "error",
            sequence_number,
            code: error_code(err),
            message: err.to_string(),
            param: err.param(),
        }
    }
}

/// OpenAI's error code, or its error type when the error has no code.
fn error_code(err: &GatewayError) -> &str {
    err.openai_code().unwrap_or_else(|| err.openai_type())
}

/// The end of a passed-through stream that failed: an `error` event and `response.failed`
/// with `response` (what the stream's `response.created` said of it) marked failed, numbered
/// from `sequence`. Returns the next number.
pub fn failure_events(
    sequence: u64,
    mut response: serde_json::Map<String, serde_json::Value>,
    err: &GatewayError,
    out: &mut Vec<u8>,
) -> u64 {
    write_event(out, "error", &ErrorEvent::new(sequence, err));
    let failure = ResponseError {
        code: error_code(err),
        message: err.to_string(),
    };
    response.insert("status".into(), "failed".into());
    response.insert(
        "error".into(),
        serde_json::to_value(&failure).unwrap_or_default(),
    );
    #[derive(Serialize)]
    struct Failed {
        #[serde(rename = "type")]
        kind: &'static str,
        sequence_number: u64,
        response: serde_json::Map<String, serde_json::Value>,
    }
    let failed = Failed {
        kind: "response.failed",
        sequence_number: sequence + 1,
        response,
    };
    write_event(out, "response.failed", &failed);
    sequence + 2
}

// ---- The stream encoder ----

enum Kind {
    Reasoning {
        signature: Option<String>,
    },
    Message,
    /// A tool call, by its canonical index.
    Call {
        index: u32,
        call_id: String,
        name: String,
    },
}

/// One output item of the streamed answer, as far as it arrived.
struct OpenItem {
    id: String,
    kind: Kind,
    /// The reasoning text, the message text or the call's arguments.
    text: String,
    done: bool,
}

impl OpenItem {
    /// The item as `output_item.added` shows it (`added`: no content yet), or as it stands: a
    /// done item is completed, one cut short by a failure incomplete.
    fn view(&self, added: bool) -> Item<'_> {
        let status = match (added, self.done) {
            (true, _) => "in_progress",
            (false, true) => "completed",
            (false, false) => "incomplete",
        };
        let id = self.id.clone();
        match &self.kind {
            Kind::Reasoning { signature } => Item::Reasoning(ReasoningItem {
                id,
                kind: "reasoning",
                summary: if added {
                    Vec::new()
                } else {
                    vec![SummaryText::new(&self.text)]
                },
                encrypted_content: signature.as_deref().filter(|_| !added),
            }),
            Kind::Message => Item::Message(MessageItem {
                id,
                kind: "message",
                status,
                role: "assistant",
                content: if added {
                    Vec::new()
                } else {
                    vec![OutputText::new(&self.text)]
                },
            }),
            Kind::Call { call_id, name, .. } => Item::Call(CallItem {
                id,
                kind: "function_call",
                status,
                call_id,
                name,
                arguments: if added { "" } else { &self.text },
            }),
        }
    }
}

/// Canonical stream events to Responses SSE events.
pub struct StreamEncoder {
    meta: Arc<ResponseMeta>,
    /// The answering target's price: the final usage carries the cost.
    price: Option<Price>,
    model: String,
    /// The next event's `sequence_number`.
    seq: u64,
    started: bool,
    /// `response.completed`/`.incomplete`/`.failed` was written: nothing follows.
    ended: bool,
    /// Output items in output order: `output_index` is the position.
    items: Vec<OpenItem>,
    /// The open reasoning or message item.
    current: Option<usize>,
    stop: StopReason,
    /// The final response object, until [`crate::dialect::StreamEncoder::finished`] takes it.
    response: Option<Bytes>,
}

impl StreamEncoder {
    pub fn new(meta: Arc<ResponseMeta>, price: Option<Price>) -> Self {
        StreamEncoder {
            meta,
            price,
            model: String::new(),
            seq: 0,
            started: false,
            ended: false,
            items: Vec::new(),
            current: None,
            stop: StopReason::EndTurn,
            response: None,
        }
    }

    fn next_seq(&mut self) -> u64 {
        let n = self.seq;
        self.seq += 1;
        n
    }

    /// Writes a lifecycle event with the response object as it stands.
    fn lifecycle(
        &mut self,
        out: &mut Vec<u8>,
        kind: &'static str,
        status: &'static str,
        error: Option<ResponseError<'_>>,
        incomplete: Option<&'static str>,
        usage: Option<UsageOut>,
    ) -> Bytes {
        let sequence_number = self.next_seq();
        let output: Vec<Item<'_>> = self.items.iter().map(|i| i.view(false)).collect();
        let event = Lifecycle {
            kind,
            sequence_number,
            response: ResponseObject {
                meta: &self.meta,
                status,
                error,
                incomplete,
                model: &self.model,
                output: &output,
                usage,
            },
        };
        write_event(out, kind, &event);
        // The object alone, for `finished`; only the final one is kept.
        Bytes::from(serde_json::to_vec(&event.response).unwrap_or_default())
    }

    /// `response.created` and `response.in_progress`, once.
    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        for kind in ["response.created", "response.in_progress"] {
            let sequence_number = self.next_seq();
            let event = Lifecycle {
                kind,
                sequence_number,
                response: ResponseObject {
                    meta: &self.meta,
                    status: "in_progress",
                    error: None,
                    incomplete: None,
                    model: &self.model,
                    output: &[],
                    usage: None,
                },
            };
            write_event(out, kind, &event);
        }
    }

    /// Adds an item and writes its `output_item.added` (and its part's `added`); returns its
    /// output index.
    fn add(&mut self, out: &mut Vec<u8>, prefix: &str, kind: Kind) -> usize {
        let output_index = self.items.len();
        self.items.push(OpenItem {
            id: new_id(prefix),
            kind,
            text: String::new(),
            done: false,
        });
        let sequence_number = self.next_seq();
        let item = &self.items[output_index];
        write_event(
            out,
            "response.output_item.added",
            &ItemEvent {
                kind: "response.output_item.added",
                sequence_number,
                output_index,
                item: item.view(true),
            },
        );
        let part = match item.kind {
            Kind::Reasoning { .. } => Some((
                "response.reasoning_summary_part.added",
                Part::Summary(SummaryText::new("")),
            )),
            Kind::Message => Some((
                "response.content_part.added",
                Part::Text(OutputText::new("")),
            )),
            Kind::Call { .. } => None,
        };
        if let Some((kind, part)) = part {
            let sequence_number = self.next_seq();
            let item = &self.items[output_index];
            let step = Step {
                part: Some(part),
                ..self.step_index(kind, sequence_number, item, output_index)
            };
            write_event(out, kind, &step);
        }
        output_index
    }

    /// A [`Step`] of `item` with its `content_index` or `summary_index`.
    fn step_index<'a>(
        &self,
        kind: &'static str,
        sequence_number: u64,
        item: &'a OpenItem,
        output_index: usize,
    ) -> Step<'a> {
        let mut step = Step::new(kind, sequence_number, &item.id, output_index);
        match item.kind {
            Kind::Reasoning { .. } => step.summary_index = Some(0),
            Kind::Message => step.content_index = Some(0),
            Kind::Call { .. } => {}
        }
        step
    }

    /// Writes the done events of item `output_index` and marks it done.
    fn close_item(&mut self, out: &mut Vec<u8>, output_index: usize) {
        let Some(item) = self.items.get(output_index) else {
            return;
        };
        if item.done {
            return;
        }
        match item.kind {
            Kind::Reasoning { .. } => {
                let seq = self.next_seq();
                let item = &self.items[output_index];
                let text = Step {
                    text: Some(&item.text),
                    ..self.step_index(
                        "response.reasoning_summary_text.done",
                        seq,
                        item,
                        output_index,
                    )
                };
                write_event(out, text.kind, &text);
                let seq = self.next_seq();
                let item = &self.items[output_index];
                let part = Step {
                    part: Some(Part::Summary(SummaryText::new(&item.text))),
                    ..self.step_index(
                        "response.reasoning_summary_part.done",
                        seq,
                        item,
                        output_index,
                    )
                };
                write_event(out, part.kind, &part);
            }
            Kind::Message => {
                let seq = self.next_seq();
                let item = &self.items[output_index];
                let text = Step {
                    text: Some(&item.text),
                    logprobs: Some([]),
                    ..self.step_index("response.output_text.done", seq, item, output_index)
                };
                write_event(out, text.kind, &text);
                let seq = self.next_seq();
                let item = &self.items[output_index];
                let part = Step {
                    part: Some(Part::Text(OutputText::new(&item.text))),
                    ..self.step_index("response.content_part.done", seq, item, output_index)
                };
                write_event(out, part.kind, &part);
            }
            Kind::Call { .. } => {
                let seq = self.next_seq();
                let item = &self.items[output_index];
                let name = match &item.kind {
                    Kind::Call { name, .. } => name.as_str(),
                    _ => "",
                };
                let done = Step {
                    name: Some(name),
                    arguments: Some(&item.text),
                    ..Step::new(
                        "response.function_call_arguments.done",
                        seq,
                        &item.id,
                        output_index,
                    )
                };
                write_event(out, done.kind, &done);
            }
        }
        self.items[output_index].done = true;
        let seq = self.next_seq();
        write_event(
            out,
            "response.output_item.done",
            &ItemEvent {
                kind: "response.output_item.done",
                sequence_number: seq,
                output_index,
                item: self.items[output_index].view(false),
            },
        );
    }

    /// Closes the open reasoning or message item.
    fn close_current(&mut self, out: &mut Vec<u8>) {
        if let Some(index) = self.current.take() {
            self.close_item(out, index);
        }
    }

    /// Closes every open item: the reasoning or message item, then the calls by index.
    fn close_all(&mut self, out: &mut Vec<u8>) {
        self.close_current(out);
        let mut calls: Vec<(u32, usize)> = self
            .items
            .iter()
            .enumerate()
            .filter_map(|(position, item)| match item.kind {
                Kind::Call { index, .. } if !item.done => Some((index, position)),
                _ => None,
            })
            .collect();
        calls.sort_unstable();
        for (_, position) in calls {
            self.close_item(out, position);
        }
    }

    /// The open reasoning (`reasoning`) or message item, opened (closing the other) if needed.
    fn current(&mut self, out: &mut Vec<u8>, reasoning: bool) -> usize {
        if let Some(index) = self.current {
            let is_reasoning = matches!(self.items[index].kind, Kind::Reasoning { .. });
            if is_reasoning == reasoning {
                return index;
            }
        }
        self.close_current(out);
        let index = if reasoning {
            self.add(out, "rs", Kind::Reasoning { signature: None })
        } else {
            self.add(out, "msg", Kind::Message)
        };
        self.current = Some(index);
        index
    }

    /// The open call of canonical index `index`.
    fn open_call(&self, index: u32) -> Option<usize> {
        self.items.iter().position(|item| {
            !item.done && matches!(item.kind, Kind::Call { index: i, .. } if i == index)
        })
    }

    /// Appends text to item `output_index` and writes its delta event.
    fn delta(&mut self, out: &mut Vec<u8>, output_index: usize, delta: &str) {
        let seq = self.next_seq();
        let item = &mut self.items[output_index];
        item.text.push_str(delta);
        let item = &self.items[output_index];
        let step = match item.kind {
            Kind::Reasoning { .. } => Step {
                delta: Some(delta),
                ..self.step_index(
                    "response.reasoning_summary_text.delta",
                    seq,
                    item,
                    output_index,
                )
            },
            Kind::Message => Step {
                delta: Some(delta),
                logprobs: Some([]),
                ..self.step_index("response.output_text.delta", seq, item, output_index)
            },
            Kind::Call { .. } => Step {
                delta: Some(delta),
                ..Step::new(
                    "response.function_call_arguments.delta",
                    seq,
                    &item.id,
                    output_index,
                )
            },
        };
        write_event(out, step.kind, &step);
    }

    fn end(&mut self, out: &mut Vec<u8>, usage: Option<&Usage>) {
        self.start(out);
        self.close_all(out);
        let cost = usage
            .zip(self.price.as_ref())
            .map(|(u, p)| round_usd(u.cost(p)));
        let usage = UsageOut::new(&usage.copied().unwrap_or_default(), cost);
        let (status, incomplete) = outcome(self.stop);
        let kind = if incomplete.is_some() {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let response = self.lifecycle(out, kind, status, None, incomplete, Some(usage));
        self.response = Some(response);
        self.ended = true;
    }
}

impl crate::dialect::StreamEncoder for StreamEncoder {
    fn encode(&mut self, event: Event<'_>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match event {
            Event::Identity { model, .. } => {
                if let Some(model) = model.filter(|m| !m.is_empty()) {
                    self.model = model.to_string();
                }
                self.start(out);
            }
            Event::Start { choice: 0 } => self.start(out),
            Event::Text { choice: 0, text } => {
                self.start(out);
                let index = self.current(out, false);
                self.delta(out, index, text);
            }
            Event::Reasoning { choice: 0, text } => {
                self.start(out);
                let index = self.current(out, true);
                self.delta(out, index, text);
            }
            Event::ReasoningSignature {
                choice: 0,
                signature,
            } => {
                self.start(out);
                // The signature follows its thinking; one without thinking gets its own item.
                let index = match self.current {
                    Some(i) if matches!(self.items[i].kind, Kind::Reasoning { .. }) => i,
                    _ => match self
                        .items
                        .iter()
                        .rposition(|i| matches!(i.kind, Kind::Reasoning { .. }))
                    {
                        Some(i) => i,
                        None => self.current(out, true),
                    },
                };
                if let Kind::Reasoning { signature: kept } = &mut self.items[index].kind {
                    kept.get_or_insert_with(String::new).push_str(signature);
                }
            }
            Event::ToolCallStart {
                choice: 0,
                index,
                id,
                name,
                arguments,
            } => {
                self.start(out);
                // A repeated start of an open call only carries more arguments.
                let position = match self.open_call(index) {
                    Some(position) => position,
                    None => {
                        self.close_current(out);
                        let kind = Kind::Call {
                            index,
                            call_id: id.to_string(),
                            name: name.to_string(),
                        };
                        self.add(out, "fc", kind)
                    }
                };
                if !arguments.is_empty() {
                    self.delta(out, position, arguments);
                }
            }
            Event::ToolCallArguments {
                choice: 0,
                index,
                fragment,
            } => match self.open_call(index) {
                Some(position) => self.delta(out, position, fragment),
                None => log::warn!("arguments of tool call {index} arrived outside the call"),
            },
            Event::Finish { choice: 0, reason } => {
                self.start(out);
                self.stop = reason;
                self.close_all(out);
            }
            Event::End { usage } => self.end(out, usage),
            // Responses has one answer per response: other choices are not asked for.
            Event::Start { .. }
            | Event::Text { .. }
            | Event::Reasoning { .. }
            | Event::ReasoningSignature { .. }
            | Event::ToolCallStart { .. }
            | Event::ToolCallArguments { .. }
            | Event::Finish { .. } => {}
        }
    }

    fn fail(&mut self, error: &GatewayError, out: &mut Vec<u8>) -> bool {
        // A stream that already ended has its ending.
        if self.ended {
            return true;
        }
        self.start(out);
        let seq = self.next_seq();
        write_event(out, "error", &ErrorEvent::new(seq, error));
        let failure = ResponseError {
            code: error_code(error),
            message: error.to_string(),
        };
        self.lifecycle(out, "response.failed", "failed", Some(failure), None, None);
        self.ended = true;
        true
    }

    fn finished(&mut self) -> Option<Bytes> {
        self.response.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::StreamEncoder as _;
    use serde_json::{json, Map, Value};

    fn meta() -> Arc<ResponseMeta> {
        let mut echo = Map::new();
        echo.insert("instructions".into(), json!("be brief"));
        echo.insert("max_output_tokens".into(), Value::Null);
        echo.insert("metadata".into(), json!({}));
        echo.insert("parallel_tool_calls".into(), json!(true));
        echo.insert("previous_response_id".into(), Value::Null);
        echo.insert("reasoning".into(), json!({"effort": null, "summary": null}));
        echo.insert("store".into(), json!(true));
        echo.insert("temperature".into(), json!(0.5));
        echo.insert("text".into(), json!({"format": {"type": "text"}}));
        echo.insert("tool_choice".into(), json!("auto"));
        echo.insert("tools".into(), json!([]));
        echo.insert("top_p".into(), json!(1.0));
        echo.insert("truncation".into(), json!("disabled"));
        echo.insert("user".into(), Value::Null);
        Arc::new(ResponseMeta {
            id: "resp_test".into(),
            created_at: 1700000000,
            echo,
        })
    }

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 2,
            reasoning_tokens: 1,
            cache_write_tokens: 0,
        }
    }

    fn usage_json() -> Value {
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 2},
               "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1},
               "total_tokens": 15})
    }

    fn answer(choice: chat::Choice) -> chat::Response {
        chat::Response {
            id: "upstream_id".into(),
            created: 1,
            model: "claude-x".into(),
            choices: vec![choice],
            usage: usage(),
        }
    }

    /// The item ids are random: checked for their prefix, then blanked.
    fn blank_ids(items: &mut Value) -> Vec<String> {
        let mut ids = Vec::new();
        for item in items.as_array_mut().unwrap() {
            ids.push(item["id"].as_str().unwrap().to_string());
            item["id"] = json!("");
        }
        ids
    }

    #[test]
    fn body_of_a_text_answer_in_openai_order() {
        let body = response_body(
            &answer(chat::Choice {
                content: Some("Hi \"there\"".into()),
                ..Default::default()
            }),
            &meta(),
        );
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "id",
                "object",
                "created_at",
                "status",
                "error",
                "incomplete_details",
                "instructions",
                "max_output_tokens",
                "model",
                "output",
                "parallel_tool_calls",
                "previous_response_id",
                "reasoning",
                "store",
                "temperature",
                "text",
                "tool_choice",
                "tools",
                "top_p",
                "truncation",
                "usage",
                "user",
                "metadata"
            ]
        );
        let ids = blank_ids(&mut v["output"]);
        assert!(ids[0].starts_with("msg_") && ids[0].len() == 36, "{ids:?}");
        assert_eq!(
            v,
            json!({
                "id": "resp_test", "object": "response", "created_at": 1700000000,
                "status": "completed", "error": null, "incomplete_details": null,
                "instructions": "be brief", "max_output_tokens": null, "model": "claude-x",
                "output": [{"id": "", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi \"there\"",
                                 "annotations": [], "logprobs": []}]}],
                "parallel_tool_calls": true, "previous_response_id": null,
                "reasoning": {"effort": null, "summary": null}, "store": true,
                "temperature": 0.5, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
                "tools": [], "top_p": 1.0, "truncation": "disabled",
                "usage": usage_json(), "user": null, "metadata": {}
            })
        );
    }

    #[test]
    fn body_of_tool_calls_with_signed_reasoning() {
        let body = response_body(
            &answer(chat::Choice {
                content: None,
                reasoning: Some("let me think".into()),
                reasoning_signature: Some("sig==".into()),
                tool_calls: vec![
                    chat::ToolCallOut {
                        id: "call_a".into(),
                        name: "weather".into(),
                        arguments: "{\"city\":\"Paris\"}".into(),
                    },
                    chat::ToolCallOut {
                        id: "call_b".into(),
                        name: "time".into(),
                        arguments: "{}".into(),
                    },
                ],
                finish_reason: StopReason::ToolUse,
            }),
            &meta(),
        );
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        let ids = blank_ids(&mut v["output"]);
        assert!(ids[0].starts_with("rs_"), "{ids:?}");
        assert!(
            ids[1].starts_with("fc_") && ids[2].starts_with("fc_"),
            "{ids:?}"
        );
        assert_ne!(ids[1], ids[2]);
        assert_eq!(v["status"], "completed");
        assert_eq!(v["incomplete_details"], Value::Null);
        assert_eq!(
            v["output"],
            json!([
                {"id": "", "type": "reasoning",
                 "summary": [{"type": "summary_text", "text": "let me think"}],
                 "encrypted_content": "sig=="},
                {"id": "", "type": "function_call", "status": "completed", "call_id": "call_a",
                 "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"id": "", "type": "function_call", "status": "completed", "call_id": "call_b",
                 "name": "time", "arguments": "{}"},
            ])
        );
        // No cost in a body: the gateway splices it in.
        assert_eq!(v["usage"], usage_json());
    }

    #[test]
    fn body_cut_short_is_incomplete() {
        let body = response_body(
            &answer(chat::Choice {
                content: Some("Once upon".into()),
                finish_reason: StopReason::MaxTokens,
                ..Default::default()
            }),
            &meta(),
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(
            v["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(v["output"][0]["content"][0]["text"], "Once upon");
        assert_eq!(v["output"].as_array().unwrap().len(), 1);

        let filtered = response_body(
            &answer(chat::Choice {
                finish_reason: StopReason::ContentFilter,
                ..Default::default()
            }),
            &meta(),
        );
        let v: Value = serde_json::from_slice(&filtered).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"], json!({"reason": "content_filter"}));
        // No content and no calls: one empty message.
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["content"][0]["text"], "");
    }

    /// The stream's frames as (event name, data), checking the framing and the numbering.
    fn frames(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("\n\n"), "{text}");
        let frames: Vec<(String, Value)> = text
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|frame| {
                let (event, data) = frame.split_once('\n').unwrap();
                let name = event.strip_prefix("event: ").unwrap().to_string();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str(), "{frame}");
                assert_eq!(
                    data.as_object().unwrap().keys().next().map(String::as_str),
                    Some("type")
                );
                (name, data)
            })
            .collect();
        for (n, (_, data)) in frames.iter().enumerate() {
            assert_eq!(data["sequence_number"], json!(n), "{data}");
        }
        frames
    }

    fn names(frames: &[(String, Value)]) -> Vec<&str> {
        frames.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn price() -> Price {
        Price {
            input_per_mtok: 2.0,
            output_per_mtok: 10.0,
            cached_input_per_mtok: Some(0.5),
            cache_write_per_mtok: None,
        }
    }

    #[test]
    fn text_stream_in_openai_order() {
        let mut enc = StreamEncoder::new(meta(), Some(price()));
        let mut out = Vec::new();
        assert_eq!(enc.finished(), None);
        let u = usage();
        for event in [
            Event::Identity {
                id: Some("upstream"),
                model: Some("claude-x"),
            },
            Event::Start { choice: 0 },
            Event::Text {
                choice: 0,
                text: "Hel",
            },
            Event::Text {
                choice: 1,
                text: "ignored",
            },
            Event::Text {
                choice: 0,
                text: "lo \"you\"",
            },
            Event::Finish {
                choice: 0,
                reason: StopReason::EndTurn,
            },
            Event::End { usage: Some(&u) },
        ] {
            enc.encode(event, &mut out);
        }
        let f = frames(&out);
        assert_eq!(
            names(&f),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (_, created) in &f[..2] {
            let r = &created["response"];
            assert_eq!(r["id"], "resp_test");
            assert_eq!(r["status"], "in_progress");
            assert_eq!(r["model"], "claude-x");
            assert_eq!(r["output"], json!([]));
            assert_eq!(r["usage"], Value::Null);
            assert_eq!(r["instructions"], "be brief");
        }
        let item_id = f[2].1["item"]["id"].as_str().unwrap().to_string();
        assert!(item_id.starts_with("msg_"));
        assert_eq!(
            f[2].1,
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
                   "item": {"id": item_id, "type": "message", "status": "in_progress",
                            "role": "assistant", "content": []}})
        );
        assert_eq!(
            f[3].1,
            json!({"type": "response.content_part.added", "sequence_number": 3,
                   "item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        );
        assert_eq!(
            f[4].1,
            json!({"type": "response.output_text.delta", "sequence_number": 4,
                   "item_id": item_id, "output_index": 0, "content_index": 0,
                   "delta": "Hel", "logprobs": []})
        );
        let deltas: String = f
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "Hello \"you\"");
        assert_eq!(
            f[6].1,
            json!({"type": "response.output_text.done", "sequence_number": 6,
                   "item_id": item_id, "output_index": 0, "content_index": 0,
                   "text": "Hello \"you\"", "logprobs": []})
        );
        let part = json!({"type": "output_text", "text": "Hello \"you\"", "annotations": [],
                          "logprobs": []});
        assert_eq!(f[7].1["part"], part);
        let item = json!({"id": item_id, "type": "message", "status": "completed",
                          "role": "assistant", "content": [part]});
        assert_eq!(f[8].1["item"], item);
        let done = &f[9].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["incomplete_details"], Value::Null);
        assert_eq!(done["output"], json!([item]));
        // 8 plain input tokens at $2, 2 cached at $0.5, 5 output at $10 per million.
        let mut expected_usage = usage_json();
        expected_usage["cost"] = json!(0.000067);
        assert_eq!(done["usage"], expected_usage);

        // The stored object is the completed one, taken once; nothing follows the end.
        let finished = enc.finished().unwrap();
        assert_eq!(&serde_json::from_slice::<Value>(&finished).unwrap(), done);
        assert_eq!(enc.finished(), None);
        let mut after = Vec::new();
        enc.encode(Event::End { usage: None }, &mut after);
        assert!(after.is_empty());
    }

    #[test]
    fn reasoning_text_and_interleaved_calls() {
        let mut enc = StreamEncoder::new(meta(), None);
        let mut out = Vec::new();
        for event in [
            Event::Identity {
                id: None,
                model: Some("m"),
            },
            Event::Reasoning {
                choice: 0,
                text: "think ",
            },
            Event::Reasoning {
                choice: 0,
                text: "hard",
            },
            Event::ReasoningSignature {
                choice: 0,
                signature: "sig",
            },
            Event::Text {
                choice: 0,
                text: "Checking.",
            },
            Event::ToolCallStart {
                choice: 0,
                index: 0,
                id: "call_a",
                name: "weather",
                arguments: "",
            },
            Event::ToolCallStart {
                choice: 0,
                index: 1,
                id: "call_b",
                name: "time",
                arguments: "{\"tz\":",
            },
            Event::ToolCallArguments {
                choice: 0,
                index: 0,
                fragment: "{\"city\":",
            },
            Event::ToolCallArguments {
                choice: 0,
                index: 1,
                fragment: "\"UTC\"}",
            },
            Event::ToolCallArguments {
                choice: 0,
                index: 0,
                fragment: "\"Paris\"}",
            },
            Event::Finish {
                choice: 0,
                reason: StopReason::ToolUse,
            },
            Event::End { usage: None },
        ] {
            enc.encode(event, &mut out);
        }
        let f = frames(&out);
        assert_eq!(
            names(&f),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let rs = f[2].1["item"]["id"].as_str().unwrap().to_string();
        assert_eq!(
            f[2].1["item"],
            json!({"id": rs, "type": "reasoning", "summary": []})
        );
        assert_eq!(
            f[3].1,
            json!({"type": "response.reasoning_summary_part.added", "sequence_number": 3,
                   "item_id": rs, "output_index": 0, "summary_index": 0,
                   "part": {"type": "summary_text", "text": ""}})
        );
        assert_eq!(
            f[5].1,
            json!({"type": "response.reasoning_summary_text.delta", "sequence_number": 5,
                   "item_id": rs, "output_index": 0, "summary_index": 0, "delta": "hard"})
        );
        assert_eq!(f[6].1["text"], "think hard");
        assert_eq!(
            f[7].1["part"],
            json!({"type": "summary_text", "text": "think hard"})
        );
        let reasoning = json!({"id": rs, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "think hard"}],
            "encrypted_content": "sig"});
        assert_eq!(f[8].1["item"], reasoning);
        assert_eq!(f[8].1["output_index"], 0);
        assert_eq!(f[9].1["output_index"], 1);
        assert_eq!(f[14].1["item"]["content"][0]["text"], "Checking.");

        let fc_a = f[15].1["item"]["id"].as_str().unwrap().to_string();
        let fc_b = f[16].1["item"]["id"].as_str().unwrap().to_string();
        assert!(fc_a.starts_with("fc_") && fc_b.starts_with("fc_") && fc_a != fc_b);
        assert_eq!(
            f[15].1,
            json!({"type": "response.output_item.added", "sequence_number": 15,
                   "output_index": 2, "item": {"id": fc_a, "type": "function_call",
                   "status": "in_progress", "call_id": "call_a", "name": "weather",
                   "arguments": ""}})
        );
        assert_eq!(f[16].1["output_index"], 3);
        assert_eq!(f[16].1["item"]["arguments"], "");
        // The start's own arguments are the first delta of call b; fragments go to their call.
        let deltas: Vec<(usize, &str, &str)> = f[17..21]
            .iter()
            .map(|(_, d)| {
                (
                    d["output_index"].as_u64().unwrap() as usize,
                    d["item_id"].as_str().unwrap(),
                    d["delta"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            deltas,
            [
                (3, fc_b.as_str(), "{\"tz\":"),
                (2, fc_a.as_str(), "{\"city\":"),
                (3, fc_b.as_str(), "\"UTC\"}"),
                (2, fc_a.as_str(), "\"Paris\"}"),
            ]
        );
        assert_eq!(
            f[21].1,
            json!({"type": "response.function_call_arguments.done", "sequence_number": 21,
                   "item_id": fc_a, "output_index": 2, "name": "weather",
                   "arguments": "{\"city\":\"Paris\"}"})
        );
        let call_a = json!({"id": fc_a, "type": "function_call", "status": "completed",
            "call_id": "call_a", "name": "weather", "arguments": "{\"city\":\"Paris\"}"});
        let call_b = json!({"id": fc_b, "type": "function_call", "status": "completed",
            "call_id": "call_b", "name": "time", "arguments": "{\"tz\":\"UTC\"}"});
        assert_eq!(f[22].1["item"], call_a);
        assert_eq!(f[22].1["output_index"], 2);
        assert_eq!(f[23].1["item_id"], fc_b.as_str());
        assert_eq!(f[23].1["arguments"], "{\"tz\":\"UTC\"}");
        assert_eq!(f[24].1["item"], call_b);
        assert_eq!(f[24].1["output_index"], 3);

        let done = &f[25].1["response"];
        assert_eq!(done["model"], "m");
        assert_eq!(done["status"], "completed");
        let output = done["output"].as_array().unwrap();
        assert_eq!(output.len(), 4);
        assert_eq!(output[0], reasoning);
        assert_eq!(output[1]["type"], "message");
        assert_eq!(output[2], call_a);
        assert_eq!(output[3], call_b);
        // No usage reported: zeros, and no cost without a price.
        assert_eq!(
            done["usage"],
            json!({"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0},
                   "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": 0})
        );
    }

    #[test]
    fn max_tokens_stream_ends_incomplete() {
        let mut enc = StreamEncoder::new(meta(), None);
        let mut out = Vec::new();
        enc.encode(
            Event::Text {
                choice: 0,
                text: "Once",
            },
            &mut out,
        );
        enc.encode(
            Event::Finish {
                choice: 0,
                reason: StopReason::MaxTokens,
            },
            &mut out,
        );
        enc.encode(Event::End { usage: None }, &mut out);
        let f = frames(&out);
        let (name, last) = f.last().unwrap();
        assert_eq!(name, "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Once");
        assert_eq!(
            serde_json::from_slice::<Value>(&enc.finished().unwrap()).unwrap(),
            last["response"]
        );
    }

    #[test]
    fn empty_stream_still_opens_and_completes() {
        let mut enc = StreamEncoder::new(meta(), None);
        let mut out = Vec::new();
        enc.encode(Event::End { usage: None }, &mut out);
        let f = frames(&out);
        assert_eq!(
            names(&f),
            [
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
        assert_eq!(f[2].1["response"]["output"], json!([]));
        assert!(enc.finished().is_some());
    }

    #[test]
    fn failure_mid_stream_numbers_error_and_failed() {
        let mut enc = StreamEncoder::new(meta(), Some(price()));
        let mut out = Vec::new();
        enc.encode(
            Event::Identity {
                id: None,
                model: Some("m"),
            },
            &mut out,
        );
        enc.encode(
            Event::Text {
                choice: 0,
                text: "partial",
            },
            &mut out,
        );
        let err = GatewayError::BadGateway("upstream connection reset".into());
        assert!(enc.fail(&err, &mut out));
        let f = frames(&out);
        assert_eq!(
            names(&f),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "error",
                "response.failed",
            ]
        );
        assert_eq!(
            f[5].1,
            json!({"type": "error", "sequence_number": 5, "code": "upstream_error",
                   "message": "upstream connection reset", "param": null})
        );
        let failed = &f[6].1["response"];
        assert_eq!(failed["status"], "failed");
        assert_eq!(
            failed["error"],
            json!({"code": "upstream_error", "message": "upstream connection reset"})
        );
        assert_eq!(failed["usage"], Value::Null);
        assert_eq!(failed["output"][0]["status"], "incomplete");
        assert_eq!(failed["output"][0]["content"][0]["text"], "partial");
        // A failed stream has no answer to keep, and writes nothing more.
        assert_eq!(enc.finished(), None);
        let mut after = Vec::new();
        enc.encode(Event::End { usage: None }, &mut after);
        assert!(enc.fail(&err, &mut after));
        assert!(after.is_empty());
    }

    #[test]
    fn failure_before_any_event_opens_the_response_first() {
        let mut enc = StreamEncoder::new(meta(), None);
        let mut out = Vec::new();
        let err = GatewayError::Upstream {
            status: 500,
            message: "boom".into(),
            kind: "server_error".into(),
            code: None,
            param: None,
            retry_after: None,
        };
        assert!(enc.fail(&err, &mut out));
        let f = frames(&out);
        assert_eq!(
            names(&f),
            [
                "response.created",
                "response.in_progress",
                "error",
                "response.failed"
            ]
        );
        // No code: the error type stands in.
        assert_eq!(f[2].1["code"], "server_error");
        assert_eq!(f[3].1["response"]["output"], json!([]));
    }

    #[test]
    fn standalone_error_event() {
        let err = GatewayError::invalid("bad tools", Some("tools"));
        let bytes = stream_error_event(&err);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "event: error\ndata: {\"type\":\"error\",\"sequence_number\":0,\
             \"code\":\"invalid_request\",\"message\":\"bad tools\",\"param\":\"tools\"}\n\n"
        );
    }
}
