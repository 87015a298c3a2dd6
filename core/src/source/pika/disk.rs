//! A full disk under `work_dir`: a dump that does not fit is told apart from other I/O
//! errors (trying again cannot help until someone makes room), and described with what
//! an operator needs to act: the directory, how much the dump takes, how much room the
//! filesystem has.

use std::path::Path;

/// Whether `e` says the filesystem (or the user's quota on it) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// A filesystem's size and the bytes an unprivileged writer may still take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub total: u64,
    pub free: u64,
}

/// The room on the filesystem holding `path` (or its nearest existing ancestor).
pub fn room(path: &Path) -> Option<Room> {
    use std::os::unix::ffi::OsStrExt;
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs reads a NUL-terminated path and fills the struct we own.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        stat
    };
    // Each field is a u64 on 64-bit Linux and narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let (block, blocks, available) = (
        u64::from(stat.f_frsize),
        u64::from(stat.f_blocks),
        u64::from(stat.f_bavail),
    );
    Some(Room {
        total: blocks.saturating_mul(block),
        free: available.saturating_mul(block),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_full_disk_from_other_errors() {
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_full(&std::io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_full(&std::io::ErrorKind::NotFound.into()));
    }

    #[test]
    fn measures_the_filesystem_of_a_path_not_made_yet() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(&dir.path().join("not/yet")).unwrap();
        assert!(room.total > 0 && room.free <= room.total, "{room:?}");
    }
}
