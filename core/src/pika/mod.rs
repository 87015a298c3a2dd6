//! Everything that knows Pika's bytes: binlog files and items, blackwidow storage, the
//! dump layout, and how Pika's binlog forms map to Redis commands.

pub mod binlog;
pub mod commands;
pub mod normalize;
pub mod repl;
pub mod storage;
