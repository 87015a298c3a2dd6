//! The hot path to a Redis server over plain TCP or a unix socket: a request is RESP
//! bytes built once (`Request`), written in one go, and its replies read back with a
//! small incremental RESP2 reader. The `redis` crate's connection costs a `Cmd` per
//! command, a second copy to pack the pipeline and a parser-combinator per reply:
//! together about as much CPU as the server spends applying the commands, which on a
//! machine shared with the target is the target's own CPU. TLS connections keep the
//! crate's path (`conn`).
//!
//! Replies come back as the crate's `redis::Value`, so the rest of the sink reads them
//! the same whichever path carried them. The reader keeps what it has parsed between
//! reads (a stack of open arrays), so a reply of millions of elements is read in
//! linear time.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use redis::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Commands encoded as RESP, with where each one ends (a path that needs them apart,
/// the crate's, takes them so).
#[derive(Debug, Default, Clone)]
pub struct Request {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Request {
    pub fn with_capacity(bytes: usize, commands: usize) -> Request {
        Request {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(commands),
        }
    }

    /// Appends a command from its arguments (name first).
    pub fn push<A: AsRef<[u8]>>(&mut self, argv: &[A]) {
        pika_migrate_core::resp::encode_command(&mut self.bytes, argv);
        self.ends.push(self.bytes.len());
    }

    /// Appends a command already encoded.
    pub fn push_resp(&mut self, resp: &[u8]) {
        self.bytes.extend_from_slice(resp);
        self.ends.push(self.bytes.len());
    }

    /// Appends commands already encoded back to back, `ends` saying where each one ends
    /// in `resp`.
    pub fn push_run(&mut self, resp: &[u8], ends: impl Iterator<Item = usize>) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(resp);
        self.ends.extend(ends.map(|end| base + end));
    }

    /// Appends a command the crate built.
    pub fn push_cmd(&mut self, cmd: &redis::Cmd) {
        cmd.write_packed_command(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each command's bytes, in order.
    pub fn commands(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start..end])
    }
}

/// Smallest block commands are packed into ([`pack`]).
pub(super) const PACK_BLOCK: usize = 64 << 10;

/// Encodes `argv` as RESP at the end of `buf` and splits it off: the command's bytes,
/// and where its argument `key_at` sits in them. Commands share `buf`'s blocks (one
/// allocation per block, not per command); a block is freed with its last command.
pub fn pack(
    buf: &mut BytesMut,
    argv: &[bytes::Bytes],
    key_at: usize,
) -> (bytes::Bytes, std::ops::Range<usize>) {
    let size = packed_size(argv);
    if buf.capacity() - buf.len() < size {
        *buf = BytesMut::with_capacity(size.max(PACK_BLOCK));
    }
    let key = encode_into(buf, argv, key_at);
    (buf.split().freeze(), key)
}

/// Bytes `argv` takes as RESP at most (a length has at most 20 digits).
pub fn packed_size(argv: &[bytes::Bytes]) -> usize {
    16 + argv.iter().map(|a| a.len() + 24).sum::<usize>()
}

/// Appends `argv` as RESP to `buf` (room for [`packed_size`] already reserved, or it
/// grows); where its argument `key_at` sits in `buf`.
pub fn encode_into(
    buf: &mut BytesMut,
    argv: &[bytes::Bytes],
    key_at: usize,
) -> std::ops::Range<usize> {
    let mut key = 0..0;
    let mut digits = itoa::Buffer::new();
    buf.put_u8(b'*');
    buf.put_slice(digits.format(argv.len()).as_bytes());
    buf.put_slice(b"\r\n");
    for (i, arg) in argv.iter().enumerate() {
        buf.put_u8(b'$');
        buf.put_slice(digits.format(arg.len()).as_bytes());
        buf.put_slice(b"\r\n");
        if i == key_at {
            key = buf.len()..buf.len() + arg.len();
        }
        buf.put_slice(arg);
        buf.put_slice(b"\r\n");
    }
    key
}

/// A byte stream to a server.
pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// The most a reply may nest (arrays in arrays), as the crate allows.
const MAX_DEPTH: usize = 100;

/// Longest status, error or number line accepted (a server's are far shorter).
const MAX_LINE: usize = 64 << 10;

/// Bytes asked of the socket per read at least.
const READ_CHUNK: usize = 64 << 10;

/// Read buffer kept between exchanges at most; a bigger one is given back.
const KEPT_READ_BUFFER: usize = 1 << 20;

