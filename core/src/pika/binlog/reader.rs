//! Reads a binlog directory item by item, across file rotations, from the start or from
//! a `filenum:offset`, and (when asked) keeps following the active file as it grows.

use std::path::{Path, PathBuf};

use super::item::BinlogItem;
use super::manifest::Manifest;
use super::records::{RecordFile, Step};
use super::{file_name, BinlogError};
use crate::event::BinlogOffset;

/// A decoded item with its physical place.
#[derive(Debug, Clone)]
pub struct BinlogEntry {
    /// Where the item starts (the previous item's end).
    pub start: BinlogOffset,
    /// Offset just after the item: what a master reports and a replica acks.
    pub end: BinlogOffset,
    pub item: BinlogItem,
}

/// Result of one read.
#[derive(Debug)]
pub enum ReadOutcome {
    Entry(BinlogEntry),
    /// Everything written so far has been read; more may come later.
    CaughtUp,
}

/// A cursor over a binlog directory.
pub struct BinlogReader {
    dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
    filenum: u32,
    file: RecordFile,
    /// Whether the current file was already reported shorter than the manifest says.
    reported_short: bool,
    /// The current file's length when last looked at. It is looked at again only when
    /// the reader reaches it, not for every item.
    known_len: Option<u64>,
}

impl BinlogReader {
    /// Opens `dir` (holding `manifest` and `write2file<N>`) at `from`, or at the start of
    /// the oldest file still present.
    pub fn open(dir: &Path, from: Option<BinlogOffset>) -> Result<BinlogReader, BinlogError> {
        let not_binlog = |reason: String| BinlogError::NotABinlogDir {
            path: dir.to_owned(),
            reason,
        };
        if !dir.is_dir() {
            return Err(if dir.exists() {
                not_binlog("not a directory".into())
            } else {
                BinlogError::MissingFile {
                    path: dir.to_owned(),
                    reason: "no such binlog directory".into(),
                }
            });
        }
        let manifest_path = dir.join("manifest");
        if !manifest_path.is_file() {
            return Err(not_binlog("no `manifest` file in it".into()));
        }
        let manifest = Manifest::read(&manifest_path)?;
        let oldest =
            oldest_file(dir)?.ok_or_else(|| not_binlog("no write2file<N> in it".into()))?;
        let start = from.unwrap_or(BinlogOffset::new(oldest, 0));
        if start.filenum > manifest.filenum {
            return Err(BinlogError::MissingFile {
                path: dir.join(file_name(start.filenum)),
                reason: format!("the binlog only goes up to write2file{}", manifest.filenum),
            });
        }
        let path = dir.join(file_name(start.filenum));
        if !path.is_file() {
            return Err(BinlogError::MissingFile {
                path,
                reason: format!(
                    "purged or never written; the oldest file here is write2file{oldest}"
                ),
            });
        }
        let mut reader = BinlogReader {
            dir: dir.to_owned(),
            manifest_path,
            manifest,
            filenum: start.filenum,
            file: RecordFile::open(&path)?,
            reported_short: false,
            known_len: None,
        };
        let limit = reader.limit()?;
        if start.offset > limit {
            return Err(BinlogError::NotItemBoundary {
                path,
                offset: start.offset,
            });
        }
        reader.file.seek(start.offset, limit)?;
        Ok(reader)
    }

    /// The position the next item starts at (where a resumed read would begin).
    pub fn position(&self) -> BinlogOffset {
        BinlogOffset::new(self.filenum, self.file.position())
    }

    pub fn manifest(&self) -> Manifest {
        self.manifest
    }

