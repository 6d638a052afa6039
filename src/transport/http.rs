//! HTTP(S) to vendor APIs: address resolution, pooled connections and one exchange.
//!
//! This is Pattern B of the Pingora guide: the gateway originates its own upstream request with
//! Pingora's pooled [`Connector`] instead of the proxy path, because the body has to be read,
//! translated and possibly re-sent to another vendor, and stock Pingora cannot forward a pre-read
//! body over 64 KiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
// Pingora's timer wheel (10 ms resolution, one clock thread) instead of Tokio's: no driver lock
// to register and cancel under, no wake-up of the driver per request.
use pingora::protocols::http::client::HttpSession;
use pingora::time::fast_timeout::fast_timeout;
use pingora::upstreams::peer::HttpPeer;

use super::AttemptError;
use crate::config::Timeouts;
use crate::providers::{Endpoint, ProbeRequest, UpstreamRequest};

/// How long a resolved address is used before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);
/// Pooled connections idle longer than this are closed (vendors close theirs after ~60 s+).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// How many times a request is re-sent after a pooled connection turned out to be dead.
const STALE_CONNECTION_RETRIES: usize = 2;

/// The resolved `HttpPeer` of one provider, refreshed every [`DNS_TTL`].
///
/// Building a peer allocates; caching it keeps the request path allocation-free and means DNS is
/// looked up asynchronously, never with Pingora's blocking resolver.
struct PeerCache {
    host: String,
    port: u16,
    tls: bool,
    connect_timeout: Duration,
    literal: Option<SocketAddr>,
    current: ArcSwapOption<CachedPeer>,
}

struct CachedPeer {
    peer: Arc<HttpPeer>,
    expires: Option<Instant>,
}

/// A vendor API's address and timeouts, with its resolved peer.
pub struct Upstream {
    pub endpoint: Endpoint,
    pub timeouts: Timeouts,
    peers: PeerCache,
}

impl Upstream {
    pub fn new(endpoint: Endpoint, timeouts: Timeouts) -> Self {
        Upstream {
            peers: PeerCache::new(&endpoint, &timeouts),
            endpoint,
            timeouts,
        }
    }
}

impl PeerCache {
    fn new(endpoint: &Endpoint, timeouts: &Timeouts) -> Self {
        let literal = endpoint
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, endpoint.port));
        PeerCache {
            host: endpoint.host.clone(),
            port: endpoint.port,
            tls: endpoint.tls,
            connect_timeout: timeouts.connect,
            literal,
            current: ArcSwapOption::empty(),
        }
    }

    fn make_peer(&self, addr: SocketAddr) -> HttpPeer {
        // SNI must be the vendor's hostname; an empty SNI fails the TLS handshake.
        let mut peer = HttpPeer::new(addr, self.tls, self.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout * 2);
        peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        peer
    }

    async fn peer(&self) -> Result<Arc<HttpPeer>, AttemptError> {
        if let Some(cached) = self.current.load().as_ref() {
            if cached.expires.is_none_or(|at| Instant::now() < at) {
                return Ok(cached.peer.clone());
            }
        }
        let (addr, expires) = match self.literal {
            Some(addr) => (addr, None),
            None => {
                let mut addrs = tokio::time::timeout(
                    self.connect_timeout,
                    tokio::net::lookup_host((self.host.as_str(), self.port)),
                )
                .await
                .map_err(|_| {
                    AttemptError::Connect(format!("DNS lookup of {} timed out", self.host))
                })?
                .map_err(|e| AttemptError::Connect(format!("cannot resolve {}: {e}", self.host)))?;
                let addr = addrs.next().ok_or_else(|| {
                    AttemptError::Connect(format!("{} has no address", self.host))
                })?;
                (addr, Some(Instant::now() + DNS_TTL))
            }
        };
        let peer = Arc::new(self.make_peer(addr));
        self.current.store(Some(Arc::new(CachedPeer {
            peer: peer.clone(),
            expires,
        })));
        Ok(peer)
    }
}

