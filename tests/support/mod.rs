//! Test support: scriptable vendor upstreams and the real gateway binary as a child process.
//!
//! `MockUpstream` is a raw-TCP HTTP/1.1 server so that tests control every byte and every delay
//! (split SSE events, stalls, resets). `Gateway` writes a config with free ports, runs
//! `switchyard serve` and waits until it answers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// Mock upstream

#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub received_at: Instant,
    /// The TLS server name the client sent (TLS mocks only).
    pub sni: Option<String>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "upstream request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Clone, Debug)]
enum Body {
    Full(Vec<u8>),
    Sse(Vec<String>),
    Reset,
    Hang,
}

/// What the mock answers to one request.
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
        }
    }

    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::text(status, "application/json", body.to_string())
    }

    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, Body::Full(body.into())).with_header("content-type", content_type)
    }

    /// Each string is sent as its own HTTP chunk, flushed at once, exactly as given.
    pub fn sse(events: Vec<String>) -> Self {
        Self::new(200, Body::Sse(events)).with_header("content-type", "text/event-stream")
    }

    /// Closes the connection right after reading the request.
    pub fn reset() -> Self {
        Self::new(0, Body::Reset)
    }

    /// Reads the request and never answers.
    pub fn hang() -> Self {
        Self::new(0, Body::Hang)
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn header_delay(mut self, d: Duration) -> Self {
        self.header_delay = d;
        self
    }

    pub fn chunk_delay(mut self, d: Duration) -> Self {
        self.chunk_delay = d;
        self
    }

    pub fn delays(mut self, d: Vec<Duration>) -> Self {
        self.delays = Some(d);
        self
    }

    pub fn cut_after(mut self, n: usize) -> Self {
        self.cut_after = Some(n);
        self
    }

    pub fn stall_after(mut self, n: usize) -> Self {
        self.stall_after = Some(n);
        self
    }
}

type Script = dyn Fn(&RecordedRequest, usize) -> MockResponse + Send + Sync;

struct Shared {
    script: Box<Script>,
    requests: Mutex<Vec<RecordedRequest>>,
    connections: AtomicUsize,
    /// The gateway's health probes (`GET .../models`) are answered here with this status and
    /// counted apart, so that scripts and request counts only see real traffic.
    probe_status: AtomicU16,
    probes: AtomicUsize,
}

pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

impl MockUpstream {
    pub async fn start<F>(script: F) -> MockUpstream
    where
        F: Fn(&RecordedRequest, usize) -> MockResponse + Send + Sync + 'static,
    {
        Self::start_inner(script, None).await
    }

    /// An HTTPS upstream for `localhost` with a certificate from `ca` (see [`TestCa`]).
    pub async fn start_tls<F>(script: F, ca: &TestCa) -> MockUpstream
    where
        F: Fn(&RecordedRequest, usize) -> MockResponse + Send + Sync + 'static,
    {
        Self::start_inner(script, Some(ca.acceptor())).await
    }

