//! The lanes' checkpoint keys: each lane's transactions also write
//! `pika-migrate:checkpoint:<lane>` = `<token> <lanes> <applied>`, `<applied>` being
//! the last binlog position the lane applied of each Pika DB. The token tells a lane
//! that lost a reply whether its transaction ran; the positions tell a resumed stream
//! (a restart, or a new master after a failover) what each lane already holds.
//! Formatting and parsing live here alone.

use std::collections::BTreeMap;

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
/// positions the lane applied, which make a resumed stream exactly-once. It lives in
/// the url's database whatever database the transaction's commands go to.
pub fn checkpoint_key(lane: usize) -> String {
    format!("pika-migrate:checkpoint:{lane}")
}

/// Per Pika DB, the last binlog position a lane applied. Each DB has its own binlog,
/// so positions are only ever compared within one DB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied(BTreeMap<u32, BinlogOffset>);

impl Applied {
    pub fn of(db: u32, at: BinlogOffset) -> Applied {
        Applied(BTreeMap::from([(db, at)]))
    }

    pub fn get(&self, db: u32) -> Option<BinlogOffset> {
        self.0.get(&db).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records that DB `db` is applied up to `at` (never moving back).
    pub fn advance(&mut self, db: u32, at: BinlogOffset) {
        let slot = self.0.entry(db).or_insert(at);
        *slot = (*slot).max(at);
    }

    /// Whether the binlog item of DB `db` ending at `at` is applied.
    pub fn covers(&self, db: u32, at: BinlogOffset) -> bool {
        self.get(db).is_some_and(|applied| at <= applied)
    }

    /// Whether `self` lacks something `other` holds: a DB of `other` that is missing
    /// here or behind.
    pub fn is_behind(&self, other: &Applied) -> bool {
        other.0.iter().any(|(db, at)| !self.covers(*db, *at))
    }

    /// What every one of `lanes` applied: per DB the lowest position, and a DB only
    /// when all hold it.
    pub fn lowest<'a>(mut lanes: impl Iterator<Item = &'a Applied>) -> Applied {
        let Some(first) = lanes.next() else {
            return Applied::default();
        };
        let mut low = first.clone();
        for lane in lanes {
            low.0.retain(|db, at| match lane.get(*db) {
                Some(other) => {
                    *at = (*at).min(other);
                    true
                }
                None => false,
            });
        }
        low
    }
}

/// `-` when nothing is applied; `filenum:offset` when only DB 0 is (the form single-DB
/// runs have always written); else `db0=filenum:offset,db3=filenum:offset`.
impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.first_key_value() {
            None => f.write_str("-"),
            Some((0, at)) if self.0.len() == 1 => write!(f, "{at}"),
            Some(_) => {
                for (i, (db, at)) in self.0.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}db{db}={at}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for Applied {
    type Err = ();

    fn from_str(text: &str) -> Result<Applied, ()> {
        if text == "-" {
            return Ok(Applied::default());
        }
        if !text.contains('=') {
            return Ok(Applied::of(0, text.parse().map_err(|_| ())?));
        }
        let mut applied = Applied::default();
        for part in text.split(',') {
            let (db, at) = part.split_once('=').ok_or(())?;
            let db = db.strip_prefix("db").ok_or(())?.parse().map_err(|_| ())?;
            applied.0.insert(db, at.parse().map_err(|_| ())?);
        }
        Ok(applied)
    }
}

/// The value of a lane's checkpoint key: `<token> <lanes> <applied>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneCheckpoint {
    pub token: String,
    /// How many lanes the sink had: a key's lane depends on it.
    pub lanes: usize,
    pub applied: Applied,
}

impl std::fmt::Display for LaneCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.token, self.lanes, self.applied)
    }
}

impl LaneCheckpoint {
    pub fn parse(value: &[u8]) -> Option<LaneCheckpoint> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(' ');
        let token = parts.next()?.to_owned();
        let lanes = parts.next()?.parse().ok()?;
        let applied = parts.next()?.parse().ok()?;
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

/// Reads the lanes' checkpoint keys: the binlog positions each lane applied last. When
/// the lane count changed since, keys moved lanes, so every lane takes the lowest
/// positions (which may apply a few commands twice, and is said so).
pub async fn read_checkpoints(
    conn: &mut Connection,
    lanes: usize,
) -> Result<Vec<Applied>, CheckpointError> {
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
        return Ok(vec![Applied::default(); lanes]);
    };
    let mut out = vec![first.applied];
    for lane in 1..first.lanes {
        out.push(
            read(conn, lane)
                .await?
                .map(|c| c.applied)
                .unwrap_or_default(),
        );
    }
    if first.lanes == lanes {
        return Ok(out);
    }
    let lowest = Applied::lowest(out.iter());
    tracing::warn!(
        before = first.lanes,
        now = lanes,
        resume_after = %lowest,
        "senders changed since the last run: every lane resumes after the lowest lane position, so commands a faster lane had applied may apply twice"
    );
    Ok(vec![lowest; lanes])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_values_round_trip() {
        let mut two_dbs = Applied::of(2, BinlogOffset::new(1, 90));
        two_dbs.advance(0, BinlogOffset::new(3, 1024));
        for applied in [
            Applied::default(),
            Applied::of(0, BinlogOffset::new(3, 1024)),
            Applied::of(1, BinlogOffset::new(3, 1024)),
            two_dbs,
        ] {
            let c = LaneCheckpoint {
                token: "42-7:9".into(),
                lanes: 8,
                applied,
            };
            assert_eq!(LaneCheckpoint::parse(c.to_string().as_bytes()), Some(c));
        }
        assert_eq!(LaneCheckpoint::parse(b"old-marker-token"), None);
    }

    #[test]
    fn single_db_values_keep_their_form_and_read_as_db0() {
        let old = LaneCheckpoint::parse(b"123-456:7 4 2:5000").unwrap();
        assert_eq!(old.applied, Applied::of(0, BinlogOffset::new(2, 5000)));
        assert_eq!(old.to_string(), "123-456:7 4 2:5000");
        let mut both = old.applied.clone();
        both.advance(1, BinlogOffset::new(1, 80));
        assert_eq!(both.to_string(), "db0=2:5000,db1=1:80");
        assert!(LaneCheckpoint::parse(b"t 4 db0=2:5000,dbx=1:8").is_none());
    }

    #[test]
    fn positions_compare_within_one_db_only() {
        let mut applied = Applied::of(0, BinlogOffset::new(1, 10_000));
        assert!(applied.covers(0, BinlogOffset::new(1, 500)));
        assert!(!applied.covers(1, BinlogOffset::new(1, 500)));
        applied.advance(1, BinlogOffset::new(1, 500));
        applied.advance(1, BinlogOffset::new(1, 400));
        assert_eq!(applied.get(1), Some(BinlogOffset::new(1, 500)));
        let db0_only = Applied::of(0, BinlogOffset::new(1, 10_000));
        assert!(db0_only.is_behind(&applied));
        assert!(!applied.is_behind(&db0_only));
        let low = Applied::lowest([applied.clone(), db0_only.clone()].iter());
        assert_eq!(low, db0_only);
    }
}