/// An upstream exchange whose response header has arrived.
pub struct HttpExchange {
    session: HttpSession,
    peer: Arc<HttpPeer>,
    pub status: u16,
    pub retry_after: Option<String>,
    deadline: Instant,
    idle: Duration,
    /// Time spent waiting on the upstream, for the gateway-overhead metric.
    pub waited: Duration,
}

/// Remaining time until `deadline`, capped at `limit`; which of the two applies names the phase.
fn budget(deadline: Instant, limit: Duration, phase: &'static str) -> (Duration, &'static str) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < limit {
        (left, "the total time limit")
    } else {
        (limit, phase)
    }
}

fn request_header(upstream: &Upstream, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    upstream_header(
        upstream,
        "POST",
        &req.path_and_query,
        &req.headers,
        Some(req.body.len()),
    )
}

/// A request head to `upstream`: its host, our user agent, no compression (answers are parsed),
/// the body's length when given, then `headers`.
fn upstream_header(
    upstream: &Upstream,
    method: &str,
    path_and_query: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
    content_length: Option<usize>,
) -> pingora::Result<RequestHeader> {
    // Lower-case names, as HTTP/2 and Envoy send them: Pingora's case-keeping map costs an
    // allocation per header.
    let mut header =
        RequestHeader::build_no_case(method, path_and_query.as_bytes(), Some(headers.len() + 4))?;
    header.insert_header(http::header::HOST, upstream.endpoint.authority.as_str())?;
    if let Some(length) = content_length {
        header.insert_header(http::header::CONTENT_LENGTH, length)?;
    }
    header.insert_header(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION"))),
    )?;
    header.insert_header(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    )?;
    for (name, value) in headers {
        header.insert_header(name.clone(), value.clone())?;
    }
    Ok(header)
}

/// Sends `req` and waits for the response header.
pub(super) async fn send(
    connector: &Connector,
    upstream: &Upstream,
    req: &UpstreamRequest,
    started: Instant,
) -> Result<HttpExchange, AttemptError> {
    let timeouts = &upstream.timeouts;
    let deadline = started + timeouts.total;
    let peer = upstream.peers.peer().await?;
    let header_error = |e: Box<pingora::Error>| AttemptError::Io(e.to_string());
    // Moved into the first try; only a retry on a stale pooled connection builds another.
    let mut header = Some(request_header(upstream, req).map_err(header_error)?);
    let wait_start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let (limit, phase) = budget(deadline, timeouts.connect * 2, "connect");
        let (mut session, reused) =
            // Boxed: connecting (TLS included) is a ~9 KB future, and held inline it would be
            // part of every request's future for the whole life of a stream, then doubled by
            // each enclosing async fn.
            match fast_timeout(limit, Box::pin(connector.get_http_session(&*peer))).await {
                Err(_) => {
                    return Err(AttemptError::Timeout {
                        phase,
                        after: limit,
                    })
                }
                Ok(Err(e)) => {
                    let mut err = AttemptError::from_pingora(&e, true);
                    if let AttemptError::Timeout { after, .. } = &mut err {
                        *after = timeouts.connect;
                    }
                    return Err(err);
                }
                Ok(Ok(s)) => s,
            };
        let (limit, phase) = budget(deadline, timeouts.first_byte, "the first byte");
        let header = match header.take() {
            Some(header) => header,
            None => request_header(upstream, req).map_err(header_error)?,
        };
        let result = fast_timeout(limit, async {
            session.write_request_header(Box::new(header)).await?;
            session.write_request_body(req.body.clone(), true).await?;
            session.finish_request_body().await?;
            session.read_response_header().await
        })
        .await;
        match result {
            Err(_) => {
                return Err(AttemptError::Timeout {
                    phase,
                    after: limit,
                })
            }
            Ok(Err(e)) => {
                // A pooled connection the server already closed fails here without the server
                // having seen the request, so re-sending it is safe.
                if reused && tries <= STALE_CONNECTION_RETRIES {
                    continue;
                }
                return Err(AttemptError::from_pingora(&e, false));
            }
            Ok(Ok(())) => {}
        }
        let Some(resp) = session.response_header() else {
            return Err(AttemptError::Io("no response header".into()));
        };
        let status = resp.status.as_u16();
        let retry_after = resp
            .headers
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|ms| ms.trim().parse::<f64>().ok())
            .map(|ms| ((ms / 1000.0).ceil() as u64).max(1).to_string())
            .or_else(|| {
                resp.headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
        return Ok(HttpExchange {
            session,
            peer,
            status,
            retry_after,
            deadline,
            idle: timeouts.idle,
            waited: wait_start.elapsed(),
        });
    }
}