/// One connection on our own path.
pub struct Wire {
    io: Box<dyn Io>,
    read: BytesMut,
    timeout: Duration,
    /// An exchange failed or timed out half-way: what the server still sends belongs
    /// to it, so the connection is not used again.
    broken: bool,
}

impl Wire {
    pub fn new(io: Box<dyn Io>, timeout: Duration) -> Wire {
        Wire {
            io,
            read: BytesMut::with_capacity(READ_CHUNK),
            timeout,
            broken: false,
        }
    }

    /// Writes `request` and reads `count` replies, within the response timeout.
    pub async fn exchange(&mut self, request: &[u8], count: usize) -> io::Result<Vec<Value>> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection was dropped after an earlier failure",
            ));
        }
        self.broken = true;
        let timeout = self.timeout;
        let replies = match tokio::time::timeout(timeout, self.exchange_now(request, count)).await {
            Ok(replies) => replies?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply within {timeout:?}"),
                ))
            }
        };
        self.broken = false;
        // A big reply (a verify's DUMP of a big key) does not keep its buffer.
        if self.read.is_empty() && self.read.capacity() > KEPT_READ_BUFFER {
            self.read = BytesMut::with_capacity(READ_CHUNK);
        }
        Ok(replies)
    }

    async fn exchange_now(&mut self, request: &[u8], count: usize) -> io::Result<Vec<Value>> {
        self.io.write_all(request).await?;
        self.io.flush().await?;
        let mut reader = Replies::new(count);
        loop {
            if reader.read_from(&mut self.read)? {
                return Ok(reader.done);
            }
            self.read.reserve(READ_CHUNK.max(reader.wanted));
            if self.io.read_buf(&mut self.read).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
        }
    }
}

/// `:<up to 9 digits>\r\n` at the start of `buf`: the number and the line's length.
fn small_count(buf: &[u8]) -> Option<(i64, usize)> {
    if buf.first() != Some(&b':') {
        return None;
    }
    let mut n: i64 = 0;
    for (i, &b) in buf.iter().enumerate().skip(1).take(10) {
        match b {
            b'0'..=b'9' => n = n * 10 + i64::from(b - b'0'),
            b'\r' if i > 1 && buf.get(i + 1) == Some(&b'\n') => return Some((n, i + 2)),
            _ => return None,
        }
    }
    None
}

/// Replies being read: the ones complete, and the arrays still open.
struct Replies {
    count: usize,
    done: Vec<Value>,
    open: Vec<(usize, Vec<Value>)>,
    /// Bytes the next value needs in the buffer (a bulk string's whole length), so the
    /// buffer grows once for it.
    wanted: usize,
}

fn protocol(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("RESP reply: {what}"))
}

impl Replies {
    fn new(count: usize) -> Replies {
        Replies {
            count,
            done: Vec::with_capacity(count),
            open: Vec::new(),
            wanted: 0,
        }
    }

    /// Takes every complete value from the front of `buf`; whether all `count`
    /// replies are read.
    fn read_from(&mut self, buf: &mut BytesMut) -> io::Result<bool> {
        while self.done.len() < self.count {
            let Some(value) = self.next_value(buf)? else {
                return Ok(false);
            };
            if let Some(value) = value {
                self.complete(value);
            }
        }
        Ok(true)
    }

