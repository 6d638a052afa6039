//! One JSON object per line on stdout, for both ordinary log records and access-log lines.
//!
//! The level comes from `SWITCHYARD_LOG` (`error`, `warn`, `info`, `debug`, `trace`, `off`;
//! default `info`). Pingora logs through the same `log` facade, so its lines are JSON too.
//!
//! Access-log lines, one per request, are serialised on the request's thread (one allocation)
//! and queued for a thread of their own that writes them in batches, about 10 ms late: a request
//! makes no system call for its line (but one wake-up when that thread was idle), a slow reader
//! of stdout (a full journald pipe, a terminal) never stalls a request, and under load many
//! lines share one write.
//! Ordinary log records are rare and are written at once.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde::Serialize;
use serde_json::{json, Value};

/// Lines waiting for the access-log thread; when it falls this far behind, requests write their
/// own lines (slower, but nothing is dropped).
const ACCESS_QUEUE: usize = 16 * 1024;
/// The writer stops collecting a batch at this size and writes it.
const ACCESS_BATCH_BYTES: usize = 64 * 1024;
/// How often the access-log thread writes what was queued: lines appear at most this late.
const ACCESS_TICK: Duration = Duration::from_millis(10);
/// How long the exit handler waits for queued lines to be written.
const EXIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

struct JsonLogger {
    level: LevelFilter,
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let level = effective_level(record.level(), record.target(), &msg);
        if level > self.level {
            return;
        }
        let line = json!({
            "ts": timestamp(),
            "level": level_name(level),
            "target": record.target(),
            "msg": msg,
        });
        write_line(&line);
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
}

/// Pingora's level for a record, except where Pingora calls a normal step an error: a process
/// started with `--upgrade` logs "No incoming socket transfer" at error level each second it
/// waits for the old one's sockets, which every graceful upgrade does for a moment. That is
/// info; giving up waiting is still an error (logged by Pingora as "Giving up ...").
fn effective_level(level: Level, target: &str, msg: &str) -> Level {
    if level == Level::Error
        && target == "pingora_core::server::transfer_fd"
        && msg.starts_with("No incoming socket transfer")
    {
        return Level::Info;
    }
    level
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn write_line(value: &Value) {
    let mut buf = serde_json::to_vec(value).unwrap_or_default();
    buf.push(b'\n');
    write_now(&buf);
}

fn write_now(bytes: &[u8]) {
    // A closed stdout must never take the gateway down with it.
    let _ = std::io::stdout().lock().write_all(bytes);
}

/// Parses a `SWITCHYARD_LOG` value: unset or empty is `info`; `None` for a word that is not a
/// level.
pub fn parse_level(text: Option<&str>) -> Option<LevelFilter> {
    let level = match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("info") => LevelFilter::Info,
        Some("off") => LevelFilter::Off,
        Some("error") => LevelFilter::Error,
        Some("warn") | Some("warning") => LevelFilter::Warn,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        Some(_) => return None,
    };
    Some(level)
}

/// Installs the JSON logger with the level from `SWITCHYARD_LOG` (`info` when it names no
/// level, with a warning). Safe to call more than once.
pub fn init() {
    let asked = std::env::var("SWITCHYARD_LOG").ok();
    let parsed = parse_level(asked.as_deref());
    let level = parsed.unwrap_or(LevelFilter::Info);
    if log::set_boxed_logger(Box::new(JsonLogger { level })).is_ok() {
        log::set_max_level(level);
    }
    if parsed.is_none() {
        log::warn!(
            "SWITCHYARD_LOG={:?} is not a level (error, warn, info, debug, trace, off); logging at info",
            asked.unwrap_or_default()
        );
    }
}

/// One request's access-log fields, in the order they appear on the line. Callers pass only
/// non-secret values (the client key's configured name, never the key).
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub endpoint: &'a str,
    pub dialect: &'a str,
    pub model: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub upstream_model: Option<&'a str>,
    pub status: u16,
    pub stream: bool,
    pub attempts: u32,
    pub duration_ms: f64,
    pub ttfb_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub client_key: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// The start of every access line, before the timestamp.
const ACCESS_PREFIX: &[u8] = br#"{"ts":""#;
/// What follows the timestamp, up to the record's first field.
const ACCESS_LEVEL_TARGET: &[u8] = br#"","level":"info","target":"access","#;

/// `{"ts", "level":"info", "target":"access", ...record}` plus a newline. The record is
/// serialised as a plain struct and spliced in after the fixed fields (serde's `flatten` would
/// go through a map serialiser and cost several times more).
fn access_line(ts: SystemTime, record: &AccessRecord) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(ACCESS_PREFIX);
    write!(buf, "{}", humantime::format_rfc3339_millis(ts)).ok()?;
    buf.extend_from_slice(ACCESS_LEVEL_TARGET);
    let fields_start = buf.len();
    serde_json::to_writer(&mut buf, record).ok()?;
    // Drop the record's own opening brace; its closing one ends the line's object.
    buf.remove(fields_start);
    buf.push(b'\n');
    Some(buf)
}

enum AccessMessage {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(SyncSender<()>),
}

