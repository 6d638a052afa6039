//! The canonical chat model: what every client dialect decodes into and every vendor adapter
//! translates from, and the answer (a finished [`Response`] or a stream of [`Event`]s) that every
//! adapter produces and every dialect encodes.
//!
//! The request follows the vocabulary of OpenAI Chat Completions (roles, content parts, function
//! tools), because every vendor maps onto it, and adds what that vocabulary lacks: thinking blocks
//! with their signatures, cache hints and an explicit thinking budget. It borrows from the
//! client's parsed body, so building it per attempt copies no prompt text.

mod event;
mod request;
mod response;

use bytes::Bytes;
use serde_json::Value;

use crate::config::Price;

pub use event::{Event, EventSink};
pub(crate) use request::{object_list, ObjectOnly};
pub use request::{
    parse_data_url, Content, ContentPart, FilePart, FunctionCall, FunctionDef, ImageUrl, Message,
    Request, Tool, ToolCall,
};
pub use response::{now_unix, Choice, Collector, Response, StopReason, ToolCallOut};

/// How the client wants its stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamSettings {
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// The answering target's price: the usage the client gets carries the cost.
    pub price: Option<Price>,
}

/// `value` as JSON bytes, written through `io::Write` into a `Vec`: `Value`'s `Display` goes
/// through `fmt::Write`, a call per token, at about three times the instructions.
pub fn json_bytes(value: &Value) -> Bytes {
    // Keys of a `Value` are strings: serializing one cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
