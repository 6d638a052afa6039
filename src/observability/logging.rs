//! One JSON object per line on stdout, for both ordinary log records and access-log lines.
//!
//! The level comes from `SWITCHYARD_LOG` (`error`, `warn`, `info`, `debug`, `trace`, `off`;
//! default `info`). Pingora logs through the same `log` facade, so its lines are JSON too.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde_json::{json, Map, Value};

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
        let line = json!({
            "ts": timestamp(),
            "level": level_name(record.level()),
            "target": record.target(),
            "msg": record.args().to_string(),
        });
        write_line(&line);
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
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
    // A closed stdout must never take the gateway down with it.
    let _ = std::io::stdout().lock().write_all(&buf);
}

/// Parses a `SWITCHYARD_LOG` value; unknown words fall back to `info`.
pub fn parse_level(text: Option<&str>) -> LevelFilter {
    match text.map(|t| t.trim().to_ascii_lowercase()).as_deref() {
        Some("off") => LevelFilter::Off,
        Some("error") => LevelFilter::Error,
        Some("warn") | Some("warning") => LevelFilter::Warn,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        _ => LevelFilter::Info,
    }
}

/// Installs the JSON logger with the level from `SWITCHYARD_LOG`. Safe to call more than once.
pub fn init() {
    let level = parse_level(std::env::var("SWITCHYARD_LOG").ok().as_deref());
    if log::set_boxed_logger(Box::new(JsonLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// Writes one access-log line: `{"ts", "level":"info", "target":"access", ...fields}`.
///
/// Fields are written as given; callers pass only non-secret values.
pub fn access(fields: Map<String, Value>) {
    if log::max_level() < LevelFilter::Info {
        return;
    }
    let mut line = Map::with_capacity(fields.len() + 3);
    line.insert("ts".into(), Value::String(timestamp()));
    line.insert("level".into(), Value::String("info".into()));
    line.insert("target".into(), Value::String("access".into()));
    line.extend(fields);
    write_line(&Value::Object(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_parsing() {
        assert_eq!(parse_level(None), LevelFilter::Info);
        assert_eq!(parse_level(Some("DEBUG")), LevelFilter::Debug);
        assert_eq!(parse_level(Some("off")), LevelFilter::Off);
        assert_eq!(parse_level(Some("nonsense")), LevelFilter::Info);
    }
}
