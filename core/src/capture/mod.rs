//! Capture files: an event stream recorded append-only, to replay later.
//!
//! A capture is a directory of files `capture-NNNNNN.pmc`, rotated by size. Each file
//! starts with a 16-byte header, `PMCAPTUR`, the format version (u32 LE, 1) and 4
//! reserved bytes, then records: payload length (u32 LE), CRC-32 of the payload (u32
//! LE), payload (`record`: one event). A writer reopening a capture cuts a record left
//! half-written by a crash; a reader names a damaged record by file and offset, and can
//! skip it.

pub mod reader;
pub mod record;
pub mod writer;

use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"PMCAPTUR";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 16;
/// Record header: length and CRC.
pub const RECORD_HEADER_LEN: u64 = 8;
/// Larger lengths are damage, not data.
pub const MAX_RECORD: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a capture file ({reason})")]
    NotCapture { path: PathBuf, reason: String },
    #[error("{path} offset {offset}: damaged record: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl CaptureError {
    pub fn io(path: &Path, source: std::io::Error) -> CaptureError {
        CaptureError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// The capture files of `dir`, in order.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, CaptureError> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| CaptureError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| CaptureError::io(dir, e))?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("capture-"))
            .and_then(|n| n.strip_suffix(".pmc"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

pub fn file_name(n: u64) -> String {
    format!("capture-{n:06}.pmc")
}

pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

pub fn check_header(path: &Path, h: &[u8]) -> Result<(), CaptureError> {
    let bad = |reason: String| CaptureError::NotCapture {
        path: path.to_owned(),
        reason,
    };
    if h.len() < HEADER_LEN as usize || &h[..8] != MAGIC {
        return Err(bad("no PMCAPTUR header".into()));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(bad(format!(
            "format version {version}, this build reads {VERSION}"
        )));
    }
    Ok(())
}
