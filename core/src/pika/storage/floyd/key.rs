//! floyd's key layout (Pika 4.0): every key starts with 8 reserved bytes, then the user
//! key escaped so that it sorts and ends unambiguously (`00` → `00 01`, terminated by
//! `00 00`), then per kind a version, the element, and 16 reserved bytes at the end.

/// The reserved bytes before the encoded user key.
pub const PREFIX_RESERVE: usize = 8;
/// The reserved bytes at the end of every key.
pub const SUFFIX_RESERVE: usize = 16;

/// `user key` escaped as floyd's `EncodeUserKey` means to write it (without its bug):
/// each `00` doubled as `00 01`, then the `00 00` terminator.
pub fn encode_user_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(1);
        }
    }
    out.extend_from_slice(&[0, 0]);
    out
}

/// Where the encoded user key starting at `encoded[0]` ends: the offset just past its
/// `00 00` terminator, or `None` when there is none (damaged or foreign bytes).
pub fn user_key_end(encoded: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == 0 {
            match encoded.get(i + 1)? {
                0 => return Some(i + 2),
                // `00 01` is an escaped NUL; anything else after a NUL is damage, read
                // leniently as the same two-byte unit so the terminator is still found.
                _ => i += 2,
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Decodes the user key at the start of `encoded`: the key and the bytes after its
/// terminator. `None` when there is no terminator or an escape is not `00 01`.
pub fn decode_user_key(encoded: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        let b = encoded[i];
        if b != 0 {
            key.push(b);
            i += 1;
            continue;
        }
        match encoded.get(i + 1)? {
            0 => return Some((key, &encoded[i + 2..])),
            1 => key.push(0),
            _ => return None,
        }
        i += 2;
    }
    None
}

/// A key of the meta column family (`default`), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaKey {
    pub user_key: Vec<u8>,
    /// Pika 4.0's `EncodeUserKey` lost bytes after the last NUL of this name: what is
    /// stored is the name cut there, followed by leftover bytes. The real name is not in
    /// the dump.
    pub truncated: bool,
}

/// Parses `reserve 8B ‖ enc(key) ‖ reserve 16B`. A well-formed meta key has exactly the
/// 16 reserved bytes after the terminator; more (or fewer) bytes after it are the trace
/// of the embedded-NUL bug: the terminator overwrote the tail of the name, and the
/// buffer, sized for the whole name, kept its slack at the end.
pub fn parse_meta_key(raw: &[u8]) -> Result<MetaKey, String> {
    let encoded = raw
        .get(PREFIX_RESERVE..)
        .ok_or_else(|| format!("meta key of {} bytes is shorter than its prefix", raw.len()))?;
    let (user_key, rest) = decode_user_key(encoded)
        .ok_or_else(|| "meta key has no valid encoded user key".to_owned())?;
    // The fixture's cut names: `s1:nul:mid\x00tail` is stored as `s1:nul:mid\x00` with
    // 16 + 4 bytes after the terminator; the name always ends in the NUL it was cut at.
    let truncated = rest.len() > SUFFIX_RESERVE && user_key.last() == Some(&0);
    if !truncated && rest.len() != SUFFIX_RESERVE {
        return Err(format!(
            "meta key has {} bytes after the user key, expected {SUFFIX_RESERVE}",
            rest.len()
        ));
    }
    Ok(MetaKey {
        user_key,
        truncated,
    })
}

/// The prefix every data row of one generation of `key` starts with:
/// `reserve 8B ‖ enc(key) ‖ version u64`.
pub fn data_key_prefix(key: &[u8], version: u64) -> Vec<u8> {
    let mut prefix = vec![0u8; PREFIX_RESERVE];
    prefix.extend_from_slice(&encode_user_key(key));
    prefix.extend_from_slice(&version.to_le_bytes());
    prefix
}

/// The element part of a data key: what lies between `prefix` and the 16 reserved
/// bytes (a field, a member, or an index). `None` when the key is too short for both.
pub fn data_key_element<'k>(raw: &'k [u8], prefix: &[u8]) -> Option<&'k [u8]> {
    let end = raw.len().checked_sub(SUFFIX_RESERVE)?;
    raw.get(prefix.len()..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_key(encoded_and_rest: &[u8]) -> Vec<u8> {
        let mut k = vec![0u8; PREFIX_RESERVE];
        k.extend_from_slice(encoded_and_rest);
        k
    }

    #[test]
    fn nul_bytes_are_escaped_and_the_key_is_terminated() {
        assert_eq!(encode_user_key(b"ab"), b"ab\x00\x00");
        assert_eq!(encode_user_key(b"a\x00b"), b"a\x00\x01b\x00\x00");
        assert_eq!(encode_user_key(b""), b"\x00\x00");
        for key in [&b""[..], b"k", b"\x00", b"a\x00\x00b\x00", b"\xff\x00\x01"] {
            let mut enc = encode_user_key(key);
            enc.extend_from_slice(b"rest");
            let (back, rest) = decode_user_key(&enc).unwrap();
            assert_eq!((back.as_slice(), rest), (key, &b"rest"[..]), "{key:?}");
            assert_eq!(user_key_end(&enc), Some(enc.len() - 4));
        }
        assert_eq!(decode_user_key(b"abc"), None);
        assert_eq!(decode_user_key(b"a\x00\x02\x00\x00"), None);
        assert_eq!(decode_user_key(b"a\x00"), None);
        assert_eq!(user_key_end(b"a\x00"), None);
    }

    #[test]
    fn meta_keys_parse_and_the_nul_bug_is_recognised() {
        let mut good = encode_user_key(b"s1:nul:end\x00");
        good.extend_from_slice(&[0; SUFFIX_RESERVE]);
        let parsed = parse_meta_key(&meta_key(&good)).unwrap();
        assert_eq!(parsed.user_key, b"s1:nul:end\x00");
        assert!(!parsed.truncated);

        // As 4.0.1 stored `s1:nul:mid\x00tail` (fixture README): the name cut after the
        // NUL, the terminator, the reserve, then two leftover bytes.
        let mut cut = b"s1:nul:mid\x00\x01\x00\x00".to_vec();
        cut.extend_from_slice(&[0; SUFFIX_RESERVE]);
        cut.extend_from_slice(b"\xd8,");
        let parsed = parse_meta_key(&meta_key(&cut)).unwrap();
        assert_eq!(parsed.user_key, b"s1:nul:mid\x00");
        assert!(parsed.truncated);

        // Without a NUL in the name, extra bytes are damage, not the bug.
        let mut long = encode_user_key(b"plain");
        long.extend_from_slice(&[0; SUFFIX_RESERVE + 2]);
        assert!(parse_meta_key(&meta_key(&long)).is_err());
        assert!(parse_meta_key(b"\x00\x00").is_err());
        assert!(parse_meta_key(&meta_key(b"no terminator")).is_err());
    }

    #[test]
    fn data_keys_split_into_prefix_element_and_reserve() {
        let prefix = data_key_prefix(b"h", 7);
        assert_eq!(prefix.len(), 8 + 3 + 8);
        let mut k = prefix.clone();
        k.extend_from_slice(b"field");
        k.extend_from_slice(&[0; SUFFIX_RESERVE]);
        assert_eq!(data_key_element(&k, &prefix), Some(&b"field"[..]));
        assert_eq!(data_key_element(&k[..20], &prefix), None);
    }
}
