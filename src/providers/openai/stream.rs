//! OpenAI-format streams (OpenAI, Azure, compatible hosts): chunks pass through as they came,
//! with usage counted (and priced), the usage chunk dropped when the client did not ask for it,
//! and tool-call indexes made dense.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use super::decode_openai_error;
use crate::accounting::{with_usage_cost, OpenAiUsageWire, Usage};
use crate::providers::sse::SseEvent;
use crate::providers::stream::{SseFrame, SseHandler};
use crate::providers::{StreamDecoder, StreamFailure, StreamSettings};

pub struct OpenAiStreamDecoder {
    settings: StreamSettings,
    usage: Option<Usage>,
    done: bool,
    /// Dense tool index by call id, per choice index.
    tool_ids: Vec<(u64, String, u64)>,
    /// The last tool index used per choice, for fragments that carry no id.
    last_tool: Vec<(u64, u64)>,
}

/// The parts of a chunk the gateway looks at; everything else passes through untouched.
#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<OpenAiUsageWire>,
    #[serde(default)]
    error: Option<Value>,
}

impl SseHandler<Vec<u8>> for OpenAiStreamDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        self.handle(event, out)
    }

    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.done {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The decoder of an OpenAI-format stream (OpenAI, Azure, compatible hosts).
pub fn openai_stream_decoder(settings: StreamSettings) -> Box<dyn StreamDecoder> {
    Box::new(SseFrame::new(OpenAiStreamDecoder::new(settings)))
}

impl OpenAiStreamDecoder {
    pub fn new(settings: StreamSettings) -> Self {
        OpenAiStreamDecoder {
            settings,
            usage: None,
            done: false,
            tool_ids: Vec::new(),
            last_tool: Vec::new(),
        }
    }

    /// Gives tool-call deltas dense indexes by id and turns `stop` into `tool_calls` once tool
    /// calls were seen. Returns the rewritten chunk, or `None` when it is already right.
    fn normalise_tools(&mut self, data: &str) -> Option<String> {
        let mut chunk: Value = serde_json::from_str(data).ok()?;
        let mut changed = false;
        for choice in chunk.get_mut("choices")?.as_array_mut()? {
            let choice_index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            if let Some(Value::Array(calls)) = choice.pointer_mut("/delta/tool_calls") {
                for call in calls {
                    let id = call.get("id").and_then(Value::as_str).map(str::to_string);
                    let index = match id {
                        Some(id) => match self
                            .tool_ids
                            .iter()
                            .find(|(c, known, _)| *c == choice_index && *known == id)
                        {
                            Some((_, _, i)) => *i,
                            None => {
                                let next = self
                                    .tool_ids
                                    .iter()
                                    .filter(|(c, _, _)| *c == choice_index)
                                    .count() as u64;
                                self.tool_ids.push((choice_index, id, next));
                                next
                            }
                        },
                        None => self
                            .last_tool
                            .iter()
                            .find(|(c, _)| *c == choice_index)
                            .map(|(_, i)| *i)
                            .or_else(|| call.get("index").and_then(Value::as_u64))
                            .unwrap_or(0),
                    };
                    match self.last_tool.iter_mut().find(|(c, _)| *c == choice_index) {
                        Some(entry) => entry.1 = index,
                        None => self.last_tool.push((choice_index, index)),
                    }
                    if call.get("index").and_then(Value::as_u64) != Some(index) {
                        call["index"] = Value::from(index);
                        changed = true;
                    }
                }
            }
            let saw_tools = self.last_tool.iter().any(|(c, _)| *c == choice_index);
            if saw_tools && choice.get("finish_reason").and_then(Value::as_str) == Some("stop") {
                choice["finish_reason"] = Value::String("tool_calls".into());
                changed = true;
            }
        }
        changed.then(|| chunk.to_string())
    }

    fn handle(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.done {
            return Ok(());
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let probe: ChunkProbe = serde_json::from_str(data)
            .map_err(|e| StreamFailure::Malformed(format!("chunk is not JSON: {e}")))?;
        if let Some(error) = probe.error {
            let body =
                serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default();
            return Err(StreamFailure::Upstream(Box::new(decode_openai_error(
                None, 500, &body, None,
            ))));
        }
        if event.event.as_deref() == Some("error") {
            return Err(StreamFailure::Upstream(Box::new(decode_openai_error(
                None,
                500,
                data.as_bytes(),
                None,
            ))));
        }
        let no_choices = probe.choices.as_ref().is_some_and(std::vec::Vec::is_empty);
        match probe.usage {
            Some(u) => {
                self.usage = Some(Usage::from(u));
                // The gateway asked for usage on the client's behalf; the client gets that chunk
                // only if it asked too.
                if no_choices && !self.settings.include_usage {
                    return Ok(());
                }
            }
            // Azure opens with a choice-less chunk of content-filter results; clients that index
            // choices[0] crash on it.
            None if no_choices => return Ok(()),
            None => {}
        }
        let touches_tools = data.contains("\"tool_calls\"")
            || (!self.last_tool.is_empty() && data.contains("\"stop\""));
        let rewritten = if touches_tools {
            self.normalise_tools(data)
        } else {
            None
        };
        let priced = match (&self.usage, &self.settings.price) {
            // The usage chunk carries the answer's cost, as OpenRouter's do.
            (Some(u), Some(price)) if no_choices => with_usage_cost(data.as_bytes(), u.cost(price))
                .and_then(|b| String::from_utf8(b).ok()),
            _ => None,
        };
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(
            priced
                .as_deref()
                .or(rewritten.as_deref())
                .unwrap_or(data)
                .as_bytes(),
        );
        out.extend_from_slice(b"\n\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::providers::openai::OpenAiAdapter;
    use crate::providers::test_support::stream_as_openai;
    use serde_json::json;

    const STREAM: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
        : keep-alive\n\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
        data: [DONE]\n\n";

    fn run(
        include_usage: bool,
        input: &str,
        piece: usize,
    ) -> (Result<(), StreamFailure>, String, Option<Usage>) {
        let adapter = OpenAiAdapter::new(ProviderKind::OpenAi);
        stream_as_openai(&adapter, input, include_usage, piece, str::to_owned)
    }

    #[test]
    fn stream_passes_chunks_and_counts_usage() {
        for piece in [1, 5, 64, 4096] {
            let (r, out, usage) = run(true, STREAM, piece);
            r.unwrap();
            let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
            assert_eq!(events.len(), 5, "{out}");
            assert!(events[3].contains("\"choices\":[]"));
            assert_eq!(events[4], "data: [DONE]");
            let u = usage.unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
                (9, 2, 4)
            );
        }
    }

    #[test]
    fn usage_chunk_is_dropped_when_the_client_did_not_ask() {
        let (r, out, usage) = run(false, STREAM, 7);
        r.unwrap();
        assert!(!out.contains("\"choices\":[]"), "{out}");
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(usage.unwrap().total(), 11);
    }

    #[test]
    fn stream_without_done_is_truncated() {
        let cut = &STREAM[..STREAM.find("data: [DONE]").unwrap()];
        assert!(matches!(
            run(true, cut, 10).0,
            Err(StreamFailure::Truncated)
        ));
        // A final [DONE] without its blank line is still a complete stream.
        let no_blank = STREAM.trim_end();
        run(true, no_blank, 10).0.unwrap();
    }

    #[test]
    fn error_inside_a_stream_fails_it() {
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        let (r, out, _) = run(true, s, 3);
        match r {
            Err(StreamFailure::Upstream(e)) => assert!(e.to_string().contains("overloaded")),
            other => panic!("{other:?}"),
        }
        assert!(out.contains("\"content\":\"a\""));
        assert!(matches!(
            run(true, "data: {not json\n\n", 3).0,
            Err(StreamFailure::Malformed(_))
        ));
    }
    #[test]
    fn ollama_style_tool_deltas_get_dense_indexes_and_tool_calls_finish() {
        // Two parallel calls both sent with index 0 (distinct ids), argument fragments without
        // index, then finish_reason "stop" (ollama#7881).
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let input = [
            chunk(json!({"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"function": {"arguments": "{\"x\":1}"}}]}), Value::Null),
            chunk(json!({"tool_calls": [{"index": 0, "id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}), Value::Null),
            chunk(json!({}), json!("stop")),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let (r, out, _) = run(false, &input, 9);
        r.unwrap();
        let events: Vec<Value> = out
            .split("\n\n")
            .filter(|e| e.starts_with("data: {"))
            .map(|e| serde_json::from_str(&e[6..]).unwrap())
            .collect();
        let index = |i: usize| events[i]["choices"][0]["delta"]["tool_calls"][0]["index"].clone();
        assert_eq!(
            (index(0), index(1), index(2)),
            (json!(0), json!(0), json!(1))
        );
        assert_eq!(events[3]["choices"][0]["finish_reason"], "tool_calls");
    }
}
