//! HTTP(S) to vendor APIs: address resolution, pooled connections and one exchange.
//!
//! The gateway originates its own upstream request instead of taking Pingora's proxy path,
//! because the body has to be read, translated and possibly re-sent to another vendor, and
//! Pingora's proxy cannot forward a body it already read when it is over 64 KiB.
//! Only the connecting (TCP, TLS) is Pingora's [`TransportConnector`]: the request head is
//! written here (see [`wire_head`]), the answer read by [`super::h1`], idle connections kept by
//! [`super::pool`].

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use pingora::connectors::TransportConnector;
// Pingora's timer wheel (10 ms resolution, one clock thread) instead of Tokio's: no driver lock
// to register and cancel under, no wake-up of the driver per request.
use pingora::protocols::Stream;
use pingora::time::fast_timeout::fast_timeout;
use pingora::upstreams::peer::{HttpPeer, Peer};

use super::h1::{Answer, ReadError};
use super::pool::Pool;
use super::AttemptError;
use super::{Endpoint, ProbeRequest, UpstreamRequest};
use crate::config::Timeouts;

/// How long a resolved address is used before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(30);
/// Pooled connections idle longer than this are closed (vendors close theirs after ~60 s+).
pub(super) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
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
    peer: HttpPeer,
    /// The peer's list in the connection [`Pool`] (`Peer::reuse_hash`, computed once).
    pool_key: u64,
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

    async fn peer(&self) -> Result<Arc<CachedPeer>, AttemptError> {
        if let Some(cached) = self.current.load().as_ref() {
            if cached.expires.is_none_or(|at| Instant::now() < at) {
                return Ok(cached.clone());
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
        let peer = self.make_peer(addr);
        let cached = Arc::new(CachedPeer {
            pool_key: peer.reuse_hash(),
            peer,
            expires,
        });
        self.current.store(Some(cached.clone()));
        Ok(cached)
    }
}

/// An upstream exchange whose response header has arrived.
pub struct HttpExchange {
    answer: Answer,
    /// The connection's list in the pool, for [`HttpExchange::release`].
    pool_key: u64,
    pub status: u16,
    pub retry_after: Option<String>,
    deadline: Instant,
    idle: Duration,
    /// Time spent waiting on the upstream, for the gateway-overhead metric.
    pub waited: Duration,
}

/// Remaining time until `deadline`, capped at `limit`; which of the two applies names the phase.
fn budget(deadline: Instant, limit: Duration, phase: &'static str) -> (Duration, &'static str) {
    budget_at(Instant::now(), deadline, limit, phase)
}

/// [`budget`] as of `now`, for a caller that reads the clock anyway.
fn budget_at(
    now: Instant,
    deadline: Instant,
    limit: Duration,
    phase: &'static str,
) -> (Duration, &'static str) {
    let left = deadline.saturating_duration_since(now);
    if left < limit {
        (left, "the total time limit")
    } else {
        (limit, phase)
    }
}

/// A request head to `upstream` as it goes on the wire: its host, the body's length when given,
/// our user agent and no compression (answers are parsed) unless `headers` set their own, then
/// `headers`. Names go out in lower case, as HTTP/2 and Envoy send them.
///
/// Written by hand rather than through Pingora's `RequestHeader`: that costs a header map, a
/// box and a buffer per request, and Pingora's client flushes the head on its own, so the head
/// and the body would leave in two writes (two TCP segments) instead of one.
fn wire_head(
    upstream: &Upstream,
    method: &str,
    path_and_query: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
    content_length: Option<usize>,
) -> Result<Vec<u8>, AttemptError> {
    use http::header::{ACCEPT_ENCODING, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, USER_AGENT};
    use std::io::Write;

    // What Pingora's request-target parser refuses, and more: only visible ASCII can be
    // written into a request line without changing its meaning.
    if path_and_query.is_empty() || !path_and_query.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AttemptError::Unsendable(
            "the request target has a byte HTTP/1.1 does not allow",
        ));
    }
    let given = |name: &http::HeaderName| headers.iter().any(|(n, _)| n == name);
    let authority = upstream.endpoint.authority.as_str();
    let user_agent = concat!("switchyard/", env!("CARGO_PKG_VERSION"));
    let mut head = Vec::with_capacity(
        128 + path_and_query.len()
            + authority.len()
            + headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>(),
    );
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(path_and_query.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if !given(&HOST) {
        push_header(&mut head, HOST.as_str(), authority.as_bytes());
    }
    if let Some(length) = content_length {
        // Framing belongs to the transport: a configured Content-Length is not sent.
        let _ = write!(head, "content-length: {length}\r\n");
    }
    if !given(&USER_AGENT) {
        push_header(&mut head, USER_AGENT.as_str(), user_agent.as_bytes());
    }
    if !given(&ACCEPT_ENCODING) {
        push_header(&mut head, ACCEPT_ENCODING.as_str(), b"identity");
    }
    for (name, value) in headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            push_header(&mut head, name.as_str(), value.as_bytes());
        }
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

