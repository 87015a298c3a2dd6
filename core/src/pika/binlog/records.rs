//! Walks the physical records of one binlog file and reassembles items.
//!
//! A file is a run of 64 KiB blocks. Each record is an 8-byte header (length 24-bit LE,
//! time u32 LE, type u8) and a fragment that never crosses a block. An item is one Full
//! record or First, Middle…, Last. A block tail of 8 bytes or less is skipped, and type-6
//! records are padding a replica wrote after a full sync.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::{BinlogError, BLOCK_SIZE, RECORD_HEADER_LEN};

const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;
const PADDING: u8 = 6;

/// A reassembled item and where it sits in its file.
#[derive(Debug)]
pub struct RawItem<'a> {
    /// Offset of the item's first record header (or of the block tail before it).
    pub start: u64,
    /// Offset just after the item's last fragment: the item's position.
    pub end: u64,
    /// The item is `bytes[range]`: a one-record item is read in place in its block.
    pub bytes: &'a Bytes,
    pub range: Range<usize>,
}

/// What the walker found next.
#[derive(Debug)]
pub enum Step<'a> {
    Item(RawItem<'a>),
    /// No further whole item below the readable end.
    End,
}

/// One `write2file<N>` opened for reading.
pub struct RecordFile {
    path: PathBuf,
    file: File,
    /// End of the last item returned (or the start position): the resume point.
    pos: u64,
    /// The block last read, shared: a one-record item's arguments are slices of it, not
    /// copies. A block is read into a new buffer each time, so items handed out keep
    /// theirs.
    block: Bytes,
    /// Index of the block held in `block`, with how many bytes of it were read.
    cached: Option<(u64, usize)>,
    /// The last item joined from several records.
    joined: Bytes,
}

