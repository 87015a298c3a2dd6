//! What a lane connects to: one server (a url, a cluster master), or whichever server
//! the sentinels name master now. A connection remembers which sentinel switch it was
//! made after, so a lane notices an announced failover before it sends.

use std::sync::Arc;
use std::time::Duration;

use redis::ConnectionInfo;

use super::conn::{ConnectError, Connection};
use super::sentinel::{SentinelError, Sentinels};
use super::target::show;
use super::wait::ReplicaCount;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Sentinel(#[from] SentinelError),
}

impl EndpointError {
    pub fn is_transient(&self) -> bool {
        match self {
            EndpointError::Connect(e) => e.is_transient(),
            EndpointError::Sentinel(e) => e.is_transient(),
        }
    }

    /// The sysexits code for a failure at start: 77 refused credentials, 78 a setting
    /// that cannot work (an unknown master name, a database out of range), 69 a server
    /// or sentinel that cannot be reached.
    pub fn exit_code(&self) -> u8 {
        let connect = match self {
            EndpointError::Connect(e) | EndpointError::Sentinel(SentinelError::Master(e)) => e,
            EndpointError::Sentinel(SentinelError::UnknownMaster { .. }) => return 78,
            EndpointError::Sentinel(_) => return 69,
        };
        match connect {
            ConnectError::Auth { .. } => 77,
            ConnectError::Refused { command, .. } if *command == "SELECT" => 78,
            _ => 69,
        }
    }
}

#[derive(Clone)]
pub enum Endpoint {
    /// A node, and how long its replies may take.
    Node(ConnectionInfo, Duration),
    Sentinel(Arc<Sentinels>),
}

/// A connection and what it was made to.
pub struct Connected {
    pub conn: Connection,
    /// The server's address as shown in logs.
    pub server: String,
    /// The sentinel switches announced before it was made.
    pub switches: u64,
    /// The replicas its pipelines wait for (`wait_replicas`).
    pub replicas: ReplicaCount,
}

impl Endpoint {
    pub async fn connect(&self) -> Result<Connected, EndpointError> {
        match self {
            Endpoint::Node(info, timeout) => Ok(Connected {
                conn: Connection::open(info, *timeout).await?,
                server: show(info),
                switches: 0,
                replicas: ReplicaCount::default(),
            }),
            Endpoint::Sentinel(sentinels) => {
                let switches = sentinels.switches();
                let (conn, server) = sentinels.connect_master().await?;
                Ok(Connected {
                    conn,
                    server,
                    switches,
                    replicas: ReplicaCount::default(),
                })
            }
        }
    }

    /// Whether a switch was announced since a connection was made after `switches`.
    pub fn switched_since(&self, switches: u64) -> bool {
        match self {
            Endpoint::Node(..) => false,
            Endpoint::Sentinel(s) => s.switches() != switches,
        }
    }

    /// What it is, for a message: the node, or the sentinels and master name.
    pub fn shown(&self) -> String {
        match self {
            Endpoint::Node(info, _) => show(info),
            Endpoint::Sentinel(s) => s.shown().to_owned(),
        }
    }

    /// Whether the server behind it can change (a failover): a READONLY or MASTERDOWN
    /// reply then means "find the master again", not a refused command.
    pub fn may_move(&self) -> bool {
        matches!(self, Endpoint::Sentinel(_))
    }
}
