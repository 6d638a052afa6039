//! The load bench: what Switchyard adds, measured side by side with direct access.
//!
//! `cargo bench --bench load` runs everything on this machine (and raises its own open-file
//! limit as far as the hard limit allows):
//! 1. a fast local upstream (this binary with `upstream`), answering OpenAI Chat Completions and
//!    Anthropic Messages, JSON and SSE, from prepared bytes;
//! 2. the release `switchyard` binary in front of it, pinned to CPU 0 with one worker thread, and
//!    beside it a plain TCP relay (this binary with `relay`), pinned to the same CPU;
//! 3. a load generator in this process (raw HTTP/1.1 over keep-alive connections), pinned with the
//!    upstream to the other CPU(s).
//!
//! It reports, for direct access, the relay (the floor of any extra hop), passthrough (OpenAI →
//! OpenAI-compatible) and translation (OpenAI → Anthropic): requests/s at saturation, latency
//! percentiles at fixed open-loop rates (each request timed from its send; requests leave on
//! schedule whatever earlier ones do), the time to first token and the delay of every streamed
//! token from the upstream's write to the client's read (tokens carry their send time), the
//! gateway's instructions per request (callgrind, when valgrind is installed), and its memory
//! idle, under load and with many open streams. Environment: `BENCH_SECONDS` (default 5),
//! `BENCH_RATES` (default `1000,5000`), `BENCH_OPEN_STREAMS` (default 10000), `BENCH_ONLY` (a
//! comma list of `saturation,latency,streams,cpu,limits,filters,cache,hedge,open`; default all).
//! `limits` counts the instructions a limited client key adds per request, with counters in
//! memory and in Redis (when `redis-server` is installed); `filters` those of each built-in
//! filter; `cache` a cache hit's latency, instructions and Redis commands (memory and Redis);
//! `hedge` the latency percentiles of a heavy-tailed target with and without hedging.
//! `BENCH_KEEP_DIR` set keeps the run's directory (configs, callgrind dumps for
//! `callgrind_annotate`). In the `cache` phase, the CPU rows run in `BENCH_CACHE_ROUNDS` rounds
//! (default 3, rows interleaved; the median is reported), and `BENCH_PERF` set to a directory
//! records a `perf` profile of the gateway for each row's first round.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "load/tail.rs"]
mod tail;

// ---------------------------------------------------------------------------------------------
// The upstream

const OPENAI_JSON: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a benchmark answer of about twenty tokens, long enough to be realistic."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":25,"completion_tokens":20,"total_tokens":45}}"#;
const ANTHROPIC_JSON: &str = r#"{"id":"msg_bench","type":"message","role":"assistant","model":"bench","content":[{"type":"text","text":"Hello! This is a benchmark answer of about twenty tokens, long enough to be realistic."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":20}}"#;

/// `stream-<chunks>x<interval ms>` in the model name asks for a stream of that shape.
fn stream_shape(body: &str) -> (usize, u64) {
    body.split("stream-")
        .nth(1)
        .and_then(|rest| {
            let end = rest.find('"')?;
            let (n, ms) = rest[..end].split_once('x')?;
            Some((n.parse().ok()?, ms.parse().ok()?))
        })
        .unwrap_or((20, 0))
}

/// `tail-<percent>x<ms>` in the model name: that share of answers starts that much later.
fn tail_shape(body: &str) -> Option<(u32, u64)> {
    let rest = body.split("tail-").nth(1)?;
    let end = rest.find('"')?;
    let (percent, ms) = rest[..end].split_once('x')?;
    Some((percent.parse().ok()?, ms.parse().ok()?))
}

