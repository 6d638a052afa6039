//! AWS Bedrock (`kind: bedrock`): the Converse and ConverseStream APIs, signed with SigV4
//! (`aws-sigv4`) from static credentials (config or `AWS_*` environment), or authorized with a
//! Bedrock API key (`api_key`, sent as a Bearer token). [`request`] maps the canonical request,
//! [`response`] the answers and the binary event stream ([`eventstream`]).

mod credentials;
mod embeddings;
pub mod eventstream;
mod request;
mod response;

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::model_id::ModelIdRule;
use super::{
    push_credentials, Answer, AttemptTarget, Endpoint, KeyScheme, ProbeRequest, ProviderAdapter,
    RenderedAnswer, Renewable, StreamFailure, StreamReader, StreamSettings, UpstreamRequest,
};
use crate::config::{AwsCredentials, ProviderKind};
use crate::dialect::openai::embeddings::EmbeddingsRequest;
use crate::dialect::ClientRequest;
use crate::dialect::Dialect;
use crate::error::GatewayError;

pub use response::{decode_error, stop_reason};

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";

pub struct BedrockAdapter {
    region: String,
    signer: Signer,
}

/// How requests are authorized.
enum Signer {
    /// SigV4 with static keys.
    Static(Identity),
    /// SigV4 with the instance role's keys, renewed before they expire.
    InstanceProfile(credentials::InstanceProfile),
    /// A Bedrock API key (`api_key`) as a Bearer token, or nothing.
    ApiKey,
}

impl BedrockAdapter {
    /// Signs with `credentials` when given, else with a Bedrock API key when `api_key` says so,
    /// else with the instance profile.
    pub fn new(region: &str, credentials: Option<&AwsCredentials>) -> Self {
        Self::with_signer(region, credentials, false)
    }

    pub fn with_signer(region: &str, credentials: Option<&AwsCredentials>, api_key: bool) -> Self {
        let signer = match credentials {
            Some(c) => Signer::Static(
                Credentials::new(
                    c.access_key_id.clone(),
                    c.secret_access_key.expose().to_string(),
                    c.session_token.as_ref().map(|t| t.expose().to_string()),
                    None,
                    "switchyard-config",
                )
                .into(),
            ),
            None if api_key => Signer::ApiKey,
            None => credentials::InstanceProfile::from_env()
                .map_or(Signer::ApiKey, Signer::InstanceProfile),
        };
        BedrockAdapter {
            region: region.to_string(),
            signer,
        }
    }

    /// The keys to sign with now; `Ok(None)` for API-key auth.
    fn identity(&self) -> Result<Option<Identity>, GatewayError> {
        match &self.signer {
            Signer::Static(identity) => Ok(Some(identity.clone())),
            Signer::InstanceProfile(profile) => profile.identity().map(Some).ok_or_else(|| {
                GatewayError::BadGateway("the instance profile's AWS keys are not available".into())
            }),
            Signer::ApiKey => Ok(None),
        }
    }

    /// Adds the SigV4 `authorization`, `x-amz-date` (and `x-amz-security-token`) headers for
    /// `body` sent to `path_and_query`, at `now`.
    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        identity: &Identity,
        endpoint: &Endpoint,
        method: &str,
        path_and_query: &str,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), GatewayError> {
        let failed =
            |what: &str| GatewayError::Internal(format!("cannot sign the Bedrock request: {what}"));
        let scheme = if endpoint.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}{path_and_query}", endpoint.authority);
        let params = v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name(SERVICE)
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .map_err(|_| failed("signing parameters"))?
            .into();
        let signed_headers: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
            .collect();
        let signable = SignableRequest::new(
            method,
            &url,
            signed_headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|_| failed("request"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|_| failed("signature"))?
            .into_parts();
        for (name, value) in instructions.headers() {
            headers.push((
                HeaderName::try_from(name).map_err(|_| failed("header name"))?,
                HeaderValue::try_from(value).map_err(|_| failed("header value"))?,
            ));
        }
        Ok(())
    }
}

