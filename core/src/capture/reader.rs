//! Reads a capture directory in order, file after file; can follow the last file as it
//! grows.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;

use super::{check_header, files, record, CaptureError, HEADER_LEN, MAX_RECORD, RECORD_HEADER_LEN};
use crate::event::Event;

pub enum ReadOutcome {
    Event(Box<Event>),
    /// A record whose CRC or content is wrong, passed over (`skip_corrupt`).
    Skipped(CaptureError),
    /// Nothing more for now (the end of the last file).
    CaughtUp,
}

pub struct CaptureReader {
    dir: PathBuf,
    skip_corrupt: bool,
    /// Files read so far (by path), the current one last.
    current: Option<(PathBuf, File, u64)>,
    done: Vec<PathBuf>,
}

impl CaptureReader {
    pub fn open(dir: &std::path::Path, skip_corrupt: bool) -> Result<CaptureReader, CaptureError> {
        if files(dir)?.is_empty() {
            return Err(CaptureError::NotCapture {
                path: dir.to_owned(),
                reason: "no capture-NNNNNN.pmc file in it".into(),
            });
        }
        Ok(CaptureReader {
            dir: dir.to_owned(),
            skip_corrupt,
            current: None,
            done: Vec::new(),
        })
    }

    /// Moves to the next file, if there is one.
    fn next_file(&mut self) -> Result<bool, CaptureError> {
        let all = files(&self.dir)?;
        let next = all.into_iter().find(|p| {
            !self.done.contains(p) && self.current.as_ref().is_none_or(|(c, _, _)| c != p)
        });
        let Some(path) = next else {
            return Ok(false);
        };
        let mut f = File::open(&path).map_err(|e| CaptureError::io(&path, e))?;
        let mut head = [0u8; HEADER_LEN as usize];
        f.read_exact(&mut head)
            .map_err(|e| CaptureError::io(&path, e))?;
        check_header(&path, &head)?;
        if let Some((old, _, _)) = self.current.take() {
            self.done.push(old);
        }
        self.current = Some((path, f, HEADER_LEN));
        Ok(true)
    }

    pub fn read_next(&mut self) -> Result<ReadOutcome, CaptureError> {
        loop {
            if self.current.is_none() && !self.next_file()? {
                return Ok(ReadOutcome::CaughtUp);
            }
            let Some((path, f, at)) = self.current.as_mut() else {
                return Ok(ReadOutcome::CaughtUp);
            };
            let len = f.metadata().map_err(|e| CaptureError::io(path, e))?.len();
            let corrupt = |reason: String, offset: u64| CaptureError::Corrupt {
                path: path.clone(),
                offset,
                reason,
            };
            if *at + RECORD_HEADER_LEN > len {
                // The end of this file: a later file means this one is finished.
                let path = path.clone();
                let offset = *at;
                if self.next_file()? {
                    if offset != len {
                        let e = CaptureError::Corrupt {
                            path,
                            offset,
                            reason: "a record cut off at the end of the file".into(),
                        };
                        if !self.skip_corrupt {
                            return Err(e);
                        }
                        return Ok(ReadOutcome::Skipped(e));
                    }
                    continue;
                }
                return Ok(ReadOutcome::CaughtUp);
            }
            f.seek(SeekFrom::Start(*at))
                .map_err(|e| CaptureError::io(path, e))?;
            let mut rh = [0u8; RECORD_HEADER_LEN as usize];
            f.read_exact(&mut rh)
                .map_err(|e| CaptureError::io(path, e))?;
            let n = u32::from_le_bytes([rh[0], rh[1], rh[2], rh[3]]);
            let crc = u32::from_le_bytes([rh[4], rh[5], rh[6], rh[7]]);
            if n > MAX_RECORD {
                return Err(corrupt(
                    format!("length {n} is not a record's (cannot resynchronize)"),
                    *at,
                ));
            }
            let end = *at + RECORD_HEADER_LEN + u64::from(n);
            if end > len {
                // Still being written, or cut off: wait at the end of the last file.
                let path = path.clone();
                let offset = *at;
                if files(&self.dir)?.last() != Some(&path) {
                    return Err(CaptureError::Corrupt {
                        path,
                        offset,
                        reason: format!("length {n} runs past the end of the file"),
                    });
                }
                return Ok(ReadOutcome::CaughtUp);
            }
            let mut payload = vec![0u8; n as usize];
            f.read_exact(&mut payload)
                .map_err(|e| CaptureError::io(path, e))?;
            let offset = *at;
            *at = end;
            let decoded = if crc32fast::hash(&payload) != crc {
                Err("CRC mismatch".to_owned())
            } else {
                record::decode(Bytes::from(payload))
            };
            return match decoded {
                Ok(event) => Ok(ReadOutcome::Event(Box::new(event))),
                Err(reason) if self.skip_corrupt => {
                    Ok(ReadOutcome::Skipped(corrupt(reason, offset)))
                }
                Err(reason) => Err(corrupt(reason, offset)),
            };
        }
    }
}
