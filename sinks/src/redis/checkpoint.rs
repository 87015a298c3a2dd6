//! The lanes' checkpoint keys: each lane's transactions also write
//! `pika-migrate:checkpoint:<migration>:<lane>` = `<token> <lanes> <applied>`,
//! `<applied>` being the last binlog position the lane applied of each Pika DB. The
//! token tells a lane that lost a reply whether its transaction ran; the positions tell
//! a resumed stream (a restart, or a new master after a failover) what each lane
//! already holds. `<migration>` names the migration (the sink's `migration:`, by
//! default the source's identity), so several migrations share one Redis without
//! reading each other's positions. Formatting and parsing live here alone.

use std::collections::BTreeMap;

use pika_migrate_core::event::BinlogOffset;
use redis::Value;

use super::conn::{command, error_text, Connection};

/// Why the checkpoint keys could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the checkpoint key {key}: {error}")]
pub struct CheckpointError {
    pub key: String,
    pub error: String,
}

/// Where the checkpoint keys of one migration live. A migration's name goes into every
/// key, so it must not hold a `{` or `}` (a cluster would hash by it) nor white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    prefix: String,
}

/// The first part of every checkpoint key.
const PREFIX: &str = "pika-migrate:checkpoint:";

/// Why `name` cannot name a migration, if it cannot.
pub fn bad_migration_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the migration name is empty".into());
    }
    name.chars()
        .find(|c| *c == '{' || *c == '}' || c.is_whitespace() || c.is_control())
        .map(|c| format!("the migration name {name:?} holds {c:?}: braces, spaces and control characters are not allowed (a Redis Cluster hashes keys by what is inside braces)"))
}

/// `text` made into a migration name: what `bad_migration_name` refuses becomes `_`.
pub fn migration_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c == '{' || c == '}' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        "_".into()
    } else {
        name
    }
}

impl Markers {
    pub fn new(migration: &str) -> Markers {
        Markers {
            prefix: format!("{PREFIX}{}:", migration_name(migration)),
        }
    }

    /// The key lane `lane` writes in every transaction (in the same MULTI/EXEC): a
    /// token that tells a resend after a lost reply whether the transaction ran, and
    /// the last binlog positions the lane applied, which make a resumed stream
    /// exactly-once. It lives in the url's database whatever database the
    /// transaction's commands go to.
    pub fn lane(&self, lane: usize) -> String {
        format!("{}{lane}", self.prefix)
    }

    /// In a cluster: lane `lane`'s key in the slot `tag` hashes to (a cluster
    /// transaction touches one slot). `lane` is the lane among a master's `senders`.
    pub fn slot(&self, lane: usize, tag: &str) -> String {
        format!("{}{lane}:{{{tag}}}", self.prefix)
    }

    /// The pattern every checkpoint key of every migration matches.
    pub fn pattern() -> String {
        format!("{PREFIX}*")
    }
}

/// The key lane `lane` wrote before checkpoint keys named their migration.
pub fn legacy_key(lane: usize) -> String {
    format!("{PREFIX}{lane}")
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

/// Reads checkpoint keys (a pipeline of GETs): each one's value, `None` when absent
/// or not ours; an error is the connection's or the server's.
pub async fn read_markers(
    conn: &mut Connection,
    keys: &[String],
) -> Result<Vec<Option<LaneCheckpoint>>, String> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::Pipeline::with_capacity(keys.len());
    for key in keys {
        pipe.add_command(command(&[b"GET".as_slice(), key.as_bytes()]));
    }
    let replies = conn
        .pipeline(&pipe, keys.len())
        .await
        .map_err(|e| e.to_string())?;
    replies
        .into_iter()
        .zip(keys)
        .map(|(reply, key)| match reply {
            Value::BulkString(v) => Ok(LaneCheckpoint::parse(&v)),
            reply @ Value::ServerError(_) => Err(format!("{key}: {}", error_text(&reply))),
            _ => Ok(None),
        })
        .collect()
}

