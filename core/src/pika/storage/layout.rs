//! Finds the databases in a path an operator gives: a dump as BGSAVE/dbsync writes it
//! (`dump/<date>/db0/…` with an `info` file), a single `db0/`, a stopped server's
//! `db/` directory, or a database directory itself. What a database directory holds
//! tells its format: the five type directories of blackwidow (Pika 3.2–3.5), or the
//! numbered instance directories of floyd (Pika 4.0), each a RocksDB.

use std::path::{Path, PathBuf};

use super::StorageError;
use crate::event::BinlogOffset;

/// The five blackwidow databases of one Pika database, in a fixed order.
pub const TYPE_DIRS: [&str; 5] = ["strings", "hashes", "lists", "sets", "zsets"];

/// One Pika database found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbDir {
    /// Database index (`db<N>`), 0 when the directory has no such name.
    pub index: u32,
    pub path: PathBuf,
    pub format: StorageFormat,
}

/// How a database directory is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageFormat {
    /// `strings/ hashes/ lists/ sets/ zsets/` (Pika 3.2–3.5).
    Blackwidow,
    /// `0/ 1/ …`, one RocksDB per instance (Pika 4.0), in instance order.
    Floyd { instances: Vec<PathBuf> },
}

impl StorageFormat {
    pub fn name(&self) -> &'static str {
        match self {
            StorageFormat::Blackwidow => "blackwidow (Pika 3.2-3.5)",
            StorageFormat::Floyd { .. } => "floyd (Pika 4.0)",
        }
    }
}

/// What a dump's `info` file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpInfo {
    pub master_ip: String,
    pub master_port: u16,
    /// The binlog position the dump is consistent with.
    pub position: BinlogOffset,
}