impl HttpExchange {
    /// The next piece of the response body; `None` at its end.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        let (limit, phase) = budget(self.deadline, self.idle, "the next chunk");
        let start = Instant::now();
        let result = fast_timeout(limit, self.session.read_response_body()).await;
        self.waited += start.elapsed();
        match result {
            Err(_) => Err(AttemptError::Timeout {
                phase,
                after: limit,
            }),
            Ok(Err(e)) => Err(AttemptError::from_pingora(&e, false)),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    /// The whole response body, up to `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, AttemptError> {
        let mut body = BytesMut::new();
        while let Some(chunk) = self.read_chunk().await? {
            if body.len() + chunk.len() > limit {
                return Err(AttemptError::Io(format!(
                    "response body exceeds {limit} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Returns the connection to the pool; only call after the body was read to its end.
    pub(super) async fn release(mut self, connector: &Connector) {
        if self.session.response_done() {
            connector
                .release_http_session(self.session, &*self.peer, Some(POOL_IDLE_TIMEOUT))
                .await;
        }
    }
}

/// Sends a health probe (`GET`, no body) and returns the answer's status.
pub(super) async fn probe(
    connector: &Connector,
    upstream: &Upstream,
    probe: &ProbeRequest,
    timeout: Duration,
) -> Result<u16, AttemptError> {
    call(
        connector,
        upstream,
        "GET",
        &probe.path_and_query,
        &probe.headers,
        &[],
        timeout,
        0,
    )
    .await
    .map(|(status, _)| status)
}

/// One small request off the request path (probes, credential endpoints): the status and up to
/// `read_limit` bytes of the body. Its connection is not pooled: these run in background
/// services' runtimes, and a connection opened there and pooled for requests would be polled by
/// another runtime's tasks, and would break when that service stops first during a shutdown.
#[allow(clippy::too_many_arguments)]
pub(super) async fn call(
    connector: &Connector,
    upstream: &Upstream,
    method: &str,
    path_and_query: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
    body: &[u8],
    timeout: Duration,
    read_limit: usize,
) -> Result<(u16, Bytes), AttemptError> {
    let peer = upstream.peers.peer().await?;
    let content_length = (!body.is_empty() || method != "GET").then_some(body.len());
    let header = upstream_header(upstream, method, path_and_query, headers, content_length)
        .map_err(|e| AttemptError::Io(e.to_string()))?;
    let exchange = async {
        let (mut session, _) = connector
            .get_http_session(&*peer)
            .await
            .map_err(|e| AttemptError::from_pingora(&e, true))?;
        session
            .write_request_header(Box::new(header))
            .await
            .map_err(|e| AttemptError::from_pingora(&e, false))?;
        if !body.is_empty() {
            session
                .write_request_body(Bytes::copy_from_slice(body), true)
                .await
                .map_err(|e| AttemptError::from_pingora(&e, false))?;
        }
        session
            .finish_request_body()
            .await
            .map_err(|e| AttemptError::from_pingora(&e, false))?;
        session
            .read_response_header()
            .await
            .map_err(|e| AttemptError::from_pingora(&e, false))?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .ok_or_else(|| AttemptError::Io("no response header".into()))?;
        let mut answer = BytesMut::new();
        if read_limit > 0 {
            while let Some(chunk) = session
                .read_response_body()
                .await
                .map_err(|e| AttemptError::from_pingora(&e, false))?
            {
                if answer.len() + chunk.len() > read_limit {
                    return Err(AttemptError::Io(format!(
                        "answer exceeds {read_limit} bytes"
                    )));
                }
                answer.extend_from_slice(&chunk);
            }
        }

        Ok((status, answer.freeze()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AttemptError::Timeout {
            phase: "a background call",
            after: timeout,
        })?
}
