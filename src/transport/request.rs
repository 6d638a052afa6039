//! What the transport is asked to send: where (an [`Endpoint`]), and the request itself, built
//! by a vendor adapter ([`UpstreamRequest`], [`ProbeRequest`]).

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

/// Where a provider lives, split out of its `base_url` once at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header value: the host, plus the port when it is not the scheme's default.
    pub authority: String,
    /// The base URL's path without a trailing slash (`/v1`, or empty).
    pub base_path: String,
}

impl Endpoint {
    pub fn from_url(url: &url::Url) -> Option<Endpoint> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Some(Endpoint {
            tls,
            host,
            port,
            authority,
            base_path: url.path().trim_end_matches('/').to_string(),
        })
    }
}

/// A vendor request, ready for the transport (which adds `Host` and `Content-Length`).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub path_and_query: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// A cheap `GET` that tells whether a provider is up and accepts the gateway's key.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub path_and_query: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Another host than the provider's, when its cheap `GET` lives elsewhere (Bedrock's
    /// control plane).
    pub endpoint: Option<Endpoint>,
}
