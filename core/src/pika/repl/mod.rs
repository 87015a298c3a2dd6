//! Pika 3.2–3.4 replication protocol: the protobuf messages (`proto`), their framing on
//! the wire (`frame`), and the requests a replica sends (`requests`). The replica
//! source that drives them is built on these.

pub mod frame;
pub mod proto;
pub mod requests;