    /// Reads the next item. At the end of the data written so far it returns
    /// `CaughtUp`; call again later to pick up what the writer appended since.
    pub fn read_next(&mut self) -> Result<ReadOutcome, BinlogError> {
        // Whether the file's length was looked at during this call: the end of a length
        // known from before is only where the file was, so it is looked at once more.
        let mut len_checked = false;
        loop {
            let active = self.filenum >= self.manifest.filenum;
            if self.known_len.is_none() {
                len_checked = true;
            }
            let limit = self.limit()?;
            match self.file.next(limit, !active && len_checked)? {
                Step::Item(raw) => {
                    let (start, end) = (raw.start, raw.end);
                    let item = BinlogItem::decode_in(raw.bytes, raw.range).map_err(|e| {
                        BinlogError::Corrupt {
                            path: self.file.path().to_owned(),
                            offset: start,
                            reason: format!("bad item: {e}"),
                        }
                    })?;
                    return Ok(ReadOutcome::Entry(BinlogEntry {
                        start: BinlogOffset::new(self.filenum, start),
                        end: BinlogOffset::new(self.filenum, end),
                        item,
                    }));
                }
                Step::End if !len_checked => self.known_len = None,
                Step::End if !active => self.advance()?,
                Step::End => {
                    self.known_len = None;
                    let before = self.manifest;
                    self.manifest = Manifest::read(&self.manifest_path)?;
                    if self.manifest == before {
                        return Ok(ReadOutcome::CaughtUp);
                    }
                }
            }
        }
    }

    /// How far the current file may be read: a closed file to its length, the active one
    /// to the manifest's offset (never into the zero-filled pre-allocation).
    fn limit(&mut self) -> Result<u64, BinlogError> {
        let len = match self.known_len {
            Some(len) => len,
            None => *self.known_len.insert(self.file.file_len()?),
        };
        if self.filenum < self.manifest.filenum {
            return Ok(len);
        }
        if len < self.manifest.offset && !std::mem::replace(&mut self.reported_short, true) {
            tracing::warn!(
                file = %self.file.path().display(),
                len,
                manifest_offset = self.manifest.offset,
                "active binlog file is shorter than the manifest says; reading what is there"
            );
        }
        Ok(len.min(self.manifest.offset))
    }

    fn advance(&mut self) -> Result<(), BinlogError> {
        let current = self.file.path().to_owned();
        if self.file.position() == 0 && self.file.file_len()? == 0 {
            return Err(BinlogError::Corrupt {
                path: current,
                offset: 0,
                reason: format!(
                    "empty file, but the manifest says writing moved on to write2file{}",
                    self.manifest.filenum
                ),
            });
        }
        let next = self.filenum + 1;
        let path = self.dir.join(file_name(next));
        if !path.is_file() {
            return Err(BinlogError::MissingFile {
                path,
                reason: format!(
                    "the manifest names write2file{} as active",
                    self.manifest.filenum
                ),
            });
        }
        self.file = RecordFile::open(&path)?;
        self.filenum = next;
        self.reported_short = false;
        self.known_len = None;
        Ok(())
    }
}

