//! Gemini answers → canonical answers (docs/translation.md §5.5, §5.8, §5.9).

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::accounting::Usage;
use crate::chat::{self, now_unix, StopReason, ToolCallOut};

/// The canonical stop reason for a Gemini `finishReason` (docs/translation.md §5.8).
pub fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> StopReason {
    if has_tool_calls {
        return StopReason::ToolUse;
    }
    match reason {
        Some("MAX_TOKENS") => StopReason::MaxTokens,
        Some(
            "SAFETY"
            | "RECITATION"
            | "LANGUAGE"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponseWire {
    #[serde(default)]
    pub(super) candidates: Vec<CandidateWire>,
    #[serde(default)]
    pub(super) prompt_feedback: Option<PromptFeedbackWire>,
    #[serde(default)]
    pub(super) usage_metadata: Option<UsageWire>,
    #[serde(default)]
    pub(super) model_version: Option<String>,
    #[serde(default)]
    pub(super) response_id: Option<String>,
    #[serde(default)]
    pub(super) error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedbackWire {
    #[serde(default)]
    pub(super) block_reason: Option<String>,
}

impl PromptFeedbackWire {
    /// Feedback also comes with answered prompts (safety ratings); only a reason means blocked.
    pub(super) fn blocked(&self) -> bool {
        self.block_reason
            .as_deref()
            .is_some_and(|r| r != "BLOCK_REASON_UNSPECIFIED")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CandidateWire {
    #[serde(default)]
    pub(super) content: Option<ContentWire>,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
    #[serde(default)]
    pub(super) index: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct ContentWire {
    #[serde(default)]
    pub(super) parts: Vec<PartWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PartWire {
    #[serde(default)]
    pub(super) text: Option<String>,
    #[serde(default)]
    pub(super) thought: bool,
    #[serde(default)]
    pub(super) function_call: Option<FunctionCallWire>,
    #[serde(default)]
    pub(super) thought_signature: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct FunctionCallWire {
    pub(super) name: String,
    #[serde(default)]
    pub(super) args: Option<Value>,
}

#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageWire {
    #[serde(default)]
    pub(super) prompt_token_count: u64,
    #[serde(default)]
    pub(super) candidates_token_count: u64,
    #[serde(default)]
    pub(super) thoughts_token_count: u64,
    #[serde(default)]
    pub(super) cached_content_token_count: u64,
}

impl UsageWire {
    /// Thoughts are output the client pays for: they count as completion tokens
    /// (docs/translation.md §5.9).
    pub(super) fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: self.candidates_token_count + self.thoughts_token_count,
            cached_tokens: self.cached_content_token_count,
            reasoning_tokens: self.thoughts_token_count,
            cache_write_tokens: 0,
        }
    }
}

/// A `generateContent` answer as a canonical answer: candidates in index order, thoughts as
/// reasoning, function calls with synthesized ids, a blocked prompt as one filtered choice.
pub(super) fn decode(body: &[u8]) -> Result<Answer, StreamFailure> {
    let response: ResponseWire = serde_json::from_slice(body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not a Gemini response: {e}")))?;
    let usage = response
        .usage_metadata
        .map(UsageWire::to_usage)
        .unwrap_or_default();
    let mut candidates = response.candidates;
    // Choices are numbered by position; Gemini numbers candidates itself.
    candidates.sort_by_key(|c| c.index.unwrap_or(0));
    let mut choices = Vec::with_capacity(candidates.len().max(1));
    for candidate in candidates {
        let mut choice = chat::Choice::default();
        let mut text = String::new();
        let mut reasoning = String::new();
        for part in candidate.content.into_iter().flat_map(|c| c.parts) {
            if let Some(call) = part.function_call {
                choice.tool_calls.push(ToolCallOut {
                    id: synthesize_call_id(part.thought_signature.as_deref()),
                    name: call.name,
                    arguments: call
                        .args
                        .map_or_else(|| "{}".to_string(), |a| a.to_string()),
                });
            } else if let Some(t) = part.text {
                if part.thought {
                    reasoning.push_str(&t);
                } else {
                    text.push_str(&t);
                }
            }
        }
        choice.finish_reason = finish_reason(
            candidate.finish_reason.as_deref(),
            !choice.tool_calls.is_empty(),
        );
        choice.content = (!text.is_empty() || choice.tool_calls.is_empty()).then_some(text);
        choice.reasoning = (!reasoning.is_empty()).then_some(reasoning);
        choices.push(choice);
    }
    if choices.is_empty() {
        if !response.prompt_feedback.is_some_and(|f| f.blocked()) {
            return Err(StreamFailure::Malformed("answer has no candidates".into()));
        }
        // A blocked prompt: one empty choice that says so.
        choices.push(chat::Choice {
            content: None,
            finish_reason: StopReason::ContentFilter,
            ..chat::Choice::default()
        });
    }
    let id = response
        .response_id
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("chatcmpl-{:016x}", fastrand::u64(..)));
    Ok(Answer::Chat(chat::Response {
        id,
        created: now_unix(),
        model: response
            .model_version
            .unwrap_or_else(|| "gemini".to_string()),
        choices,
        usage,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn golden_text_response_with_thoughts_and_usage() {
        let got = decode_as_openai(fixture!("response_text.gemini.json"));
        let got = json(&normalise(&got.to_string()));
        assert_eq!(got, json(fixture!("response_text.openai.json")));
    }

    #[test]
    fn golden_function_call_response() {
        let got = decode_as_openai(fixture!("response_function_call.gemini.json"));
        let ids: Vec<&str> = got["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_ne!(ids[0], ids[1]);
        let got = json(&normalise(&got.to_string()));
        assert_eq!(got, json(fixture!("response_function_call.openai.json")));
    }

    #[test]
    fn unknown_response_fields_are_ignored() {
        let v = decode_as_openai(
            r#"{"candidates": [{"content": {"parts": [{"text": "a", "futurePart": {"x": 1}},
                {"executableCode": {"language": "PYTHON", "code": "1"}}], "role": "model"},
                "finishReason": "STOP", "citationMetadata": {}, "groundingMetadata": {}}],
                "createTime": "2026-01-01T00:00:00Z", "newThing": [1, 2]}"#,
        );
        assert_eq!(v["choices"][0]["message"]["content"], "a");
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("STOP"), false).openai(), "stop");
        assert_eq!(finish_reason(Some("STOP"), true).openai(), "tool_calls");
        assert_eq!(
            finish_reason(Some("MAX_TOKENS"), true).openai(),
            "tool_calls"
        );
        assert_eq!(finish_reason(Some("MAX_TOKENS"), false).openai(), "length");
        for filtered in [
            "SAFETY",
            "RECITATION",
            "LANGUAGE",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
        ] {
            assert_eq!(
                finish_reason(Some(filtered), false).openai(),
                "content_filter"
            );
        }
        for stop in [
            "FINISH_REASON_UNSPECIFIED",
            "OTHER",
            "MALFORMED_FUNCTION_CALL",
            "UNEXPECTED_TOOL_CALL",
            "TOO_MANY_TOOL_CALLS",
            "FUTURE_REASON",
        ] {
            assert_eq!(finish_reason(Some(stop), false).openai(), "stop");
        }
        assert_eq!(finish_reason(None, false).openai(), "stop");
    }
}
