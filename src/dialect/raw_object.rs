//! A JSON object kept as the bytes the client sent, with where each top-level value sits.
//!
//! A passthrough request only needs a few of its fields read (`model`, `stream`, ...) and a few
//! replaced; building a `serde_json::Value` tree of the whole body (every message, every string
//! allocated) and serialising it again was the largest cost of forwarding a request. Here the
//! body is scanned once, without allocating its values, and written back field by field from
//! its own bytes. A `Value` view is built only for the requests that are translated.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A top-level JSON object: its bytes and its fields in the client's order.
///
/// A key the body repeats keeps its first position and its last value, as `serde_json::Map`
/// does, so both views of the body agree.
#[derive(Debug, Clone)]
pub struct RawObject {
    body: Bytes,
    fields: Vec<Field>,
}

#[derive(Debug, Clone)]
struct Field {
    key: Key,
    /// The value's JSON text in `body`.
    value: Range<usize>,
}

/// A field's name: where it sits in the body, or (written with escapes there) decoded.
#[derive(Debug, Clone)]
enum Key {
    InBody(Range<usize>),
    Decoded(Box<str>),
}

/// Why a body is not a [`RawObject`].
#[derive(Debug, thiserror::Error)]
pub enum RawObjectError {
    #[error("request body is not valid JSON: {0}")]
    Syntax(serde_json::Error),
    #[error("request body must be a JSON object")]
    NotAnObject,
}

impl RawObject {
    pub fn parse(body: Bytes) -> Result<RawObject, RawObjectError> {
        let spans = match serde_json::from_slice::<Spans>(&body) {
            Ok(spans) => spans.0,
            // Every value is taken raw, so a data error can only mean the top level is not an
            // object.
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                return Err(RawObjectError::NotAnObject)
            }
            Err(e) => return Err(RawObjectError::Syntax(e)),
        };
        let base = body.as_ptr() as usize;
        // Borrowed texts point into `body`, so their address gives their offset.
        let span = |text: &str| {
            let start = text.as_ptr() as usize - base;
            start..start + text.len()
        };
        let mut object = RawObject {
            body: body.clone(),
            fields: Vec::with_capacity(spans.len()),
        };
        for (CowStr(key), raw) in spans {
            let value = span(raw.get());
            if let Some(index) = object.position(&key) {
                object.fields[index].value = value;
                continue;
            }
            let key = match key {
                Cow::Borrowed(text) => Key::InBody(span(text)),
                Cow::Owned(text) => Key::Decoded(text.into()),
            };
            object.fields.push(Field { key, value });
        }
        Ok(object)
    }

    /// The JSON text of `key`'s value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.text(&self.fields[i].value))
    }

    /// Removes `key`, returning its value's JSON text.
    pub fn take(&mut self, key: &str) -> Option<&str> {
        let index = self.position(key)?;
        let field = self.fields.remove(index);
        Some(self.text(&field.value))
    }

    fn position(&self, key: &str) -> Option<usize> {
        // Bytes, not text: a lookup need not check UTF-8 again.
        self.fields.iter().position(|f| match &f.key {
            Key::InBody(range) => self.body[range.clone()] == *key.as_bytes(),
            Key::Decoded(text) => **text == *key,
        })
    }

    fn key<'a>(&'a self, field: &'a Field) -> &'a str {
        match &field.key {
            Key::InBody(range) => self.text(range),
            Key::Decoded(text) => text,
        }
    }

    /// Removes `key` and parses its value (`None` when absent).
    pub fn take_value<'a, T: Deserialize<'a>>(
        &'a mut self,
        key: &str,
    ) -> Option<Result<T, serde_json::Error>> {
        self.take(key).map(serde_json::from_str)
    }

    /// The fields' keys and JSON texts, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|f| (self.key(f), self.text(&f.value)))
    }

    /// The bytes of the body the fields came from.
    pub fn text_len(&self) -> usize {
        self.body.len()
    }

    /// Appends every field as `"key":value,` — the caller opens and closes the object.
    pub fn write_fields(&self, out: &mut Vec<u8>) {
        for field in &self.fields {
            write_key(out, self.key(field));
            out.extend_from_slice(&self.body[field.value.clone()]);
            out.push(b',');
        }
    }

    /// `{"model":…, <the fields>}` as an OpenAI-format upstream body, the fields copied as their
    /// bytes; a stream (`stream` set) also asks for usage, which the gateway counts, keeping the
    /// client's other `stream_options`.
    pub fn openai_body(
        &self,
        model: &str,
        stream: bool,
        stream_options: &Map<String, Value>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text_len() + model.len() + 96);
        out.push(b'{');
        write_key(&mut out, "model");
        push_json(&mut out, model);
        out.push(b',');
        self.write_fields(&mut out);
        if stream {
            out.extend_from_slice(b"\"stream\":true,\"stream_options\":{\"include_usage\":true");
            for (key, value) in stream_options {
                out.push(b',');
                write_key(&mut out, key);
                push_json(&mut out, value);
            }
            out.push(b'}');
        } else {
            // The comma after the last field.
            out.pop();
        }
        out.push(b'}');
        out
    }

    /// The fields as a `serde_json::Map`, for code that needs to look into them.
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(key, text)| {
                // Already checked to be JSON; a value only fails to parse when nested deeper
                // than serde_json's limit, which the scan enforces too.
                let value = serde_json::from_str(text).unwrap_or(Value::Null);
                (key.to_string(), value)
            })
            .collect()
    }

    /// Deserializes `T` from the fields as if they were the object, each value read from its
    /// bytes (strings borrow from the body), so no `Value` tree is built for the fields `T` names.
    pub fn deserialize<'de, T: Deserialize<'de>>(&'de self) -> Result<T, serde_json::Error> {
        T::deserialize(MapAccessDeserializer::new(FieldsAccess {
            fields: self.iter(),
            value: None,
        }))
    }

    fn text(&self, range: &Range<usize>) -> &str {
        // The body was parsed as JSON, so it is UTF-8 and every value span is too.
        std::str::from_utf8(&self.body[range.clone()]).unwrap_or("null")
    }
}

fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // A string or a `Value` always serialises, and a Vec takes every write.
    let _ = serde_json::to_writer(out, value);
}

/// Appends `"key":`, escaped as JSON.
pub fn write_key(out: &mut Vec<u8>, key: &str) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
    }
}

/// The fields of a [`RawObject`] as a serde map.
struct FieldsAccess<'de, I> {
    fields: I,
    /// The JSON text of the value after the key just read.
    value: Option<&'de str>,
}

impl<'de, I: Iterator<Item = (&'de str, &'de str)>> MapAccess<'de> for FieldsAccess<'de, I> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, serde_json::Error> {
        let Some((key, value)) = self.fields.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, serde_json::Error> {
        let text = self.value.take().unwrap_or("null");
        let mut de = serde_json::Deserializer::from_str(text);
        let value = seed.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

/// A string that borrows from the input when it has no escapes (serde's own `Cow<str>` always
/// allocates outside a derived struct).
pub struct CowStr<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CowVisitor;
        impl<'de> Visitor<'de> for CowVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(text)))
            }
        }
        d.deserialize_str(CowVisitor)
    }
}

/// The top-level `(key, raw value)` pairs of an object, in order.
struct Spans<'a>(Vec<(CowStr<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Spans<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpansVisitor;
        impl<'de> Visitor<'de> for SpansVisitor {
            type Value = Spans<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Spans<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    out.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Spans(out))
            }
        }
        d.deserialize_map(SpansVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> RawObject {
        RawObject::parse(Bytes::copy_from_slice(text.as_bytes())).unwrap()
    }

    fn written(obj: &RawObject) -> String {
        let mut out = b"{".to_vec();
        obj.write_fields(&mut out);
        out.pop();
        out.push(b'}');
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keeps_values_byte_for_byte_in_order() {
        let text = r#"{ "b" : [1, 2.50, {"x":"\u00e9"}], "a":"caf\u00e9" ,"c":null}"#;
        let obj = object(text);
        assert_eq!(
            obj.iter().collect::<Vec<_>>(),
            vec![
                ("b", r#"[1, 2.50, {"x":"\u00e9"}]"#),
                ("a", r#""caf\u00e9""#),
                ("c", "null")
            ]
        );
        assert_eq!(
            written(&obj),
            r#"{"b":[1, 2.50, {"x":"\u00e9"}],"a":"caf\u00e9","c":null}"#
        );
    }

    #[test]
    fn take_removes_and_repeated_keys_keep_the_last_value_like_map() {
        let text = r#"{"model":"a","x":1,"model":"b","y\n":2}"#;
        let mut obj = object(text);
        let map: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(obj.to_map(), map);
        // Plain keys are spans of the body; only an escaped one is decoded and kept.
        assert!(matches!(obj.fields[0].key, Key::InBody(_)));
        assert!(matches!(obj.fields[2].key, Key::Decoded(_)));
        assert_eq!(obj.take("model"), Some(r#""b""#));
        assert_eq!(obj.take("model"), None);
        assert_eq!(written(&obj), r#"{"x":1,"y\n":2}"#);
        assert_eq!(obj.take_value::<u64>("x").unwrap().unwrap(), 1);
        assert_eq!(obj.iter().count(), 1);
    }

    #[test]
    fn deserializes_typed_fields_from_their_bytes() {
        #[derive(Deserialize, PartialEq, Debug)]
        struct Typed<'a> {
            #[serde(borrow)]
            plain: Cow<'a, str>,
            escaped: Cow<'a, str>,
            list: Vec<u8>,
            #[serde(flatten)]
            rest: Map<String, Value>,
        }
        let obj = object(r#"{"plain":"abc","escaped":"a\nb","list":[1,2],"other":{"x":null}}"#);
        let typed: Typed = obj.deserialize().unwrap();
        assert!(matches!(typed.plain, Cow::Borrowed("abc")));
        assert_eq!(typed.escaped, "a\nb");
        assert_eq!(typed.list, vec![1, 2]);
        assert_eq!(
            Value::Object(typed.rest),
            serde_json::json!({"other": {"x": null}})
        );
        let wrong = object(r#"{"plain":1,"escaped":"","list":[]}"#);
        assert!(wrong.deserialize::<Typed>().is_err());
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for bad in ["[1]", "\"x\"", "3", "null"] {
            let err = RawObject::parse(Bytes::from(bad)).unwrap_err();
            assert!(matches!(err, RawObjectError::NotAnObject), "{bad}");
        }
        for bad in ["{", "{\"a\":}", "{\"a\":1} x", ""] {
            let err = RawObject::parse(Bytes::from(bad)).unwrap_err();
            assert!(matches!(err, RawObjectError::Syntax(_)), "{bad}");
        }
    }
}
