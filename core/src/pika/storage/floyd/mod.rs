//! floyd storage (Pika 4.0): one RocksDB per instance directory, several instances per
//! database, seven column families, escaped user keys, u64 versions and times.

pub mod comparator;
pub mod format;
pub mod key;
pub mod scan;

pub use scan::FloydDb;