fn layout_error(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Layout {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn db_index(name: &str) -> Option<u32> {
    name.strip_prefix("db")?.parse().ok()
}

fn has_type_dirs(dir: &Path) -> bool {
    TYPE_DIRS.iter().any(|t| dir.join(t).is_dir())
}

/// floyd's instance directories under `dir`: numbered directories holding a RocksDB
/// (`CURRENT`), in instance order. Empty when there are none.
fn instance_dirs(dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut found: Vec<(u32, PathBuf)> = subdirs(dir)?
        .into_iter()
        .filter(|(_, p)| p.join("CURRENT").is_file())
        .filter_map(|(name, p)| {
            let digits = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| name.parse().ok().map(|n| (n, p))).flatten()
        })
        .collect();
    found.sort();
    // Pika opens `0 … db-instance-num - 1`; a gap means a directory went missing.
    if let Some(gap) = (found.iter().enumerate()).find(|(i, (n, _))| *i as u32 != *n) {
        return Err(layout_error(
            dir,
            format!(
                "instance directory {} is missing (found {} after it)",
                gap.0,
                (gap.1).0
            ),
        ));
    }
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The database in `dir` when `dir` is one: blackwidow or floyd by what it holds.
fn database_in(dir: &Path, index: u32) -> Result<Option<DbDir>, StorageError> {
    if has_type_dirs(dir) {
        check_complete(dir)?;
        return Ok(Some(DbDir {
            index,
            path: dir.to_owned(),
            format: StorageFormat::Blackwidow,
        }));
    }
    let instances = instance_dirs(dir)?;
    if instances.is_empty() {
        return Ok(None);
    }
    Ok(Some(DbDir {
        index,
        path: dir.to_owned(),
        format: StorageFormat::Floyd { instances },
    }))
}

fn check_complete(db: &Path) -> Result<(), StorageError> {
    let missing: Vec<_> = TYPE_DIRS.iter().filter(|t| !db.join(t).is_dir()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(layout_error(
        db,
        format!(
            "missing {:?}: a Pika database directory holds strings, hashes, lists, sets and zsets",
            missing
        ),
    ))
}

fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|source| StorageError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StorageError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if entry.path().is_dir() {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Lists the databases under `path`, lowest index first.
pub fn find_databases(path: &Path) -> Result<Vec<DbDir>, StorageError> {
    if !path.exists() {
        return Err(layout_error(path, "no such directory"));
    }
    if !path.is_dir() {
        return Err(layout_error(path, "not a directory"));
    }
    let own_index = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(db_index)
        .unwrap_or(0);
    if let Some(db) = database_in(path, own_index)? {
        return Ok(vec![db]);
    }
    let children = subdirs(path)?;
    let mut dbs = Vec::new();
    for (name, p) in &children {
        if let Some(index) = db_index(name) {
            dbs.extend(database_in(p, index)?);
        }
    }
    if !dbs.is_empty() {
        dbs.sort_by_key(|db| db.index);
        return Ok(dbs);
    }
    // A dump root holding dated dumps: take it only when the choice is unambiguous.
    let dumps: Vec<&(String, PathBuf)> = children
        .iter()
        .filter(|(_, p)| subdirs(p).is_ok_and(|s| s.iter().any(|(n, _)| db_index(n).is_some())))
        .collect();
    match dumps.as_slice() {
        [(_, only)] => find_databases(only),
        [] => Err(layout_error(
            path,
            "not a Pika dump or db directory: expected db0/ (or strings/ hashes/ lists/ sets/ zsets/) in it",
        )),
        several => Err(layout_error(
            path,
            format!(
                "holds several dumps ({}); name the one to read",
                several.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// Reads `<db>/info` if present: `<secs>s`, master ip, master port, filenum, offset
/// (and term, index when consensus is on).
pub fn read_dump_info(db: &Path) -> Result<Option<DumpInfo>, StorageError> {
    let path = db.join("info");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StorageError::Io { path, source }),
    };
    parse_dump_info(&text)
        .map(Some)
        .map_err(|(line, reason)| StorageError::Info { path, line, reason })
}

/// Parses the text of an `info` file; errors carry the 1-based line number.
pub fn parse_dump_info(text: &str) -> Result<DumpInfo, (usize, String)> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    if !(5..=8).contains(&lines.len()) {
        // The place: the first line missing, or the first one too many.
        let line = lines.len().min(8) + 1;
        return Err((line, format!("{} lines, expected 5 to 8", lines.len())));
    }
    fn num<T: std::str::FromStr>(
        lines: &[&str],
        i: usize,
        what: &str,
    ) -> Result<T, (usize, String)> {
        lines[i]
            .parse()
            .map_err(|_| (i + 1, format!("{what} {:?} is not a number", lines[i])))
    }
    Ok(DumpInfo {
        master_ip: lines[1].to_owned(),
        master_port: num(&lines, 2, "master port")?,
        position: BinlogOffset::new(
            num(&lines, 3, "binlog file number")?,
            num(&lines, 4, "binlog offset")?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_files() {
        let info = parse_dump_info("0s\n127.0.0.1\n9221\n1\n507340\n").unwrap();
        assert_eq!(info.position, BinlogOffset::new(1, 507340));
        assert_eq!(
            (info.master_ip.as_str(), info.master_port),
            ("127.0.0.1", 9221)
        );
        assert_eq!(parse_dump_info("0s\n1\n2\nx\n5\n").unwrap_err().0, 4);
        assert_eq!(parse_dump_info("0s\n").unwrap_err().0, 2);
        assert_eq!(parse_dump_info("").unwrap_err().0, 1);
        assert_eq!(parse_dump_info(&"1\n".repeat(12)).unwrap_err().0, 9);
    }

    #[test]
    fn finds_databases_in_every_layout_and_rejects_others() {
        let root = tempfile::tempdir().unwrap();
        let db0 = root.path().join("20261124/db0");
        for t in TYPE_DIRS {
            std::fs::create_dir_all(db0.join(t)).unwrap();
        }
        let expect = vec![DbDir {
            index: 0,
            path: db0.clone(),
            format: StorageFormat::Blackwidow,
        }];
        assert_eq!(find_databases(root.path()).unwrap(), expect);
        assert_eq!(
            find_databases(&root.path().join("20261124")).unwrap(),
            expect
        );
        assert_eq!(find_databases(&db0).unwrap(), expect);
        std::fs::create_dir_all(root.path().join("20261125/db0/strings")).unwrap();
        let both = find_databases(root.path()).unwrap_err().to_string();
        assert!(
            both.contains("several dumps (20261124, 20261125)"),
            "{both}"
        );
        let partial = find_databases(&root.path().join("20261125"))
            .unwrap_err()
            .to_string();
        assert!(partial.contains("missing"), "{partial}");
        let foreign = tempfile::tempdir().unwrap();
        assert!(find_databases(foreign.path())
            .unwrap_err()
            .to_string()
            .contains("not a Pika dump"));
        assert!(find_databases(&foreign.path().join("nope"))
            .unwrap_err()
            .to_string()
            .contains("no such"));

        // floyd: numbered instance directories, each holding a RocksDB.
        let floyd = root.path().join("floyd/db1");
        for i in ["0", "1"] {
            std::fs::create_dir_all(floyd.join(i)).unwrap();
            std::fs::write(floyd.join(i).join("CURRENT"), "MANIFEST-000001\n").unwrap();
        }
        let found = find_databases(&root.path().join("floyd")).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].index, 1);
        assert_eq!(
            found[0].format,
            StorageFormat::Floyd {
                instances: vec![floyd.join("0"), floyd.join("1")]
            }
        );
        assert_eq!(find_databases(&floyd).unwrap(), found);
        std::fs::remove_file(floyd.join("0/CURRENT")).unwrap();
        let gap = find_databases(&floyd).unwrap_err().to_string();
        assert!(gap.contains("instance directory 0 is missing"), "{gap}");
        assert!(find_databases(&foreign.path().join("nope"))
            .unwrap_err()
            .to_string()
            .contains("no such"));
    }
}
