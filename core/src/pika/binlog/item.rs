//! One binlog item: the 34-byte little-endian header Pika writes before each command,
//! then the command itself in RESP. Items look the same in a file (after their
//! physical records are joined) and in a BinlogSync response.

use std::ops::Range;

use bytes::{Buf, Bytes};

use crate::resp::{self, RespError};

/// Length of the item header.
pub const ITEM_HEADER_LEN: usize = 34;
/// The only item type Pika 3.x–4.0 writes (`TypeFirst`).
pub const ITEM_TYPE: u16 = 1;

/// A decoded binlog item.
#[derive(Debug, Clone, PartialEq)]
pub struct BinlogItem {
    /// Unix seconds when the master logged the write.
    pub exec_time: u32,
    /// `term_id` in 3.3+ (opaque; uninitialised memory in 3.3.6), `server_id` in 3.2.
    pub term: u32,
    pub logic_id: u64,
    /// The writer's position before this item, as recorded in the header. Informational:
    /// the physical position is the one that counts.
    pub filenum: u32,
    pub offset: u64,
    /// The command as the client sent it (or as Pika rewrote it), name case kept.
    pub argv: Vec<Bytes>,
}

impl BinlogItem {
    /// The command name, lowercased for matching (Pika keeps the client's case).
    pub fn command_name(&self) -> String {
        self.argv
            .first()
            .map(|name| String::from_utf8_lossy(name).to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// Why an item could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("item of {0} bytes is shorter than its 34-byte header")]
    TooShort(usize),
    #[error("unknown item type {0} (expected 1)")]
    BadType(u16),
    #[error("item header says {declared} content bytes but {actual} follow")]
    LengthMismatch { declared: u32, actual: usize },
    #[error("command content: {0}")]
    Command(#[from] RespError),
    #[error("empty command")]
    EmptyCommand,
}

impl BinlogItem {
    /// Decodes an item; the command's arguments borrow from `bytes` (no copy).
    pub fn decode(bytes: &Bytes) -> Result<BinlogItem, ItemError> {
        BinlogItem::decode_in(bytes, 0..bytes.len())
    }

    /// Decodes the item that fills `bytes[range]`; the command's arguments borrow from
    /// `bytes` (no copy, and no reference taken on `bytes` for the item as a whole).
    pub fn decode_in(bytes: &Bytes, range: Range<usize>) -> Result<BinlogItem, ItemError> {
        BinlogItem::decode_nested(bytes, range, true)
    }

    /// `may_nest`: whether the content may be one more item (one level only: a chain of
    /// nested headers is not something Pika writes).
    fn decode_nested(
        bytes: &Bytes,
        range: Range<usize>,
        may_nest: bool,
    ) -> Result<BinlogItem, ItemError> {
        let item = bytes.get(range.clone()).unwrap_or_default();
        if item.len() < ITEM_HEADER_LEN {
            return Err(ItemError::TooShort(item.len()));
        }
        let mut header = &item[..ITEM_HEADER_LEN];
        let item_type = header.get_u16_le();
        if item_type != ITEM_TYPE {
            return Err(ItemError::BadType(item_type));
        }
        let exec_time = header.get_u32_le();
        let term = header.get_u32_le();
        let logic_id = header.get_u64_le();
        let filenum = header.get_u32_le();
        let offset = header.get_u64_le();
        let declared = header.get_u32_le();
        let content = &item[ITEM_HEADER_LEN..];
        if declared as usize != content.len() {
            return Err(ItemError::LengthMismatch {
                declared,
                actual: content.len(),
            });
        }
        // A client's `PADDING n` on 3.5 logs an item whose content is a second item
        // (header and RESP) rather than RESP: its command is the inner one.
        // Only content that starts as an item header is taken for one: other bytes that
        // are not RESP stay a RESP error, the clearer one for damaged data.
        let nested =
            may_nest && content.len() >= ITEM_HEADER_LEN && content[..2] == ITEM_TYPE.to_le_bytes();
        let content_range = range.start + ITEM_HEADER_LEN..range.end;
        let argv = if nested {
            BinlogItem::decode_nested(bytes, content_range, false)?.argv
        } else {
            resp::parse_command_in(bytes, content_range)?
        };
        if argv.is_empty() {
            return Err(ItemError::EmptyCommand);
        }
        Ok(BinlogItem {
            exec_time,
            term,
            logic_id,
            filenum,
            offset,
            argv,
        })
    }

    /// Encodes the item as Pika does (used by tests and the test master).
    pub fn encode(&self) -> Vec<u8> {
        let mut content = Vec::new();
        resp::encode_command(&mut content, &self.argv);
        let mut out = Vec::with_capacity(ITEM_HEADER_LEN + content.len());
        out.extend_from_slice(&ITEM_TYPE.to_le_bytes());
        out.extend_from_slice(&self.exec_time.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        out.extend_from_slice(&self.logic_id.to_le_bytes());
        out.extend_from_slice(&self.filenum.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&(content.len() as u32).to_le_bytes());
        out.extend_from_slice(&content);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> BinlogItem {
        BinlogItem {
            exec_time: 1_700_000_000,
            term: 7,
            logic_id: 42,
            filenum: 1,
            offset: 4096,
            argv: vec![
                Bytes::from_static(b"sadd"),
                Bytes::from_static(b"k"),
                Bytes::from_static(b"\xff"),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let bytes = Bytes::from(item().encode());
        assert_eq!(BinlogItem::decode(&bytes).unwrap(), item());
    }

    #[test]
    fn rejects_bad_type_length_and_content() {
        let good = item().encode();
        let mut bad_type = good.clone();
        bad_type[0] = 9;
        assert_eq!(
            BinlogItem::decode(&Bytes::from(bad_type)),
            Err(ItemError::BadType(9))
        );
        let mut short = good.clone();
        short.pop();
        assert!(matches!(
            BinlogItem::decode(&Bytes::from(short)),
            Err(ItemError::LengthMismatch { .. })
        ));
        assert_eq!(
            BinlogItem::decode(&Bytes::from_static(b"abc")),
            Err(ItemError::TooShort(3))
        );
    }
}
