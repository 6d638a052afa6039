//! Azure OpenAI (`kind: azure-openai`).
//!
//! The wire format is OpenAI's, so bodies and answers go through the OpenAI adapter; what differs
//! is the address and the auth header. `base_url` is the resource endpoint
//! (`https://NAME.openai.azure.com`), a target's `model` is the deployment name, and `api_version`
//! selects the API: a dated version (default [`DEFAULT_API_VERSION`]) uses
//! `/openai/deployments/{deployment}/chat/completions?api-version=…`; `v1` uses the newer
//! `/openai/v1/chat/completions` with the deployment as `model`.

use bytes::Bytes;

use super::model_id::{ModelIdRule, BODY_ONLY};
use super::openai::{decode_openai_embeddings, decode_openai_error, OpenAiAdapter};
use super::{
    push_credentials, Answer, AttemptTarget, KeyScheme, ProbeRequest, ProviderAdapter,
    RenderedAnswer, StreamFailure, StreamReader, StreamSettings, UpstreamRequest,
};
use crate::config::ProviderKind;
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::{ClientRequest, Dialect};
use crate::error::GatewayError;

/// The current GA version of the dated API.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// Deployment names: letters, digits, `-`, `_` and `.`.
const AZURE_DEPLOYMENT: ModelIdRule = ModelIdRule {
    what: "an Azure deployment name",
    punctuation: b"-._",
    literal: b"",
};

pub struct AzureAdapter {
    body: OpenAiAdapter,
    api_version: String,
    /// Responses clients pass through to `/openai/v1/responses` (the v1 API, whatever
    /// `api_version` says: Azure serves Responses only there).
    responses_api: bool,
}

impl AzureAdapter {
    pub fn new(api_version: Option<&str>) -> Self {
        AzureAdapter {
            body: OpenAiAdapter::new(ProviderKind::AzureOpenAi),
            api_version: api_version.unwrap_or(DEFAULT_API_VERSION).to_string(),
            responses_api: false,
        }
    }

    pub fn with_responses_api(mut self, served: bool) -> Self {
        self.responses_api = served;
        self.body = self.body.with_responses_api(served);
        self
    }

    fn path(&self, base_path: &str, deployment: &str) -> Result<String, GatewayError> {
        self.operation_path(base_path, deployment, "chat/completions")
    }

    /// The URL of `operation` (`chat/completions`, `embeddings`) on a deployment.
    fn operation_path(
        &self,
        base_path: &str,
        deployment: &str,
        operation: &str,
    ) -> Result<String, GatewayError> {
        if self.api_version == "v1" {
            return Ok(format!("{base_path}/openai/v1/{operation}"));
        }
        let deployment = AZURE_DEPLOYMENT.segment(deployment)?;
        Ok(format!(
            "{base_path}/openai/deployments/{deployment}/{operation}?api-version={}",
            self.api_version
        ))
    }
}

