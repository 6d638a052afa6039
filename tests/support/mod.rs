//! Test support: scriptable vendor upstreams and the real gateway binary as a child process.
//!
//! - [`MockUpstream`] is an HTTP/1.1 server on a raw `TcpListener` (no hyper), so that tests
//!   control every byte and every delay: split SSE events, slow first bytes, stalls, cuts, resets.
//! - [`Gateway`] writes a config with free ports, runs `switchyard serve` and waits until it answers.
//! - [`run_cli`] runs the binary once for one-shot commands; [`sse_data`] splits SSE bodies.
//!
//! Each integration test file includes this with `mod support;` and uses only part of it.
#![allow(dead_code)]

pub mod python;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Locks a mutex even if a panicking thread poisoned it: the data here stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors or similar: wait and keep serving.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
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
                            serve_connection(stream, sni, shared, reset_tls).await
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
        match respond(conn, answer, close, reset).await {
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
) -> Option<Conn<S>> {
    if !response.header_delay.is_zero() {
        tokio::time::sleep(response.header_delay).await;
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

// ---------------------------------------------------------------------------------------------
// TLS for mock upstreams

/// A throw-away certificate authority and a `localhost` certificate it signed.
pub struct TestCa {
    dir: tempfile::TempDir,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("generate the test CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("test CA certificate params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the test CA");
        let leaf_key = KeyPair::generate().expect("generate the localhost key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("localhost certificate params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("sign the localhost certificate");
        let dir = tempfile::tempdir().expect("temp dir for the test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        TestCa {
            dir,
            leaf_der: leaf.der().to_vec(),
            leaf_key_der: leaf_key.serialize_der(),
        }
    }

    /// A PEM bundle holding only this CA: pass it to the gateway as `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.leaf_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone())),
            )
            .expect("TLS server config for the mock upstream");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway binary

/// The gateway binary: cargo's `CARGO_BIN_EXE_switchyard` in this repo's integration tests,
/// else `$SWITCHYARD_BIN` (for trying the harness elsewhere).
pub fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_switchyard") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("SWITCHYARD_BIN").expect(
            "SWITCHYARD_BIN must name the gateway binary (CARGO_BIN_EXE_switchyard is unset)",
        )),
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read the port, close).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// A client for the gateway: no proxy from the environment, 60 s timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the reqwest client")
}

/// Runs the binary once with `args` and extra `env`, from the crate's directory, and waits.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let bin = binary();
    Command::new(&bin)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", bin.display()))
}

/// Everything a child wrote to stdout and stderr, whole lines at a time.
#[derive(Clone, Default)]
struct Output {
    text: Arc<Mutex<Vec<u8>>>,
    /// Reader threads that reached end of file.
    closed: Arc<AtomicUsize>,
}

