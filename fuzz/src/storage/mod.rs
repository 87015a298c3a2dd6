//! blackwidow bytes: values and metas, the two custom comparators, the scan of real
//! RocksDB databases holding any rows, the fixture dump with bytes overwritten, and a
//! dump's `info` file.

mod comparators;
mod info;
mod rows;
mod scan;
mod values;

pub use comparators::comparators;
pub use info::dump_info;
pub use scan::{dump_patch, fixture_dump_files, scan};
pub use values::values;
