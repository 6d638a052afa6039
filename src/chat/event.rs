//! One streamed answer as canonical events, in the order a vendor produced them.

use super::StopReason;
use crate::accounting::Usage;

/// A step of a streamed answer. `choice` numbers the alternative answers (Gemini's candidates);
/// only OpenAI clients can ask for more than one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// The vendor's answer id and model, once known (before any content).
    Identity {
        id: Option<&'a str>,
        model: Option<&'a str>,
    },
    /// A choice begins.
    Start {
        choice: u32,
    },
    Text {
        choice: u32,
        text: &'a str,
    },
    /// Thinking / reasoning text.
    Reasoning {
        choice: u32,
        text: &'a str,
    },
    /// The signature that makes the thinking just streamed replayable (Anthropic).
    ReasoningSignature {
        choice: u32,
        signature: &'a str,
    },
    /// A tool call begins; `index` numbers the calls of one choice densely from 0. `arguments`
    /// is empty or the whole JSON text when the vendor sends calls in one piece.
    ToolCallStart {
        choice: u32,
        index: u32,
        id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    /// More JSON text of the arguments of call `index`.
    ToolCallArguments {
        choice: u32,
        index: u32,
        fragment: &'a str,
    },
    /// A choice is complete.
    Finish {
        choice: u32,
        reason: StopReason,
    },
    /// The answer is complete; the vendor's usage when it reported one.
    End {
        usage: Option<&'a Usage>,
    },
}

/// Receives the events a vendor stream decoder produces.
pub trait EventSink {
    fn emit(&mut self, event: Event<'_>);
}

/// Records events as their debug text, for tests that compare event sequences.
#[cfg(test)]
impl EventSink for Vec<String> {
    fn emit(&mut self, event: Event<'_>) {
        self.push(format!("{event:?}"));
    }
}
