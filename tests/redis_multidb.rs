//! The Redis sink with the DBs of one Pika master interleaved: each DB has its own
//! binlog, so its positions say nothing about another's. Every lane's checkpoint key
//! holds one applied position per DB, and a resumed stream skips, in each DB, exactly
//! what that DB already has.

mod common;

use bytes::Bytes;
use common::*;
use pika_migrate_core::event::{BinlogOffset, DataType, Event, Op, Position};
use pika_migrate_core::sink::Sink;
use pika_migrate_sinks::redis::config::RedisSinkConfig;
use pika_migrate_sinks::redis::RedisSink;

/// Per DB: DB 0's binlog is at file 1 offset 100000 and on, DB 1's far behind it.
const DB_START: [u64; 2] = [100_000, 1_000];
const PER_DB: u64 = 200;
/// Keys per DB: enough to use every lane.
const KEYS: u64 = 16;

/// The `n`-th binlog item of Pika DB `db`: `RPUSH list:<n % KEYS> <db>-<n>`.
fn push(db: u32, n: u64) -> Event {
    let key = Bytes::from(format!("list:{}", n % KEYS));
    let offset = DB_START[db as usize] + 100 * n;
    Event {
        db,
        source_db: db,
        key: key.clone(),
        data_type: Some(DataType::List),
        op: Op::Command {
            argv: vec![
                Bytes::from_static(b"RPUSH"),
                key,
                Bytes::from(format!("{db}-{n}")),
            ],
        },
        position: Position::Binlog {
            at: BinlogOffset::new(1, offset),
            logic_id: n + 1,
            term: 0,
        },
        exec_time: Some(0),
    }
}

/// DB 0's and DB 1's items, alternating, as a master of two DBs streams them.
fn interleaved() -> Vec<Event> {
    (0..PER_DB).flat_map(|n| [push(0, n), push(1, n)]).collect()
}

fn config(redis: &RedisServer) -> RedisSinkConfig {
    serde_json::from_value(serde_json::json!({
        "url": redis.url(),
        "senders": 4,
        "batch": 16,
        "migration": "m",
    }))
    .unwrap()
}

/// Writes `events` in batches of 24 through a new sink, then finishes; the summary.
async fn deliver(redis: &RedisServer, events: &[Event]) -> Vec<String> {
    let mut sink = RedisSink::connect(config(redis)).await.unwrap();
    for batch in events.chunks(24) {
        sink.write(batch.to_vec()).await.unwrap();
    }
    sink.finish().await.unwrap().lines
}

/// Every list of database `db`, with its elements.
fn lists(redis: &RedisServer, db: u32) -> Vec<(String, Vec<String>)> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/{db}", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    (0..KEYS)
        .map(|k| {
            let key = format!("list:{k}");
            let items: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .unwrap();
            (key, items)
        })
        .collect()
}

/// What each list of Pika DB `db` holds once every item is applied exactly once.
fn expected(db: u32) -> Vec<(String, Vec<String>)> {
    (0..KEYS)
        .map(|k| {
            let items = (0..PER_DB)
                .filter(|n| n % KEYS == k)
                .map(|n| format!("{db}-{n}"))
                .collect();
            (format!("list:{k}"), items)
        })
        .collect()
}

