//! The scriptable mock upstream: [`MockUpstream`] answers each request as its script says
//! ([`MockResponse`]) and records what it received ([`RecordedRequest`]).

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::lock;
use super::tls::TestCa;

// ---------------------------------------------------------------------------------------------
// Mock upstream: requests

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path including the query string, as sent on the request line.
    pub path: String,
    /// In arrival order; names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent with `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
    /// When the last byte of the request was read.
    pub received_at: Instant,
    /// The TLS server name the client sent (TLS mocks only).
    pub sni: Option<String>,
}

impl RecordedRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), for assertions and messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "upstream request {} {} body is not JSON ({e}): {}",
                self.method,
                self.path,
                self.body_text()
            )
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Mock upstream: responses

#[derive(Clone, Debug)]
enum Body {
    Full(Vec<u8>),
    Sse(Vec<String>),
    Reset,
    Hang,
}

/// What the mock answers to one request. Build with a constructor, then chain modifiers.
#[derive(Clone, Debug)]
pub struct MockResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    header_delay: Duration,
    chunk_delay: Duration,
    delays: Option<Vec<Duration>>,
    cut_after: Option<usize>,
    stall_after: Option<usize>,
    close_after: bool,
}

impl MockResponse {
    fn new(status: u16, body: Body) -> Self {
        MockResponse {
            status,
            headers: Vec::new(),
            body,
            header_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            delays: None,
            cut_after: None,
            stall_after: None,
            close_after: false,
        }
    }