/// The lowest `N` among the `write2file<N>` files of `dir`.
fn oldest_file(dir: &Path) -> Result<Option<u32>, BinlogError> {
    let entries = std::fs::read_dir(dir).map_err(|source| BinlogError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut oldest = None;
    for entry in entries {
        let entry = entry.map_err(|source| BinlogError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let n = name
            .to_str()
            .and_then(|n| n.strip_prefix("write2file"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = n {
            oldest = Some(oldest.map_or(n, |o: u32| o.min(n)));
        }
    }
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pika::binlog::BLOCK_SIZE;
    use bytes::Bytes;

    fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut r = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8];
        r.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        r.push(kind);
        r.extend_from_slice(payload);
        r
    }

    fn item(argv: &[&[u8]]) -> Vec<u8> {
        BinlogItem {
            exec_time: 1_700_000_000,
            term: 0,
            logic_id: 1,
            filenum: 0,
            offset: 0,
            argv: argv.iter().map(|a| Bytes::copy_from_slice(a)).collect(),
        }
        .encode()
    }

    fn write_manifest(dir: &Path, filenum: u32, offset: u64) {
        let mut m = vec![0u8; 64];
        m[..4].copy_from_slice(&filenum.to_le_bytes());
        m[4..12].copy_from_slice(&offset.to_le_bytes());
        std::fs::write(dir.join("manifest"), m).unwrap();
    }

    #[test]
    fn skips_padding_records_and_short_block_tails_and_joins_spanning_items() {
        let dir = tempfile::tempdir().unwrap();
        // A replica's padding, one whole item, padding up to 5 bytes before the block
        // end (a tail too short for a header, left as zeros), then an item spanning two
        // blocks.
        let mut file = record(6, &[b'*'; 100]);
        let small = item(&[b"SET", b"a", b"1"]);
        file.extend(record(1, &small));
        let pad = BLOCK_SIZE as usize - 5 - file.len() - 8;
        file.extend(record(6, &vec![b'*'; pad]));
        assert_eq!(BLOCK_SIZE as usize - file.len(), 5);
        file.extend([0u8; 5]);
        let big_value = vec![b'x'; 70_000];
        let big = item(&[b"SET", b"b", &big_value]);
        let first = BLOCK_SIZE as usize - 8;
        file.extend(record(2, &big[..first]));
        file.extend(record(4, &big[first..]));
        std::fs::write(dir.path().join("write2file0"), &file).unwrap();
        write_manifest(dir.path(), 0, file.len() as u64);

        let mut reader = BinlogReader::open(dir.path(), None).unwrap();
        let ReadOutcome::Entry(a) = reader.read_next().unwrap() else {
            panic!("first item")
        };
        assert_eq!(
            (a.start.offset, a.end.offset),
            (108, 108 + 8 + small.len() as u64)
        );
        assert_eq!(a.item.argv[1].as_ref(), b"a");
        let ReadOutcome::Entry(b) = reader.read_next().unwrap() else {
            panic!("spanning item")
        };
        assert_eq!(b.item.argv[2].len(), 70_000);
        assert_eq!(b.end.offset, file.len() as u64);
        assert!(matches!(reader.read_next().unwrap(), ReadOutcome::CaughtUp));
        // Resuming at the first item's end walks the padding and the tail to the next.
        let mut resumed = BinlogReader::open(dir.path(), Some(a.end)).unwrap();
        let ReadOutcome::Entry(again) = resumed.read_next().unwrap() else {
            panic!("resume")
        };
        assert_eq!(again.item, b.item);
    }

    #[test]
    fn an_item_completed_after_its_file_was_measured_is_read_whole_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let a = record(1, &item(&[b"SET", b"a", b"1"]));
        let c = record(1, &item(&[b"SET", b"c", b"3"]));
        let d = record(1, &item(&[b"SET", b"d", b"4"]));
        // The writer is halfway through c when the reader first looks.
        let mut file0 = a.clone();
        file0.extend_from_slice(&c[..c.len() / 2]);
        std::fs::write(dir.path().join("write2file0"), &file0).unwrap();
        write_manifest(dir.path(), 0, file0.len() as u64);
        let mut reader = BinlogReader::open(dir.path(), None).unwrap();
        let ReadOutcome::Entry(first) = reader.read_next().unwrap() else {
            panic!("a")
        };
        assert_eq!(first.item.argv[1].as_ref(), b"a");
        // It finishes c and moves on to write2file1 before the reader's next look: the
        // length the reader saw is stale, and c is whole, not cut off.
        file0.extend_from_slice(&c[c.len() / 2..]);
        std::fs::write(dir.path().join("write2file0"), &file0).unwrap();
        std::fs::write(dir.path().join("write2file1"), &d).unwrap();
        write_manifest(dir.path(), 1, d.len() as u64);
        let keys: Vec<_> = std::iter::from_fn(|| match reader.read_next().unwrap() {
            ReadOutcome::Entry(e) => Some(e.item.argv[1].clone()),
            ReadOutcome::CaughtUp => None,
        })
        .collect();
        assert_eq!(keys, [&b"c"[..], b"d"]);
        assert_eq!(reader.position(), BinlogOffset::new(1, d.len() as u64));
    }
}
