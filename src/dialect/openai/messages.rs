//! One pass over a request's `messages`: checks their shape and notes what host quirks look
//! for, so that neither needs another scan of a long conversation.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::chat;
use crate::dialect::raw_object::CowStr;
use crate::error::GatewayError;

/// What the gateway knows about a request's messages without keeping them parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagesSummary {
    /// Some message has `role: "developer"`.
    pub developer_role: bool,
    /// Some message carries `tool_calls` or a `tool_call_id`.
    pub tool_ids: bool,
}

impl MessagesSummary {
    /// The checks that need no scan of the messages: `text` (the JSON of `messages`) is there and
    /// is a non-empty array.
    pub fn check_list(text: Option<&str>) -> Result<(), GatewayError> {
        let Some(text) = text else {
            return Err(invalid("you must provide a messages parameter"));
        };
        let Some(items) = text.trim_start().strip_prefix('[') else {
            return Err(invalid("messages must be an array"));
        };
        if items.trim_start().starts_with(']') {
            return Err(invalid("messages must contain at least one message"));
        }
        Ok(())
    }

    /// Checks that `text` (the JSON of `messages`) is a non-empty array of objects, and
    /// summarises it.
    pub fn read(text: Option<&str>) -> Result<MessagesSummary, GatewayError> {
        Self::check_list(text)?;
        // The body is valid JSON and this is a non-empty array, and a message's fields are
        // read whatever their type: only a message that is not an object fails here.
        serde_json::from_str::<Summary>(text.unwrap_or_default())
            .map(|Summary(summary)| summary)
            .map_err(|_| invalid("each message must be an object"))
    }

    /// The summary of messages already read into the canonical form: the same facts
    /// [`Self::read`] finds, without a second pass over the text. (The canonical form took every
    /// message as an object, with a string role.)
    pub fn of(messages: &[chat::Message<'_>]) -> MessagesSummary {
        messages
            .iter()
            .fold(MessagesSummary::default(), |summary, m| MessagesSummary {
                developer_role: summary.developer_role || m.role == "developer",
                tool_ids: summary.tool_ids || m.tool_calls.is_some() || m.tool_call_id.is_some(),
            })
    }
}

fn invalid(message: &str) -> GatewayError {
    GatewayError::invalid(message, Some("messages"))
}

struct Summary(MessagesSummary);

impl<'de> Deserialize<'de> for Summary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Summary;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Summary, A::Error> {
                let mut summary = MessagesSummary::default();
                while let Some(Shape {
                    developer_role,
                    tool_ids,
                }) = seq.next_element::<Shape>()?
                {
                    summary.developer_role |= developer_role;
                    summary.tool_ids |= tool_ids;
                }
                Ok(Summary(summary))
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

/// One message, reduced to the facts [`MessagesSummary`] keeps.
struct Shape {
    developer_role: bool,
    tool_ids: bool,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ShapeVisitor;
        impl<'de> Visitor<'de> for ShapeVisitor {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut shape = Shape {
                    developer_role: false,
                    tool_ids: false,
                };
                while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
                    match &*key {
                        // A role that is not a string is the upstream's to refuse.
                        "role" => {
                            let role = map.next_value::<RoleText>()?;
                            shape.developer_role |= role.0.as_deref() == Some("developer");
                        }
                        "tool_calls" | "tool_call_id" => {
                            shape.tool_ids |= map.next_value::<Option<IgnoredAny>>()?.is_some();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(shape)
            }
        }
        // `deserialize_map`, unlike a derived struct, refuses an array.
        d.deserialize_map(ShapeVisitor)
    }
}

/// A role's text when it is a string; other JSON values are kept out of the way.
struct RoleText<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for RoleText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Role<'a> {
            #[serde(borrow)]
            Text(CowStr<'a>),
            Other(IgnoredAny),
        }
        Ok(RoleText(match Role::deserialize(d)? {
            Role::Text(CowStr(text)) => Some(text),
            Role::Other(_) => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<MessagesSummary, String> {
        MessagesSummary::read(Some(text)).map_err(|e| e.to_string())
    }

    #[test]
    fn summarises_roles_and_tool_ids_in_one_pass() {
        let s = read(
            r#"[{"role":"user","content":"developer"},{"role":"assistant","tool_calls":null}]"#,
        )
        .unwrap();
        assert_eq!((s.developer_role, s.tool_ids), (false, false));
        let s = read(r#"[{"role":"\u0064eveloper"},{"role":"tool","tool_call_id":"a"}]"#).unwrap();
        assert_eq!((s.developer_role, s.tool_ids), (true, true));
        let s = read(r#"[{"role":5,"content":[{"type":"text","text":"x"}]}]"#).unwrap();
        assert!(!s.developer_role);
    }

    #[test]
    fn refuses_what_is_not_a_list_of_objects() {
        for (text, want) in [
            ("[]", "at least one message"),
            ("\"hi\"", "must be an array"),
            ("{}", "must be an array"),
            ("[\"hi\"]", "must be an object"),
            ("[[\"user\"]]", "must be an object"),
            ("[{}, 3]", "must be an object"),
        ] {
            let err = read(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        let err = MessagesSummary::read(None).unwrap_err();
        assert!(err.to_string().contains("provide a messages"));
        for (text, ok) in [
            (" [ {} ]", true),
            ("[\"hi\"]", true),
            ("[ ]", false),
            ("{}", false),
        ] {
            assert_eq!(
                MessagesSummary::check_list(Some(text)).is_ok(),
                ok,
                "{text}"
            );
        }
    }
}
