//! A live replica of a master with several databases (`databases 3`), against real
//! Pika 3.2.9, 3.3.6, 3.5.5 and 4.0.1 from `PIKA_BIN_DIR`: every database (or those
//! `dbs` names) full-synced and streamed over one connection into its own Redis
//! database, each compared with what the master shows, through writes to every
//! database and `kill -9` of the tool. Without the binaries each test says it skipped.

mod common;

use std::time::Duration;

use common::real_pika::*;
use common::tool::*;
use common::*;

macro_rules! on_each_version {
    ($($scenario:ident),* $(,)?) => {
        mod pika_3_2_9 { $( #[test] fn $scenario() { super::$scenario("3.2.9", stringify!($scenario)); } )* }
        mod pika_3_3_6 { $( #[test] fn $scenario() { super::$scenario("3.3.6", stringify!($scenario)); } )* }
        mod pika_3_5_5 { $( #[test] fn $scenario() { super::$scenario("3.5.5", stringify!($scenario)); } )* }
        mod pika_4_0_1 { $( #[test] fn $scenario() { super::$scenario("4.0.1", stringify!($scenario)); } )* }
    };
}

on_each_version!(
    every_database_lands_in_its_own_redis_database_through_writes_to_all,
    dbs_picks_databases_and_a_db_map_moves_one,
    three_kill_9_while_every_database_streams_are_exact,
);

const DATABASES: u32 = 3;

fn master(version: &'static str, test: &str) -> Option<RealPika> {
    let bin = pika_or_skip(version, test)?;
    Some(RealPika::start(
        &bin,
        PikaOptions::default().databases(DATABASES),
    ))
}

/// Every database in `dbs` streams, caught up with the master.
fn wait_all_caught_up(m: &Migration, pika: &RealPika, dbs: &[u32]) {
    m.wait_caught_up_dbs(pika, dbs);
}

/// Redis database `to` holds exactly what the master's database `from` shows.
fn assert_db_same(pika: &RealPika, from: u32, redis: &RedisServer, to: u32) {
    let (want, got) = (redis_view(&pika.state_of_db(from)), redis.state_of_db(to));
    let differences = diff(&want, &got);
    assert!(
        differences.is_empty(),
        "Redis db{to} differs from Pika db{from}:\n{}",
        differences.join("\n")
    );
}

/// Writers for databases 1 and 2 (db0 gets `live_write`); each its own key space.
fn db1_write(i: usize) -> Vec<Vec<u8>> {
    let mut argv = live_write(i);
    argv[1] = [b"d1:".as_slice(), &argv[1]].concat();
    argv
}

fn db2_write(i: usize) -> Vec<Vec<u8>> {
    let mut argv = live_write(i + 7);
    argv[1] = [b"d2:".as_slice(), &argv[1]].concat();
    argv
}

fn writers(pika: &RealPika) -> Vec<Writer> {
    vec![
        Writer::start_on(pika, 0, live_write),
        Writer::start_on(pika, 1, db1_write),
        Writer::start_on(pika, 2, db2_write),
    ]
}

fn every_database_lands_in_its_own_redis_database_through_writes_to_all(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test) else {
        return;
    };
    for db in 0..DATABASES {
        fill_db(&pika, db, "before");
    }
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let writing = writers(&pika);
    let tool = m.start();
    m.wait_streaming_dbs(&tool, &[0, 1, 2]);
    for db in 0..DATABASES {
        change_db(&pika, db);
    }
    std::thread::sleep(Duration::from_millis(500));
    let written: Vec<usize> = writing.into_iter().map(Writer::stop).collect();
    wait_all_caught_up(&m, &pika, &[0, 1, 2]);
    let status = m.status().unwrap();
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    eprintln!("{test}: writes per database {written:?}");
    assert!(written.iter().all(|w| *w > 0), "every database was written");
    for db in 0..DATABASES {
        assert_eq!(
            status["dbs"][db.to_string()]["stage"],
            "streaming",
            "{status}"
        );
        assert_db_same(&pika, db, &redis, db);
    }
    assert_eq!(pika.full_syncs_served(), 3, "one full sync per database");
    for db in 0..DATABASES {
        assert!(m.checkpoint_at_of(db).is_some(), "db{db} has its position");
    }
    if pika.bin.pushes_dump() {
        // 3.2–3.4 push the dumps one after the other: the first database loaded
        // streams while the others' dumps still arrive.
        let log = m.log_text();
        let first_streaming = log.find("streaming the binlog").unwrap();
        let last_dump = log.rfind("full sync: dump received").unwrap();
        assert!(
            first_streaming < last_dump,
            "a full sync held up the streaming of another database:\n{log}"
        );
    }
}

fn dbs_picks_databases_and_a_db_map_moves_one(version: &'static str, test: &str) {
    let Some(pika) = master(version, test) else {
        return;
    };
    for db in 0..DATABASES {
        fill_db(&pika, db, "before");
    }
    let redis = RedisServer::start();
    // `dbs: [1]` moves db1 alone.
    let only = Migration::new(&pika.addr(), &redis.url(), "  dbs: [1]\n");
    let tool = only.start();
    only.wait_streaming_dbs(&tool, &[1]);
    for db in 0..DATABASES {
        change_db(&pika, db);
    }
    wait_all_caught_up(&only, &pika, &[1]);
    assert_eq!(stop(tool), 0, "{}", only.log_text());
    assert_db_same(&pika, 1, &redis, 1);
    for untouched in [0, 2, 5] {
        assert!(
            redis.state_of_db(untouched).is_empty(),
            "Redis db{untouched} stays empty"
        );
    }
    assert_eq!(
        (only.stage_of(0), only.stage_of(2)),
        (None, None),
        "db0 and db2 are not followed"
    );

    // A `db` filter moves db2 into Redis db 5.
    let moved = Migration::new(
        &pika.addr(),
        &redis.url(),
        "  dbs: [2]\nfilters:\n  - type: db\n    map: {2: 5}\n",
    );
    let tool = moved.start();
    moved.wait_streaming_dbs(&tool, &[2]);
    wait_all_caught_up(&moved, &pika, &[2]);
    assert_eq!(stop(tool), 0, "{}", moved.log_text());
    assert_db_same(&pika, 2, &redis, 5);
    assert!(redis.state_of_db(2).is_empty(), "Redis db2 stays empty");
    assert_eq!(
        pika.full_syncs_served(),
        2,
        "one full sync per database followed"
    );

    // A database the master does not have is refused with a clear message.
    let m = Migration::new(&pika.addr(), &redis.url(), "  dbs: [1, 7]\n");
    let (code, log) = m.run_to_end();
    assert_eq!(code, 78, "{log}");
    assert!(
        log.contains("no database 7") && log.contains("db0, db1, db2"),
        "{log}"
    );
}

#[test]
fn several_databases_into_a_redis_cluster_are_refused_unless_their_keys_name_them() {
    let Some(pika) = master("3.3.6", "several_databases_into_a_redis_cluster") else {
        return;
    };
    for db in 0..DATABASES {
        fill_db(&pika, db, "before");
    }
    let cluster = RedisCluster::start(3);
    let sinks = format!(
        "  - type: redis\n    url: {}\n    cluster: true\n",
        cluster.url()
    );
    let m = Migration::with_sinks(&pika.addr(), "", &sinks);
    let (code, log) = m.run_to_end();
    assert_eq!(code, 78, "{log}");
    assert!(
        log.contains("db0, db1, db2") && log.contains("only database 0") && log.contains("{db}"),
        "{log}"
    );
    assert!(cluster.state().is_empty(), "nothing was written");

    let m = Migration::with_sinks(
        &pika.addr(),
        "filters:\n  - type: rename\n    add_prefix: 'db{db}:'\n",
        &sinks,
    );
    let tool = m.start();
    m.wait_streaming_dbs(&tool, &[0, 1, 2]);
    wait_all_caught_up(&m, &pika, &[0, 1, 2]);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    let mut want = State::new();
    for db in 0..DATABASES {
        for ((key, kind), value) in redis_view(&pika.state_of_db(db)) {
            want.insert(
                ([format!("db{db}:").as_bytes(), &key].concat(), kind),
                value,
            );
        }
    }
    let differences = diff(&want, &cluster.state());
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

fn three_kill_9_while_every_database_streams_are_exact(version: &'static str, test: &str) {
    let Some(pika) = master(version, test) else {
        return;
    };
    for db in 0..DATABASES {
        fill_db(&pika, db, "before");
    }
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let writing = writers(&pika);
    for round in 0..3 {
        let tool = m.start();
        m.wait_streaming_dbs(&tool, &[0, 1, 2]);
        std::thread::sleep(Duration::from_millis(300 + 400 * round));
        kill9(tool);
    }
    let tool = m.start();
    m.wait_streaming_dbs(&tool, &[0, 1, 2]);
    std::thread::sleep(Duration::from_millis(500));
    let written: Vec<usize> = writing.into_iter().map(Writer::stop).collect();
    wait_all_caught_up(&m, &pika, &[0, 1, 2]);
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    eprintln!("{test}: writes per database {written:?}");
    for db in 0..DATABASES {
        assert_db_same(&pika, db, &redis, db);
    }
    assert_eq!(
        pika.full_syncs_served(),
        3,
        "one full sync per database, none after a kill"
    );
}