impl RecordFile {
    pub fn open(path: &Path) -> Result<RecordFile, BinlogError> {
        let file = File::open(path).map_err(|source| BinlogError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(RecordFile {
            path: path.to_owned(),
            file,
            pos: 0,
            block: Bytes::new(),
            cached: None,
            joined: Bytes::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current resume point: the end of the last item read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn file_len(&self) -> Result<u64, BinlogError> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|source| self.io(source))
    }

    fn io(&self, source: std::io::Error) -> BinlogError {
        BinlogError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> BinlogError {
        BinlogError::Corrupt {
            path: self.path.clone(),
            offset,
            reason: reason.into(),
        }
    }

    /// Positions the walker at `offset`, which must be an item boundary: the start of
    /// the file, or the end of an item as reached by walking whole items from the start
    /// of its block (records of an item begun in an earlier block are passed over).
    pub fn seek(&mut self, offset: u64, limit: u64) -> Result<(), BinlogError> {
        if offset == 0 {
            self.pos = 0;
            return Ok(());
        }
        let mut pos = offset - offset % BLOCK_SIZE;
        let mut in_item = false;
        let mut continuing_earlier_item = true;
        while pos < offset {
            if let Some(next) = skip_block_tail(pos) {
                pos = next;
                continue;
            }
            let Some((len, kind)) = self.header(pos, limit)? else {
                break;
            };
            match kind {
                FIRST if !in_item => in_item = true,
                MIDDLE | LAST if continuing_earlier_item && !in_item => {}
                MIDDLE if in_item => {}
                LAST if in_item => in_item = false,
                FULL | PADDING if !in_item => {}
                _ => return Err(self.corrupt(pos, format!("unexpected record type {kind}"))),
            }
            if kind == FULL || kind == FIRST || kind == PADDING {
                continuing_earlier_item = false;
            }
            pos += RECORD_HEADER_LEN + len;
        }
        if pos != offset || in_item {
            return Err(BinlogError::NotItemBoundary {
                path: self.path.clone(),
                offset,
            });
        }
        self.pos = offset;
        Ok(())
    }

    /// Reads the next whole item that ends at or before `limit`. When `complete` is true
    /// the file is closed (rotated) and `limit` is its real end, so an item cut short is
    /// damage; otherwise the tail may still be being written and the walker stops
    /// cleanly at the last whole item.
    pub fn next(&mut self, limit: u64, complete: bool) -> Result<Step<'_>, BinlogError> {
        // The previous joined item lives on in its arguments, if anywhere.
        self.joined = Bytes::new();
        let mut pos = self.pos;
        let mut start = pos;
        let mut fragments: Option<(u64, BytesMut)> = None;
        loop {
            if let Some(next) = skip_block_tail(pos) {
                pos = next;
                continue;
            }
            let header = self.header(pos, limit)?;
            let Some((len, kind)) = header else {
                return self.stop(fragments.map(|(at, _)| at), pos, limit, complete);
            };
            let body = pos + RECORD_HEADER_LEN;
            match kind {
                FULL | FIRST if fragments.is_some() => {
                    return Err(self.corrupt(pos, "new item begins inside an unfinished one"));
                }
                FULL => {
                    let at = self.locate(body, len as usize)?;
                    self.pos = body + len;
                    return Ok(Step::Item(RawItem {
                        start,
                        end: self.pos,
                        bytes: &self.block,
                        range: at..at + len as usize,
                    }));
                }
                FIRST => {
                    let mut buf = BytesMut::with_capacity(len as usize * 2);
                    buf.extend_from_slice(self.slice(body, len as usize)?);
                    fragments = Some((pos, buf));
                }
                MIDDLE | LAST => {
                    let Some((_, buf)) = fragments.as_mut() else {
                        return Err(self.corrupt(pos, "continuation record without a first record"));
                    };
                    buf.extend_from_slice(self.slice(body, len as usize)?);
                    if kind == LAST {
                        let (_, buf) = fragments.take().unwrap_or_default();
                        self.pos = body + len;
                        self.joined = buf.freeze();
                        return Ok(Step::Item(RawItem {
                            start,
                            end: self.pos,
                            bytes: &self.joined,
                            range: 0..self.joined.len(),
                        }));
                    }
                }
                PADDING if fragments.is_none() => start = body + len,
                PADDING => return Err(self.corrupt(pos, "padding inside an unfinished item")),
                other => return Err(self.corrupt(pos, format!("unknown record type {other}"))),
            }
            pos = body + len;
        }
    }

    /// Handles the end of readable data at `pos`: clean at an item boundary, an error
    /// for an item cut short in a closed file, and a clean stop (before the partial
    /// item) in a file still being written.
    fn stop(
        &self,
        unfinished_at: Option<u64>,
        pos: u64,
        limit: u64,
        complete: bool,
    ) -> Result<Step<'static>, BinlogError> {
        match unfinished_at {
            Some(at) if complete => Err(BinlogError::Truncated {
                path: self.path.clone(),
                offset: at,
                reason: format!("item starting here is cut off at offset {}", pos.min(limit)),
            }),
            _ => Ok(Step::End),
        }
    }

    /// Reads the record header at `pos`. `None` means no record there: the readable end
    /// was reached, or a zero header marks the end of written data.
    fn header(&mut self, pos: u64, limit: u64) -> Result<Option<(u64, u8)>, BinlogError> {
        if pos + RECORD_HEADER_LEN > limit {
            return Ok(None);
        }
        let raw = self.slice(pos, RECORD_HEADER_LEN as usize)?;
        let len = u64::from(raw[0]) | u64::from(raw[1]) << 8 | u64::from(raw[2]) << 16;
        let kind = raw[7];
        if kind == 0 && len == 0 {
            return Ok(None);
        }
        let room = BLOCK_SIZE - pos % BLOCK_SIZE - RECORD_HEADER_LEN;
        if len > room {
            return Err(self.corrupt(
                pos,
                format!("record of {len} bytes overruns its block ({room} bytes left)"),
            ));
        }
        if pos + RECORD_HEADER_LEN + len > limit {
            return Ok(None);
        }
        Ok(Some((len, kind)))
    }

    /// The `len` bytes at `pos`, borrowed from the block (for headers: no reference
    /// count touched).
    fn slice(&mut self, pos: u64, len: usize) -> Result<&[u8], BinlogError> {
        let at = self.locate(pos, len)?;
        Ok(&self.block[at..at + len])
    }

    /// Where `len` bytes at `pos` start in `block`. The block is cached, and re-read
    /// when the request reaches past what was there (the file may have grown).
    fn locate(&mut self, pos: u64, len: usize) -> Result<usize, BinlogError> {
        let index = pos / BLOCK_SIZE;
        let at = (pos % BLOCK_SIZE) as usize;
        let have = match self.cached {
            Some((cached, have)) if cached == index && at + len <= have => have,
            _ => {
                let have = self.fill_block(index)?;
                self.cached = Some((index, have));
                have
            }
        };
        if at + len > have {
            return Err(BinlogError::Truncated {
                path: self.path.clone(),
                offset: pos,
                reason: format!("{len} bytes expected, the file ends first"),
            });
        }
        Ok(at)
    }

    fn fill_block(&mut self, index: u64) -> Result<usize, BinlogError> {
        let mut block = BytesMut::zeroed(BLOCK_SIZE as usize);
        let mut have = 0;
        while have < block.len() {
            let n = self
                .file
                .read_at(&mut block[have..], index * BLOCK_SIZE + have as u64)
                .map_err(|source| BinlogError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            have += n;
        }
        self.block = block.freeze();
        Ok(have)
    }
}

/// If `pos` is in a block tail too short for a record header, the next block's start.
fn skip_block_tail(pos: u64) -> Option<u64> {
    let left = BLOCK_SIZE - pos % BLOCK_SIZE;
    (left <= RECORD_HEADER_LEN).then_some(pos + left)
}
