//! How binary-safe keys and commands are shown in messages and logs: printable ASCII as
//! is, every other byte as `\xNN` (as redis-cli shows them), long arguments cut.

/// Arguments of a command longer than this are shown cut, with their length.
const SHOWN_ARG_BYTES: usize = 64;

/// A key for messages: printable ASCII as is, other bytes as `\xNN` (like redis-cli).
pub fn display_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A command for messages: its arguments shown as keys are, separated by spaces, each
/// cut after a few dozen bytes.
pub fn display_command<A: AsRef<[u8]>>(argv: &[A]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.as_ref();
            match a.get(..SHOWN_ARG_BYTES) {
                Some(head) if a.len() > SHOWN_ARG_BYTES => {
                    format!("{}…({} bytes)", display_key(head), a.len())
                }
                _ => display_key(a),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_binary_bytes_escaped_and_long_arguments_cut() {
        assert_eq!(display_key(b"user:1 \x00\xff"), "user:1 \\x00\\xff");
        let long = vec![b'a'; 100];
        let shown = display_command(&[b"SET".as_slice(), b"k", &long]);
        assert!(shown.starts_with("SET k aaaa"), "{shown}");
        assert!(shown.ends_with("…(100 bytes)"), "{shown}");
    }
}
