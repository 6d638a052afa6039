//! `POST /v1/embeddings` on Gemini: `batchEmbedContents` (one request per input text), answered
//! as OpenAI's `list`. Gemini reports no token counts for embeddings: usage is estimated from
//! the texts (about four characters a token).

use serde::Deserialize;
use serde_json::json;

use crate::accounting::Usage;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::error::GatewayError;
use crate::providers::{RenderedAnswer, StreamFailure};

/// The `batchEmbedContents` body for `model`.
pub(super) fn request_body(
    request: &EmbeddingsRequest,
    model: &str,
) -> Result<Vec<u8>, GatewayError> {
    let requests: Vec<_> = request
        .texts()?
        .into_iter()
        .map(|text| {
            let mut r = json!({"model": format!("models/{model}"),
                               "content": {"parts": [{"text": text}]}});
            if let Some(d) = request.dimensions() {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    serde_json::to_vec(&json!({ "requests": requests }))
        .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))
}

#[derive(Deserialize)]
struct AnswerWire {
    embeddings: Vec<EmbeddingWire>,
}

#[derive(Deserialize)]
struct EmbeddingWire {
    values: Vec<f32>,
}

/// A `batchEmbedContents` answer as OpenAI's `list`.
pub(super) fn decode(
    request: &EmbeddingsRequest,
    model: &str,
    body: &[u8],
) -> Result<RenderedAnswer, StreamFailure> {
    let answer: AnswerWire = serde_json::from_slice(body).map_err(|e| {
        StreamFailure::Malformed(format!("answer is not a Gemini embeddings batch: {e}"))
    })?;
    let vectors: Vec<Vec<f32>> = answer.embeddings.into_iter().map(|e| e.values).collect();
    let usage = Usage {
        prompt_tokens: request.estimated_tokens(),
        ..Usage::default()
    };
    Ok(RenderedAnswer {
        body: request.answer(model, &vectors, &usage),
        usage: Some(usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn batch_request_and_answer() {
        let req = EmbeddingsRequest::parse(
            br#"{"model":"e","input":["hello","world!!"],"dimensions":2}"#,
        )
        .unwrap();
        let body: Value =
            serde_json::from_slice(&request_body(&req, "text-embedding-004").unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 2},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "world!!"}]}, "outputDimensionality": 2}]})
        );
        let answer = decode(
            &req,
            "text-embedding-004",
            br#"{"embeddings":[{"values":[0.25,0.5]},{"values":[1,0]}]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([1.0, 0.0]));
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["model"], "text-embedding-004");
        assert_eq!(answer.usage.unwrap().prompt_tokens, 3);
        assert!(decode(&req, "m", b"{}").is_err());
        let tokens = EmbeddingsRequest::parse(br#"{"model":"e","input":[[1,2]]}"#).unwrap();
        assert_eq!(
            request_body(&tokens, "m").unwrap_err().param(),
            Some("input")
        );
    }
}