    async fn start_inner<F>(script: F, tls: Option<tokio_rustls::TlsAcceptor>) -> MockUpstream
    where
        F: Fn(&RecordedRequest, usize) -> MockResponse + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock address");
        let shared = Arc::new(Shared {
            script: Box::new(script),
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            probe_status: AtomicU16::new(200),
            probes: AtomicUsize::new(0),
        });
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let shared = shared.clone();
            let tasks = tasks.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let mut set = tasks.lock().expect("task set");
                    // Reap finished connection tasks so the set does not grow without bound.
                    while set.try_join_next().is_some() {}
                    match tls.clone() {
                        None => {
                            set.spawn(serve_connection(stream, None, shared, abort));
                        }
                        Some(acceptor) => {
                            set.spawn(async move {
                                let Ok(tls) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let sni = tls.get_ref().1.server_name().map(str::to_string);
                                serve_connection(tls, sni, shared, drop).await
                            });
                        }
                    }
                }
            }
        });
        MockUpstream {
            addr,
            shared,
            tasks,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("requests").clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().expect("requests").len()
    }

    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The status health probes get from now on.
    pub fn set_probe_status(&self, status: u16) {
        self.shared.probe_status.store(status, Ordering::SeqCst);
    }

    pub fn probe_count(&self) -> usize {
        self.shared.probes.load(Ordering::SeqCst)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request from `stream`; `buf` carries bytes read past the previous request.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    sni: &Option<String>,
) -> Option<RecordedRequest> {
    let mut tmp = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let line_end = loop {
                if let Some(pos) = find(buf, b"\r\n") {
                    break pos;
                }
                let n = stream.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                let n = stream.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let n = stream.read(&mut tmp).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        body = buf.drain(..len).collect();
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

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// Closes with an RST rather than a FIN, like a crashed or reset upstream.
#[allow(deprecated)] // SO_LINGER 0 never blocks on drop; it only turns the close into a reset.
fn abort(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    sni: Option<String>,
    shared: Arc<Shared>,
    abort: fn(S),
) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf, &sni).await else {
            return;
        };
        let close_requested = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if request.method == "GET" && request.path.contains("/models") {
            shared.probes.fetch_add(1, Ordering::SeqCst);
            let status = shared.probe_status.load(Ordering::SeqCst);
            let body = r#"{"object":"list","data":[]}"#;
            let answer = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                reason(status),
                body.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let index = {
            let mut requests = shared.requests.lock().expect("requests");
            requests.push(request.clone());
            requests.len() - 1
        };
        let response = (shared.script)(&request, index);
        if !response.header_delay.is_zero() {
            tokio::time::sleep(response.header_delay).await;
        }
        match &response.body {
            Body::Reset => {
                abort(stream);
                return;
            }
            Body::Hang => {
                std::future::pending::<()>().await;
            }
            Body::Full(bytes) => {
                let mut head = format!(
                    "HTTP/1.1 {} {}\r\n",
                    response.status,
                    reason(response.status)
                );
                for (n, v) in &response.headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
                let mut out = head.into_bytes();
                out.extend_from_slice(bytes);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
            Body::Sse(events) => {
                let mut head = format!(
                    "HTTP/1.1 {} {}\r\n",
                    response.status,
                    reason(response.status)
                );
                for (n, v) in &response.headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("transfer-encoding: chunked\r\n\r\n");
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for (i, event) in events.iter().enumerate() {
                    if response.cut_after == Some(i) {
                        abort(stream);
                        return;
                    }
                    if response.stall_after == Some(i) {
                        std::future::pending::<()>().await;
                    }
                    let delay = match &response.delays {
                        Some(d) => d.get(i).copied().unwrap_or(Duration::ZERO),
                        None => response.chunk_delay,
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", event.len(), event);
                    if stream.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                }
                if response.cut_after == Some(events.len()) {
                    abort(stream);
                    return;
                }
                if response.stall_after == Some(events.len()) {
                    std::future::pending::<()>().await;
                }
                if stream.write_all(b"0\r\n\r\n").await.is_err() {
                    return;
                }
            }
        }
        if close_requested {
            return;
        }
    }
}

/// A throw-away certificate authority and a `localhost` certificate it signed.
pub struct TestCa {
    dir: tempfile::TempDir,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf cert");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
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
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.leaf_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone())),
            )
            .expect("TLS server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway binary

fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_switchyard") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var("SWITCHYARD_BIN").expect("SWITCHYARD_BIN")),
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run switchyard")
}

pub struct Gateway {
    pub port: u16,
    pub admin_port: u16,
    child: Child,
    dir: Arc<tempfile::TempDir>,
    env: Vec<(String, String)>,
    output: Arc<Mutex<String>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `switchyard serve --config <path> [extra]`, collecting stdout and stderr.
fn spawn(
    path: &std::path::Path,
    dir: &std::path::Path,
    env: &[(String, String)],
    extra: &[&str],
) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(path)
        .args(extra)
        .env("SWITCHYARD_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchyard");
    let output = Arc::new(Mutex::new(String::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut out = output.lock().expect("output");
                out.push_str(&line);
                out.push('\n');
            }
        });
    }
    (child, output)
}

impl Gateway {
    pub async fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[]).await
    }

    /// `yaml` may use `{{listen}}`, `{{admin}}` (free ports) and `{{dir}}` (the gateway's own
    /// temporary directory, for pid files and upgrade sockets).
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let port = free_port();
        let admin_port = free_port();
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let config = yaml
            .replace("{{listen}}", &format!("127.0.0.1:{port}"))
            .replace("{{admin}}", &format!("127.0.0.1:{admin_port}"))
            .replace("{{dir}}", &dir.path().to_string_lossy());
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).expect("write config");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, output) = spawn(&path, dir.path(), &env, &[]);
        let mut gateway = Gateway {
            port,
            admin_port,
            child,
            dir,
            env,
            output,
        };
        gateway.wait_ready().await;
        gateway
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

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = format!("{}/healthz", self.admin_url());
        let http = client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "switchyard exited with {status} before it was ready:\n{}",
                    self.logs()
                );
            }
            let healthy = matches!(
                http.get(&health).timeout(Duration::from_millis(500)).send().await,
                Ok(r) if r.status() == 200
            );
            if healthy && TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("switchyard was not ready after 30 s:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, `"QUIT"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the config file (placeholders filled in as at start).
    pub fn write_config(&self, yaml: &str) {
        let config = yaml
            .replace("{{listen}}", &format!("127.0.0.1:{}", self.port))
            .replace("{{admin}}", &format!("127.0.0.1:{}", self.admin_port))
            .replace("{{dir}}", &self.dir.path().to_string_lossy());
        // Write then rename, as editors and config managers do, so no reader sees half a file.
        let tmp = self.dir.path().join("config.yaml.tmp");
        std::fs::write(&tmp, config).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("replace config");
    }

    pub fn logs(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

// ---------------------------------------------------------------------------------------------
// SSE helpers

/// The `data:` payloads of each event of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}
