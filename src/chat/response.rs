//! A finished (non-streamed) answer in canonical form.

use serde::{Deserialize, Serialize};

use crate::accounting::Usage;

/// Why a choice ended, in the vocabulary shared by the dialects (docs/translation.md §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallOut {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One alternative answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    /// The vendor's signature of `reasoning`, when it issues one (Anthropic).
    pub reasoning_signature: Option<String>,
    pub tool_calls: Vec<ToolCallOut>,
    pub finish_reason: StopReason,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// Collects a streamed answer's events back into the whole answer (for the answer cache).
#[derive(Debug, Default)]
pub struct Collector {
    response: Response,
    /// Per choice: whether its `Finish` came.
    finished: Vec<bool>,
    ended: bool,
}

impl Collector {
    fn choice(&mut self, index: u32) -> &mut Choice {
        let index = index as usize;
        if self.response.choices.len() <= index {
            self.response
                .choices
                .resize_with(index + 1, Choice::default);
            self.finished.resize(index + 1, false);
        }
        &mut self.response.choices[index]
    }

    pub fn push(&mut self, event: &super::Event<'_>) {
        use super::Event;
        match *event {
            Event::Identity { id, model } => {
                if let Some(id) = id {
                    self.response.id = id.to_string();
                }
                if let Some(model) = model {
                    self.response.model = model.to_string();
                }
            }
            Event::Start { choice } => {
                self.choice(choice);
            }
            Event::Text { choice, text } => {
                self.choice(choice)
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(text);
            }
            Event::Reasoning { choice, text } => {
                self.choice(choice)
                    .reasoning
                    .get_or_insert_with(String::new)
                    .push_str(text);
            }
            Event::ReasoningSignature { choice, signature } => {
                self.choice(choice)
                    .reasoning_signature
                    .get_or_insert_with(String::new)
                    .push_str(signature);
            }
            Event::ToolCallStart {
                choice,
                index,
                id,
                name,
                arguments,
            } => {
                let calls = &mut self.choice(choice).tool_calls;
                let index = index as usize;
                if calls.len() <= index {
                    calls.resize_with(index + 1, ToolCallOut::default);
                }
                calls[index] = ToolCallOut {
                    id: id.to_string(),
                    name: name.to_string(),
                    arguments: arguments.to_string(),
                };
            }
            Event::ToolCallArguments {
                choice,
                index,
                fragment,
            } => {
                if let Some(call) = self.choice(choice).tool_calls.get_mut(index as usize) {
                    call.arguments.push_str(fragment);
                }
            }
            Event::Finish { choice, reason } => {
                self.choice(choice).finish_reason = reason;
                self.finished[choice as usize] = true;
            }
            Event::End { usage } => {
                self.response.usage = usage.copied().unwrap_or_default();
                self.ended = true;
            }
        }
    }

    /// The answer, when the stream ended and every choice in it finished.
    pub fn finish(self) -> Option<Response> {
        let complete = self.ended
            && !self.response.choices.is_empty()
            && self.finished.iter().all(|&done| done);
        complete.then_some(self.response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Event;

    fn sample() -> Response {
        Response {
            id: "msg_1".into(),
            created: 0,
            model: "m".into(),
            choices: vec![Choice {
                content: Some("Hello".into()),
                reasoning: Some("think".into()),
                reasoning_signature: Some("sig".into()),
                tool_calls: vec![ToolCallOut {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }],
                finish_reason: StopReason::ToolUse,
            }],
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn a_replayed_answer_collects_back_to_itself() {
        let answer = sample();
        let mut collector = Collector::default();
        answer.replay(&mut |event| collector.push(&event));
        assert_eq!(collector.finish(), Some(answer));
    }

    #[test]
    fn pieces_are_joined_and_an_unfinished_stream_is_no_answer() {
        let mut collector = Collector::default();
        for event in [
            Event::Identity {
                id: Some("x"),
                model: None,
            },
            Event::Start { choice: 0 },
            Event::Text {
                choice: 0,
                text: "Hel",
            },
            Event::Text {
                choice: 0,
                text: "lo",
            },
            Event::ToolCallStart {
                choice: 0,
                index: 0,
                id: "c",
                name: "f",
                arguments: "",
            },
            Event::ToolCallArguments {
                choice: 0,
                index: 0,
                fragment: "{}",
            },
        ] {
            collector.push(&event);
        }
        // No `Finish`, no `End`: the stream broke off.
        assert_eq!(collector.finish(), None);

        let mut collector = Collector::default();
        collector.push(&Event::Start { choice: 0 });
        collector.push(&Event::Text {
            choice: 0,
            text: "a",
        });
        collector.push(&Event::Text {
            choice: 0,
            text: "b",
        });
        collector.push(&Event::Finish {
            choice: 0,
            reason: StopReason::EndTurn,
        });
        collector.push(&Event::End { usage: None });
        let answer = collector.finish().unwrap();
        assert_eq!(answer.choices[0].content.as_deref(), Some("ab"));
    }
}