/// Model ids and inference-profile ARNs (`anthropic.claude-3-5-sonnet-20240620-v1:0`,
/// `arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic…`), percent-encoded
/// whole in the path as AWS's SDKs do.
const BEDROCK_MODEL: ModelIdRule = ModelIdRule {
    what: "a Bedrock model id",
    punctuation: b"-._:/",
    literal: b"",
};

impl BedrockAdapter {
    /// `POST /model/{id}/{operation}` with `body`, signed (or with the API key).
    fn signed(
        &self,
        target: &AttemptTarget<'_>,
        operation: &str,
        body: Vec<u8>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let path_and_query = format!(
            "{}/model/{}/{operation}",
            target.endpoint.base_path,
            BEDROCK_MODEL.segment(target.upstream_model)?
        );
        let mut headers = vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        match self.identity()? {
            Some(identity) => {
                headers.extend(target.extra_headers.iter().cloned());
                self.sign(
                    &identity,
                    target.endpoint,
                    "POST",
                    &path_and_query,
                    &mut headers,
                    &body,
                    SystemTime::now(),
                )?;
            }
            None => push_credentials(&mut headers, target, KeyScheme::Bearer)?,
        }
        Ok(UpstreamRequest {
            path_and_query,
            headers,
            body: Bytes::from(body),
        })
    }
}

