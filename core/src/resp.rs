//! RESP (Redis serialization protocol) for commands: encoding argv into a multi-bulk
//! array, and parsing one back without copying its arguments.

use std::ops::Range;

use bytes::{BufMut, Bytes};

/// Appends `argv` to `out` as a RESP multi-bulk array (`*N`, then `$len` + bytes each).
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, argv: &[A]) {
    let size: usize = argv.iter().map(|a| a.as_ref().len() + 16).sum();
    out.reserve(size + 16);
    out.put_u8(b'*');
    put_decimal(out, argv.len() as u64);
    out.put_slice(b"\r\n");
    for arg in argv {
        let arg = arg.as_ref();
        out.put_u8(b'$');
        put_decimal(out, arg.len() as u64);
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

fn put_decimal(out: &mut Vec<u8>, n: u64) {
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Why a RESP command could not be parsed; `at` is the byte offset inside the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at} of the command")]
pub struct RespError {
    pub what: &'static str,
    pub at: usize,
}

/// Parses exactly one multi-bulk command filling all of `input`. The returned
/// arguments are slices of `input` (no copy).
pub fn parse_command(input: &Bytes) -> Result<Vec<Bytes>, RespError> {
    parse_command_in(input, 0..input.len())
}

/// Parses exactly one multi-bulk command filling `input[range]`, into slices of
/// `input`; `at` in an error counts from the start of `range`.
pub fn parse_command_in(input: &Bytes, range: Range<usize>) -> Result<Vec<Bytes>, RespError> {
    let start = range.start;
    let bytes = input.get(range).unwrap_or_default();
    let mut pos = 0;
    let err = |what, at| RespError { what, at };
    if bytes.first() != Some(&b'*') {
        return Err(err("expected '*' (a multi-bulk array)", 0));
    }
    pos += 1;
    let argc = read_line_number(bytes, &mut pos).ok_or(err("bad array length", pos))?;
    // Each argument takes at least 5 bytes ("$0\r\n\r\n" is 6), so this bounds argc
    // by the input before anything is allocated from it.
    if argc > bytes.len() / 4 + 1 {
        return Err(err("array length larger than the command", 1));
    }
    let mut argv = Vec::with_capacity(argc);
    for _ in 0..argc {
        if bytes.get(pos) != Some(&b'$') {
            return Err(err("expected '$' (a bulk string)", pos));
        }
        pos += 1;
        let len = read_line_number(bytes, &mut pos).ok_or(err("bad bulk length", pos))?;
        let end = pos
            .checked_add(len)
            .filter(|end| end + 2 <= bytes.len())
            .ok_or(err("bulk string runs past the end", pos))?;
        if &bytes[end..end + 2] != b"\r\n" {
            return Err(err("bulk string not followed by CRLF", end));
        }
        argv.push(input.slice(start + pos..start + end));
        pos = end + 2;
    }
    if pos != bytes.len() {
        return Err(err("trailing bytes after the command", pos));
    }
    Ok(argv)
}

/// Most digits a length may have (`u64::MAX` has 20; Redis's own limits are far below).
const MAX_DIGITS: usize = 19;

/// A decimal number ended by CRLF at `*pos`, which then moves past the CRLF.
pub fn read_line_number(bytes: &[u8], pos: &mut usize) -> Option<usize> {
    let start = *pos;
    let rest = bytes.get(start..)?;
    let mut n: usize = 0;
    let mut digits = 0;
    for &b in rest.iter().take(MAX_DIGITS + 1) {
        if b == b'\r' {
            break;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
        digits += 1;
    }
    if digits == 0 || digits > MAX_DIGITS || rest.get(digits..digits + 2) != Some(b"\r\n") {
        return None;
    }
    *pos = start + digits + 2;
    Some(n)
}

/// A score as Redis parses it back exactly (`inf`, `-inf`, shortest round-trip digits).
pub fn score_text(score: f64) -> Bytes {
    let text = if score == f64::INFINITY {
        "inf".to_owned()
    } else if score == f64::NEG_INFINITY {
        "-inf".to_owned()
    } else {
        format!("{score:?}")
    };
    Bytes::from(text)
}

/// A score as text (`inf`, `-inf`, `+inf` and any float); `None` when it is not one.
pub fn parse_score(text: &str) -> Option<f64> {
    match text.trim().to_ascii_lowercase().as_str() {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok().filter(|s: &f64| !s.is_nan()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_arguments() {
        let argv: Vec<Bytes> = vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k\r\n\0"),
            Bytes::new(),
        ];
        let mut out = Vec::new();
        encode_command(&mut out, &argv);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$4\r\nk\r\n\0\r\n$0\r\n\r\n");
        assert_eq!(parse_command(&Bytes::from(out)).unwrap(), argv);
    }

    #[test]
    fn lengths_are_plain_decimals_ended_by_crlf() {
        let parse = |raw: &'static [u8]| parse_command(&Bytes::from_static(raw));
        assert_eq!(parse(b"*01\r\n$001\r\na\r\n").unwrap(), [&b"a"[..]]);
        for bad in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$1\na\r\n",
            b"*1\r\n$\r\na\r\n",
            b"*1\r\n$+1\r\na\r\n",
            b"*1\r\n$00000000000000000001\r\na\r\n",
        ] {
            assert_eq!(parse(bad).unwrap_err().what, "bad bulk length", "{bad:?}");
        }
        // 19 digits is the most a length may have.
        let long = parse(b"*1\r\n$0000000000000000001\r\na\r\n");
        assert_eq!(long.unwrap(), [&b"a"[..]]);
        // A length that would run past the input is refused before anything is taken.
        let huge = parse(b"*1\r\n$9999999999999999999\r\na\r\n");
        assert_eq!(huge.unwrap_err().what, "bulk string runs past the end");
    }

    #[test]
    fn rejects_malformed_commands_with_the_offset() {
        let bad = Bytes::from_static(b"*2\r\n$3\r\nSET\r\n$9\r\nk\r\n");
        assert_eq!(parse_command(&bad).unwrap_err().at, 17);
        let trailing = Bytes::from_static(b"*1\r\n$1\r\na\r\nX");
        assert_eq!(
            parse_command(&trailing).unwrap_err().what,
            "trailing bytes after the command"
        );
        let huge = Bytes::from_static(b"*99999999\r\n");
        assert!(parse_command(&huge).is_err());
        assert!(parse_command(&Bytes::from_static(b"$1\r\na\r\n")).is_err());
    }
}
