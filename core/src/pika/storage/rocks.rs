//! RocksDB opened and read the way both storage readers need: read-only, RocksDB's own
//! log kept out of the dump, iterators that do not fill the block cache.

use std::path::Path;

use rocksdb::{DBRawIterator, Options, ReadOptions, DB};

use super::StorageError;

/// Options for opening a dump's RocksDB read-only: read-only must never write into the
/// dump, so RocksDB's own log goes to `log_dir`.
pub(super) fn read_only_options(log_dir: &Path) -> Options {
    let mut opts = Options::default();
    opts.set_db_log_dir(log_dir);
    opts.set_keep_log_file_num(1);
    opts
}

/// A raw iterator over column family `cf` of `db` (at `path`, for errors).
pub(super) fn scan_iter<'d>(
    db: &'d DB,
    path: &Path,
    cf: &str,
) -> Result<DBRawIterator<'d>, StorageError> {
    let handle = db.cf_handle(cf).ok_or_else(|| StorageError::Layout {
        path: path.to_owned(),
        reason: format!("no column family {cf}"),
    })?;
    let mut opts = ReadOptions::default();
    opts.fill_cache(false);
    // No fixed readahead: its buffer grows to hold a block whole, so a big string
    // was in memory twice more (a 128 MiB one peaked at 304 MiB instead of 177).
    // RocksDB's own readahead for sequential reads scans as fast.
    Ok(db.raw_iterator_cf_opt(handle, opts))
}

/// Positions `rows` at the first row at or after `target`. The rows of consecutive keys
/// usually follow one another, so after reading one key the iterator is often already on
/// the next key's first row: then the (costly) seek is skipped. That row is the first of
/// its key because the row before it belonged to another key.
pub(super) fn seek_unless_there(rows: &mut DBRawIterator<'_>, target: &[u8], exact: bool) {
    let there = rows.key().is_some_and(|k| {
        if exact {
            k == target
        } else {
            k.starts_with(target)
        }
    });
    if !there {
        rows.seek(target);
    }
}
