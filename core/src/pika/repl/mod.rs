//! Pika 3.2–3.5 replication protocol: the protobuf messages (`proto`), their framing on
//! the wire (`frame`), the requests a replica sends (`requests`), and 3.5's dump-pull
//! service (`rsync`). The replica source that drives them is built on these.

pub mod frame;
pub mod proto;
pub mod requests;
pub mod rsync;
