//! Reading a vendor's HTTP/1.1 answer: its head, then its body in the pieces it arrives in.
//!
//! Not Pingora's client session: that one builds a case-keeping header map of every answer and
//! allocates a 64 KiB body buffer for each (about 8k instructions per answer, and most of the
//! memory an open stream held). The gateway reads three things of an answer's head (the status, `Retry-After`, the
//! framing) and passes the body on piece by piece, so the head is parsed with `httparse` into
//! just those, and the body is cut out of one read buffer.

use bytes::{Buf, Bytes, BytesMut};
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// Longest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in an answer head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line or trailer field accepted.
const MAX_LINE: usize = 8 * 1024;
/// What one read asks the socket for, at least.
const READ_SIZE: usize = 16 * 1024;
/// What the buffer starts with: room for a typical head and a small JSON answer.
const FIRST_READ: usize = 4 * 1024;

/// Why an answer could not be read. None of these carry secrets or answer bytes.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the answer: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed {0}")]
    Closed(&'static str),
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

/// What the gateway reads of an answer's head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// `retry-after-ms` rounded up to whole seconds, else `Retry-After` as sent.
    pub retry_after: Option<String>,
}

/// How the body's end is known (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// The body ends when the server closes the connection.
    UntilClose,
    Done,
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    /// This many bytes of the current chunk are still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// An answer whose head was read, on its connection.
pub struct Answer {
    stream: Stream,
    /// Bytes read but not yet handed out.
    buf: BytesMut,
    body: Body,
    keep_alive: bool,
}

impl Answer {
    /// Reads up to the end of the answer's head; informational (1xx) heads are skipped.
    pub async fn read_head(mut stream: Stream) -> Result<(Answer, Head), ReadError> {
        let mut buf = BytesMut::with_capacity(FIRST_READ);
        // How much of `buf` is known to hold no blank line: a head that drips in byte by byte
        // is parsed once it is whole, not once per read (which would cost its length squared).
        let mut scanned: usize = 0;
        loop {
            // The first bytes are parsed at once too, so that garbage fails without waiting.
            let worth_parsing =
                scanned == 0 || blank_line_end(&buf[scanned.saturating_sub(3)..]).is_some();
            scanned = buf.len();
            let parsed = if worth_parsing {
                parse_head(&buf)?
            } else {
                None
            };
            if let Some(parsed) = parsed {
                buf.advance(parsed.len);
                scanned = 0;
                if parsed.informational {
                    continue;
                }
                let answer = Answer {
                    stream,
                    buf,
                    body: parsed.body,
                    keep_alive: parsed.keep_alive,
                };
                return Ok((answer, parsed.head));
            }
            if buf.len() >= MAX_HEAD {
                return Err(ReadError::Malformed("the head is over 64 KiB"));
            }
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Err(ReadError::Closed("before the answer's head"));
            }
        }
    }

    /// The next piece of the body as it arrived; `None` at its end.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            match self.body {
                Body::Done => return Ok(None),
                Body::Length(0) => self.body = Body::Done,
                Body::Length(left) => {
                    self.fill_if_empty().await?;
                    let piece = self.take(left);
                    self.body = Body::Length(left - piece.len() as u64);
                    return Ok(Some(piece));
                }
                Body::UntilClose => {
                    if self.buf.is_empty() && self.read().await? == 0 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Body::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.buf.advance(used);
                        self.body = Body::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) => self.fill_line().await?,
                    Err(_) => return Err(ReadError::Malformed("a chunk size is not hexadecimal")),
                },
                Body::Chunked(Chunk::Data(left)) => {
                    self.fill_if_empty().await?;
                    let piece = self.take(left);
                    let left = left - piece.len() as u64;
                    self.body = Body::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Some(piece));
                }
                Body::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() < 2 {
                        self.fill().await?;
                        continue;
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ReadError::Malformed("a chunk does not end with CRLF"));
                    }
                    self.buf.advance(2);
                    self.body = Body::Chunked(Chunk::Size);
                }
                // Trailer fields are read past: nothing of the gateway's is in them.
                Body::Chunked(Chunk::Trailers) => match find_crlf(&self.buf) {
                    Some(0) => {
                        self.buf.advance(2);
                        self.body = Body::Done;
                    }
                    Some(end) => self.buf.advance(end + 2),
                    None => self.fill_line().await?,
                },
            }
        }
    }

    /// The connection, when the whole answer was read and the server keeps it open.
    pub fn into_reusable(self) -> Option<Stream> {
        // Bytes past the answer's end would be taken for the next answer's start.
        (self.body == Body::Done && self.keep_alive && self.buf.is_empty()).then_some(self.stream)
    }

    /// Up to `left` bytes of what is buffered.
    fn take(&mut self, left: u64) -> Bytes {
        let n = usize::try_from(left).map_or(self.buf.len(), |left| left.min(self.buf.len()));
        self.buf.split_to(n).freeze()
    }

    async fn read(&mut self) -> Result<usize, ReadError> {
        Ok(read_more(&mut self.stream, &mut self.buf).await?)
    }

    /// Reads more; the body must not end here.
    async fn fill(&mut self) -> Result<(), ReadError> {
        match self.read().await? {
            0 => Err(ReadError::Closed("before the end of the body")),
            _ => Ok(()),
        }
    }

    async fn fill_if_empty(&mut self) -> Result<(), ReadError> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        Ok(())
    }

    /// Reads more of a chunk-size line or trailer field, which has a length limit.
    async fn fill_line(&mut self) -> Result<(), ReadError> {
        if self.buf.len() > MAX_LINE {
            return Err(ReadError::Malformed("a chunk-size line is over 8 KiB"));
        }
        self.fill().await
    }
}

