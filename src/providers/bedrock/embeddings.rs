//! `POST /v1/embeddings` on Bedrock, through InvokeModel (`/model/{id}/invoke`) in the model
//! family's own body: Amazon Titan (`amazon.titan-embed-*`: one text per call, `dimensions`,
//! token count in the answer; a batch is one call per input, answered together in order) and
//! Cohere (`cohere.embed-*`: a batch of texts, no token count: estimated at about four
//! characters a token).

use serde::Deserialize;
use serde_json::json;

use crate::accounting::Usage;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::error::GatewayError;
use crate::providers::{RenderedAnswer, StreamFailure};

fn is_cohere(model: &str) -> bool {
    model.contains("cohere.")
}

fn is_titan(model: &str) -> bool {
    model.contains("titan-embed")
}

/// Titan's body for one input.
fn titan_body(request: &EmbeddingsRequest, text: &str) -> Result<Vec<u8>, GatewayError> {
    let mut body = json!({ "inputText": text });
    if let Some(d) = request.dimensions() {
        body["dimensions"] = json!(d);
    }
    serde_json::to_vec(&body)
        .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))
}

/// One Titan body per input, for a batch (`None` for a single input or another family).
pub(super) fn titan_batch(
    request: &EmbeddingsRequest,
    model: &str,
) -> Option<Result<Vec<Vec<u8>>, GatewayError>> {
    if !is_titan(model) {
        return None;
    }
    let texts = match request.texts() {
        Ok(texts) if texts.len() > 1 => texts,
        Ok(_) => return None,
        Err(e) => return Some(Err(e)),
    };
    Some(texts.iter().map(|t| titan_body(request, t)).collect())
}

/// The answers to a Titan batch, in input order, as one OpenAI `list`; tokens summed.
pub(super) fn decode_titan_batch(
    request: &EmbeddingsRequest,
    model: &str,
    bodies: &[bytes::Bytes],
) -> Result<RenderedAnswer, StreamFailure> {
    let mut vectors = Vec::with_capacity(bodies.len());
    let mut tokens = 0;
    for body in bodies {
        let wire: TitanWire = serde_json::from_slice(body).map_err(|e| {
            StreamFailure::Malformed(format!("answer is not a Bedrock embedding: {e}"))
        })?;
        tokens += wire.input_text_token_count.unwrap_or(0);
        vectors.push(wire.embedding);
    }
    if tokens == 0 {
        tokens = request.estimated_tokens();
    }
    let usage = Usage {
        prompt_tokens: tokens,
        ..Usage::default()
    };
    Ok(RenderedAnswer {
        body: request.answer(model, &vectors, &usage),
        usage: Some(usage),
    })
}

/// The InvokeModel body for `model`.
pub(super) fn request_body(
    request: &EmbeddingsRequest,
    model: &str,
) -> Result<Vec<u8>, GatewayError> {
    let texts = request.texts()?;
    let body = if is_cohere(model) {
        json!({"texts": texts, "input_type": "search_document"})
    } else if is_titan(model) {
        // A batch goes through `titan_batch`: one call per input.
        let [text] = texts.as_slice() else {
            return Err(GatewayError::invalid(
                "Titan embedding models take one input per call; send a batch as several",
                Some("input"),
            ));
        };
        return titan_body(request, text);
    } else {
        return Err(GatewayError::invalid(
            format!("'{model}' is not a Bedrock embedding model this gateway knows (amazon.titan-embed-*, cohere.embed-*)"),
            Some("model"),
        ));
    };
    serde_json::to_vec(&body)
        .map_err(|e| GatewayError::Internal(format!("cannot encode upstream request: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanWire {
    embedding: Vec<f32>,
    #[serde(default)]
    input_text_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct CohereWire {
    embeddings: Vec<Vec<f32>>,
}

/// The InvokeModel answer as OpenAI's `list`.
pub(super) fn decode(
    request: &EmbeddingsRequest,
    model: &str,
    body: &[u8],
) -> Result<RenderedAnswer, StreamFailure> {
    let malformed = |e: serde_json::Error| {
        StreamFailure::Malformed(format!("answer is not a Bedrock embedding: {e}"))
    };
    let (vectors, tokens) = if is_cohere(model) {
        let wire: CohereWire = serde_json::from_slice(body).map_err(malformed)?;
        (wire.embeddings, request.estimated_tokens())
    } else {
        let wire: TitanWire = serde_json::from_slice(body).map_err(malformed)?;
        let tokens = wire
            .input_text_token_count
            .unwrap_or_else(|| request.estimated_tokens());
        (vec![wire.embedding], tokens)
    };
    let usage = Usage {
        prompt_tokens: tokens,
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
    fn titan_and_cohere_bodies_and_answers() {
        let one =
            EmbeddingsRequest::parse(br#"{"model":"e","input":"hi","dimensions":256}"#).unwrap();
        let titan = "amazon.titan-embed-text-v2:0";
        let body: Value = serde_json::from_slice(&request_body(&one, titan).unwrap()).unwrap();
        assert_eq!(body, json!({"inputText": "hi", "dimensions": 256}));
        let answer = decode(
            &one,
            titan,
            br#"{"embedding":[0.5,0.25],"inputTextTokenCount":2}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.5, 0.25]));
        assert_eq!(answer.usage.unwrap().prompt_tokens, 2);

        let many = EmbeddingsRequest::parse(br#"{"model":"e","input":["a","b"]}"#).unwrap();
        assert_eq!(
            request_body(&many, titan).unwrap_err().param(),
            Some("input")
        );
        let cohere = "cohere.embed-english-v3";
        let body: Value = serde_json::from_slice(&request_body(&many, cohere).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"texts": ["a", "b"], "input_type": "search_document"})
        );
        let answer = decode(&many, cohere, br#"{"embeddings":[[1.0],[0.0]],"id":"x"}"#).unwrap();
        let v: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(
            request_body(&one, "meta.llama3").unwrap_err().param(),
            Some("model")
        );
    }
}