fn openai_chunk(text: &str) -> String {
    format!("data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n")
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process on this machine, so the
/// client can tell how long a chunk took from the upstream's write to its own read.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The text of each streamed token carries its send time as `@<ns>@`; the translation path
/// passes it through unchanged, so the client can time every chunk end to end.
fn stamp() -> String {
    format!("@{}@ ", monotonic_ns())
}

const ANTHROPIC_STREAM_HEAD: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"bench\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";

/// The `i`th token event of a stream, stamped now.
fn token_event(anthropic: bool, i: usize) -> String {
    if anthropic {
        let delta = format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n", stamp());
        if i == 0 {
            format!("{ANTHROPIC_STREAM_HEAD}{delta}")
        } else {
            delta
        }
    } else {
        openai_chunk(&stamp())
    }
}

fn stream_tail(anthropic: bool, n: usize) -> String {
    if anthropic {
        format!("event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{n}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n")
    } else {
        format!("data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\ndata: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[],\"usage\":{{\"prompt_tokens\":25,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n", 25 + n)
    }
}

async fn upstream_connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        // Head.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
        buf.drain(..head_end + 4 + len);
        let anthropic = head.starts_with("post /v1/messages");
        if let Some((percent, delay_ms)) = tail_shape(&body) {
            if fastrand::u32(..100) < percent {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
        }
        if head.starts_with("get ") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 26\r\n\r\n{\"object\":\"list\",\"data\":[]}")
                .await;
            continue;
        }
        if body.contains("\"stream\":true") {
            let (n, interval) = stream_shape(&body);
            // The first token goes out with the header, at once: the time to first token then
            // measures the path, not the upstream's timer. The others follow `interval` apart.
            let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for i in 0..=n {
                if i > 0 && interval > 0 {
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                }
                let event = if i < n {
                    token_event(anthropic, i)
                } else {
                    stream_tail(anthropic, n)
                };
                out.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
                if i == n {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        } else {
            let json = if anthropic {
                ANTHROPIC_JSON
            } else {
                OPENAI_JSON
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
                json.len()
            );
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

async fn run_upstream(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind upstream");
    println!("ready");
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(upstream_connection(stream));
    }
}

/// The floor of any proxy on this machine: a plain TCP relay (one Tokio thread, TCP_NODELAY both
/// ways) on the gateway's CPU. What Switchyard adds beyond it is its own work; the rest is the
/// extra hop (two more sockets and, on a VM, waking another vCPU).
async fn run_relay(port: u16, target: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind relay");
    while let Ok((mut client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The client

fn request_bytes(path: &str, model: &str, stream: bool, anthropic_direct: bool) -> Vec<u8> {
    let filler = "Please summarise the quarterly numbers for the northern region and flag anything unusual. ".repeat(8);
    let body = if anthropic_direct {
        format!(
            r#"{{"model":"{model}","max_tokens":256,"stream":{stream},"messages":[{{"role":"user","content":"{filler}"}}]}}"#
        )
    } else {
        format!(
            r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"{filler}"}}]}}"#
        )
    };
    format!(
        "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A Responses API request with the same prompt as [`request_bytes`]'s (stored, as by default).
fn responses_request_bytes(model: &str) -> Vec<u8> {
    let filler = "Please summarise the quarterly numbers for the northern region and flag anything unusual. ".repeat(8);
    let body = format!(r#"{{"model":"{model}","instructions":"Be brief.","input":"{filler}"}}"#);
    format!(
        "POST /v1/responses HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One keep-alive connection that sends a request and reads the whole answer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What one exchange measured.
struct Exchange {
    total: Duration,
    first_body_byte: Option<Duration>,
    /// For each stamped token, the time from the upstream's write to this client's read (µs).
    token_delays: Vec<u64>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    async fn fill(&mut self, tmp: &mut [u8]) -> std::io::Result<()> {
        let n = self.stream.read(tmp).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    async fn exchange(&mut self, request: &[u8], time_tokens: bool) -> std::io::Result<Exchange> {
        let start = Instant::now();
        self.stream.write_all(request).await?;
        let mut tmp = vec![0u8; 32 * 1024];
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            self.fill(&mut tmp).await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(std::io::Error::other(
                head.lines().next().unwrap_or("").to_string(),
            ));
        }
        let chunked = head.contains("transfer-encoding: chunked");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        self.buf.drain(..head_end + 4);
        let mut first = None;
        let mut token_delays = Vec::new();
        let mut scanned = 0;
        if chunked {
            // Read until the terminating chunk; chunk framing is not decoded, only watched for.
            loop {
                if !self.buf.is_empty() && first.is_none() {
                    first = Some(start.elapsed());
                }
                if time_tokens {
                    let now = monotonic_ns();
                    scanned = read_stamps(&self.buf, scanned, now, &mut token_delays);
                }
                if let Some(p) = self.buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                    let at_start = p == 0 || self.buf[..p].ends_with(b"\r\n");
                    if at_start {
                        self.buf.drain(..p + 5);
                        break;
                    }
                }
                self.fill(&mut tmp).await?;
            }
        } else {
            while self.buf.len() < len {
                self.fill(&mut tmp).await?;
            }
            first = Some(start.elapsed());
            self.buf.drain(..len);
        }
        Ok(Exchange {
            total: start.elapsed(),
            first_body_byte: first,
            token_delays,
        })
    }
}

/// Parses the `@<ns>@` stamps in `buf[from..]`, pushing `now - stamp` in µs for each; returns
/// where the next scan starts (the beginning of a stamp not yet complete).
fn read_stamps(buf: &[u8], mut from: usize, now: u64, delays: &mut Vec<u64>) -> usize {
    while let Some(open) = buf[from..].iter().position(|&b| b == b'@') {
        let start = from + open + 1;
        let Some(len) = buf[start..].iter().position(|&b| b == b'@') else {
            return from + open;
        };
        let sent: Option<u64> = std::str::from_utf8(&buf[start..start + len])
            .ok()
            .and_then(|d| d.parse().ok());
        if let Some(sent) = sent {
            delays.push(now.saturating_sub(sent) / 1000);
        }
        from = start + len + 1;
    }
    buf.len()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Closed loop: `connections` clients as fast as they go, for `secs`. Returns requests/s.
async fn saturate(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    connections: usize,
    secs: u64,
) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (stop, done, errors, request) =
            (stop.clone(), done.clone(), errors.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = Conn::open(addr).await else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                match conn.exchange(&request, false).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => return,
                        }
                        0
                    }
                };
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        errors.load(Ordering::Relaxed),
    )
}

/// Open loop at `rate` requests/s for `secs`: latency from each request's scheduled time.
async fn open_loop(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    rate: u64,
    secs: u64,
) -> (Vec<u64>, u64) {
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((rate * secs) as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let total = rate * secs;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        // Tokio's timer ticks in milliseconds, so requests leave in small bursts each tick; each
        // one is timed from when it is sent, and sending never waits for earlier answers.
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (pool, latencies, errors, request) = (
            pool.clone(),
            latencies.clone(),
            errors.clone(),
            request.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let conn = pool.lock().unwrap().pop();
            let mut conn = match conn {
                Some(c) => c,
                None => match Conn::open(addr).await {
                    Ok(c) => c,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
            };
            match conn.exchange(&request, false).await {
                Ok(_) => {
                    latencies
                        .lock()
                        .unwrap()
                        .push(sent.elapsed().as_micros() as u64);
                    pool.lock().unwrap().push(conn);
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    (l, errors.load(Ordering::Relaxed))
}

/// `conns` connections, started evenly spread over one stream's length, each run `count` streams
/// one after another (after one unmeasured stream that warms the path). Returns the sorted times to first body byte and the sorted per-token
/// delays from the upstream's write to the client's read, in µs.
async fn streams(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    conns: usize,
    count: usize,
) -> (Vec<u64>, Vec<u64>) {
    let mut tasks = Vec::new();
    for k in 0..conns {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await.expect("connect");
            let warm = conn.exchange(&request, false).await.expect("stream");
            // Spread the connections over one stream's length: started together, their tokens
            // would reach the gateway in the same instant and measure queueing, not the path.
            tokio::time::sleep(warm.total * k as u32 / conns as u32).await;
            let mut ttfb = Vec::with_capacity(count);
            let mut delays = Vec::new();
            for _ in 0..count {
                let x = conn.exchange(&request, true).await.expect("stream");
                ttfb.push(x.first_body_byte.unwrap_or(x.total).as_micros() as u64);
                delays.extend(x.token_delays);
            }
            (ttfb, delays)
        }));
    }
    let (mut ttfb, mut delays) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await.expect("stream task");
        ttfb.extend(a);
        delays.extend(b);
    }
    ttfb.sort_unstable();
    delays.sort_unstable();
    (ttfb, delays)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Holds `count` streams open at once through `addr` and returns the gateway RSS meanwhile.
async fn open_streams(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    count: usize,
    gateway_pid: u32,
) -> (u64, usize) {
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (request, ok) = (request.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            if let Ok(mut conn) = Conn::open(addr).await {
                if conn.exchange(&request, false).await.is_ok() {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        if tasks.len() % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // All are open and waiting for their slow streams now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(gateway_pid);
    for t in tasks {
        let _ = t.await;
    }
    (rss, ok.load(Ordering::Relaxed) as usize)
}

// ---------------------------------------------------------------------------------------------
// Orchestration

/// The streaming phase: this many connections, each running this many streams in a row.
const STREAM_CONNS: usize = 8;
const STREAMS_PER_CONN: usize = 50;

/// The gateway's config for the bench: one worker thread, an OpenAI-compatible provider `pass` and
/// an Anthropic provider `anth`, both the local upstream. `tag` keeps instances' files apart.
fn gateway_config(
    gw_port: u16,
    admin_port: u16,
    up_port: u16,
    dir: &std::path::Path,
    tag: &str,
) -> String {
    gateway_config_with(gw_port, admin_port, up_port, dir, tag, "")
}

/// [`gateway_config`] with more top-level sections (`auth`, `state`).
fn gateway_config_with(
    gw_port: u16,
    admin_port: u16,
    up_port: u16,
    dir: &std::path::Path,
    tag: &str,
    extra: &str,
) -> String {
    format!(
        r#"
server: {{ listen: ["127.0.0.1:{gw_port}"], admin_listen: "127.0.0.1:{admin_port}", threads: 1,
          upgrade_sock: "{dir}/{tag}.sock", pid_file: "{dir}/{tag}.pid" }}
{extra}
providers:
  pass: {{ kind: openai-compatible, base_url: "http://127.0.0.1:{up_port}/v1", health_check: {{ enabled: false }} }}
  anth: {{ kind: anthropic, base_url: "http://127.0.0.1:{up_port}", api_key: bench, health_check: {{ enabled: false }} }}
"#,
        dir = dir.display()
    )
}

/// Requests per path in the `cpu` phase, after 50 that warm up.
const CPU_REQUESTS: u64 = 1000;

/// Instructions the gateway executes per request, counted by callgrind: exact and repeatable
/// whatever else the machine does. Runs a second gateway under `valgrind --tool=callgrind`,
/// zeroes its counters after a warm-up, sends `CPU_REQUESTS` requests over one keep-alive
/// connection and reads the counters back. `None` when valgrind is not installed.
async fn instructions_per_request(
    gateway_bin: &std::path::Path,
    up_port: u16,
    dir: &std::path::Path,
    paths: &[(&str, Vec<u8>)],
) -> Option<Vec<(String, u64)>> {
    instructions_with(gateway_bin, up_port, dir, "cpu", "", paths).await
}

/// [`instructions_per_request`] for a gateway whose config has `extra` sections.
async fn instructions_with(
    gateway_bin: &std::path::Path,
    up_port: u16,
    dir: &std::path::Path,
    tag: &str,
    extra: &str,
    paths: &[(&str, Vec<u8>)],
) -> Option<Vec<(String, u64)>> {
    let installed = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !installed("valgrind") || !installed("callgrind_control") {
        return None;
    }
    let (gw_port, admin_port) = (free_port(), free_port());
    let config_path = dir.join(format!("{tag}.yaml"));
    std::fs::write(
        &config_path,
        gateway_config_with(gw_port, admin_port, up_port, dir, tag, extra),
    )
    .ok()?;
    let out = dir.join("callgrind.%p");
    let child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(gateway_bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("SWITCHYARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id().to_string();
    let _guard = Kill(child);
    // Valgrind starts the gateway some fifty times slower.
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", gw_port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let control = |what: &str| {
        Command::new("callgrind_control")
            .args([what, &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let mut results = Vec::new();
    for (dump, (name, request)) in paths.iter().enumerate() {
        let mut conn = Conn::open(([127, 0, 0, 1], gw_port).into()).await.ok()?;
        for _ in 0..50 {
            conn.exchange(request, false).await.ok()?;
        }
        if !control("-z") {
            return None;
        }
        for _ in 0..CPU_REQUESTS {
            conn.exchange(request, false).await.ok()?;
        }
        if !control("-d") {
            return None;
        }
        // Dumps are numbered from 1 in the order they were asked for.
        let file = dir.join(format!("callgrind.{pid}.{}", dump + 1));
        let text = std::fs::read_to_string(file).ok()?;
        let total: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.trim().parse().ok())?;
        results.push((name.to_string(), total / CPU_REQUESTS));
    }
    Some(results)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pinned(cpus: &str, program: &std::path::Path) -> Command {
    let taskset = Command::new("taskset").arg("--version").output().is_ok();
    if taskset {
        let mut c = Command::new("taskset");
        c.args(["-c", cpus]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Pins this process's current thread, and so every thread and child it starts after, to `cpus`.
fn pin_self_to(cpus: std::ops::Range<usize>) {
    // SAFETY: `set` is a zeroed `cpu_set_t` owned by this frame, filled with CPU_SET on
    // indices below CPU_SETSIZE, and passed with its own size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus.filter(|&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "could not pin the load generator: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port} never opened");
}

/// Thousands of open streams need thousands of descriptors (three per stream across the gateway,
/// the upstream and the client); children inherit the raised limit.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The minimal Pingora proxy: `upstream_peer` only, no body read, the reference of what Pingora
/// itself costs per request (issue 13's floor). Run as `load pingora-floor PORT TARGET`.
struct PingoraFloor {
    target: String,
}

#[async_trait::async_trait]
impl pingora::proxy::ProxyHttp for PingoraFloor {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut pingora::proxy::Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<pingora::upstreams::peer::HttpPeer>> {
        Ok(Box::new(pingora::upstreams::peer::HttpPeer::new(
            self.target.as_str(),
            false,
            String::new(),
        )))
    }
}

fn run_pingora_floor(port: u16, target: u16) {
    let mut server = pingora::server::Server::new(None).expect("a Pingora server");
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        PingoraFloor {
            target: format!("127.0.0.1:{target}"),
        },
    );
    proxy.add_tcp(&format!("127.0.0.1:{port}"));
    server.add_service(proxy);
    server.run_forever();
}

/// User + system CPU time of a process so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line; the fields after the name start at 3.
    // SAFETY: sysconf reads a constant of the system; it takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pingora-floor") {
        let port: u16 = args.get(2).and_then(|p| p.parse().ok()).expect("port");
        let target: u16 = args
            .get(3)
            .and_then(|p| p.parse().ok())
            .expect("target port");
        run_pingora_floor(port, target);
        return;
    }
    if args.get(1).map(String::as_str) == Some("upstream") {
        let port: u16 = args.get(2).and_then(|p| p.parse().ok()).expect("port");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_upstream(port));
        return;
    }
    if args.get(1).map(String::as_str) == Some("saturate") {
        // By hand, for profiling a running gateway: `load saturate PORT MODEL SECONDS`.
        let port: u16 = args.get(2).and_then(|p| p.parse().ok()).expect("port");
        let model = args.get(3).map(String::as_str).unwrap_or("bench");
        let secs: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let req = Arc::new(request_bytes("/v1/chat/completions", model, false, false));
        let (rps, errors) = rt.block_on(saturate(([127, 0, 0, 1], port).into(), req, 64, secs));
        println!("{rps:.0} req/s, {errors} errors");
        return;
    }
    if args.get(1).map(String::as_str) == Some("relay") {
        let port: u16 = args.get(2).and_then(|p| p.parse().ok()).expect("port");
        let target: u16 = args
            .get(3)
            .and_then(|p| p.parse().ok())
            .expect("target port");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_relay(port, target));
        return;
    }
    if args.iter().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` runs bench binaries in test mode: nothing to do here.
        return;
    }

    raise_open_file_limit();
    // Cargo builds the gateway binary with the bench profile (optimised) before running this.
    let gateway_bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_switchyard"));
    let me = std::env::current_exe().unwrap();
    let cpus = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .unwrap_or(1);
    let client_cpus = if cpus > 1 {
        format!("1-{}", cpus - 1)
    } else {
        "0".into()
    };
    if cpus > 1 {
        // The load generator, and what it starts without `pinned` (redis-server), off the
        // gateway's CPU: sharing it, they made the gateway pay for context switches and a
        // cold cache that no deployment would, and more so in the rows that talk to Redis.
        pin_self_to(1..cpus);
    }
    let secs: u64 = env_or("BENCH_SECONDS", 5);
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|r| r.parse().ok())
        .collect();
    let open_count: usize = env_or("BENCH_OPEN_STREAMS", 10_000);
    let phases = std::env::var("BENCH_ONLY").unwrap_or_else(|_| {
        "saturation,latency,streams,cpu,limits,filters,cache,hedge,open".into()
    });
    let run = |phase: &str| phases.split(',').any(|p| p.trim() == phase);

    let up_port = free_port();
    let upstream = Kill(
        pinned(&client_cpus, &me)
            .args(["upstream", &up_port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_port(up_port);

    let relay_port = free_port();
    let relay_proc = Kill(
        pinned("0", &me)
            .args(["relay", &relay_port.to_string(), &up_port.to_string()])
            .spawn()
            .unwrap(),
    );
    wait_port(relay_port);

    let floor_port = free_port();
    let floor = Kill(
        pinned("0", &me)
            .args([
                "pingora-floor",
                &floor_port.to_string(),
                &up_port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let floor_pid = floor.0.id();
    wait_port(floor_port);

    let gw_port = free_port();
    let admin_port = free_port();
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = gateway_config(gw_port, admin_port, up_port, &dir, "bench");
    let config_path = dir.join("bench.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut gateway = pinned("0", &gateway_bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("SWITCHYARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gateway_pid = gateway.id();
    if let Some(err) = gateway.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("gateway: {line}");
            }
        });
    }
    let _gateway = Kill(gateway);
    wait_port(gw_port);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.saturating_sub(1).max(1))
        .enable_all()
        .build()
        .unwrap();
    let direct: SocketAddr = ([127, 0, 0, 1], up_port).into();
    let relay: SocketAddr = ([127, 0, 0, 1], relay_port).into();
    let floor_addr: SocketAddr = ([127, 0, 0, 1], floor_port).into();
    let relay_pid = relay_proc.0.id();
    // The process whose CPU each path's row reports (none for direct).
    let pids = [
        None,
        Some(relay_pid),
        Some(floor_pid),
        Some(gateway_pid),
        Some(gateway_pid),
        Some(gateway_pid),
    ];
    let via: SocketAddr = ([127, 0, 0, 1], gw_port).into();
    let paths = [
        (
            "direct",
            direct,
            Arc::new(request_bytes("/v1/chat/completions", "bench", false, false)),
        ),
        (
            "tcp relay (floor)",
            relay,
            Arc::new(request_bytes("/v1/chat/completions", "bench", false, false)),
        ),
        (
            "minimal Pingora proxy (floor)",
            floor_addr,
            Arc::new(request_bytes("/v1/chat/completions", "bench", false, false)),
        ),
        (
            "passthrough",
            via,
            Arc::new(request_bytes(
                "/v1/chat/completions",
                "pass/bench",
                false,
                false,
            )),
        ),
        (
            "translation (OpenAI→Anthropic)",
            via,
            Arc::new(request_bytes(
                "/v1/chat/completions",
                "anth/bench",
                false,
                false,
            )),
        ),
        (
            "translation (Responses→Anthropic)",
            via,
            Arc::new(responses_request_bytes("anth/bench")),
        ),
    ];

    rt.block_on(async {
        println!("\nmachine: {cpus} CPUs; gateway pinned to CPU 0 (1 worker thread), upstream and load generator on CPU {client_cpus}");
        println!("gateway RSS idle: {:.1} MiB\n", rss_kib(gateway_pid) as f64 / 1024.0);
        // Warm up pools and caches.
        for (_, addr, req) in &paths {
            let _ = saturate(*addr, req.clone(), 8, 1).await;
        }

        if run("saturation") {
            println!("| path | saturation req/s (64 conns, {secs} s) | CPU per request (proxy process, user + system) | errors |");
            println!("|---|---|---|---|");
            let mut peak_rss = 0;
            for ((name, addr, req), pid) in paths.iter().zip(pids) {
                let before = pid.map(cpu_time);
                let (rps, errors) = saturate(*addr, req.clone(), 64, secs).await;
                let cpu = match (pid, before) {
                    (Some(pid), Some(before)) if rps > 0.0 => {
                        let used = cpu_time(pid).saturating_sub(before);
                        format!("{:.1} µs", used.as_secs_f64() * 1e6 / (rps * secs as f64))
                    }
                    _ => "—".to_string(),
                };
                peak_rss = peak_rss.max(rss_kib(gateway_pid));
                println!("| {name} | {rps:.0} | {cpu} | {errors} |");
            }
            println!("\ngateway RSS after saturation: {:.1} MiB\n", peak_rss as f64 / 1024.0);
        }

        if run("latency") {
            println!("| path | rate | p50 ms | p99 ms | p99.9 ms | errors |");
            println!("|---|---|---|---|---|---|");
            for rate in &rates {
                let mut base = None;
                for (name, addr, req) in &paths {
                    let (lat, errors) = open_loop(*addr, req.clone(), *rate, secs).await;
                    let (p50, p99, p999) = (percentile(&lat, 0.5), percentile(&lat, 0.99), percentile(&lat, 0.999));
                    let added = match base {
                        None => {
                            base = Some((p50, p99, p999));
                            String::new()
                        }
                        Some((b50, b99, b999)) => format!(" (added: p50 {:+.3}, p99 {:+.3}, p99.9 {:+.3})", p50 - b50, p99 - b99, p999 - b999),
                    };
                    println!("| {name} | {rate}/s | {p50:.3} | {p99:.3} | {p999:.3} | {errors} |{added}");
                }
            }
        }

        if run("streams") {
            println!("\nstreams: 20 tokens, the first at once and then 10 ms apart; {STREAM_CONNS} connections × {STREAMS_PER_CONN} streams in a row");
            println!("| path | TTFB p50 ms | TTFB p99 ms | token delay p50 ms | p99 ms | p99.9 ms | CPU per stream (proxy process) |");
            println!("|---|---|---|---|---|---|---|");
            let stream_paths = [
                ("direct", direct, Arc::new(request_bytes("/v1/chat/completions", "stream-20x10", true, false))),
                ("tcp relay (floor)", relay, Arc::new(request_bytes("/v1/chat/completions", "stream-20x10", true, false))),
                ("minimal Pingora proxy (floor)", floor_addr, Arc::new(request_bytes("/v1/chat/completions", "stream-20x10", true, false))),
                ("passthrough", via, Arc::new(request_bytes("/v1/chat/completions", "pass/stream-20x10", true, false))),
                ("translation (OpenAI→Anthropic)", via, Arc::new(request_bytes("/v1/chat/completions", "anth/stream-20x10", true, false))),
            ];
            let mut base = None;
            // Every stream each connection ran, the unmeasured warm-up one included.
            let streams_run = (STREAM_CONNS * (STREAMS_PER_CONN + 1)) as f64;
            for ((name, addr, req), pid) in stream_paths.iter().zip(pids) {
                let before = pid.map(cpu_time);
                let (ttfb, delays) = streams(*addr, req.clone(), STREAM_CONNS, STREAMS_PER_CONN).await;
                let cpu = match (pid, before) {
                    (Some(pid), Some(before)) => format!("{:.0} µs", cpu_time(pid).saturating_sub(before).as_secs_f64() * 1e6 / streams_run),
                    _ => "—".to_string(),
                };
                let row = [percentile(&ttfb, 0.5), percentile(&ttfb, 0.99), percentile(&delays, 0.5), percentile(&delays, 0.99), percentile(&delays, 0.999)];
                let added = match base {
                    None => {
                        base = Some(row);
                        String::new()
                    }
                    Some(b) => format!(" (added: TTFB p50 {:+.3}, p99 {:+.3}; token delay p50 {:+.3}, p99 {:+.3})", row[0] - b[0], row[1] - b[1], row[2] - b[2], row[3] - b[3]),
                };
                println!("| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {cpu} |{added}", row[0], row[1], row[2], row[3], row[4]);
            }
        }

        if run("cpu") {
            println!("\ninstructions per request (callgrind; {CPU_REQUESTS} non-streamed requests on one connection):");
            let cpu_paths = [
                ("passthrough", request_bytes("/v1/chat/completions", "pass/bench", false, false)),
                ("translation (OpenAI→Anthropic)", request_bytes("/v1/chat/completions", "anth/bench", false, false)),
                ("translation (Responses→Anthropic)", responses_request_bytes("anth/bench")),
            ];
            match instructions_per_request(&gateway_bin, up_port, &dir, &cpu_paths).await {
                Some(results) => {
                    println!("| path | instructions per request |");
                    println!("|---|---|");
                    for (name, n) in results {
                        println!("| {name} | {n} |");
                    }
                }
                None => println!("skipped: needs valgrind (callgrind_control) and a gateway that answered"),
            }
        }

        if run("limits") {
            println!("\ninstructions per passthrough request with a client key (callgrind; {CPU_REQUESTS} requests on one connection; Redis's own work not counted):");
            let keyed = |body: Vec<u8>| {
                let text = String::from_utf8(body).unwrap_or_default();
                text.replacen("host: bench\r\n", "host: bench\r\nauthorization: Bearer sk-bench\r\n", 1).into_bytes()
            };
            // Priced: a key with a budget is refused unpriced models.
            let request = keyed(request_bytes("/v1/chat/completions", "priced", false, false));
            let model = "models: { priced: { targets: [{ provider: pass, model: bench, price: { input_per_mtok: 1, output_per_mtok: 2 } }] } }";
            let key = format!("{model}\nauth: {{ keys: [{{ name: bench, key: sk-bench, rpm: 100000000, tpm: 100000000000, max_concurrent: 100000, budget_usd: {{ amount: 1000000, period: monthly }} }}] }}");
            let plain_key = format!("{model}\nauth: {{ keys: [{{ name: bench, key: sk-bench }}] }}");
            let mut rows: Vec<(String, u64)> = Vec::new();
            for (label, tag, extra) in [
                ("key, no limits", "key", plain_key.clone()),
                ("key + limits + budget, memory", "memory", key.clone()),
            ] {
                match instructions_with(&gateway_bin, up_port, &dir, tag, &extra, &[(label, request.clone())]).await {
                    Some(r) => rows.extend(r),
                    None => println!("({label}: no count, the gateway did not answer 200 or valgrind is missing)"),
                }
            }
            let redis_port = free_port();
            let redis = Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match redis {
                Ok(child) => {
                    let _redis = Kill(child);
                    wait_port(redis_port);
                    let extra = format!("{key}\nstate: {{ backend: redis, url: \"redis://127.0.0.1:{redis_port}/0\" }}");
                    match instructions_with(&gateway_bin, up_port, &dir, "redis", &extra, &[("key + limits + budget, redis", request.clone())]).await {
                        Some(r) => rows.extend(r),
                        None => println!("(redis row: no count, the gateway did not answer 200)"),
                    }
                }
                Err(_) => println!("(redis-server is not installed: no Redis row)"),
            }
            println!("| path | instructions per request |");
            println!("|---|---|");
            for (name, n) in rows {
                println!("| {name} | {n} |");
            }
        }

        if run("filters") {
            println!("\ninstructions per passthrough request through each built-in filter (callgrind; {CPU_REQUESTS} requests on one connection):");
            let models = r#"
models:
  none: { targets: [{ provider: pass, model: bench }] }
  set-headers: { targets: [{ provider: pass, model: bench }], filters: [{ type: set_headers, headers: { x-team: bench } }] }
  override-params: { targets: [{ provider: pass, model: bench }], filters: [{ type: override_params, max_tokens: { max: 1024, default: 256 }, temperature: { max: 1 } }] }
  system-prompt: { targets: [{ provider: pass, model: bench }], filters: [{ type: system_prompt, prepend: "You are the bench's assistant." }] }
  route-when: { targets: [{ provider: pass, model: bench }], filters: [{ type: route_when, rules: [{ when: 'header["x-tier"] == "gold" && estimated_tokens > 10', model: none }] }] }
  guard: { targets: [{ provider: pass, model: bench }], filters: [{ type: guard, input: { deny: ["(?i)ignore previous instructions"], presets: [email, credit_card, api_key] } }] }
  guard-output: { targets: [{ provider: pass, model: bench }], filters: [{ type: guard, output: { presets: [email, credit_card, api_key] } }] }
"#;
            let paths: Vec<(&str, Vec<u8>)> = [
                ("no filter", "none"),
                ("set_headers", "set-headers"),
                ("override_params (clamps and adds max_tokens)", "override-params"),
                ("system_prompt", "system-prompt"),
                ("route_when (no rule matches)", "route-when"),
                ("guard on input (nothing matches)", "guard"),
                ("guard on output (answers through the canonical model)", "guard-output"),
            ]
            .into_iter()
            .map(|(label, model)| (label, request_bytes("/v1/chat/completions", model, false, false)))
            .collect();
            match instructions_with(&gateway_bin, up_port, &dir, "filters", models, &paths).await {
                Some(rows) => {
                    println!("| path | instructions per request |");
                    println!("|---|---|");
                    for (name, n) in rows {
                        println!("| {name} | {n} |");
                    }
                }
                None => println!("skipped: needs valgrind (callgrind_control) and a gateway that answered"),
            }
        }

        if run("cache") {
            tail::cache_phase(&gateway_bin, up_port, &dir).await;
        }

        if run("hedge") {
            tail::hedge_phase(&gateway_bin, up_port, &dir).await;
        }

        if run("open") {
            println!("\nopen streams: {open_count} concurrent passthrough streams of 10 s (10 chunks, 1 s apart)");
            let slow = Arc::new(request_bytes("/v1/chat/completions", "pass/stream-10x1000", true, false));
            let (rss, ok) = open_streams(via, slow, open_count, gateway_pid).await;
            println!("gateway RSS with {open_count} open streams: {:.1} MiB; completed {ok}/{open_count}", rss as f64 / 1024.0);
        }
    });
    drop(upstream);
    if std::env::var_os("BENCH_KEEP_DIR").is_some() {
        println!("\nkept {} (configs and callgrind dumps)", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