fn checkpoints(redis: &RedisServer, db: u32) -> Vec<Option<String>> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/{db}", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    (0..4)
        .map(|lane| {
            redis::cmd("GET")
                .arg(format!("pika-migrate:checkpoint:m:{lane}"))
                .query(&mut con)
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn two_dbs_interleaved_resume_exactly_once_in_each() {
    let redis = RedisServer::start();
    let stream = interleaved();
    // The first run stops 250 items in; the resumed one is sent everything again, as
    // a source resuming from an older position of its own would.
    deliver(&redis, &stream[..250]).await;
    let summary = deliver(&redis, &stream).await;
    assert!(
        summary
            .iter()
            .any(|l| l.contains("250 binlog commands were already applied")),
        "{summary:?}"
    );
    assert_eq!(lists(&redis, 0), expected(0), "DB 0: every push once");
    assert_eq!(lists(&redis, 1), expected(1), "DB 1: every push once");

    // The keys live in the url's database and name each DB's last position there.
    let mut highest = [0, 0];
    for value in checkpoints(&redis, 0) {
        let value = value.expect("every lane has its checkpoint key");
        let applied = value.split(' ').nth(2).unwrap_or_default();
        let (db0, db1) = applied.split_once(',').unwrap_or_default();
        for (db, part) in [(0, db0), (1, db1)] {
            let prefix = format!("db{db}=1:");
            let offset: u64 = part.strip_prefix(&prefix).expect(&value).parse().unwrap();
            highest[db] = highest[db].max(offset);
        }
    }
    assert_eq!(highest, DB_START.map(|start| start + 100 * (PER_DB - 1)));
    assert_eq!(checkpoints(&redis, 1), vec![None; 4], "none in database 1");
}

#[tokio::test]
async fn a_single_db_checkpoint_of_an_earlier_version_resumes_as_db0() {
    let redis = RedisServer::start();
    let mut con = redis.client();
    // What a single-DB run wrote: every lane at 1:100000 + 100*99 (items 0..=99 of DB 0).
    let applied = DB_START[0] + 100 * 99;
    for lane in 0..4 {
        let _: () = redis::cmd("SET")
            .arg(format!("pika-migrate:checkpoint:{lane}"))
            .arg(format!("12-345:6 4 1:{applied}"))
            .query(&mut con)
            .unwrap();
    }
    let summary = deliver(&redis, &interleaved()).await;
    assert!(
        summary
            .iter()
            .any(|l| l.contains("100 binlog commands were already applied")),
        "only DB 0's first 100 items were skipped: {summary:?}"
    );
    let mut db0 = expected(0);
    for (_, items) in &mut db0 {
        items.retain(|item| item[2..].parse::<u64>().unwrap() >= 100);
    }
    assert_eq!(
        lists(&redis, 0),
        db0,
        "DB 0: only what came after the checkpoint (the rest counts as applied)"
    );
    assert_eq!(
        lists(&redis, 1),
        expected(1),
        "DB 1, all of it below DB 0's checkpoint position, once"
    );
    // Taken over: written under the migration's own names, the old ones gone, so no
    // other migration resumes from them.
    let old: Vec<Option<String>> = (0..4)
        .map(|lane| {
            redis::cmd("GET")
                .arg(format!("pika-migrate:checkpoint:{lane}"))
                .query(&mut con)
                .unwrap()
        })
        .collect();
    assert_eq!(old, vec![None; 4]);
    assert!(checkpoints(&redis, 0).iter().all(Option::is_some));
}

#[test]
fn an_offline_source_of_more_databases_than_redis_has_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log_dir(dir.path(), &[(0, "zero"), (1, "one"), (2, "two")]);
    // CONFIG renamed away, as some hosted Redis do: the databases are probed by SELECT.
    let redis = RedisServer::start_with(&["--databases", "2", "--rename-command", "CONFIG", ""]);
    let run = |filters: &str| {
        let yaml = format!(
            "source:\n  type: binlog\n  path: {}\n{filters}sinks:\n  - type: redis\n    url: {}\n",
            log.display(),
            redis.url()
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
        (code, stderr)
    };
    let (code, stderr) = run("");
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("the source holds databases db0, db1, db2")
            && stderr.contains("databases 0 to 1")
            && stderr.contains("db2 would have nowhere to go")
            && stderr.contains("`db` filter"),
        "{stderr}"
    );
    let size: i64 = redis::cmd("DBSIZE").query(&mut redis.client()).unwrap();
    assert_eq!(size, 0, "nothing written");

    // Mapped into a database Redis has, with its keys apart: written, each database's
    // binlog positions kept apart too.
    let (code, stderr) = run(
        "filters:\n  - type: rename\n    add_prefix: 'db{db}:'\n  - type: db\n    map: {2: 1}\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let mut db1 = redis::Client::open(format!("redis://127.0.0.1:{}/1", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let two: Option<String> = redis::cmd("GET").arg("db2:k").query(&mut db1).unwrap();
    assert_eq!(two.as_deref(), Some("two"));
}
