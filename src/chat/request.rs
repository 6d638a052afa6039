//! The canonical request: messages, content parts, tools, sampling, reasoning and cache hints.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// A chat request in canonical form, borrowing from the client's parsed body.
///
/// Fields no adapter interprets stay in `rest` under their client-side names, so an adapter can
/// refuse what it cannot honour instead of dropping it unnoticed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Request<'a> {
    /// The client asked for a streamed answer.
    #[serde(skip)]
    pub stream: bool,
    /// An explicit thinking budget in tokens (Anthropic's `thinking.budget_tokens`); adapters
    /// prefer it to `reasoning_effort`.
    #[serde(skip)]
    pub thinking_budget: Option<u64>,
    #[serde(borrow, deserialize_with = "object_list")]
    pub messages: Vec<Message<'a>>,
    #[serde(default, borrow)]
    pub tools: Option<Vec<Tool<'a>>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub stop: Option<Value>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Not OpenAI, but accepted by many hosts and by Anthropic and Gemini.
    #[serde(default)]
    pub top_k: Option<u64>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub logit_bias: Option<Value>,
    #[serde(default, borrow)]
    pub user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub safety_identifier: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub reasoning_effort: Option<Cow<'a, str>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Request<'_> {
    /// `max_completion_tokens` wins over the deprecated `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// `stop` as a list (OpenAI allows a bare string).
    pub fn stop_sequences(&self) -> Result<Vec<&str>, GatewayError> {
        match &self.stop {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        GatewayError::invalid(
                            "stop must be a string or an array of strings",
                            Some("stop"),
                        )
                    })
                })
                .collect(),
            Some(_) => Err(GatewayError::invalid(
                "stop must be a string or an array of strings",
                Some("stop"),
            )),
        }
    }
}

/// For `deserialize_with` on a list of messages (or of content blocks): every item must be a
/// JSON object. A derived struct also takes an array of its fields in order (`["user", "hi"]`
/// as a message), and an internally tagged enum an array led by its tag; the vendors refuse
/// both, and so does the pass-through path.
pub(crate) fn object_list<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    struct List<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of objects")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(ObjectOnly(item)) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_seq(List(std::marker::PhantomData))
}

/// A `T` that was a JSON object (derived structs and internally tagged enums also take
/// arrays).
pub(crate) struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Map<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Map<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Map(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// `Serialize` (here and on the parts): the answer cache hashes requests through it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    #[serde(default, borrow)]
    pub content: Option<Content<'a>>,
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(default, borrow)]
    pub tool_call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
}

impl Message<'_> {
    /// The text of the message's content (its text parts joined); empty without content.
    pub fn text(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }
}

/// A message's content: a string, or a list of parts.
///
/// Serialized untagged; deserialized by hand, not as a derived `untagged` enum: that one
/// buffers the content into serde's intermediate form before trying each variant on it, and
/// refuses a content of the wrong type without saying what was expected.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Content<'a> {
    Text(std::borrow::Cow<'a, str>),
    Parts(Vec<ContentPart<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

struct ContentVisitor<'a>(std::marker::PhantomData<Content<'a>>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for ContentVisitor<'a> {
    type Value = Content<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or an array of content parts")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(text)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(ObjectOnly(part)) = seq.next_element()? {
            parts.push(part);
        }
        Ok(Content::Parts(parts))
    }
}

impl Content<'_> {
    /// The text of a string content or of its text parts, joined; other parts are ignored.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.to_string(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_ref()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart<'a> {
    Text {
        #[serde(borrow)]
        text: std::borrow::Cow<'a, str>,
        /// A prompt-cache breakpoint (Anthropic's `cache_control`), kept for vendors that have one.
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ImageUrl {
        #[serde(borrow)]
        image_url: ImageUrl<'a>,
    },
    InputAudio {
        input_audio: Value,
    },
    File {
        #[serde(borrow)]
        file: FilePart<'a>,
    },
    Refusal {
        #[serde(borrow)]
        refusal: std::borrow::Cow<'a, str>,
    },
    /// Earlier thinking of an assistant turn, with the signature that lets its vendor check it.
    Thinking {
        #[serde(borrow)]
        thinking: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        signature: Option<std::borrow::Cow<'a, str>>,
    },
    /// Thinking the vendor returned encrypted.
    RedactedThinking {
        #[serde(borrow)]
        data: std::borrow::Cow<'a, str>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub detail: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FilePart<'a> {
    #[serde(default, borrow)]
    pub filename: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub file_data: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub file_id: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ToolCall<'a> {
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub arguments: std::borrow::Cow<'a, str>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub function: Option<FunctionDef<'a>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub description: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// A data URL split into its media type and base64 payload.
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    // Parameters such as `;charset=utf-8` are not part of the media type.
    let mime = meta.split(';').next().unwrap_or(meta);
    Some((mime, data))
}

/// A `Cow` that no longer borrows.
fn own(text: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(text.into_owned())
}

impl Request<'_> {
    /// The same request owning all its text, to outlive the body it was read from (a request
    /// that filters rewrite).
    pub fn into_owned(self) -> Request<'static> {
        Request {
            stream: self.stream,
            thinking_budget: self.thinking_budget,
            messages: self.messages.into_iter().map(Message::into_owned).collect(),
            tools: self
                .tools
                .map(|tools| tools.into_iter().map(Tool::into_owned).collect()),
            tool_choice: self.tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format: self.response_format,
            stop: self.stop,
            max_tokens: self.max_tokens,
            max_completion_tokens: self.max_completion_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            n: self.n,
            seed: self.seed,
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias,
            user: self.user.map(own),
            safety_identifier: self.safety_identifier.map(own),
            reasoning_effort: self.reasoning_effort.map(own),
            rest: self.rest,
        }
    }
}

