//! Cluster redirections met by a lane: `MOVED` (the slot has a new master: follow it
//! now, and have the sink reload the slot map before routing anything else) and `ASK`
//! (a slot being migrated: each command goes alone after `ASKING`, since the flag lasts
//! one command).

use std::sync::atomic::Ordering;

use redis::Value;

use super::conn::{command, reply_error, ConnectError, Connection};
use super::endpoint::{Connected, Endpoint, EndpointError};
use super::lane::{Lane, LaneCommand, LaneError};
use super::send::Replies;
use super::target::{at_address, show};

/// `MOVED slot host:port` or `ASK slot host:port` among `replies`: the node to go to,
/// and whether it is an ASK.
pub fn redirection(replies: &[Value]) -> Option<(String, bool)> {
    replies.iter().find_map(|r| {
        let e = reply_error(r)?;
        if e.starts_with("MOVED ") || e.starts_with("ASK ") {
            let addr = e.split(' ').nth(2)?.to_owned();
            Some((addr, e.starts_with("ASK ")))
        } else {
            None
        }
    })
}

impl Lane {
    /// Sends a transaction to the node a MOVED or ASK named, on a connection of its own.
    pub(super) async fn redirected(
        &mut self,
        commands: &[LaneCommand],
        marker: &str,
        slot: Option<u16>,
        addr: &str,
        asking: bool,
    ) -> Result<Replies, LaneError> {
        let Endpoint::Node(home_info, timeout) = &self.endpoint else {
            return Err(LaneError::GaveUp {
                seconds: 0,
                last: format!("redirected to {addr} outside a cluster"),
            });
        };
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        let info = at_address(home_info, host, port.parse().unwrap_or(6379), 0);
        tracing::info!(lane = self.id, node = %addr, asking, "cluster redirection");
        if let Some(cluster) = &self.settings.cluster {
            if !asking {
                cluster.moved.store(true, Ordering::SeqCst);
            }
        }
        let conn = Connection::open(&info, *timeout)
            .await
            .map_err(|e: ConnectError| LaneError::from(EndpointError::from(e)))?;
        let home = self.conn.replace(Connected {
            conn,
            server: show(&info),
            switches: 0,
            replicas: Default::default(),
        });
        let result = if asking {
            self.ask_each(commands).await.map(Replies::Known)
        } else {
            self.send(commands, marker, slot).await
        };
        self.conn = home;
        result
    }

    async fn ask_each(&mut self, commands: &[LaneCommand]) -> Result<Vec<Value>, LaneError> {
        let mut replies = Vec::with_capacity(commands.len());
        for c in commands {
            let Some(connected) = self.conn.as_mut() else {
                return Err(LaneError::GaveUp {
                    seconds: 0,
                    last: "no connection".into(),
                });
            };
            let mut pipe = redis::Pipeline::with_capacity(2);
            pipe.add_command(redis::cmd("ASKING"));
            pipe.add_command(command(&c.argv.list()));
            let mut got =
                connected
                    .conn
                    .pipeline(&pipe, 2)
                    .await
                    .map_err(|e| LaneError::GaveUp {
                        seconds: 0,
                        last: e.to_string(),
                    })?;
            replies.push(got.pop().unwrap_or(Value::Nil));
        }
        Ok(replies)
    }
}
