//! OpenAI answers (chat completions and embeddings): checked, their usage read, and passed on
//! unchanged but for `finish_reason: "stop"` on a choice with tool calls.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::accounting::{OpenAiUsageWire, Usage};
use crate::providers::{Answer, RenderedAnswer, StreamFailure};

/// Checks a JSON answer, reads its usage and passes it on, rewriting it only when a choice with
/// tool calls says `finish_reason: "stop"`.
pub fn decode_openai_response(body: Bytes) -> Result<Answer, StreamFailure> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default)]
        usage: Option<OpenAiUsageWire>,
        #[serde(default, borrow)]
        choices: Option<Vec<ChoiceProbe<'a>>>,
    }
    #[derive(Deserialize)]
    struct ChoiceProbe<'a> {
        #[serde(default, borrow)]
        finish_reason: Option<Cow<'a, str>>,
        #[serde(default)]
        message: Option<MessageProbe>,
    }
    #[derive(Deserialize)]
    struct MessageProbe {
        #[serde(default)]
        tool_calls: Option<Vec<IgnoredAny>>,
    }
    let probe: Probe = serde_json::from_slice(&body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not JSON: {e}")))?;
    let Some(choices) = probe.choices else {
        return Err(StreamFailure::Malformed("answer has no choices".into()));
    };
    let usage = probe.usage.map(Usage::from);
    let stop_with_tools = choices.iter().any(|c| {
        c.finish_reason.as_deref() == Some("stop")
            && c.message
                .as_ref()
                .and_then(|m| m.tool_calls.as_ref())
                .is_some_and(|t| !t.is_empty())
    });
    if !stop_with_tools {
        return Ok(Answer::Native { usage, body });
    }
    let mut value: Value = serde_json::from_slice(&body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not JSON: {e}")))?;
    if let Some(Value::Array(choices)) = value.get_mut("choices") {
        for c in choices {
            let has_tools = c["message"]["tool_calls"]
                .as_array()
                .is_some_and(|t| !t.is_empty());
            if has_tools && c["finish_reason"] == "stop" {
                c["finish_reason"] = Value::String("tool_calls".into());
            }
        }
    }
    Ok(Answer::Native {
        usage,
        body: crate::providers::convert::json_bytes(&value),
    })
}

/// Checks an OpenAI embeddings answer and reads its usage; the body passes on unchanged.
pub fn decode_openai_embeddings(body: Bytes) -> Result<RenderedAnswer, StreamFailure> {
    #[derive(Deserialize)]
    struct Probe {
        data: Vec<IgnoredAny>,
        #[serde(default)]
        usage: Option<OpenAiUsageWire>,
    }
    let probe: Probe = serde_json::from_slice(&body)
        .map_err(|e| StreamFailure::Malformed(format!("answer is not an embeddings list: {e}")))?;
    let _ = probe.data;
    Ok(RenderedAnswer {
        usage: probe.usage.map(Usage::from),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_tool_choice_stop_becomes_tool_calls_in_json_answers() {
        let body = json!({"id": "x", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]});
        let native_body = |body: Bytes| match decode_openai_response(body).unwrap() {
            Answer::Native { body, .. } => body,
            Answer::Chat(_) => panic!("an OpenAI answer passes through"),
        };
        let v: Value = serde_json::from_slice(&native_body(Bytes::from(body.to_string()))).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        // Plain answers pass through byte for byte.
        let plain = Bytes::from(completion_text());
        assert_eq!(native_body(plain.clone()), plain);
    }

    fn completion_text() -> String {
        r#"{"id":"x","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.to_string()
    }
}