/// The access-log thread's queue; `None` when the thread could not be started.
fn access_queue() -> Option<&'static SyncSender<AccessMessage>> {
    static QUEUE: OnceLock<Option<SyncSender<AccessMessage>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel(ACCESS_QUEUE);
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_access_lines(rx))
                .ok()?;
            // Pingora ends the process with `exit`; lines still queued then are written first.
            // SAFETY: registers a plain `extern "C" fn` with no arguments, as atexit requires.
            unsafe { libc::atexit(flush_at_exit) };
            Some(tx)
        })
        .as_ref()
}

fn write_access_lines(rx: Receiver<AccessMessage>) {
    let mut batch = Vec::with_capacity(ACCESS_BATCH_BYTES);
    let mut flushes = Vec::new();
    // Blocks while nothing is queued, so an idle gateway has no thread waking 100 times a
    // second. After the first line it waits one tick before writing, so the lines of that tick
    // share one write. A request pays for waking this thread (a futex call) only when it finds
    // the thread waiting, which is at most once per tick.
    while let Ok(first) = rx.recv() {
        std::thread::sleep(ACCESS_TICK);
        let mut next = Some(first);
        loop {
            let message = match next.take() {
                Some(first) => Ok(first),
                None => rx.try_recv(),
            };
            let open = match message {
                Ok(AccessMessage::Line(line)) => {
                    batch.extend_from_slice(&line);
                    true
                }
                Ok(AccessMessage::Flush(done)) => {
                    flushes.push(done);
                    true
                }
                Err(TryRecvError::Empty) => false,
                Err(TryRecvError::Disconnected) => return,
            };
            if !open || batch.len() >= ACCESS_BATCH_BYTES {
                if !batch.is_empty() {
                    write_now(&batch);
                    batch.clear();
                }
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
            }
            if !open {
                break;
            }
        }
    }
}

/// Waits until the access-log lines queued so far are written (or `timeout` passed); whether
/// the access-log thread said they were.
pub fn flush_access(timeout: Duration) -> bool {
    let Some(queue) = access_queue() else {
        return false;
    };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    queue.send(AccessMessage::Flush(done_tx)).is_ok() && done_rx.recv_timeout(timeout).is_ok()
}

extern "C" fn flush_at_exit() {
    flush_access(EXIT_FLUSH_TIMEOUT);
}

/// Writes one access-log line (through the access-log thread).
pub fn access(record: &AccessRecord) {
    if log::max_level() < LevelFilter::Info {
        return;
    }
    let Some(buf) = access_line(SystemTime::now(), record) else {
        return;
    };
    let Some(queue) = access_queue() else {
        return write_now(&buf);
    };
    match queue.try_send(AccessMessage::Line(buf)) {
        Ok(()) => {}
        Err(TrySendError::Full(AccessMessage::Line(buf)))
        | Err(TrySendError::Disconnected(AccessMessage::Line(buf))) => write_now(&buf),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_line_keeps_its_field_order_and_nulls() {
        let record = AccessRecord {
            request_id: "req-1",
            method: "POST",
            path: "/v1/chat/completions",
            endpoint: "chat",
            dialect: "openai",
            model: Some("gpt-4o"),
            provider: Some("openai"),
            upstream_model: None,
            status: 200,
            stream: true,
            attempts: 1,
            duration_ms: 12.5,
            ttfb_ms: None,
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            cached_tokens: Some(0),
            total_tokens: Some(7),
            cost_usd: None,
            client_key: Some("team-a"),
            error: None,
        };
        let ts = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let text = String::from_utf8(access_line(ts, &record).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"ts":"2023-11-14T22:13:20.123Z","level":"info","target":"access","request_id":"req-1","method":"POST","path":"/v1/chat/completions","endpoint":"chat","dialect":"openai","model":"gpt-4o","provider":"openai","upstream_model":null,"status":200,"stream":true,"attempts":1,"duration_ms":12.5,"ttfb_ms":null,"prompt_tokens":3,"completion_tokens":4,"cached_tokens":0,"total_tokens":7,"cost_usd":null,"client_key":"team-a","error":null}
"#
        );
    }

    #[test]
    fn the_access_log_thread_answers_a_flush() {
        // It answers only after writing what was queued before the flush. The second flush
        // comes after the thread has gone back to waiting, so it also checks that a queued
        // message wakes it again.
        for _ in 0..2 {
            assert!(flush_access(Duration::from_secs(5)));
            std::thread::sleep(ACCESS_TICK * 3);
        }
    }

    #[test]
    fn waiting_for_the_sockets_of_an_upgrade_is_not_an_error() {
        let target = "pingora_core::server::transfer_fd";
        let waiting = "No incoming socket transfer, sleep 1s and try again";
        assert_eq!(effective_level(Level::Error, target, waiting), Level::Info);
        let gave_up = "Giving up reading socket from: /run/x.sock, error: EAGAIN";
        assert_eq!(effective_level(Level::Error, target, gave_up), Level::Error);
        assert_eq!(
            effective_level(Level::Error, "switchyard", waiting),
            Level::Error
        );
    }

    #[test]
    fn level_parsing() {
        assert_eq!(parse_level(None), Some(LevelFilter::Info));
        assert_eq!(parse_level(Some("DEBUG")), Some(LevelFilter::Debug));
        assert_eq!(parse_level(Some("off")), Some(LevelFilter::Off));
        assert_eq!(parse_level(Some("nonsense")), None);
    }
}
