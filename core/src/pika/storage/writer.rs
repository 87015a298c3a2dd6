//! Writes a Pika database in blackwidow's layout: five RocksDB directories with the
//! same column families, comparators and encodings Pika 3.x uses. It exists for
//! benchmarks and tests that need more data than the fixtures hold (`pika-migrate bench
//! generate`); the reader is checked against a real Pika's bytes, and this writer against
//! the reader.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use super::comparator::{
    compare_lists_data_key, compare_zsets_score_key, LISTS_DATA_KEY, ZSETS_SCORE_KEY,
};
use super::format::data_key_prefix;
use super::layout::TYPE_DIRS;
use super::StorageError;
use crate::event::BinlogOffset;

/// Keys per RocksDB write batch.
const BATCH_KEYS: usize = 1000;
/// Initial list indexes of an empty blackwidow list.
const LIST_LEFT: u64 = (1 << 63) - 1;

pub struct DumpWriter {
    dir: PathBuf,
    dbs: Vec<DB>,
    batches: Vec<WriteBatch>,
    pending: usize,
    version: u32,
}

fn open_for_write(path: &Path, dir: &str) -> Result<DB, StorageError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let plain = || Options::default();
    let cfs = match dir {
        "strings" => vec![ColumnFamilyDescriptor::new("default", plain())],
        "hashes" => vec![
            ColumnFamilyDescriptor::new("default", plain()),
            ColumnFamilyDescriptor::new("data_cf", plain()),
        ],
        "sets" => vec![
            ColumnFamilyDescriptor::new("default", plain()),
            ColumnFamilyDescriptor::new("member_cf", plain()),
        ],
        "lists" => {
            let mut data = plain();
            data.set_comparator(LISTS_DATA_KEY, Box::new(compare_lists_data_key));
            vec![
                ColumnFamilyDescriptor::new("default", plain()),
                ColumnFamilyDescriptor::new("data_cf", data),
            ]
        }
        _ => {
            let mut score = plain();
            score.set_comparator(ZSETS_SCORE_KEY, Box::new(compare_zsets_score_key));
            vec![
                ColumnFamilyDescriptor::new("default", plain()),
                ColumnFamilyDescriptor::new("data_cf", plain()),
                ColumnFamilyDescriptor::new("score_cf", score),
            ]
        }
    };
    let path = path.join(dir);
    DB::open_cf_descriptors(&opts, &path, cfs).map_err(|source| StorageError::Open { path, source })
}

fn meta(count: i32, version: u32, expire_at: i32) -> Vec<u8> {
    let mut v = count.to_le_bytes().to_vec();
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&expire_at.to_le_bytes());
    v
}

impl DumpWriter {
    /// Creates `dir` (a `db0/`-style directory) with its five type databases.
    pub fn create(dir: &Path) -> Result<DumpWriter, StorageError> {
        let dbs = TYPE_DIRS
            .iter()
            .map(|t| open_for_write(dir, t))
            .collect::<Result<Vec<_>, _>>()?;
        let version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(DumpWriter {
            dir: dir.to_owned(),
            batches: (0..dbs.len()).map(|_| WriteBatch::default()).collect(),
            dbs,
            pending: 0,
            version,
        })
    }

    /// Index of a type directory in [`TYPE_DIRS`] order.
    fn slot(dir: &str) -> usize {
        TYPE_DIRS.iter().position(|t| *t == dir).unwrap_or(0)
    }

    fn put(&mut self, slot: usize, cf: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let handle = self.dbs[slot]
            .cf_handle(cf)
            .ok_or_else(|| StorageError::Layout {
                path: self.dir.join(TYPE_DIRS[slot]),
                reason: format!("no column family {cf}"),
            })?;
        self.batches[slot].put_cf(handle, key, value);
        Ok(())
    }

    fn key_done(&mut self) -> Result<(), StorageError> {
        self.pending += 1;
        if self.pending >= BATCH_KEYS {
            self.flush_batches()?;
        }
        Ok(())
    }

