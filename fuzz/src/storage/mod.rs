//! blackwidow bytes: values and metas, the two custom comparators, the scan of real
//! RocksDB databases holding any rows, the fixture dump with bytes overwritten, and a
//! dump's `info` file; floyd (Pika 4.0) keys, values and comparators, and its fixture
//! dump with bytes overwritten; the stream layout both share (metas, entry ids in data
//! keys, messages).

mod comparators;
mod floyd;
mod info;
mod rows;
mod scan;
mod stream;
mod values;

pub use comparators::comparators;
pub use floyd::{floyd_bytes, floyd_comparators};
pub use info::dump_info;
pub use scan::{dump_patch, fixture_dump_files, floyd_dump_patch, floyd_fixture_dump_files, scan};
pub use stream::stream_bytes;
pub use values::values;