/// Reads `keys`: each found value of ours by its key's index.
async fn read_all(
    conn: &mut Connection,
    keys: &[String],
) -> Result<BTreeMap<usize, LaneCheckpoint>, CheckpointError> {
    let found = read_markers(conn, keys)
        .await
        .map_err(|error| CheckpointError {
            key: keys.first().cloned().unwrap_or_default(),
            error,
        })?;
    Ok(found
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c?)))
        .collect())
}

/// Reads the keys `key(0..lanes)`, and as many more as a value found says its run had
/// lanes: every key of the lane counts that wrote them.
async fn read_lanes(
    conn: &mut Connection,
    lanes: usize,
    key: impl Fn(usize) -> String,
) -> Result<BTreeMap<usize, LaneCheckpoint>, CheckpointError> {
    let mut found = read_all(conn, &(0..lanes).map(&key).collect::<Vec<_>>()).await?;
    let most = found.values().map(|c| c.lanes).max().unwrap_or(0);
    if most > lanes {
        let more: Vec<String> = (lanes..most).map(&key).collect();
        for (i, c) in read_all(conn, &more).await? {
            found.insert(lanes + i, c);
        }
    }
    Ok(found)
}

/// What each of `lanes` lanes has applied, from the keys `found` (by lane): each its
/// own when every key was written by a run of as many lanes; else keys moved lanes,
/// and every lane takes what all of the old ones applied (the lowest position of each
/// DB, a DB only when all hold it: a lane without a key applied nothing). The second
/// value says whether the keys must be written again to agree with `lanes`.
pub fn lane_positions(
    found: &BTreeMap<usize, LaneCheckpoint>,
    lanes: usize,
) -> (Vec<Applied>, bool) {
    let consistent = found.iter().all(|(i, c)| c.lanes == lanes && *i < lanes);
    if consistent {
        let each = (0..lanes)
            .map(|i| found.get(&i).map(|c| c.applied.clone()).unwrap_or_default())
            .collect();
        return (each, false);
    }
    let before = found.values().map(|c| c.lanes).max().unwrap_or(0);
    let all: Vec<Applied> = (0..before)
        .map(|i| found.get(&i).map(|c| c.applied.clone()).unwrap_or_default())
        .collect();
    let lowest = Applied::lowest(all.iter());
    tracing::warn!(
        before,
        now = lanes,
        resume_after = %lowest,
        "senders changed since the last run: every lane resumes after the lowest lane position, so commands a faster lane had applied may apply twice"
    );
    (vec![lowest; lanes], true)
}

