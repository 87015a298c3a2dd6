//! pika-migrate core: change events, Pika snapshot and binlog decoding, the pipeline
//! that carries events from a source to sinks, and its configuration.
//!
//! `pika` knows Pika's bytes; `event`, `pipeline`, `sink` and `config` know nothing of
//! them nor of any particular sink.

pub mod capture;
pub mod config;
pub mod display;
pub mod event;
pub mod filter;
pub mod fleet;
pub mod metrics;
pub mod pika;
pub mod pipeline;
pub mod priority;
pub mod profile;
pub mod replay;
pub mod resp;
pub mod sink;
pub mod source;
pub mod status;