async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    stream.read_buf(buf).await
}

/// Where the first blank line (`\n\n` or `\n\r\n`, the end of a head) in `bytes` ends.
fn blank_line_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
        let lf = from + at;
        match bytes.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if bytes.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
    None
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// A complete head, as the gateway reads it.
struct ParsedHead {
    /// Its length in bytes.
    len: usize,
    informational: bool,
    head: Head,
    body: Body,
    keep_alive: bool,
}

/// The head at the start of `buf`, or `None` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<ParsedHead>, ReadError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Malformed("the head has over 128 fields"))
        }
        Err(_) => return Err(ReadError::Malformed("the head is not HTTP/1")),
    };
    let status = response.code.unwrap_or_default();
    let http11 = response.version == Some(1);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut close = false;
    let mut keep_alive_asked = false;
    let mut retry_after = None;
    let mut retry_after_ms = None;
    for field in response.headers.iter() {
        let name = field.name;
        let value = field.value;
        if name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ReadError::Malformed("Content-Length is not a number"))?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err(ReadError::Malformed("two different Content-Lengths"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoded = true;
            // Only the last coding says whether the body is chunked.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_asked |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("retry-after-ms") {
            retry_after_ms = std::str::from_utf8(value)
                .ok()
                .and_then(|ms| ms.trim().parse::<f64>().ok());
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(value).ok().map(str::to_string);
        }
    }
    let informational = (100..200).contains(&status) && status != 101;
    let body = if informational || status == 204 || status == 304 {
        Body::Done
    } else if transfer_encoded {
        if chunked {
            Body::Chunked(Chunk::Size)
        } else {
            Body::UntilClose
        }
    } else {
        match content_length {
            Some(0) => Body::Done,
            Some(length) => Body::Length(length),
            None => Body::UntilClose,
        }
    };
    // Both framings at once is how responses are smuggled (RFC 9112, section 6.1): the body is
    // read as chunked, but where this server thinks the answer ends is in doubt, so whatever
    // follows on the connection could be taken for the next request's answer.
    let framing_in_doubt = transfer_encoded && content_length.is_some();
    let keep_alive =
        body != Body::UntilClose && !close && !framing_in_doubt && (http11 || keep_alive_asked);
    let retry_after = retry_after_ms
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| ((ms / 1000.0).ceil() as u64).max(1).to_string())
        .or(retry_after);
    Ok(Some(ParsedHead {
        len,
        informational,
        head: Head {
            status,
            retry_after,
        },
        body,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// An answer read from a server that writes `parts` one by one (each its own segment),
    /// then closes when `close` is set.
    async fn serve(parts: Vec<&'static [u8]>, close: bool) -> Stream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            for part in parts {
                socket.write_all(part).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            if !close {
                std::future::pending::<()>().await;
            }
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        Box::new(pingora::protocols::l4::stream::Stream::from(tcp))
    }

    /// The answer `parts` make, its head read.
    async fn answered(parts: Vec<&'static [u8]>, close: bool) -> (Answer, Head) {
        Answer::read_head(serve(parts, close).await).await.unwrap()
    }

    async fn read_all(answer: &mut Answer) -> Result<Vec<Vec<u8>>, ReadError> {
        let mut pieces = Vec::new();
        while let Some(piece) = answer.read_chunk().await? {
            assert!(!piece.is_empty(), "an empty piece");
            pieces.push(piece.to_vec());
        }
        Ok(pieces)
    }

    #[tokio::test]
    async fn a_sized_answer_in_one_segment_is_one_piece_and_reusable() {
        let (mut answer, head) = answered(vec![b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"], false).await;
        assert_eq!(
            head,
            Head {
                status: 200,
                retry_after: None
            }
        );
        assert_eq!(
            read_all(&mut answer).await.unwrap(),
            vec![b"{\"ok\":true}".to_vec()]
        );
        assert!(answer.into_reusable().is_some());
    }

    #[tokio::test]
    async fn chunks_split_anywhere_come_out_as_they_arrive() {
        let (mut answer, head) = answered(
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
                b"\r\nd",
                b"\r\ndata: one\r\n\r\n",
                b"\r\n9;ext=1\r\ndata: two\r\n7\r\n\r",
                b"\nthree\r\n0\r\nx-trailer: 1\r\n",
                b"\r\n",
            ],
            false,
        )
        .await;
        assert_eq!(head.status, 200);
        let pieces = read_all(&mut answer).await.unwrap();
        assert_eq!(
            pieces.concat(),
            b"data: one\r\n\r\ndata: two\r\nthree".to_vec()
        );
        assert!(pieces.len() >= 3, "{pieces:?}");
        assert!(answer.into_reusable().is_some());
    }

    #[tokio::test]
    async fn informational_heads_are_skipped() {
        let (mut answer, head) = answered(vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nretry-after-ms: 1500\r\nRetry-After: 9\r\ncontent-length: 0\r\n\r\n"], false).await;
        assert_eq!(head.status, 429);
        assert_eq!(head.retry_after.as_deref(), Some("2"));
        assert!(answer.read_chunk().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_a_close_delimited_one_is_not() {
        let (mut answer, _) = answered(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n0123456789"],
            true,
        )
        .await;
        assert!(matches!(
            read_all(&mut answer).await,
            Err(ReadError::Closed(_))
        ));

        let (mut answer, _) = answered(vec![b"HTTP/1.1 200 OK\r\n\r\nall", b" of it"], true).await;
        assert_eq!(read_all(&mut answer).await.unwrap().concat(), b"all of it");
        assert!(answer.into_reusable().is_none());
    }

    #[tokio::test]
    async fn connections_the_server_closes_or_overruns_are_not_reused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ] {
            let (mut answer, _) = answered(vec![raw], false).await;
            assert_eq!(read_all(&mut answer).await.unwrap().concat(), b"ok");
            assert!(
                answer.into_reusable().is_none(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let (mut answer, _) = answered(
            vec![b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 2\r\n\r\nok"],
            false,
        )
        .await;
        read_all(&mut answer).await.unwrap();
        assert!(answer.into_reusable().is_some());
    }

    /// A head that drips in a byte per segment is read as one (and parsed once it is whole).
    #[tokio::test]
    async fn a_head_arriving_byte_by_byte_is_read_whole() {
        let raw: &'static [u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\n\r\nok";
        let parts: Vec<&'static [u8]> = raw.chunks(1).collect();
        let (mut answer, head) = answered(parts, false).await;
        assert_eq!(head.status, 200);
        assert_eq!(read_all(&mut answer).await.unwrap().concat(), b"ok");
        assert_eq!(blank_line_end(b"a\r\nb\r\n\r\nrest"), Some(8));
        assert_eq!(blank_line_end(b"a\n\nrest"), Some(3));
        assert_eq!(blank_line_end(b"a\r\nb\r\n"), None);
    }

    #[test]
    fn malformed_heads_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(raw), Err(ReadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_bad_chunk_is_an_error() {
        let (mut answer, _) = answered(
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            false,
        )
        .await;
        assert!(matches!(
            answer.read_chunk().await,
            Err(ReadError::Malformed(_))
        ));
    }
}
