//! RESP2 replies, parsed incrementally from a read buffer.

use bytes::{Buf, Bytes, BytesMut};

/// One reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and `+QUEUED`, the replies a pipeline gets most, kept without allocating.
    Ok,
    Queued,
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Bytes>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The error's code (`WRONGTYPE`, `OOM`, …) when this is an error reply.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e.split(' ').next().unwrap_or("")),
            _ => None,
        }
    }
}

/// A reply that is not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply from Redis: {0}")]
pub struct ProtocolError(pub String);

/// Parses one whole reply from the front of `buf`, consuming it; `Ok(None)` when more
/// bytes are needed.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    match parse_at(buf, 0)? {
        Some((reply, used)) => {
            buf.advance(used);
            Ok(Some(reply))
        }
        None => Ok(None),
    }
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ProtocolError(format!("bad number {:?}", String::from_utf8_lossy(text))))
}

fn parse_at(buf: &[u8], at: usize) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let text_str = || String::from_utf8_lossy(text).into_owned();
    Ok(Some(match kind {
        b'+' => match text {
            b"OK" => (Reply::Ok, next),
            b"QUEUED" => (Reply::Queued, next),
            _ => (Reply::Status(text_str()), next),
        },
        b'-' => (Reply::Error(text_str()), next),
        b':' => (Reply::Int(number(text)?), next),
        b'$' => {
            let len = number(text)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            (
                Reply::Bulk(Some(Bytes::copy_from_slice(&buf[next..end]))),
                end + 2,
            )
        }
        b'*' => {
            let len = number(text)?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let mut items = Vec::with_capacity(len.min(1024) as usize);
            let mut pos = next;
            for _ in 0..len {
                match parse_at(buf, pos)? {
                    Some((item, after)) => {
                        items.push(item);
                        pos = after;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(Some(items)), pos)
        }
        other => return Err(ProtocolError(format!("unexpected type byte {other:#04x}"))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_waits_for_more() {
        let mut queued = BytesMut::from(&b"+QUEUED\r\n+string\r\n"[..]);
        assert_eq!(parse(&mut queued).unwrap(), Some(Reply::Queued));
        assert_eq!(
            parse(&mut queued).unwrap(),
            Some(Reply::Status("string".into()))
        );
        let mut buf = BytesMut::from(&b"+OK\r\n-WRONGTYPE Operation\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$1\r\nx\r\n*3\r\n:1"[..]);
        assert_eq!(parse(&mut buf).unwrap(), Some(Reply::Ok));
        let err = parse(&mut buf).unwrap().unwrap();
        assert_eq!(err.error_code(), Some("WRONGTYPE"));
        assert_eq!(parse(&mut buf).unwrap(), Some(Reply::Int(42)));
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Reply::Bulk(Some(Bytes::from_static(b"abc"))))
        );
        assert_eq!(parse(&mut buf).unwrap(), Some(Reply::Bulk(None)));
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Bulk(Some(Bytes::from_static(b"x")))
            ])))
        );
        assert_eq!(parse(&mut buf).unwrap(), None, "incomplete array");
        assert!(parse(&mut BytesMut::from(&b"?x\r\n"[..])).is_err());
    }
}
