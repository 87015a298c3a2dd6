//! Appends events to a capture directory, rotating files by size.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{
    check_header, file_name, files, header, record, CaptureError, HEADER_LEN, MAX_RECORD,
    RECORD_HEADER_LEN,
};
use crate::event::Event;

pub struct CaptureWriter {
    dir: PathBuf,
    rotate_bytes: u64,
    number: u64,
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    scratch: Vec<u8>,
}

/// The end of the last whole record of `path` (a crash may have left half of one).
fn valid_end(path: &Path) -> Result<u64, CaptureError> {
    let mut f = File::open(path).map_err(|e| CaptureError::io(path, e))?;
    let len = f.metadata().map_err(|e| CaptureError::io(path, e))?.len();
    let mut head = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN {
        return Ok(0);
    }
    f.read_exact(&mut head)
        .map_err(|e| CaptureError::io(path, e))?;
    check_header(path, &head)?;
    let mut at = HEADER_LEN;
    let mut rh = [0u8; RECORD_HEADER_LEN as usize];
    let mut payload = Vec::new();
    while at + RECORD_HEADER_LEN <= len {
        f.read_exact(&mut rh)
            .map_err(|e| CaptureError::io(path, e))?;
        let n = u32::from_le_bytes([rh[0], rh[1], rh[2], rh[3]]);
        let crc = u32::from_le_bytes([rh[4], rh[5], rh[6], rh[7]]);
        if n > MAX_RECORD || at + RECORD_HEADER_LEN + u64::from(n) > len {
            break;
        }
        payload.resize(n as usize, 0);
        f.read_exact(&mut payload)
            .map_err(|e| CaptureError::io(path, e))?;
        if crc32fast::hash(&payload) != crc {
            break;
        }
        at += RECORD_HEADER_LEN + u64::from(n);
    }
    Ok(at)
}

impl CaptureWriter {
    /// Opens `dir` (created if needed) to append after its last whole record.
    pub fn open(dir: &Path, rotate_bytes: u64) -> Result<CaptureWriter, CaptureError> {
        std::fs::create_dir_all(dir).map_err(|e| CaptureError::io(dir, e))?;
        let existing = files(dir)?;
        let (number, path) = match existing.last() {
            Some(last) => {
                let n = last
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| {
                        n.strip_prefix("capture-")?
                            .strip_suffix(".pmc")?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(1);
                (n, last.clone())
            }
            None => (1, dir.join(file_name(1))),
        };
        let mut w = CaptureWriter::start(dir, rotate_bytes, number, path)?;
        w.scratch.reserve(1 << 16);
        Ok(w)
    }

    fn start(
        dir: &Path,
        rotate_bytes: u64,
        number: u64,
        path: PathBuf,
    ) -> Result<CaptureWriter, CaptureError> {
        let end = if path.exists() { valid_end(&path)? } else { 0 };
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CaptureError::io(&path, e))?;
        let size = if end < HEADER_LEN {
            f.set_len(0).map_err(|e| CaptureError::io(&path, e))?;
            f.write_all(&header())
                .map_err(|e| CaptureError::io(&path, e))?;
            HEADER_LEN
        } else {
            f.set_len(end).map_err(|e| CaptureError::io(&path, e))?;
            f.seek(SeekFrom::Start(end))
                .map_err(|e| CaptureError::io(&path, e))?;
            end
        };
        Ok(CaptureWriter {
            dir: dir.to_owned(),
            rotate_bytes: rotate_bytes.max(HEADER_LEN + 1),
            number,
            path,
            file: BufWriter::with_capacity(1 << 20, f),
            size,
            scratch: Vec::new(),
        })
    }

    pub fn append(&mut self, event: &Event) -> Result<(), CaptureError> {
        if self.size >= self.rotate_bytes {
            self.sync()?;
            let next = self.number + 1;
            let path = self.dir.join(file_name(next));
            *self = CaptureWriter::start(&self.dir.clone(), self.rotate_bytes, next, path)?;
        }
        self.scratch.clear();
        record::encode(event, &mut self.scratch);
        let io = |e| CaptureError::io(&self.path, e);
        self.file
            .write_all(&(self.scratch.len() as u32).to_le_bytes())
            .map_err(io)?;
        self.file
            .write_all(&crc32fast::hash(&self.scratch).to_le_bytes())
            .map_err(io)?;
        self.file.write_all(&self.scratch).map_err(io)?;
        self.size += RECORD_HEADER_LEN + self.scratch.len() as u64;
        Ok(())
    }

    /// Hands what was appended to the OS (readers following the file see it).
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.file
            .flush()
            .map_err(|e| CaptureError::io(&self.path, e))
    }

    /// Flushes and makes it durable.
    pub fn sync(&mut self) -> Result<(), CaptureError> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| CaptureError::io(&self.path, e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::reader::{CaptureReader, ReadOutcome};
    use crate::filter::testing::binlog_events;

    fn read_all(dir: &Path) -> Vec<Event> {
        let mut r = CaptureReader::open(dir, false).unwrap();
        let mut out = Vec::new();
        while let ReadOutcome::Event(e) = r.read_next().unwrap() {
            out.push(*e);
        }
        out
    }

    #[test]
    fn a_half_written_record_is_cut_when_the_capture_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let events = binlog_events();
        let mut w = CaptureWriter::open(dir.path(), 1 << 20).unwrap();
        for e in &events[..3] {
            w.append(e).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        // A crash in the middle of the fourth record.
        let file = dir.path().join(file_name(1));
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
        drop(f);

        let mut w = CaptureWriter::open(dir.path(), 1 << 20).unwrap();
        w.append(&events[3]).unwrap();
        w.sync().unwrap();
        assert_eq!(read_all(dir.path()), events[..4].to_vec());
    }

    #[test]
    fn files_rotate_by_size_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let events = binlog_events();
        let mut w = CaptureWriter::open(dir.path(), 4096).unwrap();
        for e in &events {
            w.append(e).unwrap();
        }
        w.sync().unwrap();
        assert!(files(dir.path()).unwrap().len() > 10);
        assert_eq!(read_all(dir.path()), events);
    }
}
