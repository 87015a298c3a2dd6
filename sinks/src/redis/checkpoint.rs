//! The lanes' checkpoint keys: each lane's transactions also write
//! `pika-migrate:checkpoint:<lane>` = `<token> <lanes> <last binlog position>`. The token
//! tells a lane that lost a reply whether its transaction ran; the position tells a
//! resumed stream (a restart, or a new master after a failover) what each lane already
//! holds. Formatting and parsing live here alone.

use pika_migrate_core::event::BinlogOffset;
use redis::Value;

use super::conn::{error_text, Connection};

/// Why the checkpoint keys could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the checkpoint key {key}: {error}")]
pub struct CheckpointError {
    pub key: String,
    pub error: String,
}

/// The key a lane writes in every transaction (in the same MULTI/EXEC): a token that
/// tells a resend after a lost reply whether the transaction ran, and the last binlog
/// position the lane applied, which makes a resumed stream exactly-once.
pub fn checkpoint_key(lane: usize) -> String {
    format!("pika-migrate:checkpoint:{lane}")
}

/// The value of a lane's checkpoint key: `<token> <lanes> <filenum:offset | ->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneCheckpoint {
    pub token: String,
    /// How many lanes the sink had: a key's lane depends on it.
    pub lanes: usize,
    pub applied: Option<BinlogOffset>,
}

impl std::fmt::Display for LaneCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ", self.token, self.lanes)?;
        match self.applied {
            Some(at) => write!(f, "{at}"),
            None => f.write_str("-"),
        }
    }
}

impl LaneCheckpoint {
    pub fn parse(value: &[u8]) -> Option<LaneCheckpoint> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(' ');
        let token = parts.next()?.to_owned();
        let lanes = parts.next()?.parse().ok()?;
        let applied = match parts.next()? {
            "-" => None,
            at => Some(at.parse().ok()?),
        };
        Some(LaneCheckpoint {
            token,
            lanes,
            applied,
        })
    }
}

/// Reads one checkpoint key (`None` when absent or not ours); an error is the
/// connection's or the server's.
pub async fn read_marker(
    conn: &mut Connection,
    key: &str,
) -> Result<Option<LaneCheckpoint>, String> {
    match conn.call(&[b"GET".as_slice(), key.as_bytes()]).await {
        Ok(Value::BulkString(v)) => Ok(LaneCheckpoint::parse(&v)),
        Ok(reply @ Value::ServerError(_)) => Err(error_text(&reply)),
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads the lanes' checkpoint keys: the binlog position each lane applied last. When
/// the lane count changed since, keys moved lanes, so every lane takes the lowest
/// position (which may apply a few commands twice, and is said so).
pub async fn read_checkpoints(
    conn: &mut Connection,
    lanes: usize,
) -> Result<Vec<Option<BinlogOffset>>, CheckpointError> {
    async fn read(
        conn: &mut Connection,
        lane: usize,
    ) -> Result<Option<LaneCheckpoint>, CheckpointError> {
        let key = checkpoint_key(lane);
        read_marker(conn, &key)
            .await
            .map_err(|error| CheckpointError { key, error })
    }
    let Some(first) = read(conn, 0).await? else {
        return Ok(vec![None; lanes]);
    };
    if first.lanes == lanes {
        let mut out = vec![first.applied];
        for lane in 1..lanes {
            out.push(read(conn, lane).await?.and_then(|c| c.applied));
        }
        return Ok(out);
    }
    let mut lowest = first.applied;
    for lane in 1..first.lanes {
        let applied = read(conn, lane).await?.and_then(|c| c.applied);
        lowest = lowest.min(applied);
    }
    tracing::warn!(
        before = first.lanes,
        now = lanes,
        resume_after = ?lowest,
        "senders changed since the last run: every lane resumes after the lowest lane position, so commands a faster lane had applied may apply twice"
    );
    Ok(vec![lowest; lanes])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_values_round_trip() {
        for applied in [None, Some(BinlogOffset::new(3, 1024))] {
            let c = LaneCheckpoint {
                token: "42-7:9".into(),
                lanes: 8,
                applied,
            };
            assert_eq!(LaneCheckpoint::parse(c.to_string().as_bytes()), Some(c));
        }
        assert_eq!(LaneCheckpoint::parse(b"old-marker-token"), None);
    }
}
