//! The binlog `manifest`: where the writer is (file number, end of valid data, item
//! counter, term). It is the only authority on how much of the active file is data:
//! the active file is pre-allocated with zeros far beyond it.

use std::path::Path;

use bytes::Buf;

use super::BinlogError;

/// The meaningful head of a manifest (the file itself is 64 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// Number of the file being written (`write2file<filenum>`).
    pub filenum: u32,
    /// End of valid data in that file.
    pub offset: u64,
    /// Items written so far.
    pub logic_id: u64,
    /// 3.3+ term (opaque); 0 when the manifest is a 3.2 one.
    pub term: u32,
}

/// Bytes a 3.2 manifest uses; 3.3+ adds a 4-byte term.
const MIN_LEN: usize = 20;

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest, BinlogError> {
        let bytes = std::fs::read(path).map_err(|source| BinlogError::Io {
            path: path.to_owned(),
            source,
        })?;
        Manifest::decode(&bytes).map_err(|reason| BinlogError::Manifest {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() < MIN_LEN {
            return Err(format!(
                "{} bytes, a manifest has at least {MIN_LEN}",
                bytes.len()
            ));
        }
        let mut b = bytes;
        let filenum = b.get_u32_le();
        let offset = b.get_u64_le();
        let logic_id = b.get_u64_le();
        let term = if b.len() >= 4 { b.get_u32_le() } else { 0 };
        Ok(Manifest {
            filenum,
            offset,
            logic_id,
            term,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_rejects_short() {
        let mut bytes = vec![0u8; 64];
        bytes[0] = 1;
        bytes[4..12].copy_from_slice(&542923u64.to_le_bytes());
        bytes[12..20].copy_from_slice(&1430u64.to_le_bytes());
        bytes[20..24].copy_from_slice(&9u32.to_le_bytes());
        let m = Manifest::decode(&bytes).unwrap();
        assert_eq!(
            (m.filenum, m.offset, m.logic_id, m.term),
            (1, 542923, 1430, 9)
        );
        assert!(Manifest::decode(&bytes[..10]).is_err());
    }
}