impl ProviderAdapter for AzureAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AzureOpenAi
    }

    fn native_dialect(&self) -> Option<Dialect> {
        Some(Dialect::OpenAi)
    }

    fn speaks(&self, dialect: Dialect) -> bool {
        self.body.speaks(dialect)
    }

    fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        if self.api_version == "v1" {
            BODY_ONLY.check(model)
        } else {
            AZURE_DEPLOYMENT.check(model)
        }
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        if let ClientRequest::Responses(responses) = request {
            if self.responses_api {
                let path = format!("{}/openai/v1/responses", target.endpoint.base_path);
                return OpenAiAdapter::responses_request(
                    responses,
                    target,
                    path,
                    KeyScheme::Header("api-key"),
                );
            }
        }
        let path_and_query = self.path(&target.endpoint.base_path, target.upstream_model)?;
        let body = self.body.body_for(request, target.upstream_model)?;
        let mut headers = Vec::with_capacity(3 + target.extra_headers.len());
        headers.extend(OpenAiAdapter::content_headers(request.stream()));
        push_credentials(&mut headers, target, KeyScheme::Header("api-key"))?;
        Ok(UpstreamRequest {
            path_and_query,
            headers,
            body: Bytes::from(body),
        })
    }

    fn build_embeddings(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let path_and_query = self.operation_path(
            &target.endpoint.base_path,
            target.upstream_model,
            "embeddings",
        )?;
        let mut headers = Vec::with_capacity(3 + target.extra_headers.len());
        headers.extend(OpenAiAdapter::content_headers(false));
        push_credentials(&mut headers, target, KeyScheme::Header("api-key"))?;
        Ok(UpstreamRequest {
            path_and_query,
            headers,
            body: Bytes::from(request.body_with_model(target.upstream_model)?),
        })
    }

    fn decode_embeddings(
        &self,
        _request: &EmbeddingsRequest,
        _model: &str,
        body: Bytes,
    ) -> Result<RenderedAnswer, StreamFailure> {
        decode_openai_embeddings(body)
    }

    fn decode_response(
        &self,
        body: Bytes,
        native: Option<Dialect>,
    ) -> Result<Answer, StreamFailure> {
        self.body.decode_response(body, native)
    }

    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let base = &target.endpoint.base_path;
        let path_and_query = if self.api_version == "v1" {
            format!("{base}/openai/v1/models")
        } else {
            format!("{base}/openai/models?api-version={}", self.api_version)
        };
        let mut headers = Vec::new();
        push_credentials(&mut headers, target, KeyScheme::Header("api-key")).ok()?;
        Some(ProbeRequest {
            path_and_query,
            headers,
            endpoint: None,
        })
    }

    fn stream_decoder(&self, native: Option<Dialect>, settings: StreamSettings) -> StreamReader {
        self.body.stream_decoder(native, settings)
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        decode_openai_error(Some(provider), status, body, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::dialect::openai::ChatRequest;
    use crate::providers::{client_stream, Endpoint};
    use serde_json::{json, Value};

    fn build(api_version: Option<&str>, deployment: &str) -> Result<UpstreamRequest, GatewayError> {
        let req = ChatRequest::parse(
            json!({"model": "gpt", "messages": [{"role": "developer", "content": "x"}], "stream": true})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let ep =
            Endpoint::from_url(&url::Url::parse("https://acme.openai.azure.com").unwrap()).unwrap();
        let key = Secret::new("az-key");
        AzureAdapter::new(api_version).build_request(
            &ClientRequest::OpenAi(req),
            &AttemptTarget {
                upstream_model: deployment,
                endpoint: &ep,
                api_key: Some(&key),
                extra_headers: &[],
            },
        )
    }

    #[test]
    fn dated_api_uses_deployment_urls_and_api_key() {
        let out = build(None, "gpt-4o-prod").unwrap();
        assert_eq!(
            out.path_and_query,
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        let key = out.headers.iter().find(|(n, _)| n == "api-key").unwrap();
        assert_eq!(key.1, "az-key");
        assert!(out.headers.iter().all(|(n, _)| n != "authorization"));
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        // Azure accepts the developer role; it is passed on as sent.
        assert_eq!(body["messages"][0]["role"], "developer");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn v1_api_and_bad_deployment_names() {
        assert_eq!(
            build(Some("v1"), "dep").unwrap().path_and_query,
            "/openai/v1/chat/completions"
        );
        assert_eq!(
            build(Some("2025-04-01-preview"), "d")
                .unwrap()
                .path_and_query,
            "/openai/deployments/d/chat/completions?api-version=2025-04-01-preview"
        );
        assert_eq!(build(None, "a/../b").unwrap_err().status(), 400);
    }

    #[test]
    fn content_filter_preamble_chunk_is_skipped() {
        let stream = "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n\
                      data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
                      data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"content_filter\"}]}\n\n\
                      data: [DONE]\n\n";
        let mut d = client_stream(
            &AzureAdapter::new(None),
            Dialect::OpenAi,
            StreamSettings {
                include_usage: false,
                price: None,
            },
        );
        let mut out = Vec::new();
        d.push(stream.as_bytes(), &mut out).unwrap();
        d.finish(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("prompt_filter_results"), "{text}");
        assert!(text.starts_with("data: {\"id\":\"c\""));
        assert!(text.contains("\"finish_reason\":\"content_filter\""));
    }
}
