//! Compares snapshot events with what a Redis holds, chunk by chunk: memory stays flat
//! however big a key is. For each key: its type, every element (HMGET, LRANGE by
//! index, SMISMEMBER, ZMSCORE with exact scores, GETRANGE, XRANGE), its length, and its expiry
//! within a second. The same type-conflict and HyperLogLog policies as the sink decide
//! which keys are expected and under which names.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pika_migrate_core::display::display_key;
use pika_migrate_core::event::{Chunk, DataType, Event, Op, StreamEntry};
use redis::Value;

use super::config::{HyperLogLogPolicy, RedisSinkConfig};
use super::conn::{command, Connection};
use super::target::Target;
use crate::encode::commands::{score_text, TypeConflict};
use crate::encode::hyperloglog::is_pika_hyperloglog;

/// Expiries may differ by this much (Pika keeps whole seconds).
const EXPIRY_TOLERANCE_MS: i64 = 1000;

/// What a check expects back.
enum Expect {
    Type(DataType),
    Bytes(Bytes),
    Values(Vec<Bytes>),
    AllMembers(usize),
    Scores(Vec<f64>),
    Entries(Vec<StreamEntry>),
    Len(u64),
    ExpireAt(Option<i64>),
}

struct Check {
    key: Bytes,
    argv: Vec<Bytes>,
    expect: Expect,
}

/// Progress through the key whose chunks are being checked.
struct Current {
    key: Bytes,
    data_type: DataType,
    /// Elements (bytes for a string) seen so far.
    seen: u64,
}

/// Differences found, and how many keys were compared.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub keys: u64,
    pub differing_keys: u64,
    /// The first differences, in order.
    pub differences: Vec<String>,
    pub skipped_keys: u64,
}

/// Differences kept for printing.
const KEPT_DIFFERENCES: usize = 50;

pub struct Verifier {
    /// One connection, or one per master of a cluster (indexed like `slots.nodes`).
    conns: Vec<Connection>,
    slots: Option<super::cluster::SlotMap>,
    type_conflict: TypeConflict,
    hyperloglog: HyperLogLogPolicy,
    current: Option<Current>,
    checks: Vec<Check>,
    report: VerifyReport,
    last_bad_key: Option<Bytes>,
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn text(reply: &Value) -> String {
    match reply {
        Value::BulkString(v) => display_key(v),
        Value::SimpleString(s) => s.clone(),
        reply @ Value::ServerError(_) => super::conn::error_text(reply),
        other => format!("{other:?}"),
    }
}

impl Verifier {
    pub async fn connect(config: &RedisSinkConfig) -> Result<Verifier, super::RedisSinkError> {
        let target = Target::of(config)?;
        let mut seed = super::endpoint_of(&target, config.response_timeout(false))
            .connect()
            .await?
            .conn;
        let (conns, slots) = match (config.cluster, target.node()) {
            (true, Some(info)) => {
                let map = super::cluster::SlotMap::fetch(&mut seed)
                    .await
                    .map_err(super::RedisSinkError::Cluster)?;
                let mut conns = Vec::new();
                for i in 0..map.nodes.len() {
                    let node = super::endpoint::Endpoint::Node(
                        map.target(info, i),
                        config.response_timeout(false),
                    );
                    conns.push(node.connect().await?.conn);
                }
                (conns, Some(map))
            }
            _ => (vec![seed], None),
        };
        Ok(Verifier {
            conns,
            slots,
            type_conflict: config.type_conflict,
            hyperloglog: config.hyperloglog,
            current: None,
            checks: Vec::new(),
            report: VerifyReport::default(),
            last_bad_key: None,
        })
    }