    /// The next token: `None` when the buffer lacks it (nothing consumed), `Some(None)`
    /// when it opened an array, `Some(Some(v))` for a complete value.
    fn next_value(&mut self, buf: &mut BytesMut) -> io::Result<Option<Option<Value>>> {
        // Nearly every reply of a load: `+OK` (SET) or a small count (DEL, HSET, SADD,
        // PEXPIREAT…), read without looking for the line's end first.
        if buf.starts_with(b"+OK\r\n") {
            buf.advance(5);
            return Ok(Some(Some(Value::Okay)));
        }
        if let Some((n, len)) = small_count(buf) {
            buf.advance(len);
            return Ok(Some(Some(Value::Int(n))));
        }
        let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_LINE {
                return Err(protocol(format!("a line of over {MAX_LINE} bytes")));
            }
            return Ok(None);
        };
        if newline < 2 || buf[newline - 1] != b'\r' {
            return Err(protocol("a line not ended by CRLF".into()));
        }
        let line = &buf[1..newline - 1];
        let number = || -> io::Result<i64> {
            std::str::from_utf8(line)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| protocol(format!("bad number {:?}", String::from_utf8_lossy(line))))
        };
        let value = match buf[0] {
            b'+' => {
                let value = match line {
                    b"OK" => Value::Okay,
                    text => Value::SimpleString(String::from_utf8_lossy(text).into_owned()),
                };
                Some(value)
            }
            b'-' => {
                // Rare: the crate's own parser, so the error is the value it makes.
                match redis::parse_redis_value(&buf[..=newline]) {
                    Ok(error @ Value::ServerError(_)) => Some(error),
                    _ => return Err(protocol("an error line the crate cannot read".into())),
                }
            }
            b':' => Some(Value::Int(number()?)),
            b'$' => {
                let len = number()?;
                if len < 0 {
                    Some(Value::Nil)
                } else {
                    let len =
                        usize::try_from(len).map_err(|_| protocol(format!("bulk length {len}")))?;
                    let total = (newline + 1)
                        .checked_add(len)
                        .and_then(|n| n.checked_add(2))
                        .ok_or_else(|| protocol(format!("bulk length {len}")))?;
                    if buf.len() < total {
                        self.wanted = total;
                        return Ok(None);
                    }
                    if &buf[total - 2..total] != b"\r\n" {
                        return Err(protocol("a bulk string not ended by CRLF".into()));
                    }
                    let value = buf[newline + 1..total - 2].to_vec();
                    buf.advance(total);
                    self.wanted = 0;
                    return Ok(Some(Some(Value::BulkString(value))));
                }
            }
            b'*' => {
                let len = number()?;
                if len < 0 {
                    Some(Value::Nil)
                } else if len == 0 {
                    Some(Value::Array(Vec::new()))
                } else {
                    if self.open.len() >= MAX_DEPTH {
                        return Err(protocol(format!("nested over {MAX_DEPTH} deep")));
                    }
                    let len = usize::try_from(len)
                        .map_err(|_| protocol(format!("array length {len}")))?;
                    // Capacity from the buffer, not the length a server claims.
                    self.open
                        .push((len, Vec::with_capacity(len.min(buf.len()))));
                    None
                }
            }
            other => {
                return Err(protocol(format!(
                    "unexpected type byte {:?}",
                    char::from(other)
                )))
            }
        };
        buf.advance(newline + 1);
        Ok(Some(value))
    }

    /// A value is complete: into the innermost open array, closing it when full.
    fn complete(&mut self, mut value: Value) {
        loop {
            match self.open.last_mut() {
                Some((left, items)) => {
                    items.push(value);
                    *left -= 1;
                    if *left > 0 {
                        return;
                    }
                    let (_, items) = self.open.pop().unwrap_or_default();
                    value = Value::Array(items);
                }
                None => {
                    self.done.push(value);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `count` replies from `input` given in pieces of `step` bytes, as a socket
    /// might deliver them.
    fn read(input: &[u8], count: usize, step: usize) -> io::Result<(Vec<Value>, usize)> {
        let mut buf = BytesMut::new();
        let mut reader = Replies::new(count);
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            if reader.read_from(&mut buf)? {
                return Ok((reader.done, buf.len()));
            }
        }
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short"))
    }

    #[test]
    fn every_reply_type_reads_as_the_crate_reads_it() {
        let input = b"+OK\r\n+QUEUED\r\n-WRONGTYPE Operation against a key\r\n-ERR\r\n:-42\r\n\
                      $3\r\nab\n\r\n$-1\r\n$0\r\n\r\n*-1\r\n*0\r\n*2\r\n*1\r\n:1\r\n$1\r\nx\r\n\
                      :7\r\n:0\r\n:123456789012\r\n+OKAY\r\n+extra";
        for step in [1, 2, 7, input.len()] {
            let (replies, left) = read(input, 15, step).unwrap();
            assert!(left <= b"+extra".len(), "step {step}: {left} bytes left");
            let crate_read: Vec<Value> = {
                let mut parser = redis::Parser::new();
                let mut rest = &input[..input.len() - b"+extra".len()];
                (0..15)
                    .map(|_| parser.parse_value(&mut rest).unwrap())
                    .collect()
            };
            assert_eq!(replies, crate_read, "step {step}");
        }
    }

    #[test]
    fn errors_keep_the_code_and_the_text_redis_wrote() {
        let (replies, _) = read(b"-MOVED 3999 127.0.0.1:6381\r\n", 1, 64).unwrap();
        let Value::ServerError(e) = &replies[0] else {
            panic!("{replies:?}")
        };
        assert_eq!(
            (e.code(), e.details()),
            ("MOVED", Some("3999 127.0.0.1:6381"))
        );
    }

    #[test]
    fn a_huge_array_arriving_in_small_pieces_is_read_once() {
        let mut input = b"*200000\r\n".to_vec();
        for i in 0..200_000 {
            input.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
        }
        let (replies, _) = read(&input, 1, 4096).unwrap();
        let Value::Array(items) = &replies[0] else {
            panic!()
        };
        assert_eq!(items.len(), 200_000);
        assert_eq!(items[199_999], Value::BulkString(b"199999".to_vec()));
    }

    #[test]
    fn bad_replies_are_errors_not_panics() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"+OK\n",
            b"$99999999999999999999\r\n",
            b"*-7\r\n",
        ] {
            let got = read(bad, 1, 3);
            if bad == b"*-7\r\n" {
                assert_eq!(got.unwrap().0, vec![Value::Nil]);
            } else {
                assert!(got.is_err(), "{:?}", String::from_utf8_lossy(bad));
            }
        }
    }

    #[test]
    fn packed_commands_are_the_resp_of_their_arguments_and_share_blocks() {
        let mut buf = BytesMut::new();
        let argv = |key: &'static [u8]| [&b"SET"[..], key, b"value"].map(bytes::Bytes::from_static);
        let (first, key) = pack(&mut buf, &argv(b"k1"), 1);
        let (second, _) = pack(&mut buf, &argv(b"k2"), 1);
        let mut expected = Vec::new();
        pika_migrate_core::resp::encode_command(&mut expected, &argv(b"k1"));
        assert_eq!(&first[..], &expected[..]);
        assert_eq!(&first[key], b"k1");
        // One block: the second follows the first in memory.
        assert_eq!(first.as_ptr().wrapping_add(first.len()), second.as_ptr());
        // A command larger than a block gets a block of its own size.
        let big = [
            bytes::Bytes::from_static(b"SET"),
            bytes::Bytes::from(vec![b'k'; 3]),
            bytes::Bytes::from(vec![7; PACK_BLOCK * 2]),
        ];
        let (packed, key) = pack(&mut buf, &big, 1);
        assert_eq!(&packed[key], b"kkk");
        assert_eq!(packed.len(), PACK_BLOCK * 2 + 33);
    }

    #[tokio::test]
    async fn a_big_reply_is_read_whole_and_its_buffer_given_back() {
        let (client, mut server) = tokio::io::duplex(64 << 10);
        let mut wire = Wire::new(Box::new(client), Duration::from_secs(5));
        let value = vec![b'v'; 8 << 20];
        let mut reply = format!("${}\r\n", value.len()).into_bytes();
        reply.extend_from_slice(&value);
        reply.extend_from_slice(b"\r\n+OK\r\n");
        let serve = tokio::spawn(async move {
            let mut request = vec![0; 64];
            let n = server.read(&mut request).await.unwrap();
            assert_eq!(
                &request[..n],
                b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"
            );
            server.write_all(&reply).await.unwrap();
            server
        });
        let mut request = Request::default();
        request.push(&[b"GET".as_slice(), b"k"]);
        request.push(&[b"PING".as_slice()]);
        let replies = wire.exchange(request.bytes(), 2).await.unwrap();
        assert_eq!(replies, vec![Value::BulkString(value), Value::Okay]);
        assert!(
            wire.read.capacity() <= KEPT_READ_BUFFER,
            "{}",
            wire.read.capacity()
        );
        // The server goes away: the next exchange fails, and so does every one after.
        drop(serve.await.unwrap());
        assert!(wire.exchange(b"*1\r\n$4\r\nPING\r\n", 1).await.is_err());
        assert!(wire.exchange(b"*1\r\n$4\r\nPING\r\n", 1).await.is_err());
    }

    #[test]
    fn a_request_knows_where_each_command_ends() {
        let mut r = Request::default();
        r.push(&[b"SET".as_slice(), b"k", b"v"]);
        r.push(&[b"PING".as_slice()]);
        let commands: Vec<&[u8]> = r.commands().collect();
        assert_eq!(
            commands,
            [
                &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"[..],
                b"*1\r\n$4\r\nPING\r\n"
            ]
        );
        assert_eq!(r.len(), 2);
    }
}
