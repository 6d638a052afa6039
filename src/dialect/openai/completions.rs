//! `POST /v1/completions`, OpenAI's legacy text completions: the request (kept as its JSON
//! object, so a host that has the endpoint gets it unchanged but for `model` and
//! `stream_options`), its canonical form for every other vendor (the prompt as one user
//! message), and `text_completion` answers and stream chunks rendered from canonical ones.
//!
//! Decisions:
//! - `suffix` (insertion) and token-id prompts are refused on every path; `echo`, `best_of` > 1,
//!   `logprobs` and a list of several prompts are refused only when translating (a host with the
//!   endpoint honours them).
//! - `max_tokens` defaults to 16, OpenAI's legacy default, when translating; the same figure is
//!   the output reservation of limits and budgets.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{field_value, model_name, stream_fields};
use crate::accounting::{round_usd, OpenAiUsageOut};
use crate::chat::{self, now_unix, Event};
use crate::config::Price;
use crate::dialect::raw_object::RawObject;
use crate::error::GatewayError;

/// OpenAI's default `max_tokens` for legacy completions.
pub const DEFAULT_MAX_TOKENS: u64 = 16;

/// A parsed `POST /v1/completions` body.
#[derive(Debug, Clone)]
pub struct CompletionsRequest {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage` as the client asked.
    pub include_usage: bool,
    /// Other `stream_options` keys, forwarded as given.
    pub stream_options_rest: Map<String, Value>,
    /// The prompt texts (`prompt` as a string is one).
    pub prompts: Vec<String>,
    /// `max_tokens`, when the client set a count.
    pub max_tokens: Option<u64>,
    /// Everything but `model`, `stream` and `stream_options`, in the client's order and bytes.
    fields: RawObject,
}

fn invalid(message: &str, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// What canonical() reads of the body besides the prompt.
#[derive(Deserialize)]
struct Params<'a> {
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    logit_bias: Option<Value>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    best_of: Option<u64>,
    #[serde(default)]
    logprobs: Option<Value>,
    // Read at parse.
    #[serde(default)]
    prompt: Option<IgnoredAny>,
    #[serde(default)]
    suffix: Option<IgnoredAny>,
    /// Anything else: adapters refuse what they do not know.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl CompletionsRequest {
    pub fn parse(body: &[u8]) -> Result<CompletionsRequest, GatewayError> {
        Self::from_bytes(Bytes::copy_from_slice(body))
    }

    /// Parses a body without copying it.
    pub fn from_bytes(body: Bytes) -> Result<CompletionsRequest, GatewayError> {
        let mut fields =
            RawObject::parse(body).map_err(|e| GatewayError::invalid(e.to_string(), None))?;
        let model = model_name(field_value(&mut fields, "model")?)?;
        let (stream, include_usage, stream_options_rest) = stream_fields(&mut fields)?;
        let prompt = fields
            .get("prompt")
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(|e| GatewayError::invalid(format!("invalid prompt: {e}"), Some("prompt")))?;
        let prompts =
            match prompt {
                Some(Value::String(text)) => vec![text],
                Some(Value::Array(items)) if items.is_empty() => {
                    return Err(invalid("prompt must not be empty", "prompt"))
                }
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => s,
                        _ => String::new(),
                    })
                    .collect(),
                Some(Value::Array(_)) => return Err(invalid(
                    "token-id prompts are not supported; send the prompt as a string or a list \
                     of strings",
                    "prompt",
                )),
                None | Some(Value::Null) => {
                    return Err(invalid("you must provide a prompt parameter", "prompt"))
                }
                Some(_) => {
                    return Err(invalid(
                        "prompt must be a string or a list of strings",
                        "prompt",
                    ))
                }
            };
        if fields.get("suffix").is_some_and(|s| s != "null") {
            return Err(invalid(
                "suffix (insertion) is not supported by this gateway",
                "suffix",
            ));
        }
        let max_tokens =
            match fields.get("max_tokens") {
                None | Some("null") => None,
                Some(text) => Some(text.parse::<u64>().map_err(|_| {
                    invalid("max_tokens must be a non-negative integer", "max_tokens")
                })?),
            };
        Ok(CompletionsRequest {
            model,
            stream,
            include_usage,
            stream_options_rest,
            prompts,
            max_tokens,
            fields,
        })
    }

    /// The output budget: `max_tokens`, else OpenAI's default of 16.
    pub fn max_output_tokens(&self) -> u64 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }

    /// The canonical view: the one prompt as a user message.
    pub fn canonical(&self) -> Result<chat::Request<'_>, GatewayError> {
        if self.prompts.len() > 1 {
            return Err(invalid(
                "a list of several prompts is only served by providers with a completions API; \
                 send one prompt per request",
                "prompt",
            ));
        }
        let params = self
            .fields
            .deserialize::<Params>()
            .map_err(|e| GatewayError::invalid(format!("invalid request: {e}"), None))?;
        if params.echo == Some(true) {
            return Err(invalid(
                "echo is only served by providers with a completions API",
                "echo",
            ));
        }
        if params.best_of.is_some_and(|b| b > 1) {
            return Err(invalid(
                "best_of is only served by providers with a completions API",
                "best_of",
            ));
        }
        if params.logprobs.as_ref().is_some_and(|l| !l.is_null()) {
            return Err(invalid(
                "logprobs are only served by providers with a completions API",
                "logprobs",
            ));
        }
        let _ = (params.prompt, params.suffix);
        let prompt = self.prompts.first().map_or("", String::as_str);
        Ok(chat::Request {
            stream: self.stream,
            messages: vec![chat::Message {
                role: Cow::Borrowed("user"),
                content: Some(chat::Content::Text(Cow::Borrowed(prompt))),
                ..chat::Message::default()
            }],
            max_tokens: Some(params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: params.top_k,
            n: params.n,
            seed: params.seed,
            stop: params.stop,
            presence_penalty: params.presence_penalty,
            frequency_penalty: params.frequency_penalty,
            logit_bias: params.logit_bias,
            user: params.user,
            rest: params.rest,
            ..chat::Request::default()
        })
    }

    /// The upstream body for a host with the endpoint: `{"model":…, <the client's fields>}`,
    /// copied as their bytes, and for streams `stream_options.include_usage` (the gateway counts
    /// tokens; the relay drops the usage chunk again when the client did not ask for it).
    pub fn body_with_model(&self, model: &str) -> Vec<u8> {
        self.fields
            .openai_body(model, self.stream, &self.stream_options_rest)
    }
}

/// A `cmpl-` id from the vendor's answer id.
fn completion_id(id: &str) -> String {
    if id.starts_with("cmpl-") {
        id.to_string()
    } else {
        format!("cmpl-{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
    }
}

#[derive(Serialize)]
struct TextCompletion<'a, U> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [TextChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<U>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A `text_completion` object.
pub fn response_body(response: &chat::Response) -> Bytes {
    let id = completion_id(&response.id);
    let choices: Vec<TextChoice<'_>> = response
        .choices
        .iter()
        .enumerate()
        .map(|(index, c)| TextChoice {
            text: c.content.as_deref().unwrap_or(""),
            index: index as u32,
            logprobs: None,
            finish_reason: Some(c.finish_reason.openai()),
        })
        .collect();
    let body = TextCompletion::<OpenAiUsageOut> {
        id: &id,
        object: "text_completion",
        created: response.created,
        model: &response.model,
        choices: &choices,
        usage: Some(response.usage.openai()),
    };
    // Only strings and numbers: serializing cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Canonical stream events to `text_completion` chunks: one per text delta, one with each
/// choice's `finish_reason`, the usage chunk (empty `choices`) when the client asked for it,
/// then `[DONE]`. Thinking has no place in this format and is dropped.
pub struct StreamEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// The answering target's price: the usage chunk carries the cost.
    price: Option<Price>,
}

impl StreamEncoder {
    pub fn new(include_usage: bool, price: Option<Price>) -> Self {
        StreamEncoder {
            id: format!("cmpl-{:016x}", fastrand::u64(..)),
            created: now_unix(),
            model: String::new(),
            include_usage,
            price,
        }
    }

    fn write(&self, out: &mut Vec<u8>, choices: &[TextChoice<'_>], usage: Option<Value>) {
        let chunk = TextCompletion {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            choices,
            usage: match usage {
                Some(u) => Some(u),
                None if self.include_usage => Some(Value::Null),
                None => None,
            },
        };
        out.extend_from_slice(b"data: ");
        // Plain structs of strings and numbers into a Vec: cannot fail.
        let _ = serde_json::to_writer(&mut *out, &chunk);
        out.extend_from_slice(b"\n\n");
    }

    fn choice(
        &self,
        out: &mut Vec<u8>,
        index: u32,
        text: &str,
        finish_reason: Option<&'static str>,
    ) {
        self.write(
            out,
            &[TextChoice {
                text,
                index,
                logprobs: None,
                finish_reason,
            }],
            None,
        );
    }
}

impl crate::dialect::StreamEncoder for StreamEncoder {
    fn encode(&mut self, event: Event<'_>, out: &mut Vec<u8>) {
        match event {
            Event::Identity { id, model } => {
                if let Some(id) = id.filter(|s| !s.is_empty()) {
                    self.id = completion_id(id);
                }
                if let Some(model) = model.filter(|s| !s.is_empty()) {
                    self.model = model.to_string();
                }
            }
            Event::Text { choice, text } if !text.is_empty() => {
                self.choice(out, choice, text, None);
            }
            Event::Finish { choice, reason } => self.choice(out, choice, "", Some(reason.openai())),
            Event::End { usage } => {
                if self.include_usage {
                    let mut json = usage.copied().unwrap_or_default().openai_json();
                    if let Some((u, price)) = usage.zip(self.price.as_ref()) {
                        json["cost"] = Value::from(round_usd(u.cost(price)));
                    }
                    self.write(out, &[], Some(json));
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            // No tools in this endpoint, and no place for thinking or a role.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::Usage;
    use crate::dialect::StreamEncoder as _;
    use serde_json::json;

    fn usage(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            ..Usage::default()
        }
    }

    fn parse(v: Value) -> Result<CompletionsRequest, GatewayError> {
        CompletionsRequest::parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_prompt_stream_and_budget() {
        let r = parse(
            json!({"model": "m", "prompt": "Say hi", "max_tokens": 7, "stream": true,
            "stream_options": {"include_usage": true}, "temperature": 0.5}),
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.prompts, ["Say hi"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_output_tokens(), 7);
        let r = parse(json!({"model": "m", "prompt": ["a", "b"]})).unwrap();
        assert_eq!(r.prompts, ["a", "b"]);
        assert_eq!(r.max_output_tokens(), DEFAULT_MAX_TOKENS);
        assert!(!r.stream && !r.include_usage);
    }

    #[test]
    fn refuses_naming_the_param() {
        for (body, param) in [
            (json!({"prompt": "x"}), "model"),
            (json!({"model": "m"}), "prompt"),
            (json!({"model": "m", "prompt": null}), "prompt"),
            (json!({"model": "m", "prompt": []}), "prompt"),
            (json!({"model": "m", "prompt": [1, 2, 3]}), "prompt"),
            (json!({"model": "m", "prompt": [[1], [2]]}), "prompt"),
            (json!({"model": "m", "prompt": ["a", 1]}), "prompt"),
            (json!({"model": "m", "prompt": 5}), "prompt"),
            (
                json!({"model": "m", "prompt": "x", "suffix": "end"}),
                "suffix",
            ),
            (
                json!({"model": "m", "prompt": "x", "max_tokens": -1}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "prompt": "x", "stream": "yes"}),
                "stream",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!((err.status(), err.param()), (400, Some(param)), "{body}");
        }
        // A null suffix is no suffix.
        parse(json!({"model": "m", "prompt": "x", "suffix": null})).unwrap();
    }

    #[test]
    fn translation_refuses_what_only_the_endpoint_serves() {
        for (body, param) in [
            (json!({"model": "m", "prompt": ["a", "b"]}), "prompt"),
            (json!({"model": "m", "prompt": "x", "echo": true}), "echo"),
            (
                json!({"model": "m", "prompt": "x", "best_of": 3}),
                "best_of",
            ),
            (
                json!({"model": "m", "prompt": "x", "logprobs": 2}),
                "logprobs",
            ),
        ] {
            let req = parse(body.clone()).unwrap();
            let err = req.canonical().unwrap_err();
            assert_eq!((err.status(), err.param()), (400, Some(param)), "{body}");
        }
    }

    #[test]
    fn canonical_is_one_user_message_with_the_budget() {
        let req = parse(
            json!({"model": "m", "prompt": ["Once upon"], "temperature": 0.3,
            "top_p": 0.9, "stop": ["\n"], "seed": 4, "user": "u1", "n": 1, "echo": false,
            "best_of": 1, "logprobs": null, "suffix": null, "presence_penalty": 0.1,
            "frequency_penalty": 0.2, "stream": true}),
        )
        .unwrap();
        let c = req.canonical().unwrap();
        assert!(c.stream);
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages[0].role, "user");
        assert_eq!(c.messages[0].text(), "Once upon");
        assert_eq!(c.max_tokens, Some(16));
        assert_eq!(
            (c.temperature, c.top_p, c.seed, c.n),
            (Some(0.3), Some(0.9), Some(4), Some(1))
        );
        assert_eq!(c.stop_sequences().unwrap(), ["\n"]);
        assert_eq!(c.user.as_deref(), Some("u1"));
        assert_eq!(
            (c.presence_penalty, c.frequency_penalty),
            (Some(0.1), Some(0.2))
        );
        assert!(c.rest.is_empty(), "{:?}", c.rest);
        // Unknown fields reach the adapters, which refuse what they do not know.
        let req =
            parse(json!({"model": "m", "prompt": "x", "max_tokens": 5, "future": 1})).unwrap();
        let c = req.canonical().unwrap();
        assert_eq!(c.max_tokens, Some(5));
        assert!(c.rest.contains_key("future"));
    }

    #[test]
    fn passthrough_body_is_the_clients_bytes_with_model_and_stream_usage() {
        let text = r#"{"prompt":"caf\u00e9","model":"public","max_tokens":5,"temperature":0.50,"stream":true,"stream_options":{"include_usage":false,"x":1},"echo":true}"#;
        let req = CompletionsRequest::parse(text.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&req.body_with_model("up/\"m\"")).unwrap(),
            r#"{"model":"up/\"m\"","prompt":"caf\u00e9","max_tokens":5,"temperature":0.50,"echo":true,"stream":true,"stream_options":{"include_usage":true,"x":1}}"#
        );
        let req = CompletionsRequest::parse(br#"{"model":"m","prompt":["a","b"]}"#).unwrap();
        assert_eq!(
            std::str::from_utf8(&req.body_with_model("u")).unwrap(),
            r#"{"model":"u","prompt":["a","b"]}"#
        );
    }

    #[test]
    fn text_completion_body() {
        let response = chat::Response {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "claude".into(),
            choices: vec![chat::Choice {
                content: Some("Hi \"there\"".into()),
                reasoning: Some("hidden".into()),
                finish_reason: chat::StopReason::MaxTokens,
                ..Default::default()
            }],
            usage: usage(10, 5),
        };
        assert_eq!(
            std::str::from_utf8(&response_body(&response)).unwrap(),
            concat!(
                r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"claude","#,
                r#""choices":[{"text":"Hi \"there\"","index":0,"logprobs":null,"finish_reason":"length"}],"#,
                r#""usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"#,
                r#""prompt_tokens_details":{"cached_tokens":0},"#,
                r#""completion_tokens_details":{"reasoning_tokens":0}}}"#
            )
        );
    }

    fn encoded(include_usage: bool, price: Option<Price>) -> Vec<String> {
        let mut enc = StreamEncoder::new(include_usage, price);
        enc.created = 7;
        let mut out = Vec::new();
        let u = usage(3, 2);
        for event in [
            Event::Identity {
                id: Some("msg_1"),
                model: Some("claude"),
            },
            Event::Start { choice: 0 },
            Event::Reasoning {
                choice: 0,
                text: "hmm",
            },
            Event::Text {
                choice: 0,
                text: "Hel",
            },
            Event::Text {
                choice: 0,
                text: "lo",
            },
            Event::Finish {
                choice: 0,
                reason: chat::StopReason::EndTurn,
            },
            Event::End { usage: Some(&u) },
        ] {
            enc.encode(event, &mut out);
        }
        String::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn stream_chunks_match_openai_framing() {
        let price = Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
        };
        let lines = encoded(true, Some(price));
        let usage_chunk: Value = serde_json::from_str(&lines[3]["data: ".len()..]).unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(usage_chunk["usage"]["total_tokens"], 5);
        // 3 input tokens at $1/M and 2 output at $2/M.
        assert_eq!(usage_chunk["usage"]["cost"].as_f64(), Some(0.000007));
        assert_eq!(
            lines[..3],
            [
                r#"data: {"id":"cmpl-msg_1","object":"text_completion","created":7,"model":"claude","choices":[{"text":"Hel","index":0,"logprobs":null,"finish_reason":null}],"usage":null}"#,
                r#"data: {"id":"cmpl-msg_1","object":"text_completion","created":7,"model":"claude","choices":[{"text":"lo","index":0,"logprobs":null,"finish_reason":null}],"usage":null}"#,
                r#"data: {"id":"cmpl-msg_1","object":"text_completion","created":7,"model":"claude","choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
            ]
        );
        assert_eq!(lines[4], "data: [DONE]");
        let lines = encoded(false, None);
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| !l.contains("usage")), "{lines:?}");
        assert_eq!(lines[3], "data: [DONE]");
    }
}