    /// Queues the checks of one snapshot event; runs them in pipelines of a few hundred.
    pub async fn check(&mut self, event: &Event) -> std::io::Result<()> {
        let Op::Snapshot {
            chunk,
            part,
            expire_at_ms,
            also_types,
        } = &event.op
        else {
            return Ok(());
        };
        let t = chunk.data_type();
        let mut key = event.key.clone();
        if also_types.first_before(t).is_some() {
            match self.type_conflict {
                TypeConflict::FirstWins => {
                    if part.starts_key() {
                        self.report.skipped_keys += 1;
                    }
                    return Ok(());
                }
                TypeConflict::Suffix => {
                    key = Bytes::from([key.as_ref(), b":", t.as_str().as_bytes()].concat());
                }
                TypeConflict::Overwrite => {}
            }
        }
        if self.type_conflict == TypeConflict::Overwrite && also_types.iter().any(|other| other > t)
        {
            // A later type replaced this one.
            if part.starts_key() {
                self.report.skipped_keys += 1;
            }
            return Ok(());
        }
        if part.starts_key() {
            if let Chunk::String(v) = chunk {
                if is_pika_hyperloglog(v) && self.hyperloglog == HyperLogLogPolicy::Skip {
                    self.report.skipped_keys += 1;
                    self.current = None;
                    return Ok(());
                }
            }
            self.report.keys += 1;
            self.current = Some(Current {
                key: key.clone(),
                data_type: t,
                seen: 0,
            });
            self.checks.push(Check {
                key: key.clone(),
                argv: vec![b("TYPE"), key.clone()],
                expect: Expect::Type(t),
            });
        }
        let Some(current) = self
            .current
            .as_mut()
            .filter(|c| c.key == key && c.data_type == t)
        else {
            return Ok(());
        };
        let start = current.seen;
        let k = key.clone();
        let check = match chunk {
            Chunk::String(v) => Check {
                argv: vec![
                    b("GETRANGE"),
                    k.clone(),
                    Bytes::from(start.to_string()),
                    Bytes::from((start + v.len() as u64).saturating_sub(1).to_string()),
                ],
                expect: Expect::Bytes(v.clone()),
                key: k,
            },
            Chunk::Hash(pairs) => Check {
                argv: [
                    vec![b("HMGET"), k.clone()],
                    pairs.iter().map(|(f, _)| f.clone()).collect(),
                ]
                .concat(),
                expect: Expect::Values(pairs.iter().map(|(_, v)| v.clone()).collect()),
                key: k,
            },
            Chunk::List(items) => Check {
                argv: vec![
                    b("LRANGE"),
                    k.clone(),
                    Bytes::from(start.to_string()),
                    Bytes::from((start + items.len() as u64).saturating_sub(1).to_string()),
                ],
                expect: Expect::Values(items.clone()),
                key: k,
            },
            Chunk::Set(members) => Check {
                argv: [vec![b("SMISMEMBER"), k.clone()], members.clone()].concat(),
                expect: Expect::AllMembers(members.len()),
                key: k,
            },
            Chunk::Zset(members) => Check {
                argv: [
                    vec![b("ZMSCORE"), k.clone()],
                    members.iter().map(|(m, _)| m.clone()).collect(),
                ]
                .concat(),
                expect: Expect::Scores(members.iter().map(|(_, s)| *s).collect()),
                key: k,
            },
            Chunk::Stream { entries, .. } => {
                let id = |e: Option<&StreamEntry>| {
                    Bytes::from(e.map_or_else(String::new, |e| e.id.to_string()))
                };
                Check {
                    argv: vec![
                        b("XRANGE"),
                        k.clone(),
                        id(entries.first()),
                        id(entries.last()),
                    ],
                    expect: Expect::Entries(entries.clone()),
                    key: k,
                }
            }
        };
        current.seen += match chunk {
            Chunk::String(v) => v.len() as u64,
            other => other.len() as u64,
        };
        let seen = current.seen;
        if !chunk.is_empty() {
            self.checks.push(check);
        }
        if part.ends_key() {
            let len_command = match t {
                DataType::String => "STRLEN",
                DataType::Hash => "HLEN",
                DataType::List => "LLEN",
                DataType::Set => "SCARD",
                DataType::Zset => "ZCARD",
                DataType::Stream => "XLEN",
            };
            self.checks.push(Check {
                key: key.clone(),
                argv: vec![b(len_command), key.clone()],
                expect: Expect::Len(seen),
            });
            self.checks.push(Check {
                key: key.clone(),
                argv: vec![b("PTTL"), key.clone()],
                expect: Expect::ExpireAt(*expire_at_ms),
            });
        }
        if self.checks.len() >= 256 {
            self.run_checks().await?;
        }
        Ok(())
    }

    async fn run_checks(&mut self) -> std::io::Result<()> {
        if self.checks.is_empty() {
            return Ok(());
        }
        // Each check goes to the node serving its key; replies are put back in order.
        let mut per_node: Vec<(redis::Pipeline, Vec<usize>)> =
            vec![(redis::Pipeline::new(), Vec::new()); self.conns.len()];
        for (i, c) in self.checks.iter().enumerate() {
            let node = self.slots.as_ref().map_or(0, |m| m.node_of(&c.key));
            per_node[node].0.add_command(command(&c.argv));
            per_node[node].1.push(i);
        }
        let mut replies = vec![Value::Nil; self.checks.len()];
        for (node, (pipeline, indexes)) in per_node.into_iter().enumerate() {
            if indexes.is_empty() {
                continue;
            }
            let got = self.conns[node]
                .pipeline(&pipeline, indexes.len())
                .await
                .map_err(std::io::Error::other)?;
            for (i, reply) in indexes.into_iter().zip(got) {
                replies[i] = reply;
            }
        }
        let now = now_ms();
        let checks = std::mem::take(&mut self.checks);
        for (check, reply) in checks.iter().zip(replies) {
            if let Some(problem) = judge(&check.expect, &reply, now) {
                self.differ(&check.key, problem);
            }
        }
        Ok(())
    }

