//! Redis's wire protocol (RESP2), the part the gateway speaks: commands out as arrays of bulk
//! strings, and replies in, over a [`Connection`] that keeps its buffers from one write to the
//! next ([`super::pipeline`] owns it).
//!
//! Why not redis-rs on the request path: measured under callgrind, each of its calls cost
//! 25–30k instructions (its multiplexed connection's channels, the general `combine` reply
//! parser, command packing), and it wrote each call on its own. What the gateway sends is a
//! handful of commands with small replies; this module is that much and no more. redis-rs
//! still parses `state.url`.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Arrays nested deeper than this in a reply are refused (the gateway's replies nest once).
const MAX_DEPTH: u8 = 4;
/// Elements reserved up front for an array reply, whatever length it announces.
const MAX_RESERVE: usize = 64;
/// The longest bulk string Redis sends (its own `proto-max-bulk-len` default).
const MAX_BULK: usize = 512 << 20;

/// A command: its name and arguments as RESP bulk strings (the array header is written when
/// it is sent, once the count is known).
#[derive(Debug)]
pub struct Cmd {
    argc: usize,
    body: Vec<u8>,
}

impl Cmd {
    pub fn new(name: &str) -> Self {
        Self::with_capacity(name, 128)
    }

    /// A command whose arguments take about `bytes` (one allocation when the guess is right).
    pub fn with_capacity(name: &str, bytes: usize) -> Self {
        let mut cmd = Cmd {
            argc: 0,
            body: Vec::with_capacity(bytes),
        };
        cmd.arg(name);
        cmd
    }

    /// The encoded arguments so far.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// This command with its first `bytes` of arguments replaced by `head`'s arguments.
    pub fn replace_head(&self, bytes: usize, head: &Cmd, head_args: usize) -> Cmd {
        let mut body = Vec::with_capacity(head.body.len() + self.body.len() - bytes);
        body.extend_from_slice(&head.body);
        body.extend_from_slice(&self.body[bytes..]);
        Cmd {
            argc: self.argc - head_args + head.argc,
            body,
        }
    }

    pub fn arg(&mut self, arg: impl AsRef<[u8]>) -> &mut Self {
        write_bulk(&mut self.body, arg.as_ref());
        self.argc += 1;
        self
    }

    /// One argument made of `parts`, one after another: written straight into the command,
    /// not first joined into a buffer of their own.
    pub fn arg_parts(&mut self, parts: &[&[u8]]) -> &mut Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.body.reserve(len + 24);
        write_bulk_head(&mut self.body, len);
        for part in parts {
            self.body.extend_from_slice(part);
        }
        self.body.extend_from_slice(b"\r\n");
        self.argc += 1;
        self
    }

    pub fn int(&mut self, n: impl itoa::Integer) -> &mut Self {
        self.arg(itoa::Buffer::new().format(n))
    }

    pub(super) fn write_to(&self, out: &mut Vec<u8>) {
        write_array_header(out, self.argc);
        out.extend_from_slice(&self.body);
    }
}

/// A command of `args` (its name first), as it goes on the wire, appended to `out`: for one
/// sent without a [`Cmd`] of its own.
pub fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    write_array_header(out, args.len());
    for arg in args {
        write_bulk(out, arg);
    }
}

