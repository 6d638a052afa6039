//! Test support: scriptable vendor upstreams and the real gateway binary as a child process.
//!
//! - [`MockUpstream`] is an HTTP/1.1 server on a raw `TcpListener` (no hyper), so that tests
//!   control every byte and every delay: split SSE events, slow first bytes, stalls, cuts, resets
//!   ([`upstream`]; [`TestCa`] in [`tls`] gives it a certificate for HTTPS).
//! - [`Gateway`] writes a config with free ports, runs `switchyard serve` and waits until it answers.
//! - [`run_cli`] runs the binary once for one-shot commands ([`gateway`]); [`sse_data`] splits SSE
//!   bodies.
//!
//! Each integration test file includes this with `mod support;` and uses only part of it, so
//! in each test binary some of this code is unused. The `dead_code` and `unused_imports`
//! allowances sit only where some binary leaves code unused: the modules [`upstream`] (no mock
//! upstream in `operations.rs`) and [`tls`] (only `gateway.rs` uses a CA) as a whole, and single
//! items in [`gateway`] and here. The rest of this code is checked as usual.

mod gateway;
// Only the SDK tests run Python.
#[allow(dead_code)]
pub mod python;
// Whole modules: a binary without a mock upstream (or a CA) leaves all of the module unused, and
// the others each use a different part of `MockResponse` and `MockUpstream`.
#[allow(dead_code)]
mod redis;
#[allow(dead_code)]
mod tls;
#[allow(dead_code)]
mod upstream;

pub use gateway::*;
// Unused, like the modules, in the binaries without a CA or a mock upstream.
#[allow(unused_imports)]
pub use redis::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use upstream::*;

use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};

/// Locks a mutex even if a panicking thread poisoned it: the data here stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `data:` payloads of each event of an SSE body, in order. Events end at a blank line
/// (`\n\n`, `\r\n\r\n` or `\r\r`); several `data:` lines of one event are joined with `\n`; one
/// space after the colon is dropped; events without data (comments, `event:` only) are skipped.
/// A last event without its blank line is still returned.
#[allow(dead_code)] // Not every test binary reads SSE bodies.
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

#[allow(dead_code)] // Only the process and operations tests load a gateway this way.
/// One request to the model `chat` at `url`; Ok(the answering provider) only when the answer is
/// complete (a non-empty message, or a stream that ends in [DONE] without an error event).
/// Connections are kept alive and reused, as SDKs do, and nothing is retried: a request lost on a
/// connection the gateway closed under it fails the test.
pub async fn complete_chat(
    http: &reqwest::Client,
    url: &str,
    stream: bool,
) -> Result<String, String> {
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let provider = resp
        .headers()
        .get("x-switchyard-provider")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.text().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    if stream {
        let data = sse_data(&body);
        if data.last().map(String::as_str) != Some("[DONE]")
            || data.iter().any(|d| d.contains("\"error\""))
        {
            return Err(format!("truncated stream: {data:?}"));
        }
    } else {
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("json: {e}"))?;
        if v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty()
        {
            return Err(format!("empty answer: {body}"));
        }
    }
    Ok(provider)
}

/// The value of the first Prometheus sample line of `text` that starts with `line_start` (the
/// metric name and its labels, in the exposition's order); 0 when there is none.
#[allow(dead_code)] // Not every test binary reads metrics.
pub fn metric_value(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
