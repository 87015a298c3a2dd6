//! What the master says of itself on its client port (`INFO`), checked before we ask it
//! to take us as a replica: the version we speak (and so the generation of the
//! protocol), and that it is not a replica itself.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::error::ReplicaError;
use crate::event::BinlogOffset;
use crate::resp::encode_command;

const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Longest reply we read: an INFO is a few KiB; a bigger claim is not a Pika's.
const MAX_REPLY: usize = 1 << 20;
/// Longest reply line (a status, an error or a length).
const MAX_LINE: u64 = 64 << 10;

/// The ways a Pika master hands its dump to a replica; everything else of the
/// replication protocol is the same from 3.2 to 4.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 3.2–3.4: the master pushes the dump with rsync to the replica's port + 1000.
    Push,
    /// 3.5: the replica pulls the dump over `RsyncService` on the master's port + 10001.
    Pull,
    /// 4.0: pulled as from 3.5, but the dump is floyd's: one directory per instance
    /// (`0/ 1/ …`, MetaSync's `db_instance_num`) instead of one per type.
    PullFloyd,
}

impl Generation {
    /// How the binlog items of a master of this generation are read (4.0 refuses
    /// `FLUSHDB <type>`, the one form the dialects differ on).
    pub fn dialect(self) -> crate::pika::normalize::Dialect {
        match self {
            Generation::Push => crate::pika::normalize::Dialect::Pika3,
            Generation::Pull => crate::pika::normalize::Dialect::Pika35,
            Generation::PullFloyd => crate::pika::normalize::Dialect::Pika40,
        }
    }

    /// The generation a MetaSync reply shows: 3.5 added `run_id`, 4.0 `db_instance_num`.
    /// `None` for a reply no Pika sends (`db_instance_num` without a `run_id`).
    pub fn of_meta_sync(meta: &crate::pika::repl::proto::MetaSyncResponse) -> Option<Generation> {
        let floyd = meta.tables_info.iter().any(|t| t.db_instance_num.is_some());
        match (floyd, meta.run_id.is_some()) {
            (true, true) => Some(Generation::PullFloyd),
            (true, false) => None,
            (false, true) => Some(Generation::Pull),
            (false, false) => Some(Generation::Push),
        }
    }

