//! `POST /v1/embeddings` in OpenAI's format: the request (kept as its JSON object, so it
//! reaches OpenAI-compatible upstreams unchanged but for `model`) and the answer for adapters
//! whose vendor answers in another shape.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::accounting::Usage;
use crate::error::GatewayError;

/// A parsed embeddings request.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// Everything else, `input` included, in the client's order.
    pub rest: Map<String, Value>,
}

const INPUT_SHAPE: &str = "input must be a string, an array of strings, or token arrays";

fn invalid(message: &str, param: &'static str) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

impl EmbeddingsRequest {
    pub fn parse(body: &[u8]) -> Result<EmbeddingsRequest, GatewayError> {
        let (model, rest) = super::object_with_model(body)?;
        match rest.get("input") {
            Some(Value::String(_)) => {}
            Some(Value::Array(items)) if !items.is_empty() => {
                let ok = items.iter().all(Value::is_string)
                    || items.iter().all(Value::is_u64)
                    || items
                        .iter()
                        .all(|i| i.as_array().is_some_and(|t| t.iter().all(Value::is_u64)));
                if !ok {
                    return Err(invalid(INPUT_SHAPE, "input"));
                }
            }
            Some(Value::Array(_)) => return Err(invalid("input must not be empty", "input")),
            Some(_) => return Err(invalid(INPUT_SHAPE, "input")),
            None => return Err(invalid("you must provide an input parameter", "input")),
        }
        match rest.get("encoding_format") {
            None | Some(Value::Null) => {}
            Some(Value::String(f)) if f == "float" || f == "base64" => {}
            Some(_) => {
                return Err(invalid(
                    "encoding_format must be float or base64",
                    "encoding_format",
                ))
            }
        }
        Ok(EmbeddingsRequest { model, rest })
    }

    /// The texts to embed, for vendors that take text only.
    pub fn texts(&self) -> Result<Vec<&str>, GatewayError> {
        match self.rest.get("input") {
            Some(Value::String(s)) => Ok(vec![s.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().ok_or_else(|| {
                        invalid(
                            "token arrays cannot be embedded by this provider; send text",
                            "input",
                        )
                    })
                })
                .collect(),
            _ => Err(invalid("you must provide an input parameter", "input")),
        }
    }

    /// The prompt tokens by the gateway's estimate (four bytes a token), for vendors that do
    /// not count them.
    pub fn estimated_tokens(&self) -> u64 {
        let bytes: usize = self.texts().map_or(0, |t| t.iter().map(|s| s.len()).sum());
        (bytes as u64).div_ceil(4)
    }

    /// `dimensions`, when the client asked for shortened vectors.
    pub fn dimensions(&self) -> Option<u64> {
        self.rest.get("dimensions").and_then(Value::as_u64)
    }

    pub fn wants_base64(&self) -> bool {
        self.rest.get("encoding_format").and_then(Value::as_str) == Some("base64")
    }

    /// The upstream body for an OpenAI-compatible vendor: the client's fields with `model`.
    pub fn body_with_model(&self, model: &str) -> Result<Vec<u8>, GatewayError> {
        let mut body = Map::with_capacity(self.rest.len() + 1);
        body.insert("model".into(), json!(model));
        body.extend(self.rest.iter().map(|(k, v)| (k.clone(), v.clone())));
        serde_json::to_vec(&Value::Object(body))
            .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))
    }

    /// An OpenAI `list` of embeddings, as floats or as OpenAI's base64 (little-endian `f32`s).
    pub fn answer(&self, model: &str, vectors: &[Vec<f32>], usage: &Usage) -> Bytes {
        let base64 = self.wants_base64();
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        Bytes::from(
            json!({
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
            })
            .to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<EmbeddingsRequest, GatewayError> {
        EmbeddingsRequest::parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_and_refuses_naming_the_param() {
        let r = parse(json!({"model": "e", "input": ["a", "b"], "dimensions": 8})).unwrap();
        assert_eq!(r.texts().unwrap(), ["a", "b"]);
        assert_eq!(r.dimensions(), Some(8));
        assert!(parse(json!({"model": "e", "input": [[1, 2], [3]]}))
            .unwrap()
            .texts()
            .is_err());
        for (bad, param) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "e"}), "input"),
            (json!({"model": "e", "input": []}), "input"),
            (json!({"model": "e", "input": [1, "a"]}), "input"),
            (
                json!({"model": "e", "input": "x", "encoding_format": "hex"}),
                "encoding_format",
            ),
        ] {
            assert_eq!(parse(bad).unwrap_err().param(), Some(param));
        }
    }

    #[test]
    fn answers_in_floats_or_base64() {
        let usage = Usage {
            prompt_tokens: 3,
            ..Usage::default()
        };
        let r = parse(json!({"model": "e", "input": "x"})).unwrap();
        let v: Value = serde_json::from_slice(&r.answer("m", &[vec![0.5, -1.0]], &usage)).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, -1.0]));
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        let r = parse(json!({"model": "e", "input": "x", "encoding_format": "base64"})).unwrap();
        let v: Value = serde_json::from_slice(&r.answer("m", &[vec![1.0]], &usage)).unwrap();
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(v["data"][0]["embedding"], "AACAPw==");
    }
}
