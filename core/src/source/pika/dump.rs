//! The receiving end of a full sync: the directory the master's rsync writes into
//! (`work_dir/dbsync/db<N>/`), and the `info` file it sends last, whose arrival means
//! the dump is complete and which names the binlog position the dump was taken at.
//!
//! Files of an earlier transfer stay: the master's rsync skips those it would send
//! unchanged and deletes the ones its dump does not have, so a transfer cut short is
//! taken up where it stopped. Only a stale `info` must go, or it would pass for the end
//! of the new transfer.

use std::path::{Path, PathBuf};

use super::error::ReplicaError;
use crate::event::BinlogOffset;

/// blackwidow's five type databases, pre-created as a real replica does.
const TYPE_DIRS: [&str; 5] = ["strings", "hashes", "lists", "sets", "zsets"];

#[derive(Debug, Clone)]
pub struct ReceiveDir {
    /// The rsync module's path.
    pub root: PathBuf,
    pub db: u32,
}

impl ReceiveDir {
    pub fn new(work_dir: &Path, db: u32) -> ReceiveDir {
        ReceiveDir {
            root: work_dir.join("dbsync"),
            db,
        }
    }

    pub fn db_dir(&self) -> PathBuf {
        self.root.join(format!("db{}", self.db))
    }

    pub fn info_path(&self) -> PathBuf {
        self.db_dir().join("info")
    }

    /// Readies the directory for a new transfer: the type directories exist (rsync
    /// creates only the last component of a path), are writable, and no `info` is left.
    /// A push still running from before (a restart cut it short) may go on into it.
    pub fn prepare(&self) -> Result<(), ReplicaError> {
        let db = self.db_dir();
        if db.exists() {
            make_writable(&db);
        }
        for t in TYPE_DIRS {
            let dir = db.join(t);
            std::fs::create_dir_all(&dir).map_err(|e| ReplicaError::io(&dir, e))?;
        }
        let info = self.info_path();
        match std::fs::remove_file(&info) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ReplicaError::io(&info, e)),
            _ => Ok(()),
        }
    }

    /// The dump's position once its `info` arrived; `None` while it has not. The dump
    /// must come from the master on port `master_port` (its own port, as its INFO says).
    pub fn arrived(
        &self,
        master_port: u16,
        master: &str,
    ) -> Result<Option<BinlogOffset>, ReplicaError> {
        let path = self.info_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ReplicaError::io(&path, e)),
        };
        let info = parse_info(&text).map_err(|reason| ReplicaError::DumpInfo {
            path: path.display().to_string(),
            reason,
        })?;
        if info.port != master_port {
            return Err(ReplicaError::OtherMaster {
                reached: format!("the dump of db{}", self.db),
                master: master.to_owned(),
                how: format!(
                    "its info ({}) is from a master on port {}, and the master {master} runs on \
                     port {master_port} (tcp_port in its INFO)",
                    path.display(),
                    info.port
                ),
            });
        }
        Ok(Some(info.at))
    }

    /// The path of `file`, named as within the rsync module (`/db0/strings/0001.sst`),
    /// when it lies in this database's directory.
    pub fn file_within(&self, file: &str) -> Option<PathBuf> {
        let relative = Path::new(file.trim_start_matches('/'));
        let plain = relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        let path = self.root.join(relative);
        let db_dir = self.db_dir();
        (plain && path.starts_with(&db_dir) && path != db_dir).then_some(path)
    }

    /// Bytes received so far, for progress while waiting.
    pub fn received_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.db_dir())
    }
}

/// A master pushes its dump files with their own modes; a read-only directory could not
/// be emptied otherwise.
fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if m.is_dir() {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

/// What a dump's `info` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpInfo {
    /// The master's own client port.
    pub port: u16,
    /// The binlog position the dump was taken at.
    pub at: BinlogOffset,
}

/// Lines: elapsed `Ns`, master ip, master port, binlog filenum, offset (then term and
/// index on a consensus master). The ip may be the master's source address rather than
/// any address we know it by, so only the port names the master.
pub fn parse_info(text: &str) -> Result<DumpInfo, String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    if lines.len() < 5 {
        return Err(format!("{} lines, expected at least 5", lines.len()));
    }
    if lines.len() > 5 {
        return Err(
            "more than 5 lines: the master runs with consensus-level > 0, which is not supported"
                .into(),
        );
    }
    let port: u16 = lines[2]
        .parse()
        .map_err(|_| format!("line 3 {:?} is not a port", lines[2]))?;
    let filenum = lines[3]
        .parse()
        .map_err(|_| format!("line 4 {:?} is not a binlog file number", lines[3]))?;
    let offset = lines[4]
        .parse()
        .map_err(|_| format!("line 5 {:?} is not a binlog offset", lines[4]))?;
    Ok(DumpInfo {
        port,
        at: BinlogOffset::new(filenum, offset),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fixture_dumps_info() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/pika-v3.3.6/dump/db0/info"),
        )
        .unwrap();
        let info = parse_info(&text).unwrap();
        assert_eq!((info.port, info.at), (9221, BinlogOffset::new(1, 507340)));
    }

    #[test]
    fn refuses_damaged_or_consensus_info() {
        assert!(parse_info("0s\n127.0.0.1\n9221\n1\n").is_err());
        assert!(parse_info("0s\n127.0.0.1\n9221\nx\n5\n")
            .unwrap_err()
            .contains("line 4"));
        assert!(parse_info("0s\n127.0.0.1\n9221\n1\n5\n3\n9\n")
            .unwrap_err()
            .contains("consensus"));
    }

    #[test]
    fn a_file_named_by_the_daemon_is_found_within_the_database_only() {
        let dir = ReceiveDir::new(Path::new("/w"), 2);
        assert_eq!(
            dir.file_within("/db2/strings/0001.sst"),
            Some(PathBuf::from("/w/dbsync/db2/strings/0001.sst"))
        );
        assert_eq!(dir.file_within("/db1/strings/0001.sst"), None);
        assert_eq!(dir.file_within("/db2/../db1/x"), None);
        assert_eq!(dir.file_within("/db2"), None);
    }

    #[test]
    fn prepare_removes_a_stale_info_and_keeps_the_files_for_rsync() {
        use std::os::unix::fs::PermissionsExt;
        let work = tempfile::tempdir().unwrap();
        let dir = ReceiveDir::new(work.path(), 0);
        dir.prepare().unwrap();
        std::fs::write(dir.info_path(), "0s\n127.0.0.1\n9221\n1\n5\n").unwrap();
        let strings = dir.db_dir().join("strings");
        std::fs::write(strings.join("000001.sst"), "x").unwrap();
        std::fs::set_permissions(&strings, std::fs::Permissions::from_mode(0o555)).unwrap();
        assert!(dir.arrived(9221, "m:1").unwrap().is_some());
        let other = dir.arrived(9222, "m:1").unwrap_err();
        assert!(matches!(other, ReplicaError::OtherMaster { .. }), "{other}");
        assert!(other.to_string().contains("port 9221"), "{other}");
        assert_eq!(other.exit_code(), 78);
        dir.prepare().unwrap();
        assert_eq!(dir.arrived(9221, "m:1").unwrap(), None);
        assert!(strings.join("000001.sst").is_file());
        let mode = std::fs::metadata(&strings).unwrap().permissions().mode();
        assert_eq!(mode & 0o200, 0o200, "writable again");
    }
}
