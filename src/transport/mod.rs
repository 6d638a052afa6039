//! How vendor requests travel: one [`TransportConnector`] that opens connections for every
//! provider's requests and health probes, one pool of idle connections (`pool`), the resolved
//! address of each upstream, and one exchange per attempt — over HTTP(S) to a vendor ([`http`],
//! its answers read by `h1`) or an answer made in the process ([`local`], the built-in mock's).
//!
//! Adapters build an [`UpstreamRequest`]; this module sends it and hands back the status and the
//! body, chunk by chunk. Nothing here knows a vendor's format.

mod h1;
pub mod http;
pub mod local;
mod pool;
mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::ErrorType;

pub use http::{HttpExchange, Upstream};
pub use local::LocalExchange;
use pool::Pool;
pub use request::{Endpoint, ProbeRequest, UpstreamRequest};

/// Idle connections kept for reuse to one upstream address.
const MAX_IDLE_PER_PEER: usize = 1024;

/// Why one attempt got no usable answer. None of these carry secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out waiting for {phase} after {} ms", .after.as_millis())]
    Timeout {
        phase: &'static str,
        after: Duration,
    },
    #[error("connection failed: {0}")]
    Io(String),
    /// The request cannot be written as HTTP/1.1. Adapters check what clients choose before any
    /// attempt, so reaching this is the gateway's bug, never the provider's fault.
    #[error("the request cannot be sent: {0}")]
    Unsendable(&'static str),
}

impl AttemptError {
    /// A failure to open a connection whose connect timeout is `connect_timeout`. A timeout
    /// there means no answer to the connection request at all: the server is down, a firewall
    /// drops it, or its listen backlog is full.
    fn connecting(e: &pingora::Error, connect_timeout: Duration) -> AttemptError {
        match e.etype() {
            ErrorType::ConnectTimedout => AttemptError::Timeout {
                phase: "the server to accept the connection",
                after: connect_timeout,
            },
            other => AttemptError::Connect(other.as_str().to_string()),
        }
    }
}

/// The process's connections to upstreams, shared by requests and probes.
pub struct Transport {
    /// Opens connections (TCP, TLS); Pingora's pool inside it stays unused.
    connector: TransportConnector,
    /// Idle keep-alive connections of the request path.
    pool: Arc<Pool>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            connector: TransportConnector::new(Some(ConnectorOptions::new(1))),
            pool: Pool::new(MAX_IDLE_PER_PEER, http::POOL_IDLE_TIMEOUT),
        }
    }
}

impl Transport {
    /// Sends `req` to `upstream` and waits for the response header; `started` begins the
    /// attempt's total time limit.
    pub async fn send(
        &self,
        upstream: &Upstream,
        req: &UpstreamRequest,
        started: Instant,
    ) -> Result<Exchange, AttemptError> {
        http::send(&self.connector, &self.pool, upstream, req, started)
            .await
            .map(Exchange::Http)
    }

    /// Sends a health probe (`GET`, no body) and returns the answer's status.
    pub async fn probe(
        &self,
        upstream: &Upstream,
        probe: &ProbeRequest,
        timeout: Duration,
    ) -> Result<u16, AttemptError> {
        http::probe(&self.connector, upstream, probe, timeout).await
    }

    /// One small request off the request path (credential endpoints): the status and up to
    /// 64 KiB of the answer.
    pub async fn call(
        &self,
        upstream: &Upstream,
        method: &str,
        path_and_query: &str,
        headers: &[(::http::HeaderName, ::http::HeaderValue)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<(u16, Bytes), AttemptError> {
        http::call(
            &self.connector,
            upstream,
            method,
            path_and_query,
            headers,
            body,
            timeout,
            64 * 1024,
        )
        .await
    }

    /// Ends an exchange whose body was read to its end: HTTP connections go back to the pool.
    pub fn release(&self, exchange: Exchange) {
        if let Exchange::Http(x) = exchange {
            x.release(&self.pool);
        }
    }
}

/// One upstream answer whose status is known and whose body is read piece by piece.
// HTTP is the common case: boxing it to shrink the rare local variant would allocate per attempt.
#[allow(clippy::large_enum_variant)]
pub enum Exchange {
    Http(HttpExchange),
    Local(LocalExchange),
}

impl Exchange {
    pub fn status(&self) -> u16 {
        match self {
            Exchange::Http(x) => x.status,
            Exchange::Local(_) => 200,
        }
    }

    /// The upstream's `Retry-After` (or `retry-after-ms`, in seconds), when it sent one.
    pub fn take_retry_after(&mut self) -> Option<String> {
        match self {
            Exchange::Http(x) => x.retry_after.take(),
            Exchange::Local(_) => None,
        }
    }

    /// Time spent waiting on the upstream so far, for the gateway-overhead metric.
    pub fn waited(&self) -> Duration {
        match self {
            Exchange::Http(x) => x.waited,
            Exchange::Local(x) => x.waited,
        }
    }

    /// The next piece of the response body; `None` at its end.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        match self {
            Exchange::Http(x) => x.read_chunk().await,
            Exchange::Local(x) => Ok(x.read_chunk().await),
        }
    }

    /// The whole response body, up to `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, AttemptError> {
        match self {
            Exchange::Http(x) => x.read_all(limit).await,
            Exchange::Local(x) => Ok(x.read_all().await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection the server never accepted (down, filtered, or a full listen backlog) says
    /// so, with the configured timeout, not "after 0 ms".
    #[test]
    fn a_connect_timeout_names_what_happened_and_the_configured_limit() {
        let timed_out = pingora::Error::new(ErrorType::ConnectTimedout);
        let err = AttemptError::connecting(&timed_out, Duration::from_millis(2000));
        assert_eq!(
            err.to_string(),
            "timed out waiting for the server to accept the connection after 2000 ms"
        );
        let refused = pingora::Error::new(ErrorType::ConnectRefused);
        assert!(matches!(
            AttemptError::connecting(&refused, Duration::from_millis(2000)),
            AttemptError::Connect(_)
        ));
    }
}