    /// `Content-Type: application/json` with a `Content-Length`.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::text(status, "application/json", body.to_string())
    }

    /// Any body with the given content type and a `Content-Length`.
    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, Body::Full(body.into())).with_header("content-type", content_type)
    }

    /// Status 200, `text/event-stream`, `Transfer-Encoding: chunked`. Each string is written as
    /// its own HTTP chunk, exactly as given, and flushed at once; then the terminating chunk.
    pub fn sse(events: Vec<String>) -> Self {
        Self::new(200, Body::Sse(events)).with_header("content-type", "text/event-stream")
    }

    /// Closes the connection right after reading the request, writing nothing (an RST).
    pub fn reset() -> Self {
        Self::new(0, Body::Reset)
    }

    /// Reads the request and never answers; the socket stays open until the mock is dropped.
    pub fn hang() -> Self {
        Self::new(0, Body::Hang)
    }

    /// Changes the status (e.g. an SSE body with a 4xx/5xx status).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a response header. A `content-type` or `content-length` given here replaces the
    /// default one (a wrong `content-length` is sent as given).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let replaces = ["content-type", "content-length"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name));
        if replaces {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sleeps after reading the request, before writing anything (slow first byte).
    pub fn header_delay(mut self, d: Duration) -> Self {
        self.header_delay = d;
        self
    }

    /// SSE: sleeps before each chunk, the first one included.
    pub fn chunk_delay(mut self, d: Duration) -> Self {
        self.chunk_delay = d;
        self
    }

    /// SSE: sleeps `d[i]` before chunk `i` (none past the end of `d`); overrides `chunk_delay`.
    pub fn delays(mut self, d: Vec<Duration>) -> Self {
        self.delays = Some(d);
        self
    }

    /// SSE: after the first `n` chunks (all of them if there are fewer), closes the connection
    /// abruptly (an RST, no terminating chunk). On a plain body: after the first `n` body bytes.
    pub fn cut_after(mut self, n: usize) -> Self {
        self.cut_after = Some(n);
        self
    }

    /// SSE: after the first `n` chunks (all of them if there are fewer), sends nothing more but
    /// keeps the connection open until the mock is dropped. On a plain body: after `n` body bytes.
    pub fn stall_after(mut self, n: usize) -> Self {
        self.stall_after = Some(n);
        self
    }

    /// Closes the connection (a FIN) after the whole answer, without a `Connection: close`: an
    /// upstream that ends an idle keep-alive connection does this.
    pub fn close_after(mut self) -> Self {
        self.close_after = true;
        self
    }

    fn delay_before(&self, i: usize) -> Duration {
        match &self.delays {
            Some(d) => d.get(i).copied().unwrap_or(Duration::ZERO),
            None => self.chunk_delay,
        }
    }

    /// Status line and headers; `framing` is the body framing header the harness adds.
    fn head(&self, framing: Option<String>, close: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if let Some(framing) = framing {
            head.push_str(&framing);
            head.push_str("\r\n");
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}

// ---------------------------------------------------------------------------------------------
// Mock upstream: server

type Script = dyn Fn(&RecordedRequest, usize) -> MockResponse + Send + Sync;

struct Shared {
    script: Box<Script>,
    requests: Mutex<Vec<RecordedRequest>>,
    connections: AtomicUsize,
    /// The gateway's health probes (`GET` of a path containing `/models`) are answered here with
    /// this status and counted apart, so that scripts and request counts see only real traffic.
    probe_status: AtomicU16,
    probes: AtomicUsize,
    /// Messages of script panics (each answered with a 500).
    panics: Mutex<Vec<String>>,
    /// Requests whose client closed the connection while their answer's head was delayed.
    abandoned: AtomicUsize,
}

/// A scriptable HTTP/1.1 upstream on 127.0.0.1. Serves until dropped; dropping it closes the
/// listener and every connection, hanging and stalled ones included.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Owns the listener and (in a `JoinSet`) every connection task: aborting it drops them all.
    accept: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl MockUpstream {
    /// Binds 127.0.0.1:0. `script(request, index)` chooses each answer; `index` counts requests
    /// (health probes excluded) from 0 across all connections.
    pub async fn start<F>(script: F) -> MockUpstream
    where
        F: Fn(&RecordedRequest, usize) -> MockResponse + Send + Sync + 'static,
    {
        Self::start_inner(Box::new(script), None).await
    }

    /// An HTTPS upstream for `localhost` with a certificate from `ca` (see [`TestCa`]).
    pub async fn start_tls<F>(script: F, ca: &TestCa) -> MockUpstream
    where
        F: Fn(&RecordedRequest, usize) -> MockResponse + Send + Sync + 'static,
    {
        Self::start_inner(Box::new(script), Some(ca.acceptor())).await
    }

    async fn start_inner(
        script: Box<Script>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock upstream to 127.0.0.1:0");
        let addr = listener.local_addr().expect("mock upstream local address");
        let shared = Arc::new(Shared {
            script,
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            probe_status: AtomicU16::new(200),
            probes: AtomicUsize::new(0),
            panics: Mutex::new(Vec::new()),
            abandoned: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), tls));
        MockUpstream {
            addr,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT` (for a TLS mock use `https://localhost:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every fully received request (health probes excluded), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Accepted TCP connections, probes' included.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The status health probes get from now on (200 at start).
    pub fn set_probe_status(&self, status: u16) {
        self.shared.probe_status.store(status, Ordering::SeqCst);
    }

    /// Requests whose client closed the connection while the answer's head was held back
    /// ([`MockResponse::header_delay`]): a hedge's loser, a client that gave up.
    pub fn abandoned_count(&self) -> usize {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    pub fn probe_count(&self) -> usize {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// Messages of panics in the script so far (each such request was answered with a 500).
    pub fn script_panics(&self) -> Vec<String> {
        lock(&self.shared.panics).clone()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.request_count() < n {
            assert!(
                Instant::now() < deadline,
                "mock upstream got {} requests, expected at least {n} within {timeout:?}",
                self.request_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Dropped with this future when the mock is dropped, which aborts every connection task.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors or similar: wait and keep serving.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                match tls.clone() {
                    None => {
                        connections.spawn(serve_connection(stream, None, shared, reset_tcp));
                    }
                    Some(acceptor) => {
                        connections.spawn(async move {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_string);
                            serve_connection(stream, sni, shared, reset_tls).await;
                        });
                    }
                }
            }
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Closes with an RST rather than a FIN, like a crashed or reset upstream.
fn reset_tcp(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

fn reset_tls(stream: tokio_rustls::server::TlsStream<TcpStream>) {
    let _ = stream.get_ref().0.set_zero_linger();
    drop(stream);
}

/// Longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 1 << 20;
const READ_SIZE: usize = 64 * 1024;

/// A connection with its read buffer; `buf[pos..]` holds bytes read but not yet consumed.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    pos: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(READ_SIZE),
            pos: 0,
        }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads more bytes into the buffer; false at end of stream or on error.
    async fn fill(&mut self) -> bool {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= READ_SIZE {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_SIZE);
        matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    /// Consumes up to and including the next `delim`, returning the bytes before it; `None` at
    /// end of stream or when more than `limit` bytes come without it.
    async fn read_until(&mut self, delim: &[u8], limit: usize) -> Option<Vec<u8>> {
        // Bytes of the pending data already searched, so each byte is looked at about once.
        let mut searched: usize = 0;
        loop {
            let pending = &self.buf[self.pos..];
            let from = searched.saturating_sub(delim.len() - 1);
            if let Some(i) = find(&pending[from..], delim) {
                let end = from + i;
                let out = pending[..end].to_vec();
                self.pos += end + delim.len();
                return Some(out);
            }
            searched = pending.len();
            if searched > limit || !self.fill().await {
                return None;
            }
        }
    }

    /// Consumes exactly `n` bytes, appending them to `out`; large remainders are read straight
    /// into `out` without going through the buffer.
    async fn read_exact_into(&mut self, n: usize, out: &mut Vec<u8>) -> Option<()> {
        let have = n.min(self.pending());
        out.extend_from_slice(&self.buf[self.pos..self.pos + have]);
        self.pos += have;
        if have < n {
            let start = out.len();
            out.resize(start + (n - have), 0);
            self.stream.read_exact(&mut out[start..]).await.ok()?;
        }
        Some(())
    }

    /// Reads one whole request; `None` when the client closed or sent something unparsable.
    async fn read_request(&mut self, sni: &Option<String>) -> Option<RecordedRequest> {
        // Tolerate stray empty lines between requests (RFC 9112 section 2.2).
        while self.pending() < 2 {
            if !self.fill().await {
                return None;
            }
        }
        while self.buf[self.pos..].starts_with(b"\r\n") {
            self.pos += 2;
        }
        let head = self.read_until(b"\r\n\r\n", MAX_HEAD).await?;
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split_whitespace();
        let method = request_line.next()?.to_string();
        let path = request_line.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| {
            v.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        });
        let length: usize = match get("content-length") {
            Some(v) if !chunked => v.parse().ok()?,
            _ => 0,
        };
        let continue_expected =
            get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if continue_expected && (chunked || length > 0) && self.pending() == 0 {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .ok()?;
            self.stream.flush().await.ok()?;
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let line = self.read_until(b"\r\n", 4096).await?;
                let line = String::from_utf8_lossy(&line);
                let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    // Trailer fields, up to an empty line.
                    while !self.read_until(b"\r\n", MAX_HEAD).await?.is_empty() {}
                    break;
                }
                body.reserve(size);
                self.read_exact_into(size, &mut body).await?;
                if !self.read_until(b"\r\n", 2).await?.is_empty() {
                    return None;
                }
            }
        } else if length > 0 {
            body.reserve_exact(length);
            self.read_exact_into(length, &mut body).await?;
        }
        Some(RecordedRequest {
            method,
            path,
            headers,
            body,
            received_at: Instant::now(),
            sni: sni.clone(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    sni: Option<String>,
    shared: Arc<Shared>,
    reset: fn(S),
) {
    let mut conn = Conn::new(stream);
    loop {
        let Some(request) = conn.read_request(&sni).await else {
            return;
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let answer = if request.method == "GET" && request.path.contains("/models") {
            shared.probes.fetch_add(1, Ordering::SeqCst);
            let status = shared.probe_status.load(Ordering::SeqCst);
            MockResponse::json(status, serde_json::json!({"object": "list", "data": []}))
        } else {
            let index = {
                let mut requests = lock(&shared.requests);
                requests.push(request.clone());
                requests.len() - 1
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| (shared.script)(&request, index))) {
                Ok(answer) => answer,
                Err(payload) => {
                    let message = panic_message(payload.as_ref());
                    lock(&shared.panics).push(message.clone());
                    MockResponse::text(
                        500,
                        "text/plain",
                        format!("mock upstream script panicked: {message}"),
                    )
                    .with_header("x-mock-script-panic", "1")
                }
            }
        };
        let closes = close || answer.close_after;
        match respond(conn, answer, close, reset, &shared.abandoned).await {
            Some(c) if !closes => conn = c,
            Some(mut c) => {
                let _ = c.stream.shutdown().await;
                return;
            }
            None => return,
        }
    }
}

/// Writes one response. Gives the connection back for the next request, or `None` when it was
/// reset, cut or the client went away.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Conn<S>,
    response: MockResponse,
    close: bool,
    reset: fn(S),
    abandoned: &AtomicUsize,
) -> Option<Conn<S>> {
    if !response.header_delay.is_zero() {
        let delay = tokio::time::sleep(response.header_delay);
        tokio::pin!(delay);
        loop {
            tokio::select! {
                _ = &mut delay => break,
                // Bytes that come meanwhile stay buffered for the next request.
                more = conn.fill() => if !more {
                    abandoned.fetch_add(1, Ordering::SeqCst);
                    return None;
                }
            }
        }
    }
    match &response.body {
        Body::Reset => {
            reset(conn.stream);
            None
        }
        Body::Hang => {
            let _held_open = conn;
            std::future::pending::<()>().await;
            None
        }
        Body::Full(bytes) => {
            let framing = (!response.has_header("content-length"))
                .then(|| format!("content-length: {}", bytes.len()));
            let mut out = response.head(framing, close);
            let limit = match (response.cut_after, response.stall_after) {
                (Some(c), Some(s)) => Some(c.min(s)),
                (c, s) => c.or(s),
            };
            let sent = limit.map_or(bytes.len(), |n| n.min(bytes.len()));
            out.extend_from_slice(&bytes[..sent]);
            if !conn.send(&out).await {
                return None;
            }
            if limit.is_some() {
                return finish_abruptly(conn, &response, reset).await;
            }
            Some(conn)
        }
        Body::Sse(events) => {
            let framing = Some("transfer-encoding: chunked".to_string());
            if !conn.send(&response.head(framing, close)).await {
                return None;
            }
            for (i, event) in events.iter().enumerate() {
                if response.cut_after.is_some_and(|n| n <= i)
                    || response.stall_after.is_some_and(|n| n <= i)
                {
                    return finish_abruptly(conn, &response, reset).await;
                }
                let delay = response.delay_before(i);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                // An empty chunk would end the body: there is nothing to send for an empty event.
                if event.is_empty() {
                    continue;
                }
                let mut chunk = format!("{:x}\r\n", event.len()).into_bytes();
                chunk.extend_from_slice(event.as_bytes());
                chunk.extend_from_slice(b"\r\n");
                if !conn.send(&chunk).await {
                    return None;
                }
            }
            if response.cut_after.is_some() || response.stall_after.is_some() {
                return finish_abruptly(conn, &response, reset).await;
            }
            if !conn.send(b"0\r\n\r\n").await {
                return None;
            }
            Some(conn)
        }
    }
}

/// Ends a response whose `cut_after` or `stall_after` point was reached: the earlier one wins.
async fn finish_abruptly<S: AsyncRead + AsyncWrite + Unpin>(
    conn: Conn<S>,
    response: &MockResponse,
    reset: fn(S),
) -> Option<Conn<S>> {
    let cut = match (response.cut_after, response.stall_after) {
        (Some(cut), Some(stall)) => cut <= stall,
        (cut, _) => cut.is_some(),
    };
    if cut {
        reset(conn.stream);
    } else {
        let _held_open = conn;
        std::future::pending::<()>().await;
    }
    None
}