impl Message<'_> {
    pub fn into_owned(self) -> Message<'static> {
        Message {
            role: own(self.role),
            content: self.content.map(Content::into_owned),
            tool_calls: self.tool_calls.map(|calls| {
                calls
                    .into_iter()
                    .map(|c| ToolCall {
                        id: own(c.id),
                        function: FunctionCall {
                            name: own(c.function.name),
                            arguments: own(c.function.arguments),
                        },
                    })
                    .collect()
            }),
            tool_call_id: self.tool_call_id.map(own),
            name: self.name.map(own),
        }
    }
}

impl Content<'_> {
    pub fn into_owned(self) -> Content<'static> {
        match self {
            Content::Text(text) => Content::Text(own(text)),
            Content::Parts(parts) => {
                Content::Parts(parts.into_iter().map(ContentPart::into_owned).collect())
            }
        }
    }
}

impl ContentPart<'_> {
    pub fn into_owned(self) -> ContentPart<'static> {
        match self {
            ContentPart::Text {
                text,
                cache_control,
            } => ContentPart::Text {
                text: own(text),
                cache_control,
            },
            ContentPart::ImageUrl { image_url } => ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: own(image_url.url),
                    detail: image_url.detail.map(own),
                },
            },
            ContentPart::InputAudio { input_audio } => ContentPart::InputAudio { input_audio },
            ContentPart::File { file } => ContentPart::File {
                file: FilePart {
                    filename: file.filename.map(own),
                    file_data: file.file_data.map(own),
                    file_id: file.file_id.map(own),
                },
            },
            ContentPart::Refusal { refusal } => ContentPart::Refusal {
                refusal: own(refusal),
            },
            ContentPart::Thinking {
                thinking,
                signature,
            } => ContentPart::Thinking {
                thinking: own(thinking),
                signature: signature.map(own),
            },
            ContentPart::RedactedThinking { data } => {
                ContentPart::RedactedThinking { data: own(data) }
            }
        }
    }
}

impl Tool<'_> {
    pub fn into_owned(self) -> Tool<'static> {
        Tool {
            kind: own(self.kind),
            function: self.function.map(|f| FunctionDef {
                name: own(f.name),
                description: f.description.map(own),
                parameters: f.parameters,
                strict: f.strict,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_a_string_borrowed_when_it_can_be_or_a_list_of_parts() {
        let body = r#"[
            {"role": "user", "content": "plain"},
            {"role": "user", "content": "line\nbreak"},
            {"role": "user", "content": [{"type": "text", "text": "part"}]},
            {"role": "assistant", "content": null}
        ]"#;
        let messages: Vec<Message> = serde_json::from_str(body).unwrap();
        match &messages[0].content {
            Some(Content::Text(Cow::Borrowed(text))) => assert_eq!(*text, "plain"),
            other => panic!("expected borrowed text, got {other:?}"),
        }
        match &messages[1].content {
            Some(Content::Text(Cow::Owned(text))) => assert_eq!(text, "line\nbreak"),
            other => panic!("expected unescaped text, got {other:?}"),
        }
        match &messages[2].content {
            Some(Content::Parts(parts)) => {
                assert!(matches!(&parts[..], [ContentPart::Text { text, .. }] if text == "part"));
            }
            other => panic!("expected parts, got {other:?}"),
        }
        assert!(messages[3].content.is_none());
        // Serialized back as the client wrote it: untagged.
        assert_eq!(
            serde_json::to_value(&messages[..3]).unwrap(),
            serde_json::json!([
                {"role": "user", "content": "plain", "tool_calls": null, "tool_call_id": null, "name": null},
                {"role": "user", "content": "line\nbreak", "tool_calls": null, "tool_call_id": null, "name": null},
                {"role": "user", "content": [{"type": "text", "text": "part", "cache_control": null}],
                 "tool_calls": null, "tool_call_id": null, "name": null},
            ])
        );
    }

    #[test]
    fn a_message_or_a_part_written_as_an_array_is_refused() {
        let object: Request =
            serde_json::from_str(r#"{"messages": [{"role": "user", "content": "hi"}]}"#).unwrap();
        assert_eq!(object.messages[0].role, "user");
        let err = serde_json::from_str::<Request>(r#"{"messages": [["user", "hi"]]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected an object"), "{err}");
        // A part as an array too: an internally tagged enum would take `["text", "hi"]`.
        let err = serde_json::from_str::<Request>(
            r#"{"messages": [{"role": "user", "content": [["text", "hi"]]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected an object"), "{err}");
    }

    #[test]
    fn content_of_another_type_is_refused_saying_what_was_expected() {
        let err = serde_json::from_str::<Message>(r#"{"role": "user", "content": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a string or an array of content parts"),
            "{err}"
        );
        assert!(
            serde_json::from_str::<Message>(r#"{"role": "user", "content": {"a": 1}}"#).is_err()
        );
    }
}