/// `*{count}\r\n`: the head of an array of `count` bulk strings.
fn write_array_header(out: &mut Vec<u8>, count: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `${len}\r\n`: the head of a bulk string of `len` bytes (which follow, then `\r\n`).
fn write_bulk_head(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One bulk string: `${len}\r\n{bytes}\r\n`.
fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    write_bulk_head(out, bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    Bulk(Bytes),
    Status(Bytes),
    /// An error reply (`-ERR …`): the command failed, the connection is fine.
    Error(String),
    Array(Vec<Value>),
}

impl Value {
    /// An integer reply, or a bulk string holding one (as `GET` of a counter answers).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Why an exchange failed on the connection (it is not used again).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{}", .0.kind())]
    Io(#[from] io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("not a RESP reply")]
    Protocol,
}

/// Where Redis is and who to be there, from `state.url`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: Address,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

#[derive(Debug, Clone)]
enum Address {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses a `redis://` or `unix://` URL; the error never quotes it (it may hold a
    /// password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("state.url: not a usable redis URL ({:?})", e.kind()))?;
        let info = client.get_connection_info();
        let addr = match &info.addr {
            redis::ConnectionAddr::Tcp(host, port) => Address::Tcp(host.clone(), *port),
            redis::ConnectionAddr::Unix(path) => Address::Unix(path.clone()),
            _ => return Err("state.url: TLS (rediss://) is not supported".into()),
        };
        Ok(Endpoint {
            addr,
            username: info.redis.username.clone(),
            password: info.redis.password.clone(),
            db: info.redis.db,
        })
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One connection to Redis, with its buffers.
pub struct Connection {
    stream: Stream,
    read: BytesMut,
    write: Vec<u8>,
}

impl Connection {
    /// Connects, authenticates and selects the database, within `timeout`.
    pub async fn open(endpoint: &Endpoint, timeout: Duration) -> Result<Self, OpenError> {
        let connect = async {
            let stream = match &endpoint.addr {
                Address::Tcp(host, port) => {
                    let tcp = TcpStream::connect((host.as_str(), *port)).await?;
                    // Commands are small and each waits for its reply: no Nagle delay.
                    tcp.set_nodelay(true)?;
                    Stream::Tcp(tcp)
                }
                Address::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
            };
            Ok::<_, io::Error>(Connection {
                stream,
                read: BytesMut::with_capacity(4096),
                write: Vec::with_capacity(1024),
            })
        };
        let mut conn = match tokio::time::timeout(timeout, connect).await {
            Err(_) => return Err(OpenError::TimedOut),
            Ok(Err(e)) => return Err(OpenError::Wire(WireError::Io(e))),
            Ok(Ok(conn)) => conn,
        };
        let mut hello = Vec::new();
        if let Some(password) = &endpoint.password {
            let mut auth = Cmd::new("AUTH");
            if let Some(user) = &endpoint.username {
                auth.arg(user);
            }
            auth.arg(password);
            hello.push(auth);
        }
        if endpoint.db != 0 {
            let mut select = Cmd::new("SELECT");
            select.int(endpoint.db);
            hello.push(select);
        }
        if !hello.is_empty() {
            let cmds: Vec<&Cmd> = hello.iter().collect();
            let mut replies = Vec::with_capacity(cmds.len());
            match tokio::time::timeout(timeout, conn.exchange(&cmds, &mut replies)).await {
                Err(_) => return Err(OpenError::TimedOut),
                Ok(Err(e)) => return Err(OpenError::Wire(e)),
                Ok(Ok(())) => {}
            }
            // The server's message names neither the password nor the URL.
            if let Some(Value::Error(e)) = replies.iter().find(|r| matches!(r, Value::Error(_))) {
                return Err(OpenError::Refused(e.clone()));
            }
        }
        Ok(conn)
    }

    /// Sends `cmds` in one write and reads one reply per command into `replies`.
    pub async fn exchange(
        &mut self,
        cmds: &[&Cmd],
        replies: &mut Vec<Value>,
    ) -> Result<(), WireError> {
        let mut encoded = Vec::new();
        for cmd in cmds {
            cmd.write_to(&mut encoded);
        }
        self.send(std::iter::once(encoded.as_slice())).await?;
        self.receive(cmds.len(), replies).await
    }

    /// Whether the server has closed the connection (or broken it) while it was idle: what
    /// it said before closing is already waiting, so one non-blocking read tells (and none
    /// when the runtime already knows the socket has nothing to read).
    pub fn closed_while_idle(&mut self) -> bool {
        // Room for at least a byte: a read into no room would look like the end.
        self.read.reserve(64);
        let read = match &mut self.stream {
            Stream::Tcp(s) => s.try_read_buf(&mut self.read),
            Stream::Unix(s) => s.try_read_buf(&mut self.read),
        };
        match read {
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            // An end, or bytes no command asked for: either way it cannot carry commands.
            Ok(_) => true,
        }
    }

    /// Sends commands already encoded (by [`Cmd::write_to`]) in one write.
    pub async fn send<'a>(
        &mut self,
        encoded: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), WireError> {
        self.write.clear();
        for part in encoded {
            self.write.extend_from_slice(part);
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.write_all(&self.write).await?,
            Stream::Unix(s) => s.write_all(&self.write).await?,
        }
        Ok(())
    }

    /// Reads `count` replies into `replies`.
    pub async fn receive(
        &mut self,
        count: usize,
        replies: &mut Vec<Value>,
    ) -> Result<(), WireError> {
        let wanted = replies.len() + count;
        while replies.len() < wanted {
            match parse(&self.read, 0)? {
                Some((value, used)) => {
                    self.read.advance(used);
                    replies.push(value);
                }
                None => {
                    self.read.reserve(4096);
                    let n = match &mut self.stream {
                        Stream::Tcp(s) => s.read_buf(&mut self.read).await?,
                        Stream::Unix(s) => s.read_buf(&mut self.read).await?,
                    };
                    if n == 0 {
                        return Err(WireError::Closed);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("connect timed out")]
    TimedOut,
    #[error("{0}")]
    Wire(WireError),
    /// `AUTH` or `SELECT` answered an error.
    #[error("redis refused the connection: {0}")]
    Refused(String),
}

/// The first reply in `buf` and the bytes it takes; `None` until it is all there.
fn parse(buf: &[u8], depth: u8) -> Result<Option<(Value, usize)>, WireError> {
    let Some(line_end) = buf.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    if buf.len() < line_end + 2 {
        return Ok(None);
    }
    if buf[line_end + 1] != b'\n' || line_end == 0 {
        return Err(WireError::Protocol);
    }
    let line = &buf[1..line_end];
    let next = line_end + 2;
    let value = match buf[0] {
        b'+' => Value::Status(Bytes::copy_from_slice(line)),
        b'-' => Value::Error(String::from_utf8_lossy(line).into_owned()),
        b':' => Value::Int(integer(line)?),
        b'$' => {
            let Ok(len) = usize::try_from(integer(line)?) else {
                return Ok(Some((Value::Nil, next)));
            };
            if len > MAX_BULK {
                return Err(WireError::Protocol);
            }
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(WireError::Protocol);
            }
            return Ok(Some((
                Value::Bulk(Bytes::copy_from_slice(&buf[next..end])),
                end + 2,
            )));
        }
        b'*' => {
            let Ok(len) = usize::try_from(integer(line)?) else {
                return Ok(Some((Value::Nil, next)));
            };
            if depth >= MAX_DEPTH {
                return Err(WireError::Protocol);
            }
            let mut items = Vec::with_capacity(len.min(MAX_RESERVE));
            let mut at = next;
            for _ in 0..len {
                let Some((item, used)) = parse(&buf[at..], depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            return Ok(Some((Value::Array(items), at)));
        }
        _ => return Err(WireError::Protocol),
    };
    Ok(Some((value, next)))
}

fn integer(digits: &[u8]) -> Result<i64, WireError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(WireError::Protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(cmd: &Cmd) -> String {
        let mut out = Vec::new();
        cmd.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut cmd = Cmd::new("SET");
        cmd.arg("k")
            .arg(b"\r\n\x00".as_slice())
            .arg("PX")
            .int(-15i64);
        assert_eq!(
            encoded(&cmd),
            "*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n\r\n\x00\r\n$2\r\nPX\r\n$3\r\n-15\r\n"
        );
        let mut call = Cmd::new("EVALSHA");
        call.arg("abc");
        let head = call.len();
        call.arg("k").int(7u64);
        let mut eval = Cmd::new("EVAL");
        eval.arg("return 1");
        assert_eq!(
            encoded(&call.replace_head(head, &eval, 2)),
            "*4\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\nk\r\n$1\r\n7\r\n"
        );
        // An argument in parts, and a command written without a `Cmd`: the same bytes.
        let mut parts = Cmd::new("SET");
        parts
            .arg("k")
            .arg_parts(&[b"\r\n", b"", b"\x00"])
            .arg("PX")
            .int(-15i64);
        assert_eq!(encoded(&parts), encoded(&cmd));
        let mut direct = Vec::new();
        write_command(&mut direct, &[b"SET", b"k", b"\r\n\x00", b"PX", b"-15"]);
        assert_eq!(String::from_utf8_lossy(&direct), encoded(&cmd));
    }

    #[test]
    fn replies_parse_whole_or_wait_for_more() {
        let cases: [(&[u8], Value); 7] = [
            (b"+OK\r\n", Value::Status(Bytes::from_static(b"OK"))),
            (b"-NOSCRIPT x\r\n", Value::Error("NOSCRIPT x".into())),
            (b":-42\r\n", Value::Int(-42)),
            (b"$-1\r\n", Value::Nil),
            (
                b"$4\r\na\r\nb\r\n",
                Value::Bulk(Bytes::from_static(b"a\r\nb")),
            ),
            (b"$0\r\n\r\n", Value::Bulk(Bytes::new())),
            (
                b"*3\r\n:1\r\n$-1\r\n*1\r\n+x\r\n",
                Value::Array(vec![
                    Value::Int(1),
                    Value::Nil,
                    Value::Array(vec![Value::Status(Bytes::from_static(b"x"))]),
                ]),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(
                parse(wire, 0).unwrap(),
                Some((want, wire.len())),
                "{wire:?}"
            );
            for cut in 0..wire.len() {
                assert_eq!(
                    parse(&wire[..cut], 0).unwrap(),
                    None,
                    "{wire:?} cut at {cut}"
                );
            }
        }
        // Two replies back to back: the first, and where the second starts.
        assert_eq!(parse(b":1\r\n:2\r\n", 0).unwrap(), Some((Value::Int(1), 4)));
    }

    #[test]
    fn urls_name_the_address_the_credentials_and_the_database() {
        let e = Endpoint::parse("redis://ops:hunter2@10.0.0.7:6380/3").unwrap();
        assert!(matches!(&e.addr, Address::Tcp(host, 6380) if host == "10.0.0.7"));
        assert_eq!(e.username.as_deref(), Some("ops"));
        assert_eq!(e.password.as_deref(), Some("hunter2"));
        assert_eq!(e.db, 3);
        let e = Endpoint::parse("unix:///run/redis/redis.sock").unwrap();
        assert!(matches!(&e.addr, Address::Unix(p) if p.ends_with("redis.sock")));
        assert_eq!((e.password, e.db), (None, 0));
        for bad in [
            "rediss://:hunter2@host:6379/0",
            "http://:hunter2@host/",
            "nonsense",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b"?\r\n"[..],
            b"\r\n",
            b":x\r\n",
            b"+a\rb",
            b"$2\r\nabc\r\n",
            b"$99999999999999999999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad, 0).is_err(), "{bad:?}");
        }
        assert_eq!(Value::Bulk(Bytes::from_static(b"12")).as_int(), Some(12));
        assert_eq!(Value::Status(Bytes::from_static(b"12")).as_int(), None);
    }
}
