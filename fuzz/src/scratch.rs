//! A scratch directory per thread for the targets that read files (binlog, capture,
//! dumps): made once, emptied before each run.

use std::path::{Path, PathBuf};

thread_local! {
    static ROOT: tempfile::TempDir = {
        let builder = tempfile::Builder::new().prefix("pika-migrate-fuzz").clone();
        // In memory where there is a tmpfs: RocksDB syncs every file it writes.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm).or_else(|_| builder.tempdir())
        } else {
            builder.tempdir()
        };
        dir.expect("a temporary directory for the fuzz targets")
    };
}

/// Runs `f` with an empty directory of this thread's own.
pub fn with_empty_dir<R>(f: impl FnOnce(&Path) -> R) -> R {
    let dir: PathBuf = ROOT.with(|root| root.path().join("run"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("emptying the scratch directory");
    }
    std::fs::create_dir(&dir).expect("creating the scratch directory");
    f(&dir)
}

/// Writes `bytes` to `path`; the targets' own files must be writable.
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
