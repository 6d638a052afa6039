//! A finished (non-streamed) answer in canonical form.

use crate::accounting::Usage;

/// Why a choice ended, in the vocabulary shared by the dialects (docs/translation.md §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopReason {
    /// The model finished its turn (also a vendor's unknown or unspecified reason).
    #[default]
    EndTurn,
    /// One of the request's stop sequences matched.
    StopSequence,
    /// The output budget (or the context window) ran out.
    MaxTokens,
    /// The model called tools and waits for their results.
    ToolUse,
    /// A safety system stopped or blocked the answer.
    ContentFilter,
}

impl StopReason {
    /// OpenAI's `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            StopReason::EndTurn | StopReason::StopSequence => "stop",
            StopReason::MaxTokens => "length",
            StopReason::ToolUse => "tool_calls",
            StopReason::ContentFilter => "content_filter",
        }
    }

    /// Anthropic's `stop_reason`.
    pub fn anthropic(self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::StopSequence => "stop_sequence",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ToolUse => "tool_use",
            StopReason::ContentFilter => "refusal",
        }
    }

    /// Reads OpenAI's `finish_reason`; a `stop` that came with tool calls (OpenAI's named
    /// `tool_choice`, Ollama) is a tool call all the same.
    pub fn from_openai(reason: Option<&str>, has_tool_calls: bool) -> StopReason {
        match reason {
            Some("length") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::ContentFilter,
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            _ if has_tool_calls => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        }
    }
}

/// One tool call of an answer; `arguments` is the JSON text of the input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolCallOut {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One alternative answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Choice {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    /// The vendor's signature of `reasoning`, when it issues one (Anthropic).
    pub reasoning_signature: Option<String>,
    pub tool_calls: Vec<ToolCallOut>,
    pub finish_reason: StopReason,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub id: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

/// Seconds since the Unix epoch, for `created`.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Response {
    /// This answer as the stream events that would have carried it, for an answer made whole
    /// (by a filter) that the client asked to be streamed.
    pub fn replay(&self, emit: &mut dyn FnMut(super::Event<'_>)) {
        use super::Event;
        emit(Event::Identity {
            id: Some(&self.id),
            model: Some(&self.model),
        });
        for (i, choice) in self.choices.iter().enumerate() {
            let choice_index = i as u32;
            emit(Event::Start {
                choice: choice_index,
            });
            if let Some(reasoning) = &choice.reasoning {
                emit(Event::Reasoning {
                    choice: choice_index,
                    text: reasoning,
                });
            }
            if let Some(signature) = &choice.reasoning_signature {
                emit(Event::ReasoningSignature {
                    choice: choice_index,
                    signature,
                });
            }
            if let Some(content) = &choice.content {
                emit(Event::Text {
                    choice: choice_index,
                    text: content,
                });
            }
            for (index, call) in choice.tool_calls.iter().enumerate() {
                emit(Event::ToolCallStart {
                    choice: choice_index,
                    index: index as u32,
                    id: &call.id,
                    name: &call.name,
                    arguments: &call.arguments,
                });
            }
            emit(Event::Finish {
                choice: choice_index,
                reason: choice.finish_reason,
            });
        }
        emit(Event::End {
            usage: Some(&self.usage),
        });
    }
}
