//! Pika's stream bytes, shared by 3.5 and 4.0: metas of both versions, the entry id at
//! the end of a data key (3.5's `keylen ‖ key ‖ version u32 ‖ id`, 4.0's
//! `reserve ‖ enc(key) ‖ version u64 ‖ id ‖ reserve`), and the stored message.

use bytes::Bytes;
use pika_migrate_core::pika::storage::floyd::key::{
    data_key_element, data_key_prefix as floyd_prefix, decode_user_key, PREFIX_RESERVE,
};
use pika_migrate_core::pika::storage::format::data_key_prefix;
use pika_migrate_core::pika::storage::stream::{
    parse_entry_id, parse_message, StreamMeta, META_LEN_V35, META_LEN_V40,
};

/// Every stream decoder on the same bytes: none panics; what is accepted has the size
/// its layout says, a message re-encodes to the bytes it came from, and an entry id
/// found in a data key is the key's last 16 bytes (3.5) or those before the reserve
/// (4.0).
pub fn stream_bytes(data: &[u8]) {
    assert_eq!(
        StreamMeta::parse_v35(data).is_ok(),
        data.len() == META_LEN_V35
    );
    assert_eq!(
        StreamMeta::parse_v40(data).is_ok(),
        data.len() == META_LEN_V40
    );
    if let Ok(pairs) = parse_message(data, Bytes::copy_from_slice) {
        let mut again = Vec::with_capacity(data.len());
        for (f, v) in &pairs {
            for part in [f, v] {
                again.extend_from_slice(&(part.len() as u32).to_le_bytes());
                again.extend_from_slice(part);
            }
        }
        assert_eq!(again, data, "message round trip");
    }
    // A 3.5 data key: its own prefix read from the bytes, then the id.
    if let Some(len) = data.get(..4) {
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if let Some(key) = len.checked_add(4).and_then(|end| data.get(4..end)) {
            let version = data
                .get(4 + len..8 + len)
                .map_or(0, |v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
            let prefix = data_key_prefix(key, version);
            if data.starts_with(&prefix) {
                let id = parse_entry_id(&data[prefix.len()..]);
                assert_eq!(id.is_ok(), data.len() == prefix.len() + 16);
            }
        }
    }
    // A 4.0 data key: the encoded user key decides the prefix.
    if let Some((key, rest)) = data.get(PREFIX_RESERVE..).and_then(decode_user_key) {
        let version = rest
            .get(..8)
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or_default()));
        let prefix = floyd_prefix(&key, version);
        if data.starts_with(&prefix) {
            if let Some(id) = data_key_element(data, &prefix) {
                assert_eq!(parse_entry_id(id).is_ok(), id.len() == 16);
            }
        }
    }
}
