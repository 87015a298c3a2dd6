//! Pika's stream layout, shared by 3.5 (blackwidow's `streams/` database) and 4.0
//! (floyd's `stream_data_cf`): a meta value per stream and one data row per entry.
//!
//! The meta (integers little-endian): `groups_id u32 ‖ entries_added u64 ‖ first_id ‖
//! last_id ‖ max_deleted_id (each ms u64 ‖ seq u64) ‖ length i32 ‖ version`, the version
//! an i32 in 3.5 (68 bytes) and a u64 after a type byte in 4.0 (73 bytes). A stream has
//! no expiry; one whose length is 0 does not exist for Pika (its XADD starts it anew).
//!
//! A data row's key ends with the entry id as 16 big-endian bytes (`ms ‖ seq`, so
//! bytewise order is id order); its value is the message, each field and value as
//! `len u32 (little-endian) ‖ bytes`.

use bytes::Bytes;

use crate::event::StreamId;

/// What a stream's meta says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMeta {
    /// The id the stream last generated (at or above its newest entry's).
    pub last_id: StreamId,
    /// Entries it holds; a negative length reads as none, as Pika's `length() == 0`
    /// tests never see one.
    pub length: u64,
    /// The generation its data rows carry.
    pub version: u64,
}

/// The 3.5 meta length: no type byte, an i32 version.
pub const META_LEN_V35: usize = 4 + 8 + 3 * 16 + 4 + 4;
/// The 4.0 meta length: a type byte, a u64 version.
pub const META_LEN_V40: usize = 1 + 4 + 8 + 3 * 16 + 4 + 8;

/// Where `last_id` starts after the groups id, entries added and first id.
const LAST_ID_AT: usize = 4 + 8 + 16;
/// Where the length starts after the three ids.
const LENGTH_AT: usize = 4 + 8 + 3 * 16;