fn push_header(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Writes the head and the body in one go: one `writev` on a TCP stream (a stream Pingora's
/// connector opens has no write buffer), more only when the socket takes part of them.
async fn write_request(stream: &mut Stream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;

    let (mut head, mut body) = (head, body);
    while !head.is_empty() || !body.is_empty() {
        let written = stream
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = written.min(head.len());
        head = &head[from_head..];
        body = &body[written - from_head..];
    }
    stream.flush().await
}

/// A new connection to `peer`, within the connect timeout and what is left of the total.
async fn connect(
    connector: &TransportConnector,
    peer: &HttpPeer,
    deadline: Instant,
    timeouts: &Timeouts,
) -> Result<Stream, AttemptError> {
    let (limit, phase) = budget(deadline, timeouts.connect * 2, "connect");
    // Boxed: connecting (TLS included) is a ~9 KB future, and held inline it would be part of
    // every request's future for the whole life of a stream, then doubled by each enclosing
    // async fn.
    match fast_timeout(limit, Box::pin(connector.new_stream(peer))).await {
        Err(_) => Err(AttemptError::Timeout {
            phase,
            after: limit,
        }),
        Ok(Err(e)) => Err(AttemptError::connecting(&e, timeouts.connect)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Sends `req` and waits for the response header.
pub(super) async fn send(
    connector: &TransportConnector,
    pool: &Pool,
    upstream: &Upstream,
    req: &UpstreamRequest,
    started: Instant,
) -> Result<HttpExchange, AttemptError> {
    let timeouts = &upstream.timeouts;
    let deadline = started + timeouts.total;
    let peer = upstream.peers.peer().await?;
    let head = wire_head(
        upstream,
        "POST",
        &req.path_and_query,
        &req.headers,
        Some(req.body.len()),
    )?;
    let wait_start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        // A pooled connection first, outside the connect future: that future is ~9 KB, and
        // creating it copies all of it into its box, a connection in the pool or not.
        let (mut stream, reused) = match pool.take(peer.pool_key) {
            Some(stream) => (stream, true),
            None => (
                connect(connector, &peer.peer, deadline, timeouts).await?,
                false,
            ),
        };
        let (limit, phase) = budget(deadline, timeouts.first_byte, "the first byte");
        let result = fast_timeout(limit, async {
            write_request(&mut stream, &head, &req.body)
                .await
                .map_err(|e| (AttemptError::Io(format!("writing the request: {e}")), true))?;
            // A malformed answer came from a server that saw the request: never re-sent.
            Answer::read_head(stream).await.map_err(|e| {
                let unanswered = !matches!(e, ReadError::Malformed(_));
                (AttemptError::Io(e.to_string()), unanswered)
            })
        })
        .await;
        let (answer, head) = match result {
            Err(_) => {
                return Err(AttemptError::Timeout {
                    phase,
                    after: limit,
                })
            }
            Ok(Err((e, unanswered))) => {
                // A pooled connection the server already closed fails here without the server
                // having seen the request, so re-sending it is safe.
                if reused && unanswered && tries <= STALE_CONNECTION_RETRIES {
                    continue;
                }
                return Err(e);
            }
            Ok(Ok(read)) => read,
        };
        return Ok(HttpExchange {
            answer,
            pool_key: peer.pool_key,
            status: head.status,
            retry_after: head.retry_after,
            deadline,
            idle: timeouts.idle,
            waited: wait_start.elapsed(),
        });
    }
}

impl HttpExchange {
    /// The next piece of the response body; `None` at its end.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, AttemptError> {
        // One clock read for both: this runs for every chunk of every answer.
        let start = Instant::now();
        let (limit, phase) = budget_at(start, self.deadline, self.idle, "the next chunk");
        let result = fast_timeout(limit, self.answer.read_chunk()).await;
        self.waited += start.elapsed();
        match result {
            Err(_) => Err(AttemptError::Timeout {
                phase,
                after: limit,
            }),
            Ok(Err(e)) => Err(AttemptError::Io(e.to_string())),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    /// The whole response body, up to `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, AttemptError> {
        let too_long = || AttemptError::Io(format!("response body exceeds {limit} bytes"));
        // A body that came in one piece (most JSON answers) is handed on as it is.
        let Some(first) = self.read_chunk().await? else {
            return Ok(Bytes::new());
        };
        if first.len() > limit {
            return Err(too_long());
        }
        let Some(second) = self.read_chunk().await? else {
            return Ok(first);
        };
        let mut body = BytesMut::with_capacity(first.len() + second.len());
        body.extend_from_slice(&first);
        let mut next = Some(second);
        while let Some(chunk) = next {
            if body.len() + chunk.len() > limit {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
            next = self.read_chunk().await?;
        }
        Ok(body.freeze())
    }

    /// Returns the connection to the pool; only call after the body was read to its end.
    pub(super) fn release(self, pool: &Pool) {
        if let Some(stream) = self.answer.into_reusable() {
            pool.put(self.pool_key, stream);
        }
    }
}

/// Sends a health probe (`GET`, no body) and returns the answer's status.
pub(super) async fn probe(
    connector: &TransportConnector,
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
    connector: &TransportConnector,
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
    let head = wire_head(upstream, method, path_and_query, headers, content_length)?;
    let exchange = async {
        let mut stream = connector
            .new_stream(&peer.peer)
            .await
            .map_err(|e| AttemptError::connecting(&e, upstream.timeouts.connect))?;
        write_request(&mut stream, &head, body)
            .await
            .map_err(|e| AttemptError::Io(format!("writing the request: {e}")))?;
        let (mut answer, head) = Answer::read_head(stream)
            .await
            .map_err(|e| AttemptError::Io(e.to_string()))?;
        let mut body = BytesMut::new();
        if read_limit > 0 {
            while let Some(chunk) = answer
                .read_chunk()
                .await
                .map_err(|e| AttemptError::Io(e.to_string()))?
            {
                if body.len() + chunk.len() > read_limit {
                    return Err(AttemptError::Io(format!(
                        "answer exceeds {read_limit} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
        }
        Ok((head.status, body.freeze()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AttemptError::Timeout {
            phase: "a background call",
            after: timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use tokio::io::AsyncReadExt;

    fn upstream() -> Upstream {
        let url = url::Url::parse("http://api.example.com:8080/v1").unwrap();
        Upstream::new(Endpoint::from_url(&url).unwrap(), Timeouts::default())
    }

    fn header(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
        (
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    }

    #[test]
    fn head_has_host_length_agent_and_encoding_then_the_adapters_headers() {
        let head = wire_head(
            &upstream(),
            "POST",
            "/v1/chat/completions",
            &[
                header("content-type", "application/json"),
                header("authorization", "Bearer sk-test"),
            ],
            Some(12),
        )
        .unwrap();
        let expected = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: api.example.com:8080\r\n\
             content-length: 12\r\nuser-agent: switchyard/{}\r\naccept-encoding: identity\r\n\
             content-type: application/json\r\nauthorization: Bearer sk-test\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(String::from_utf8(head).unwrap(), expected);
    }

    #[test]
    fn configured_headers_replace_defaults_but_never_the_framing() {
        let head = wire_head(
            &upstream(),
            "GET",
            "/v1/models",
            &[
                header("user-agent", "acme/2"),
                header("host", "other.example"),
                header("content-length", "99"),
                header("transfer-encoding", "chunked"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /v1/models HTTP/1.1\r\naccept-encoding: identity\r\nuser-agent: acme/2\r\n\
             host: other.example\r\n\r\n"
        );
    }

    #[test]
    fn a_target_that_would_change_the_request_line_is_refused() {
        for target in ["/v1/models/a b", "/v1\r\nx: y", "", "/v1/é"] {
            let err = wire_head(&upstream(), "POST", target, &[], Some(0)).unwrap_err();
            assert!(
                matches!(err, AttemptError::Unsendable(_)),
                "{target:?}: {err}"
            );
        }
    }

    /// A body far over the socket's buffer is written whole, in order, after the head.
    #[tokio::test]
    async fn head_and_a_large_body_arrive_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            socket.read_to_end(&mut received).await.unwrap();
            received
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(tcp));
        let head = b"POST / HTTP/1.1\r\ncontent-length: 4000000\r\n\r\n".to_vec();
        let body: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        write_request(&mut stream, &head, &body).await.unwrap();
        drop(stream);
        let received = reader.await.unwrap();
        assert_eq!(received.len(), head.len() + body.len());
        assert_eq!(&received[..head.len()], &head[..]);
        assert!(received[head.len()..] == body[..]);
    }
}