impl ProviderAdapter for BedrockAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Bedrock
    }

    fn check_model(&self, model: &str) -> Result<(), GatewayError> {
        BEDROCK_MODEL.check(model)
    }

    fn renewable(&self) -> Option<&dyn Renewable> {
        match &self.signer {
            Signer::InstanceProfile(profile) => Some(profile),
            _ => None,
        }
    }

    fn build_request(
        &self,
        request: &ClientRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let model = target.upstream_model;
        BEDROCK_MODEL.check(model)?;
        let body = request::body(&request.canonical()?, model)?.to_string();
        let operation = if request.stream() {
            "converse-stream"
        } else {
            "converse"
        };
        self.signed(target, operation, body.into_bytes())
    }

    fn build_embeddings(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Result<UpstreamRequest, GatewayError> {
        let body = embeddings::request_body(request, target.upstream_model)?;
        self.signed(target, "invoke", body)
    }

    fn decode_embeddings(
        &self,
        request: &EmbeddingsRequest,
        model: &str,
        body: Bytes,
    ) -> Result<RenderedAnswer, StreamFailure> {
        embeddings::decode(request, model, &body)
    }

    /// Titan takes one input per call: a batch is one signed InvokeModel per input.
    fn build_embeddings_parts(
        &self,
        request: &EmbeddingsRequest,
        target: &AttemptTarget<'_>,
    ) -> Option<Result<Vec<UpstreamRequest>, GatewayError>> {
        let bodies = embeddings::titan_batch(request, target.upstream_model)?;
        Some(bodies.and_then(|bodies| {
            bodies
                .into_iter()
                .map(|body| self.signed(target, "invoke", body))
                .collect()
        }))
    }

    fn decode_embeddings_parts(
        &self,
        request: &EmbeddingsRequest,
        model: &str,
        bodies: &[Bytes],
    ) -> Result<RenderedAnswer, StreamFailure> {
        embeddings::decode_titan_batch(request, model, bodies)
    }

    fn decode_response(
        &self,
        body: Bytes,
        _native: Option<Dialect>,
    ) -> Result<Answer, StreamFailure> {
        response::decode(&body, "bedrock").map(Answer::Chat)
    }

    /// ListFoundationModels on the control plane (`bedrock.{region}…` beside
    /// `bedrock-runtime.{region}…`; the same host for a custom `base_url`): free, and it checks
    /// the credentials.
    fn probe_request(&self, target: &AttemptTarget<'_>) -> Option<ProbeRequest> {
        let runtime = target.endpoint;
        let endpoint = match runtime.host.strip_prefix("bedrock-runtime.") {
            Some(rest) => {
                let host = format!("bedrock.{rest}");
                Endpoint {
                    tls: runtime.tls,
                    authority: runtime.authority.replacen(&runtime.host, &host, 1),
                    host,
                    port: runtime.port,
                    base_path: runtime.base_path.clone(),
                }
            }
            None => runtime.clone(),
        };
        let path_and_query = format!(
            "{}/foundation-models?byOutputModality=TEXT",
            endpoint.base_path
        );
        let mut headers = Vec::new();
        match self.identity().ok()? {
            Some(identity) => self
                .sign(
                    &identity,
                    &endpoint,
                    "GET",
                    &path_and_query,
                    &mut headers,
                    b"",
                    SystemTime::now(),
                )
                .ok()?,
            None => push_credentials(&mut headers, target, KeyScheme::Bearer).ok()?,
        }
        Some(ProbeRequest {
            path_and_query,
            headers,
            endpoint: Some(endpoint),
        })
    }

    fn stream_decoder(&self, _native: Option<Dialect>, _settings: StreamSettings) -> StreamReader {
        StreamReader::Events(Box::new(response::StreamDecoder::default()))
    }

    fn decode_error(
        &self,
        provider: &str,
        status: u16,
        body: &[u8],
        retry_after: Option<String>,
    ) -> GatewayError {
        // The exception type travels in a header the transport does not keep; the status and
        // Bedrock's `__type`-less message are enough to map it.
        response::decode_error(Some(provider), status, None, body, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::dialect::openai::ChatRequest;
    use crate::dialect::Dialect;
    use crate::providers::{client_answer, client_stream, Endpoint};
    use serde_json::{json, Value};

    fn adapter() -> BedrockAdapter {
        BedrockAdapter::new(
            "us-east-1",
            Some(&AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: None,
            }),
        )
    }

    fn build(body: Value) -> UpstreamRequest {
        let ep = Endpoint::from_url(
            &url::Url::parse("https://bedrock-runtime.us-east-1.amazonaws.com").unwrap(),
        )
        .unwrap();
        adapter()
            .build_request(
                &ClientRequest::OpenAi(ChatRequest::parse(body.to_string().as_bytes()).unwrap()),
                &AttemptTarget {
                    upstream_model: "anthropic.claude-3-5-sonnet-20240620-v1:0",
                    endpoint: &ep,
                    api_key: None,
                    extra_headers: &[],
                },
            )
            .unwrap()
    }

    #[test]
    fn converse_request_is_mapped_and_signed() {
        let req = build(
            json!({"model": "m", "max_tokens": 100, "temperature": 0.5, "stop": ["X"],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call.1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"P\"}"}}]},
                {"role": "tool", "tool_call_id": "call.1", "content": "18C"}],
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
            "tool_choice": "required"}),
        );
        assert_eq!(
            req.path_and_query,
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({
                "messages": [
                    {"role": "user", "content": [{"text": "Weather?"},
                        {"image": {"format": "png", "source": {"bytes": "iVBO"}}}]},
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "call_1", "name": "w", "input": {"c": "P"}}}]},
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}}]}],
                "system": [{"text": "Be brief."}],
                "inferenceConfig": {"maxTokens": 100, "temperature": 0.5, "stopSequences": ["X"]},
                "toolConfig": {"tools": [{"toolSpec": {"name": "w", "inputSchema": {"json": {"type": "object"}}}}],
                               "toolChoice": {"any": {}}}
            })
        );
        let header = |n: &str| {
            req.headers
                .iter()
                .find(|(h, _)| h.as_str() == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        let auth = header("authorization").expect("signed");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
        assert!(header("x-amz-date").is_some());
    }

    #[test]
    fn probes_list_models_on_the_control_plane_signed() {
        let ep = Endpoint::from_url(
            &url::Url::parse("https://bedrock-runtime.eu-west-1.amazonaws.com").unwrap(),
        )
        .unwrap();
        let probe = adapter()
            .probe_request(&AttemptTarget {
                upstream_model: "",
                endpoint: &ep,
                api_key: None,
                extra_headers: &[],
            })
            .unwrap();
        let control = probe.endpoint.unwrap();
        assert_eq!(control.host, "bedrock.eu-west-1.amazonaws.com");
        assert_eq!(control.authority, "bedrock.eu-west-1.amazonaws.com");
        assert_eq!(
            probe.path_and_query,
            "/foundation-models?byOutputModality=TEXT"
        );
        assert!(probe
            .headers
            .iter()
            .any(|(n, v)| n == "authorization"
                && v.to_str().unwrap().starts_with("AWS4-HMAC-SHA256")));
    }

    #[test]
    fn refusals_name_the_parameter() {
        let ep = Endpoint::from_url(&url::Url::parse("https://b.example").unwrap()).unwrap();
        for (extra, param) in [
            (json!({"n": 2}), Some("n")),
            (
                json!({"response_format": {"type": "json_object"}}),
                Some("response_format"),
            ),
            (json!({"frobnicate": 1}), None),
        ] {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let err = adapter()
                .build_request(
                    &ClientRequest::OpenAi(
                        ChatRequest::parse(body.to_string().as_bytes()).unwrap(),
                    ),
                    &AttemptTarget {
                        upstream_model: "meta.llama3-70b-instruct-v1:0",
                        endpoint: &ep,
                        api_key: None,
                        extra_headers: &[],
                    },
                )
                .unwrap_err();
            assert_eq!(err.status(), 400);
            assert_eq!(err.param(), param);
        }
    }

    #[test]
    fn answers_and_streams_decode() {
        let answer = br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hi"},
            {"toolUse":{"toolUseId":"t1","name":"w","input":{"c":"P"}}}]}},"stopReason":"tool_use",
            "usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15,"cacheReadInputTokens":2}}"#;
        let rendered =
            client_answer(&adapter(), Bytes::from_static(answer), Dialect::OpenAi).unwrap();
        let v: Value = serde_json::from_slice(&rendered.body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"c\":\"P\"}"
        );
        assert_eq!(v["usage"]["prompt_tokens"], 12);

        let ev = |kind: &str, payload: Value| {
            eventstream::encode(
                &[
                    (":event-type", kind),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                payload.to_string().as_bytes(),
            )
        };
        let mut stream = Vec::new();
        stream.extend(ev("messageStart", json!({"role": "assistant"})));
        stream.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        ));
        stream.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        ));
        stream.extend(ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}}),
        ));
        stream.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"c\":"}}}),
        ));
        stream.extend(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"P\"}"}}}),
        ));
        stream.extend(ev("messageStop", json!({"stopReason": "tool_use"})));
        stream.extend(ev(
            "metadata",
            json!({"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}}),
        ));
        for piece in [1, 13, 4096] {
            let mut d = client_stream(
                &adapter(),
                Dialect::OpenAi,
                StreamSettings {
                    include_usage: true,
                    price: None,
                },
            );
            let mut out = Vec::new();
            for c in stream.chunks(piece) {
                d.push(c, &mut out).unwrap();
            }
            d.finish(&mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(r#""content":"Hel""#), "{text}");
            assert!(text.contains(r#""arguments":"\"P\"}""#), "{text}");
            assert!(text.contains(r#""finish_reason":"tool_calls""#), "{text}");
            assert!(text.contains(r#""prompt_tokens":7"#), "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"));
            assert_eq!(d.usage().unwrap().completion_tokens, 3);
        }
        // An exception inside the stream fails it with its mapped status; a cut is truncated.
        let mut cut = ev("messageStart", json!({"role": "assistant"}));
        let mut d = client_stream(&adapter(), Dialect::OpenAi, StreamSettings::default());
        let mut out = Vec::new();
        d.push(&cut, &mut out).unwrap();
        assert!(matches!(d.finish(&mut out), Err(StreamFailure::Truncated)));
        cut.extend(eventstream::encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"Too many requests"}"#,
        ));
        let mut d = client_stream(&adapter(), Dialect::OpenAi, StreamSettings::default());
        match d.push(&cut, &mut Vec::new()) {
            Err(StreamFailure::Upstream(e)) => assert_eq!(e.status(), 429),
            other => panic!("{other:?}"),
        }
    }
}