    /// Whether we pull the dump (3.5 and 4.0) rather than receive it.
    pub fn pulls(self) -> bool {
        matches!(self, Generation::Pull | Generation::PullFloyd)
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Generation::Push => "Pika 3.2–3.4 (dump pushed with rsync)",
            Generation::Pull => "Pika 3.5 (dump pulled over its rsync service)",
            Generation::PullFloyd => {
                "Pika 4.0 (floyd dump, one directory per instance, pulled over its rsync service)"
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInfo {
    pub version: Option<String>,
    pub role: Option<String>,
    /// The master's own client port (`tcp_port`): what its dumps name, whatever port we
    /// reach it at.
    pub tcp_port: Option<u16>,
    /// 3.5 and 4.0: a random id the master draws at each start (`run_id`), which its
    /// MetaSync reply repeats. 3.2–3.4 have none (`server_id` is a setting, 1 unless
    /// set, which tells no master from another).
    pub run_id: Option<String>,
    /// The size of the master's databases on disk (`db_size`, every database): about
    /// what a full sync's dumps take. 3.2–3.4 compute it when asked; 3.5 and 4.0 every
    /// minute or so.
    pub db_size: Option<u64>,
    /// Each database's current binlog position (`db0 binlog_offset=F O,…` on 3.2–3.4,
    /// `db0:binlog_offset=F O,…` on 3.5).
    pub binlog_offsets: std::collections::BTreeMap<u32, BinlogOffset>,
}

/// `db<N> binlog_offset=F O,…` (3.2–3.4) or `db<N>:binlog_offset=F O,…` (3.5).
fn binlog_offset_line(line: &str) -> Option<(u32, BinlogOffset)> {
    let rest = line.trim_end().strip_prefix("db")?;
    let (db, rest) = rest.split_once([' ', ':'])?;
    let v = rest.strip_prefix("binlog_offset=")?;
    let (at, _) = v.split_once(',').unwrap_or((v, ""));
    let (f, o) = at.split_once(' ')?;
    Some((
        db.parse().ok()?,
        BinlogOffset::new(f.parse().ok()?, o.parse().ok()?),
    ))
}

impl MasterInfo {
    pub fn parse(text: &str) -> MasterInfo {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.trim_end().strip_prefix(name))
                .map(str::to_owned)
        };
        MasterInfo {
            version: field("pika_version:"),
            role: field("role:"),
            tcp_port: field("tcp_port:").and_then(|p| p.trim().parse().ok()),
            run_id: field("run_id:").filter(|id| !id.trim().is_empty()),
            db_size: field("db_size:").and_then(|n| n.trim().parse().ok()),
            binlog_offsets: text.lines().filter_map(binlog_offset_line).collect(),
        }
    }

    /// Refuses what we cannot follow: not Pika, a Pika outside 3.2–3.5, a replica; the
    /// generation of the protocol otherwise.
    pub fn check(&self, addr: &str) -> Result<Generation, ReplicaError> {
        let Some(version) = &self.version else {
            return Err(ReplicaError::UnsupportedVersion {
                addr: addr.into(),
                found: "does not report a pika_version (is it a Pika?)".into(),
            });
        };
        let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
        let generation = match (parts.next().flatten(), parts.next().flatten()) {
            (Some(3), Some(2..=4)) => Generation::Push,
            (Some(3), Some(5)) => Generation::Pull,
            // 4.0.1 reports `4.0.0` (its tag's version header).
            (Some(4), Some(0)) => Generation::PullFloyd,
            _ => {
                return Err(ReplicaError::UnsupportedVersion {
                    addr: addr.into(),
                    found: format!("runs Pika {version}"),
                })
            }
        };
        match self.role.as_deref() {
            Some(role) if role.contains("slave") => Err(ReplicaError::MasterIsReplica {
                addr: addr.into(),
                role: format!("role:{role}"),
            }),
            _ => Ok(generation),
        }
    }
}

/// Asks `addr` for `INFO` (after `AUTH password` when one is set).
pub async fn fetch(addr: &str, password: Option<&str>) -> Result<MasterInfo, ReplicaError> {
    let unreachable = |error: String| ReplicaError::Unreachable {
        addr: addr.into(),
        error,
    };
    let talk = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut conn = BufReader::new(stream);
        if let Some(pw) = password.filter(|p| !p.is_empty()) {
            let reply = call(&mut conn, &[b"AUTH".as_slice(), pw.as_bytes()])
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            if let Err(reply) = reply {
                return Err(ReplicaError::Auth {
                    addr: addr.into(),
                    reply,
                });
            }
        }
        match call(&mut conn, &[b"INFO".as_slice()])
            .await
            .map_err(|e| unreachable(e.to_string()))?
        {
            Ok(text) => Ok(MasterInfo::parse(&text)),
            Err(reply) if reply.contains("NOAUTH") || reply.contains("auth") => {
                Err(ReplicaError::Auth {
                    addr: addr.into(),
                    reply,
                })
            }
            Err(reply) => Err(unreachable(format!("INFO refused: {reply}"))),
        }
    };
    tokio::time::timeout(ANSWER_WITHIN, talk)
        .await
        .map_err(|_| unreachable(format!("no answer within {ANSWER_WITHIN:?}")))?
}

