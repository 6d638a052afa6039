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

pub use event::{Event, EventSink};
pub use request::{
    parse_data_url, Content, ContentPart, FilePart, FunctionCall, FunctionDef, ImageUrl, Message,
    Request, Tool, ToolCall,
};
pub use response::{now_unix, Choice, Response, StopReason, ToolCallOut};
