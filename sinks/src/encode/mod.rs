//! Encodings shared by several sinks: events as Redis commands (file `resp`, redis)
//! and events as the documented JSON envelope (file `jsonl`, kafka `json`).

pub mod commands;
pub mod envelope;
pub mod hyperloglog;