fn u64_le(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

impl StreamMeta {
    /// A 3.5 meta value (the `default` column family of `streams/`).
    pub fn parse_v35(v: &[u8]) -> Result<StreamMeta, String> {
        if v.len() != META_LEN_V35 {
            return Err(format!(
                "stream meta of {} bytes, expected {META_LEN_V35}",
                v.len()
            ));
        }
        Ok(Self::from_fields(v, u64::from(u32_le(v, LENGTH_AT + 4))))
    }

    /// A 4.0 meta value (floyd's meta column family; its first byte is the type).
    pub fn parse_v40(v: &[u8]) -> Result<StreamMeta, String> {
        if v.len() != META_LEN_V40 {
            return Err(format!(
                "stream meta of {} bytes, expected {META_LEN_V40}",
                v.len()
            ));
        }
        let fields = &v[1..];
        Ok(Self::from_fields(fields, u64_le(fields, LENGTH_AT + 4)))
    }

    /// The fields both versions share, from `v` (past any type byte; its length checked).
    fn from_fields(v: &[u8], version: u64) -> StreamMeta {
        let length = i32::from_le_bytes([
            v[LENGTH_AT],
            v[LENGTH_AT + 1],
            v[LENGTH_AT + 2],
            v[LENGTH_AT + 3],
        ]);
        StreamMeta {
            last_id: StreamId::new(u64_le(v, LAST_ID_AT), u64_le(v, LAST_ID_AT + 8)),
            length: u64::try_from(length).unwrap_or(0),
            version,
        }
    }
}

/// The entry id a data key ends with: 16 bytes, `ms ‖ seq` big-endian.
pub fn parse_entry_id(b: &[u8]) -> Result<StreamId, String> {
    let id: [u8; 16] = b
        .try_into()
        .map_err(|_| format!("stream entry id of {} bytes, expected 16", b.len()))?;
    let (ms, seq) = id.split_at(8);
    let num = |half: &[u8]| {
        let mut v = [0u8; 8];
        v.copy_from_slice(half);
        u64::from_be_bytes(v)
    };
    Ok(StreamId::new(num(ms), num(seq)))
}

/// A stored message as its field/value pairs; `copy` makes each one a `Bytes` (the
/// readers copy into their arena).
pub fn parse_message(
    v: &[u8],
    mut copy: impl FnMut(&[u8]) -> Bytes,
) -> Result<Vec<(Bytes, Bytes)>, String> {
    let mut parts = Vec::new();
    let mut at = 0usize;
    while at < v.len() {
        let len_end = at
            .checked_add(4)
            .filter(|end| *end <= v.len())
            .ok_or_else(|| format!("stream message cut in a length at byte {at}"))?;
        let len = u32_le(v, at) as usize;
        let end = len_end
            .checked_add(len)
            .filter(|end| *end <= v.len())
            .ok_or_else(|| {
                format!(
                    "stream message part of {len} bytes at byte {at} passes its end ({} bytes)",
                    v.len()
                )
            })?;
        parts.push(copy(&v[len_end..end]));
        at = end;
    }
    if parts.is_empty() || parts.len() % 2 != 0 {
        return Err(format!(
            "stream message of {} parts, expected field/value pairs",
            parts.len()
        ));
    }
    let mut pairs = Vec::with_capacity(parts.len() / 2);
    let mut parts = parts.into_iter();
    while let (Some(f), Some(v)) = (parts.next(), parts.next()) {
        pairs.push((f, v));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_fields(last: (u64, u64), length: i32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&9u64.to_le_bytes());
        for n in [1, 2, last.0, last.1, 0, 0] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.extend_from_slice(&length.to_le_bytes());
        v
    }

    #[test]
    fn metas_of_both_versions_parse_and_wrong_sizes_are_refused() {
        let mut v35 = meta_fields((7, 3), 2);
        v35.extend_from_slice(&5i32.to_le_bytes());
        let m = StreamMeta::parse_v35(&v35).unwrap();
        assert_eq!(
            (m.last_id, m.length, m.version),
            (StreamId::new(7, 3), 2, 5)
        );
        assert!(StreamMeta::parse_v35(&v35[1..]).is_err());

        let mut v40 = vec![5u8];
        v40.extend_from_slice(&meta_fields((u64::MAX, 0), -1));
        v40.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let m = StreamMeta::parse_v40(&v40).unwrap();
        assert_eq!(
            (m.last_id, m.length, m.version),
            (StreamId::new(u64::MAX, 0), 0, 1 << 40)
        );
        assert!(StreamMeta::parse_v40(&v35).is_err());
    }

    #[test]
    fn ids_are_big_endian_and_messages_are_length_prefixed_pairs() {
        let mut id = 1_700_000_000_000u64.to_be_bytes().to_vec();
        id.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(
            parse_entry_id(&id).unwrap(),
            StreamId::new(1_700_000_000_000, 7)
        );
        assert!(parse_entry_id(&id[1..]).is_err());

        let mut msg = Vec::new();
        for part in [&b"f"[..], b"", b"g", b"\x00\xffbin"] {
            msg.extend_from_slice(&(part.len() as u32).to_le_bytes());
            msg.extend_from_slice(part);
        }
        let pairs = parse_message(&msg, Bytes::copy_from_slice).unwrap();
        assert_eq!(
            pairs,
            vec![
                (Bytes::from_static(b"f"), Bytes::new()),
                (Bytes::from_static(b"g"), Bytes::from_static(b"\x00\xffbin")),
            ]
        );
        // Cut inside a length, a part past the end, an odd number of parts, nothing.
        assert!(parse_message(&msg[..msg.len() - 9], Bytes::copy_from_slice).is_err());
        assert!(parse_message(&msg[..msg.len() - 1], Bytes::copy_from_slice).is_err());
        assert!(parse_message(&msg[..5], Bytes::copy_from_slice).is_err());
        assert!(parse_message(b"", Bytes::copy_from_slice).is_err());
        assert!(parse_message(&[0xff, 0xff, 0xff, 0xff], Bytes::copy_from_slice).is_err());
    }
}