/// One command; `Ok(Err(text))` is an error reply, `Ok(Ok(text))` a status or bulk one.
async fn call(
    conn: &mut BufReader<TcpStream>,
    argv: &[&[u8]],
) -> std::io::Result<Result<String, String>> {
    let mut out = Vec::new();
    encode_command(&mut out, argv);
    conn.get_mut().write_all(&out).await?;
    let mut line = String::new();
    // A reply line is short; a peer sending no newline must not grow it without end.
    if (&mut *conn).take(MAX_LINE).read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end();
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad reply {line:?}"),
        )
    };
    match line.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(Ok(line[1..].to_owned())),
        Some(b'-') => Ok(Err(line[1..].to_owned())),
        Some(b'$') => {
            let len: i64 = line[1..].parse().map_err(|_| bad())?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Ok(String::new()));
            };
            if len > MAX_REPLY {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a reply of {len} bytes announced, more than the {MAX_REPLY} an INFO can be"),
                ));
            }
            let mut body = vec![0; len + 2];
            conn.read_exact(&mut body).await?;
            body.truncate(len);
            Ok(Ok(String::from_utf8_lossy(&body).into_owned()))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, role: &str) -> MasterInfo {
        MasterInfo::parse(&format!(
            "# Server\r\npika_version:{version}\r\n\r\n# Replication(MASTER)\r\nrole:{role}\r\n"
        ))
    }

    #[test]
    fn reads_who_the_master_is() {
        // INFO server of a real 3.3.6 and a real 3.5.5 (the 3.5.5 one abridged).
        let v33 = MasterInfo::parse("# Server\r\npika_version:3.3.6\r\nprocess_id:3533\r\ntcp_port:39189\r\nserver_id:1\r\n\r\n# Data\r\ndb_size:12423824\r\ndb_size_human:11M\r\n");
        assert_eq!(
            (v33.tcp_port, v33.run_id.as_deref(), v33.db_size),
            (Some(39189), None, Some(12423824))
        );
        let v35 = MasterInfo::parse("pika_version:3.5.5\r\ntcp_port:36229\r\nserver_id:1\r\nrun_id:115eca693408ce12dbab61531828a408e606fca4\r\n");
        assert_eq!(v35.tcp_port, Some(36229));
        assert_eq!(
            v35.run_id.as_deref(),
            Some("115eca693408ce12dbab61531828a408e606fca4")
        );
    }

    #[test]
    fn reads_the_masters_binlog_position() {
        let i =
            MasterInfo::parse("role:master\r\ndb0 binlog_offset=1 547194,safety_purge=none\r\ndb2 binlog_offset=0 84,safety_purge=none\r\n");
        assert_eq!(i.binlog_offsets[&0], BinlogOffset::new(1, 547194));
        assert_eq!(i.binlog_offsets[&2], BinlogOffset::new(0, 84));
        // 3.5 writes a colon after the database's name.
        let i =
            MasterInfo::parse("role:master\r\ndb0:binlog_offset=0 308987,safety_purge=none\r\n");
        assert_eq!(i.binlog_offsets[&0], BinlogOffset::new(0, 308987));
    }

    #[test]
    fn speaks_3_2_to_4_0_masters_only() {
        for v in ["3.2.9", "3.3.6", "3.4.2"] {
            assert_eq!(
                info(v, "master").check("m").unwrap(),
                Generation::Push,
                "{v}"
            );
        }
        for v in ["3.5.0", "3.5.2", "3.5.5"] {
            assert_eq!(
                info(v, "master").check("m").unwrap(),
                Generation::Pull,
                "{v}"
            );
        }
        for v in ["4.0.0", "4.0.1"] {
            assert_eq!(
                info(v, "master").check("m").unwrap(),
                Generation::PullFloyd,
                "{v}"
            );
        }
        for v in ["4.1.0", "3.6.0", "2.3.6"] {
            let e = info(v, "master").check("m").unwrap_err();
            assert!(e.to_string().contains(v), "{e}");
            assert_eq!(e.exit_code(), 76);
        }
        let redis = MasterInfo::parse("# Server\r\nredis_version:7.0.0\r\n");
        assert!(redis
            .check("m")
            .unwrap_err()
            .to_string()
            .contains("is it a Pika"));
    }

    #[tokio::test]
    async fn a_reply_claiming_a_huge_length_is_refused_without_allocating_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 64];
            let _ = conn.read(&mut request).await;
            let _ = conn.write_all(b"$99999999999\r\nshort").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let e = fetch(&addr, None).await.unwrap_err().to_string();
        assert!(e.contains("99999999999 bytes announced"), "{e}");
    }

    #[test]
    fn the_meta_sync_reply_tells_the_generation() {
        use crate::pika::repl::proto::{MetaSyncResponse, TableInfo};
        let db = |instances| TableInfo {
            table_name: "db0".into(),
            partition_num: 1,
            db_instance_num: instances,
        };
        let mut meta = MetaSyncResponse {
            classic_mode: true,
            tables_info: vec![db(None)],
            run_id: None,
            replication_id: None,
        };
        assert_eq!(Generation::of_meta_sync(&meta), Some(Generation::Push));
        // 3.5.0 has a run id and no replication id yet.
        meta.run_id = Some("1".repeat(40));
        assert_eq!(Generation::of_meta_sync(&meta), Some(Generation::Pull));
        meta.replication_id = Some("2".repeat(50));
        assert_eq!(Generation::of_meta_sync(&meta), Some(Generation::Pull));
        meta.tables_info = vec![db(Some(3))];
        assert_eq!(Generation::of_meta_sync(&meta), Some(Generation::PullFloyd));
        meta.run_id = None;
        assert_eq!(Generation::of_meta_sync(&meta), None);
    }

    #[test]
    fn refuses_a_master_that_is_a_replica() {
        for role in ["slave", "master&&slave"] {
            let e = info("3.3.6", role).check("m").unwrap_err();
            assert!(matches!(e, ReplicaError::MasterIsReplica { .. }), "{e}");
        }
    }
}
