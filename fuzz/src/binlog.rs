//! Binlog bytes: one item (header and RESP command), the manifest, and a whole
//! `write2file` walked record by record as the binlog source reads it.

use std::path::Path;

use bytes::Bytes;
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::binlog::{
    BinlogEntry, BinlogError, BinlogItem, BinlogReader, ItemError, Manifest, ReadOutcome,
};

use crate::{events, scratch};

/// Decodes an item; an accepted one encodes and decodes back to itself, and goes on
/// as the binlog source would send it.
pub fn item(data: &[u8]) {
    match BinlogItem::decode(&Bytes::copy_from_slice(data)) {
        Ok(item) => {
            let again =
                BinlogItem::decode(&Bytes::from(item.encode())).expect("an item we encode decodes");
            assert_eq!(again, item);
            let at = BinlogOffset::new(0, 0);
            events::binlog_item(&BinlogEntry {
                start: at,
                end: at,
                item,
            });
        }
        Err(ItemError::Command(e)) => {
            assert!(e.at <= data.len(), "{e}");
        }
        Err(_) => {}
    }
}

/// A manifest is accepted exactly when it holds the 20 bytes of a 3.2 one.
pub fn manifest(data: &[u8]) {
    match Manifest::decode(data) {
        Ok(m) => {
            assert!(data.len() >= 20);
            assert_eq!(m.offset.to_le_bytes(), data[4..12]);
        }
        Err(reason) => {
            assert!(data.len() < 20, "refused {} bytes: {reason}", data.len());
        }
    }
}

/// Items read before the walk stopped, and how it stopped.
struct Walk {
    items: Vec<BinlogEntry>,
    end: Result<(), BinlogError>,
}

/// Most items a whole walk reads: more than a file of the smallest items holds, so
/// reaching it means the reader does not advance.
const MAX_ITEMS: usize = 1 << 20;

/// Reads from `from` to the end, or `limit` items.
fn walk(dir: &Path, from: Option<BinlogOffset>, limit: usize) -> Walk {
    let mut reader = match BinlogReader::open(dir, from) {
        Ok(r) => r,
        Err(e) => {
            return Walk {
                items: Vec::new(),
                end: Err(e),
            }
        }
    };
    let mut items = Vec::new();
    while items.len() < limit {
        match reader.read_next() {
            Ok(ReadOutcome::Entry(entry)) => {
                assert!(
                    entry.start.offset < entry.end.offset,
                    "an item ending where it starts"
                );
                items.push(entry);
            }
            Ok(ReadOutcome::CaughtUp) => return Walk { items, end: Ok(()) },
            Err(e) => return Walk { items, end: Err(e) },
        }
    }
    Walk { items, end: Ok(()) }
}

fn write_manifest(dir: &Path, filenum: u32, offset: u64) {
    let mut m = vec![0u8; 24];
    m[..4].copy_from_slice(&filenum.to_le_bytes());
    m[4..12].copy_from_slice(&offset.to_le_bytes());
    scratch::write(&dir.join("manifest"), &m);
}

/// Errors name the file, and the offset where there is one.
fn check_error(e: &BinlogError) {
    let text = e.to_string();
    assert!(text.contains("write2file"), "{text}");
    if matches!(
        e,
        BinlogError::Corrupt { .. }
            | BinlogError::Truncated { .. }
            | BinlogError::NotItemBoundary { .. }
    ) {
        assert!(text.contains("offset"), "{text}");
    }
}

fn same(a: &BinlogEntry, b: &BinlogEntry) -> bool {
    a.start == b.start && a.end == b.end && a.item == b.item
}

/// `data` as `write2file0`: read as the active file (to the manifest's offset), then as
/// a closed one (to its end, then on to an empty `write2file1`); both see the same
/// items. A read resumed at any item's end goes on with the next item.
pub fn file(data: &[u8]) {
    scratch::with_empty_dir(|dir| {
        scratch::write(&dir.join("write2file0"), data);
        write_manifest(dir, 0, data.len() as u64);
        let active = walk(dir, None, MAX_ITEMS);
        assert!(
            active.items.len() < MAX_ITEMS,
            "the reader does not advance"
        );
        if let Err(e) = &active.end {
            check_error(e);
        }
        for entry in &active.items {
            events::binlog_item(entry);
        }

        scratch::write(&dir.join("write2file1"), b"");
        write_manifest(dir, 1, 0);
        let closed = walk(dir, None, MAX_ITEMS);
        if let Err(e) = &closed.end {
            check_error(e);
        }
        assert_eq!(
            active.items.len(),
            closed.items.len(),
            "the active and the closed reading disagree"
        );
        for (a, c) in active.items.iter().zip(&closed.items) {
            assert!(same(a, c), "the active and the closed reading disagree");
        }
        if closed.end.is_ok() {
            // A closed file read to its end without damage ends on a whole item.
            let end = closed.items.last().map_or(0, |e| e.end.offset);
            assert!(end <= data.len() as u64);
        }

        // Resume at item ends, spread over the file.
        let n = closed.items.len();
        let step = (n / 24).max(1);
        for i in (0..n).step_by(step) {
            let resumed = walk(dir, Some(closed.items[i].end), 1);
            match (resumed.items.first(), closed.items.get(i + 1)) {
                (Some(r), Some(next)) => {
                    assert!(same(r, next), "resuming after item {i} gives another item")
                }
                (None, Some(_)) => panic!(
                    "resuming after item {i} at {} reads nothing: {:?}",
                    closed.items[i].end, resumed.end
                ),
                (Some(_), None) => panic!("resuming after the last item reads another"),
                (None, None) => {}
            }
        }
        // Any offset: an item boundary or an error naming it.
        let len = data.len() as u64;
        for offset in [
            1,
            7,
            8,
            9,
            len / 2,
            len.saturating_sub(1),
            len,
            65536,
            65537,
            u64::MAX,
        ] {
            if let Err(e) = BinlogReader::open(dir, Some(BinlogOffset::new(0, offset))) {
                check_error(&e);
            }
        }
    });
}