    fn flush_batches(&mut self) -> Result<(), StorageError> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        for (i, batch) in self.batches.iter_mut().enumerate() {
            let batch = std::mem::take(batch);
            self.dbs[i]
                .write_opt(batch, &opts)
                .map_err(|source| StorageError::Read {
                    path: self.dir.join(TYPE_DIRS[i]),
                    source,
                })?;
        }
        self.pending = 0;
        Ok(())
    }

    /// Writes the meta of a hash, set or zset; returns its slot and data-key prefix.
    fn begin_collection(
        &mut self,
        dir: &str,
        key: &[u8],
        count: usize,
        expire_at: i32,
    ) -> Result<(usize, Vec<u8>), StorageError> {
        let slot = Self::slot(dir);
        self.put(
            slot,
            "default",
            key,
            &meta(count as i32, self.version, expire_at),
        )?;
        Ok((slot, data_key_prefix(key, self.version)))
    }

    /// `expire_at`: absolute unix seconds, 0 for none.
    pub fn string(&mut self, key: &[u8], value: &[u8], expire_at: i32) -> Result<(), StorageError> {
        let mut v = value.to_vec();
        v.extend_from_slice(&expire_at.to_le_bytes());
        self.put(Self::slot("strings"), "default", key, &v)?;
        self.key_done()
    }

    pub fn hash(
        &mut self,
        key: &[u8],
        fields: &[(&[u8], &[u8])],
        expire_at: i32,
    ) -> Result<(), StorageError> {
        let (slot, prefix) = self.begin_collection("hashes", key, fields.len(), expire_at)?;
        for (field, value) in fields {
            self.put(slot, "data_cf", &[prefix.as_slice(), field].concat(), value)?;
        }
        self.key_done()
    }

    pub fn set(
        &mut self,
        key: &[u8],
        members: &[&[u8]],
        expire_at: i32,
    ) -> Result<(), StorageError> {
        let (slot, prefix) = self.begin_collection("sets", key, members.len(), expire_at)?;
        for member in members {
            self.put(
                slot,
                "member_cf",
                &[prefix.as_slice(), member].concat(),
                b"",
            )?;
        }
        self.key_done()
    }

    pub fn zset(
        &mut self,
        key: &[u8],
        members: &[(&[u8], f64)],
        expire_at: i32,
    ) -> Result<(), StorageError> {
        let (slot, prefix) = self.begin_collection("zsets", key, members.len(), expire_at)?;
        for (member, score) in members {
            let bits = score.to_le_bytes();
            self.put(
                slot,
                "data_cf",
                &[prefix.as_slice(), member].concat(),
                &bits,
            )?;
            self.put(
                slot,
                "score_cf",
                &[prefix.as_slice(), &bits, member].concat(),
                b"",
            )?;
        }
        self.key_done()
    }

    pub fn list(
        &mut self,
        key: &[u8],
        items: &[&[u8]],
        expire_at: i32,
    ) -> Result<(), StorageError> {
        let slot = Self::slot("lists");
        let mut m = (items.len() as u64).to_le_bytes().to_vec();
        m.extend_from_slice(&self.version.to_le_bytes());
        m.extend_from_slice(&expire_at.to_le_bytes());
        m.extend_from_slice(&LIST_LEFT.to_le_bytes());
        m.extend_from_slice(&(LIST_LEFT + 1 + items.len() as u64).to_le_bytes());
        self.put(slot, "default", key, &m)?;
        let prefix = data_key_prefix(key, self.version);
        for (i, item) in items.iter().enumerate() {
            let index = (LIST_LEFT + 1 + i as u64).to_le_bytes();
            self.put(slot, "data_cf", &[prefix.as_slice(), &index].concat(), item)?;
        }
        self.key_done()
    }

    /// Writes one row exactly as given into column family `cf` of type directory `dir`
    /// (`strings`, `hashes`, …): for tests that need data no Pika writes, damaged metas,
    /// stray rows, keys no comparator expects.
    pub fn raw(
        &mut self,
        dir: &str,
        cf: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError> {
        let slot =
            TYPE_DIRS
                .iter()
                .position(|t| *t == dir)
                .ok_or_else(|| StorageError::Layout {
                    path: self.dir.join(dir),
                    reason: format!("not a type directory; one of {TYPE_DIRS:?}"),
                })?;
        self.put(slot, cf, key, value)?;
        self.key_done()
    }

    /// Writes everything to disk, and the `info` file naming `position`.
    pub fn finish(mut self, position: BinlogOffset) -> Result<(), StorageError> {
        self.flush_batches()?;
        for (i, db) in self.dbs.iter().enumerate() {
            db.flush().map_err(|source| StorageError::Read {
                path: self.dir.join(TYPE_DIRS[i]),
                source,
            })?;
        }
        let info = format!(
            "0s\n127.0.0.1\n9221\n{}\n{}\n",
            position.filenum, position.offset
        );
        std::fs::write(self.dir.join("info"), info).map_err(|source| StorageError::Io {
            path: self.dir.join("info"),
            source,
        })
    }
}