/// Reads the lanes' checkpoint keys of a migration: the binlog positions each lane
/// applied last. Every lane's key is read (a lane that never sent a transaction has
/// none, and says nothing of the others). A run that finds none of its migration's
/// keys but keys of the form before migrations were named takes those over: it
/// writes them under its own names and deletes the old ones, in one transaction, so
/// no other migration takes them too. So does a run whose lane count changed, so the
/// keys agree with it. `run_id` marks what is written then.
pub async fn read_checkpoints(
    conn: &mut Connection,
    markers: &Markers,
    lanes: usize,
    run_id: &str,
) -> Result<Vec<Applied>, CheckpointError> {
    let mut found = read_lanes(conn, lanes, |i| markers.lane(i)).await?;
    let mut legacy = BTreeMap::new();
    if found.is_empty() {
        legacy = read_lanes(conn, lanes, legacy_key).await?;
        if !legacy.is_empty() {
            tracing::info!(
                keys = legacy.len(),
                "checkpoint keys of an earlier version found (pika-migrate:checkpoint:<lane>): resuming from them, under this migration's names"
            );
        }
        found = legacy.clone();
    }
    let (positions, rewrite) = lane_positions(&found, lanes);
    if !rewrite && legacy.is_empty() {
        return Ok(positions);
    }
    let stale = found.keys().copied().filter(|i| *i >= lanes);
    let mut pipe = redis::Pipeline::with_capacity(lanes + found.len() + 2);
    pipe.add_command(redis::cmd("MULTI"));
    for (i, applied) in positions.iter().enumerate() {
        let value = LaneCheckpoint {
            token: format!("{run_id}:0"),
            lanes,
            applied: applied.clone(),
        }
        .to_string();
        pipe.add_command(command(&[
            b"SET".as_slice(),
            markers.lane(i).as_bytes(),
            value.as_bytes(),
        ]));
    }
    let old: Vec<String> = if legacy.is_empty() {
        stale.map(|i| markers.lane(i)).collect()
    } else {
        legacy.keys().map(|i| legacy_key(*i)).collect()
    };
    for key in &old {
        pipe.add_command(command(&[b"DEL".as_slice(), key.as_bytes()]));
    }
    pipe.add_command(redis::cmd("EXEC"));
    let count = positions.len() + old.len() + 2;
    let failed = |error: String| CheckpointError {
        key: markers.lane(0),
        error,
    };
    let replies = conn
        .pipeline(&pipe, count)
        .await
        .map_err(|e| failed(e.to_string()))?;
    match replies.last() {
        Some(Value::Array(items)) if !items.iter().any(|r| matches!(r, Value::ServerError(_))) => {
            Ok(positions)
        }
        other => Err(failed(format!(
            "writing them again for {lanes} lanes: {}",
            other.map_or("no reply".into(), error_text)
        ))),
    }
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

    fn key(lanes: usize, applied: Applied) -> LaneCheckpoint {
        LaneCheckpoint {
            token: "t:1".into(),
            lanes,
            applied,
        }
    }

    #[test]
    fn every_lanes_key_counts_whichever_are_missing() {
        let at = |o| Applied::of(0, BinlogOffset::new(1, o));
        // Lane 0 never sent a transaction: lanes 1 and 3 keep what they applied.
        let found = BTreeMap::from([(1, key(4, at(500))), (3, key(4, at(900)))]);
        let (each, rewrite) = lane_positions(&found, 4);
        assert_eq!(
            each,
            vec![Applied::default(), at(500), Applied::default(), at(900)]
        );
        assert!(!rewrite);
        // Written by a run of 2 lanes: keys moved; every lane takes the lowest, and
        // the keys are written again for 4.
        let found = BTreeMap::from([(0, key(2, at(700))), (1, key(2, at(600)))]);
        let (each, rewrite) = lane_positions(&found, 4);
        assert_eq!(each, vec![at(600); 4]);
        assert!(rewrite);
        // A lane of that run without a key had applied nothing: nothing is skipped.
        let found = BTreeMap::from([(1, key(2, at(600)))]);
        assert_eq!(lane_positions(&found, 4).0, vec![Applied::default(); 4]);
        // Keys of a run of 6 lanes, read by one of 4: lanes 4 and 5 count too.
        let found = BTreeMap::from([
            (0, key(6, at(700))),
            (2, key(6, at(800))),
            (5, key(6, at(650))),
        ]);
        let (each, _) = lane_positions(&found, 4);
        assert_eq!(
            each,
            vec![Applied::default(); 4],
            "lanes 1, 3 and 4 had none"
        );
    }

    #[test]
    fn migration_names_stay_out_of_hash_tags() {
        assert_eq!(
            Markers::new("pika@10.0.0.5:9221").lane(3),
            "pika-migrate:checkpoint:pika@10.0.0.5:9221:3"
        );
        assert_eq!(
            Markers::new("snapshot@/data/{x} y").slot(1, "42"),
            "pika-migrate:checkpoint:snapshot@/data/_x__y:1:{42}"
        );
        assert!(bad_migration_name("a{b}").is_some());
        assert!(bad_migration_name("two words").is_some());
        assert!(bad_migration_name("").is_some());
        assert!(bad_migration_name("codis-group-3").is_none());
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
