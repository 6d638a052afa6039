//! AWS's binary event-stream framing (`application/vnd.amazon.eventstream`), decoded
//! incrementally: bytes in any pieces, whole messages out, every CRC checked.
//!
//! A message is: total length (u32), headers length (u32), CRC32 of those eight bytes, the
//! headers (name length u8, name, type u8, value), the payload, and a CRC32 of all before it.

/// The largest message accepted; Bedrock's are a few kilobytes.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
const PRELUDE: usize = 12;

/// One decoded message: its string headers (the only kind Bedrock sends that we read) and
/// payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("event-stream message of {0} bytes is out of bounds")]
    Length(usize),
    #[error("event-stream checksum mismatch")]
    Checksum,
    #[error("malformed event-stream headers")]
    Headers,
    #[error("event stream ended inside a message")]
    Truncated,
}

#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = *b.first().ok_or(FrameError::Headers)? as usize;
        let name = b.get(1..1 + name_len).ok_or(FrameError::Headers)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| FrameError::Headers)?;
        b = &b[1 + name_len..];
        let kind = *b.first().ok_or(FrameError::Headers)?;
        b = &b[1..];
        let fixed = |n: usize, b: &mut &[u8]| -> Result<(), FrameError> {
            if b.len() < n {
                return Err(FrameError::Headers);
            }
            *b = &b[n..];
            Ok(())
        };
        match kind {
            0 | 1 => {}
            2 => fixed(1, &mut b)?,
            3 => fixed(2, &mut b)?,
            4 => fixed(4, &mut b)?,
            5 | 8 => fixed(8, &mut b)?,
            9 => fixed(16, &mut b)?,
            6 | 7 => {
                let len = b.get(..2).ok_or(FrameError::Headers)?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                let value = b.get(2..2 + len).ok_or(FrameError::Headers)?;
                if kind == 7 {
                    let value =
                        String::from_utf8(value.to_vec()).map_err(|_| FrameError::Headers)?;
                    out.push((name, value));
                }
                b = &b[2 + len..];
            }
            _ => return Err(FrameError::Headers),
        }
    }
    Ok(out)
}

impl Decoder {
    /// Consumes `chunk` and appends every message it completes.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Message>) -> Result<(), FrameError> {
        self.buf.extend_from_slice(chunk);
        let mut at = 0;
        while self.buf.len() - at >= PRELUDE {
            let b = &self.buf[at..];
            let total = be32(&b[0..4]);
            let headers_len = be32(&b[4..8]);
            if !(PRELUDE + 4..=MAX_MESSAGE).contains(&total) || headers_len > total - PRELUDE - 4 {
                return Err(FrameError::Length(total));
            }
            if crc32fast::hash(&b[0..8]) != be32(&b[8..12]) as u32 {
                return Err(FrameError::Checksum);
            }
            if b.len() < total {
                break;
            }
            if crc32fast::hash(&b[..total - 4]) != be32(&b[total - 4..total]) as u32 {
                return Err(FrameError::Checksum);
            }
            let headers = parse_headers(&b[PRELUDE..PRELUDE + headers_len])?;
            let payload = b[PRELUDE + headers_len..total - 4].to_vec();
            out.push(Message { headers, payload });
            at += total;
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// The stream ended: fails if a message was cut.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// Frames a message with string headers, as AWS does (for tests and fakes).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<u8> {
        let mut bytes = encode(
            &[(":event-type", "messageStart"), (":message-type", "event")],
            br#"{"role":"assistant"}"#,
        );
        bytes.extend(encode(
            &[(":event-type", "messageStop")],
            br#"{"stopReason":"end_turn"}"#,
        ));
        bytes
    }

    #[test]
    fn decodes_in_any_pieces() {
        let bytes = two();
        for piece in [1, 3, 7, 50, bytes.len()] {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            for c in bytes.chunks(piece) {
                d.push(c, &mut out).unwrap();
            }
            d.finish().unwrap();
            assert_eq!(out.len(), 2, "pieces of {piece}");
            assert_eq!(out[0].header(":event-type"), Some("messageStart"));
            assert_eq!(out[1].payload, br#"{"stopReason":"end_turn"}"#);
        }
    }

    /// A message of 2 MiB, arriving a byte per read: the prelude is checked
    /// once per read, the body's checksum once, at the end.
    #[test]
    fn a_huge_message_fed_byte_by_byte_costs_time_linear_in_its_length() {
        let payload = vec![b'x'; 2 * 1024 * 1024];
        let bytes = encode(&[(":event-type", "contentBlockDelta")], &payload);
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for byte in bytes.chunks(1) {
            d.push(byte, &mut out).unwrap();
        }
        d.finish().unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload.len(), payload.len());
    }

    #[test]
    fn corruption_and_cuts_are_errors_never_panics() {
        let bytes = two();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x5a;
            let mut d = Decoder::default();
            let mut out = Vec::new();
            let r = d.push(&bad, &mut out).and_then(|_| d.finish());
            assert!(
                r.is_err() || out.len() < 2,
                "byte {i} changed yet all decoded"
            );
        }
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.push(&bytes[..bytes.len() - 3], &mut out).unwrap();
        assert_eq!(d.finish(), Err(FrameError::Truncated));
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Decoder::default().push(&huge, &mut Vec::new()).is_err());
    }
}
