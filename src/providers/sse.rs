//! An incremental (sans-IO) Server-Sent Events decoder.
//!
//! Upstream bytes arrive in arbitrary pieces: an event can be split across reads, and one read can
//! hold several events. The decoder is fed each piece as it arrives and hands back every event that
//! is complete, so nothing waits for the end of the stream. The crates on crates.io wrap a
//! `Stream` rather than accept bytes, which does not fit a loop that also enforces per-read
//! timeouts; this follows the WHATWG parsing rules directly (LF, CRLF and CR line ends; comments;
//! multi-line `data`).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, when given.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("stream line is not valid UTF-8")]
    InvalidUtf8,
    #[error("stream event exceeds {0} bytes")]
    TooLarge(usize),
}

/// Largest single event accepted; a larger one is a broken or hostile upstream.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct SseDecoder {
    /// The start of a line whose end has not arrived yet.
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no line end: each byte is looked at once, so an
    /// endless line costs time in proportion to its length, not to its length squared.
    scanned: usize,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous piece ended in `\r`; a leading `\n` of the next piece belongs to it.
    skip_lf: bool,
    max_event_bytes: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_limit(max_event_bytes: usize) -> Self {
        SseDecoder {
            pending: Vec::new(),
            scanned: 0,
            event: None,
            data: String::new(),
            has_data: false,
            skip_lf: false,
            max_event_bytes,
        }
    }

    /// Feeds one piece of the stream; completed events are appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.skip_lf {
            self.skip_lf = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = self.scanned;
        let buf = std::mem::take(&mut self.pending);
        while i < buf.len() {
            match buf[i] {
                b'\n' => {
                    self.line(&buf[start..i], out)?;
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    self.line(&buf[start..i], out)?;
                    i += 1;
                    if i == buf.len() {
                        self.skip_lf = true;
                    } else if buf[i] == b'\n' {
                        i += 1;
                    }
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.pending = buf;
        self.pending.drain(..start);
        self.scanned = self.pending.len();
        if self.pending.len() + self.data.len() > self.max_event_bytes {
            return Err(SseError::TooLarge(self.max_event_bytes));
        }
        Ok(())
    }

    /// Ends the stream. Returns an event that had data but was never terminated by a blank line:
    /// the caller decides whether a truncated tail is acceptable.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, SseError> {
        if !self.pending.is_empty() {
            self.scanned = 0;
            let line = std::mem::take(&mut self.pending);
            let mut ignored = Vec::new();
            self.line(&line, &mut ignored)?;
        }
        if self.has_data {
            self.has_data = false;
            Ok(Some(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            }))
        } else {
            Ok(None)
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            } else {
                self.event = None;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > self.max_event_bytes {
                    return Err(SseError::TooLarge(self.max_event_bytes));
                }
            }
            "event" => self.event = Some(value.to_string()),
            // `id` and `retry` matter to browsers reconnecting, not to a proxy.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            d.push(c, &mut out).unwrap();
        }
        assert_eq!(d.finish().unwrap(), None);
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    #[test]
    fn same_events_whatever_the_split_and_line_ending() {
        let lf = "event: a\ndata: {\"x\":1}\n\n: keep-alive\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let expected = vec![
            ev(Some("a"), "{\"x\":1}"),
            ev(None, "line1\nline2"),
            ev(None, "[DONE]"),
        ];
        for text in [
            lf.to_string(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            for piece in [1, 2, 3, 7, 1000] {
                assert_eq!(
                    decode_in_pieces(text.as_bytes(), piece),
                    expected,
                    "piece {piece} of {text:?}"
                );
            }
        }
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert_eq!(
            decode_in_pieces(b"event: ping\n\ndata: x\n\n", 4),
            vec![ev(None, "x")]
        );
    }

    #[test]
    fn no_space_after_colon_and_field_without_value() {
        assert_eq!(
            decode_in_pieces(b"data:abc\n\ndata\n\n", 5),
            vec![ev(None, "abc"), ev(None, "")]
        );
    }

    #[test]
    fn unterminated_tail_is_returned_by_finish() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        d.push(b"data: a\n\ndata: partial", &mut out).unwrap();
        assert_eq!(out, vec![ev(None, "a")]);
        assert_eq!(d.finish().unwrap(), Some(ev(None, "partial")));
    }

    /// An endless event arriving a byte per read: each byte is looked at once. Rescanning the
    /// pending line on every read (as this decoder once did) makes these 2 MiB take hours.
    #[test]
    fn an_endless_line_fed_byte_by_byte_costs_time_linear_in_its_length() {
        let mut d = SseDecoder::with_limit(2 * 1024 * 1024);
        let mut out = Vec::new();
        d.push(b"data: ", &mut out).unwrap();
        let mut fed = 0usize;
        let refused = loop {
            if let Err(e) = d.push(b"x", &mut out) {
                break e;
            }
            fed += 1;
            assert!(fed <= 4 * 1024 * 1024, "never refused");
        };
        assert_eq!(refused, SseError::TooLarge(2 * 1024 * 1024));
        assert!(out.is_empty());
    }

    #[test]
    fn limits_event_size_and_rejects_bad_utf8() {
        let mut d = SseDecoder::with_limit(8);
        assert_eq!(
            d.push(b"data: 0123456789", &mut Vec::new()),
            Err(SseError::TooLarge(8))
        );
        let mut d = SseDecoder::new();
        assert_eq!(
            d.push(b"data: \xff\xfe\n\n", &mut Vec::new()),
            Err(SseError::InvalidUtf8)
        );
    }
}