    fn differ(&mut self, key: &Bytes, problem: String) {
        if self.last_bad_key.as_ref() != Some(key) {
            self.report.differing_keys += 1;
            self.last_bad_key = Some(key.clone());
        }
        if self.report.differences.len() < KEPT_DIFFERENCES {
            self.report
                .differences
                .push(format!("{}: {problem}", display_key(key)));
        }
    }

    pub async fn finish(mut self) -> std::io::Result<VerifyReport> {
        self.run_checks().await?;
        Ok(self.report)
    }
}

fn judge(expect: &Expect, reply: &Value, now: i64) -> Option<String> {
    match (expect, reply) {
        (Expect::Type(t), Value::SimpleString(got)) if got == t.as_str() => None,
        (Expect::Type(t), got) => Some(format!("type is {}, expected {t}", text(got))),
        (Expect::Bytes(want), Value::BulkString(got)) if got == want => None,
        (Expect::Bytes(_), got) => Some(format!("value differs (got {})", short(&text(got)))),
        (Expect::Values(want), Value::Array(items)) => {
            let mismatch = want.len() != items.len()
                || want
                    .iter()
                    .zip(items)
                    .any(|(w, g)| !matches!(g, Value::BulkString(v) if v == w));
            mismatch.then(|| format!("{} elements differ", want.len()))
        }
        (Expect::AllMembers(n), Value::Array(items)) => {
            let missing = items.iter().filter(|r| !matches!(r, Value::Int(1))).count()
                + n.saturating_sub(items.len());
            (missing > 0).then(|| format!("{missing} members missing"))
        }
        (Expect::Scores(want), Value::Array(items)) => {
            let bad = want
                .iter()
                .zip(items)
                .filter(|(w, g)| match g {
                    Value::BulkString(v) => {
                        std::str::from_utf8(v).ok().and_then(parse_score) != Some(**w)
                    }
                    _ => true,
                })
                .count();
            (bad > 0 || items.len() != want.len()).then(|| {
                format!(
                    "{bad} scores differ (e.g. expected {:?})",
                    String::from_utf8_lossy(&score_text(want[0]))
                )
            })
        }
        (Expect::Entries(want), Value::Array(items)) => {
            let same =
                want.len() == items.len() && want.iter().zip(items).all(|(w, g)| same_entry(w, g));
            (!same).then(|| format!("{} stream entries differ", want.len()))
        }
        (Expect::Len(n), Value::Int(got)) if *got as u64 == *n => None,
        (Expect::Len(n), got) => Some(format!("length is {}, expected {n}", text(got))),
        (Expect::ExpireAt(None), Value::Int(-1)) => None,
        (Expect::ExpireAt(Some(at)), Value::Int(ttl))
            if *ttl >= 0 && (now + ttl - at).abs() <= EXPIRY_TOLERANCE_MS =>
        {
            None
        }
        (Expect::ExpireAt(Some(at)), Value::Int(-2)) if *at <= now + EXPIRY_TOLERANCE_MS => None,
        (Expect::ExpireAt(want), got) => Some(format!(
            "expiry differs: expected {want:?} ms, PTTL {}",
            text(got)
        )),
        (_, got) => Some(format!("unexpected reply {}", short(&text(got)))),
    }
}

/// Whether an XRANGE reply item (`[id, [field, value, …]]`) is `want`.
fn same_entry(want: &StreamEntry, got: &Value) -> bool {
    let Value::Array(parts) = got else {
        return false;
    };
    let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice() else {
        return false;
    };
    id.as_slice() == want.id.to_string().as_bytes()
        && fields.len() == want.fields.len() * 2
        && want.fields.iter().zip(fields.chunks(2)).all(|((f, v), got)| {
            matches!(got, [Value::BulkString(gf), Value::BulkString(gv)] if gf == f && gv == v)
        })
}

fn parse_score(s: &str) -> Option<f64> {
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

fn short(s: &str) -> String {
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().take(80).last().map_or(0, |(i, _)| i)]
        )
    } else {
        s.to_owned()
    }
}