impl Output {
    fn capture(&self, pipe: impl Read + Send + 'static) {
        let output = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if !line.ends_with(b"\n") {
                            line.push(b'\n');
                        }
                        lock(&output.text).extend_from_slice(&line);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            output.closed.fetch_add(1, Ordering::SeqCst);
        });
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.text)).into_owned()
    }

    /// After the child exited: lets the reader threads drain the pipes. Bounded, because a
    /// process the child started (an in-place upgrade) may still hold them open.
    async fn settle(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while self.closed.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Starts `switchyard serve --config <path> [extra]` in `dir`, capturing stdout and stderr.
fn spawn(path: &Path, dir: &Path, env: &[(String, String)], extra: &[&str]) -> (Child, Output) {
    let bin = binary();
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(path)
        .args(extra)
        .env("SWITCHYARD_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let output = Output::default();
    if let Some(stdout) = child.stdout.take() {
        output.capture(stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        output.capture(stderr);
    }
    (child, output)
}

fn fill_placeholders(yaml: &str, port: u16, admin_port: u16, dir: &Path) -> String {
    yaml.replace("{{listen}}", &format!("127.0.0.1:{port}"))
        .replace("{{admin}}", &format!("127.0.0.1:{admin_port}"))
        .replace("{{dir}}", &dir.to_string_lossy())
}

enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

/// The real gateway as a child process; killed (SIGKILL) and reaped on drop.
pub struct Gateway {
    pub port: u16,
    pub admin_port: u16,
    child: Child,
    dir: Arc<tempfile::TempDir>,
    env: Vec<(String, String)>,
    output: Output,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// See [`Gateway::start_with_env`].
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[]).await
    }

    /// Writes `yaml` to `config.yaml` in a fresh temp dir, with `{{listen}}` and `{{admin}}`
    /// replaced by `127.0.0.1:PORT` of free ports and `{{dir}}` by that directory (for pid files
    /// and upgrade sockets), runs `switchyard serve --config <path>` there with `SWITCHYARD_LOG=info`
    /// and `env`, and waits until `GET {admin}/healthz` answers 200 and the client port accepts
    /// connections. Panics with the child's output if it exits first or is not ready in 30 s.
    /// If the child exits because a port was taken meanwhile, it is retried on other ports.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut attempt = 1;
        loop {
            let port = free_port();
            let mut admin_port = free_port();
            while admin_port == port {
                admin_port = free_port();
            }
            let dir = Arc::new(tempfile::tempdir().expect("temp dir for the gateway"));
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, fill_placeholders(yaml, port, admin_port, dir.path()))
                .expect("write the gateway's config.yaml");
            let (child, output) = spawn(&path, dir.path(), &env, &[]);
            let mut gateway = Gateway {
                port,
                admin_port,
                child,
                dir,
                env: env.clone(),
                output,
            };
            match gateway.poll_ready(Duration::from_secs(30)).await {
                Ok(()) => return gateway,
                Err(NotReady::Exited(status)) => {
                    gateway.output.settle(Duration::from_millis(500)).await;
                    let logs = gateway.logs();
                    let port_taken = logs.contains("in use") || logs.contains("os error 98");
                    if port_taken && attempt < 3 {
                        attempt += 1;
                        continue;
                    }
                    panic!(
                        "switchyard exited with {status} before it was ready:\n{}",
                        logs
                    );
                }
                Err(NotReady::TimedOut) => panic!(
                    "switchyard was not ready after 30 s (GET {}/healthz and a connect to port {}):\n{}",
                    gateway.admin_url(),
                    gateway.port,
                    gateway.logs()
                ),
            }
        }
    }

    /// Starts a second process with `--upgrade` on the same config and ports. It waits for the
    /// listening sockets of this one (sent on SIGQUIT), so it is not ready yet when this returns.
    pub fn start_upgrade(&self) -> Gateway {
        let (child, output) = spawn(
            &self.config_path(),
            self.dir.path(),
            &self.env,
            &["--upgrade"],
        );
        Gateway {
            port: self.port,
            admin_port: self.admin_port,
            child,
            dir: self.dir.clone(),
            env: self.env.clone(),
            output,
        }
    }

    /// Waits until healthy (as in [`Gateway::start_with_env`]); panics with the logs otherwise.
    pub async fn wait_ready(&mut self) {
        match self.poll_ready(Duration::from_secs(30)).await {
            Ok(()) => {}
            Err(NotReady::Exited(status)) => {
                self.output.settle(Duration::from_millis(500)).await;
                panic!(
                    "switchyard exited with {status} before it was ready:\n{}",
                    self.logs()
                );
            }
            Err(NotReady::TimedOut) => {
                panic!("switchyard was not ready after 30 s:\n{}", self.logs())
            }
        }
    }

    async fn poll_ready(&mut self, timeout: Duration) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        let health = format!("{}/healthz", self.admin_url());
        let http = client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            let healthy = matches!(
                http.get(&health).timeout(Duration::from_millis(500)).send().await,
                Ok(r) if r.status() == 200
            );
            if healthy && TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(NotReady::TimedOut);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, `"QUIT"`, `"USR2"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.output.settle(Duration::from_millis(200)).await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits up to `timeout` until the logs contain `needle`; returns whether they did.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:PORT` of the client listener.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The Prometheus text of `GET /metrics` on the admin listener.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The gateway's temp dir (its working directory, holding config.yaml).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the config file (placeholders filled in as at start) by write-then-rename, as
    /// editors and config managers do, so no reader sees half a file.
    pub fn write_config(&self, yaml: &str) {
        let tmp = self.dir.path().join("config.yaml.tmp");
        std::fs::write(
            &tmp,
            fill_placeholders(yaml, self.port, self.admin_port, self.dir.path()),
        )
        .expect("write config.yaml.tmp");
        std::fs::rename(&tmp, self.config_path()).expect("rename config.yaml.tmp to config.yaml");
    }

    /// Everything the child wrote to stdout and stderr so far, whole lines.
    pub fn logs(&self) -> String {
        self.output.text()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

// ---------------------------------------------------------------------------------------------
// SSE helpers

/// The `data:` payloads of each event of an SSE body, in order. Events end at a blank line
/// (`\n\n`, `\r\n\r\n` or `\r\r`); several `data:` lines of one event are joined with `\n`; one
/// space after the colon is dropped; events without data (comments, `event:` only) are skipped.
/// A last event without its blank line is still returned.
pub fn sse_data(body: &str) -> Vec<String> {
    body.replace("\r\n", "\n")
        .replace('\r', "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| {
                    if l == "data" {
                        Some("")
                    } else {
                        l.strip_prefix("data:")
                            .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    }
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}
