//! Why the replica stopped. Errors that need an operator's action are fatal; the
//! others (a lost link, a busy master) are retried with backoff.

use crate::event::BinlogOffset;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("source: {0}")]
    Config(String),
    #[error("cannot reach the Pika master at {addr}: {error}")]
    Unreachable { addr: String, error: String },
    #[error("the master {addr} refused our password ({reply}); set `password` to its requirepass")]
    Auth { addr: String, reply: String },
    #[error("the master {addr} is itself a replica ({role}); point `master` at the top of the replication chain")]
    MasterIsReplica { addr: String, role: String },
    #[error("the master {addr} {found}; this tool follows masters of Pika 3.2 to 4.0")]
    UnsupportedVersion { addr: String, found: String },
    #[error("the master {addr} runs in sharding mode; only classic mode (instance-mode classic) is supported")]
    Sharding { addr: String },
    #[error("the master {addr} has no database {db} (it has {has}): fix the source's `dbs`")]
    NoSuchDatabase { addr: String, db: u32, has: String },
    #[error(
        "the master can no longer serve db{db}'s binlog position {at} (its binlog was purged). A full \
         sync was already loaded into the sinks and a second one would write over them with \
         dirty data, so it was refused. Raise expire-logs-nums on the master, empty the \
         target and {work_dir} and start again; or set `resync: flush` in the source to take \
         a new full sync into emptied target databases (`resync: allow`: over the existing \
         data, where keys the master deleted meanwhile stay)"
    )]
    Purged {
        db: u32,
        at: BinlogOffset,
        work_dir: String,
    },
    #[error("the master refused TrySync of db{db} at {at}: {reason}")]
    TrySync {
        db: u32,
        at: BinlogOffset,
        reason: String,
    },
    #[error("the binlog item of db{db} the master sent ending at {at} does not decode: {error}")]
    BadItem {
        db: u32,
        at: BinlogOffset,
        error: String,
    },
    #[error(
        "{reached} leads to another master than {master}: {how}. Check `replication_port` and \
         `rsync_port`: they must reach the same master as `master`"
    )]
    OtherMaster {
        /// What we reached (the replication port, a dump).
        reached: String,
        master: String,
        how: String,
    },
    #[error("the dump's info file {path}: {reason}")]
    DumpInfo { path: String, reason: String },
    #[error("rsync daemon: {0}")]
    Rsync(String),
    #[error("no new byte of the dump arrived for {secs} s, {times} full syncs in a row: {check}")]
    TransferStalled {
        secs: u64,
        times: u32,
        /// What to check, which depends on who moves the dump (the master or we).
        check: String,
    },
    #[error(
        "the disk under {dir} is full ({cause}): db{db}'s dump stopped after {received} bytes. \
         {needed}; the filesystem holds {room}. Make room there or point `work_dir` at a bigger \
         disk, then start again (try {tries} of {most})"
    )]
    DiskFull {
        dir: String,
        db: u32,
        cause: String,
        received: u64,
        /// What the dumps take, as far as the master says.
        needed: String,
        room: String,
        tries: u32,
        most: u32,
    },
    #[error("pulling the dump: {0}")]
    Pull(#[from] super::pull::PullError),
    /// An error that is retried while it lasts, then fatal (a master gone for good).
    #[error("{0}")]
    GaveUp(Box<ReplicaError>),
    #[error("{path}: {error}")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    /// Worth another try after a pause: the link broke, the master is busy, …
    #[error("{0}")]
    Transient(String),
}

impl ReplicaError {
    pub fn io(path: &std::path::Path, error: std::io::Error) -> ReplicaError {
        ReplicaError::Io {
            path: path.display().to_string(),
            error,
        }
    }

    /// Whether retrying cannot help: the operator has to act.
    pub fn is_fatal(&self) -> bool {
        match self {
            ReplicaError::Transient(_) | ReplicaError::Unreachable { .. } => false,
            ReplicaError::Pull(e) => e.is_fatal(),
            _ => true,
        }
    }

    /// The same error, no longer to be retried.
    pub fn into_fatal(self) -> ReplicaError {
        match self {
            e if e.is_fatal() => e,
            e => ReplicaError::GaveUp(Box::new(e)),
        }
    }

    /// The process exit code the CLI reports this with (sysexits where one fits).
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplicaError::Config(_) => 78,
            ReplicaError::Unreachable { .. } => 69,
            ReplicaError::Auth { .. } => 77,
            ReplicaError::MasterIsReplica { .. }
            | ReplicaError::UnsupportedVersion { .. }
            | ReplicaError::Sharding { .. } => 76,
            ReplicaError::NoSuchDatabase { .. } | ReplicaError::OtherMaster { .. } => 78,
            ReplicaError::Purged { .. } => 65,
            ReplicaError::TransferStalled { .. } => 69,
            // A full disk, in the dump's transfer or in any file of ours.
            ReplicaError::DiskFull { .. } => 73,
            ReplicaError::Io { error, .. } if super::disk::is_full(error) => 73,
            ReplicaError::GaveUp(e) => e.exit_code(),
            _ => 1,
        }
    }
}
