//! Stored values: string values, collection and list metas, zset scores.

use pika_migrate_core::pika::storage::format::{
    parse_score, parse_string_value, CollectionMeta, ListMeta,
};

/// The parsers of stored values: each accepts exactly the lengths its layout needs.
pub fn values(data: &[u8]) {
    match parse_string_value(data) {
        Ok((len, expiry)) => {
            assert_eq!(len + 4, data.len());
            let _ = expiry.as_millis();
        }
        Err(_) => assert!(data.len() < 4),
    }
    match CollectionMeta::parse(data) {
        Ok(meta) => {
            assert!(data.len() >= 12);
            assert!(
                meta.count <= i32::MAX as u64,
                "a negative count read as huge"
            );
            let _ = (meta.is_live(i64::MAX), meta.expiry.as_millis());
        }
        Err(_) => assert!(data.len() < 12),
    }
    match ListMeta::parse(data) {
        Ok(meta) => {
            assert!(data.len() >= 32);
            let _ = (meta.is_live(0), meta.expiry.as_millis());
        }
        Err(_) => assert!(data.len() < 32),
    }
    assert_eq!(parse_score(data).is_ok(), data.len() == 8);
}
