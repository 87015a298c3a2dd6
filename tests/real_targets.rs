//! Real Pika 3.3.6 masters into Redis targets that several migrations share, or that
//! are shaped unlike the master: two masters into one Redis and into one Redis
//! Cluster, each tool killed with `-9` while counters, lists and hashes are written;
//! three databases merged into one by a `db` map, killed too; three databases into a
//! Redis of one. Redis is compared with what the masters show. Without the Pika
//! binaries each test says it skipped.

mod common;

use std::process::Child;
use std::time::Duration;

use common::real_pika::*;
use common::tool::*;
use common::*;

fn master(test: &str, databases: u32) -> Option<RealPika> {
    let bin = pika_or_skip("3.3.6", test)?;
    Some(RealPika::start(
        &bin,
        PikaOptions::default().databases(databases),
    ))
}

fn write_a(i: usize) -> Vec<Vec<u8>> {
    counted("a", i)
}

fn write_b(i: usize) -> Vec<Vec<u8>> {
    counted("b", i)
}

/// Keys in every database of `pika` before the migration starts, named by `name` and
/// the database.
fn preload(pika: &RealPika, name: &str, databases: u32) {
    for db in 0..databases {
        let mut con = pika.client_of_db(db);
        for i in 0..50 {
            for argv in [
                counted(&format!("{name}-pre{db}"), i),
                counted(&format!("{name}-p{db}"), i),
            ] {
                let _: redis::Value = command_of(&argv).query(&mut con).unwrap();
            }
        }
    }
}

/// Runs every migration, waits until each streams `dbs`, and kills each with `-9`,
/// twice; then starts them again, streaming. The tools running.
fn killed_twice(migrations: &[&Migration], dbs: &[u32]) -> Vec<Child> {
    for round in 0..2u64 {
        let tools: Vec<Child> = migrations.iter().map(|m| m.start()).collect();
        for (m, tool) in migrations.iter().zip(&tools) {
            m.wait_streaming_dbs(tool, dbs);
        }
        std::thread::sleep(Duration::from_millis(400 + 500 * round));
        for tool in tools {
            kill9(tool);
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let tools: Vec<Child> = migrations.iter().map(|m| m.start()).collect();
    for (m, tool) in migrations.iter().zip(&tools) {
        m.wait_streaming_dbs(tool, dbs);
    }
    std::thread::sleep(Duration::from_millis(500));
    tools
}

/// What the masters' databases hold, all in one key space (their names are apart).
fn union(parts: &[State]) -> State {
    let mut all = State::new();
    for part in parts {
        all.extend(redis_view(part));
    }
    all
}

/// Two masters, each migrated by its own tool into the target of `sinks`, each tool
/// killed with `-9` twice while both masters are written; then Redis (`state`) must
/// hold exactly both masters' data.
/// `false` when skipped (no Pika binaries).
fn two_migrations_killed_twice(test: &str, sinks: &str, state: impl Fn() -> State) -> bool {
    let (Some(a), Some(b)) = (master(test, 1), master(test, 1)) else {
        return false;
    };
    preload(&a, "a", 1);
    preload(&b, "b", 1);
    let migrations = [
        Migration::with_sinks(&a.addr(), "", sinks),
        Migration::with_sinks(&b.addr(), "", sinks),
    ];
    let writers = [Writer::start(&a, write_a), Writer::start(&b, write_b)];
    let tools = killed_twice(&[&migrations[0], &migrations[1]], &[0]);
    let written: Vec<usize> = writers.into_iter().map(Writer::stop).collect();
    for (m, pika) in migrations.iter().zip([&a, &b]) {
        m.wait_caught_up_dbs(pika, &[0]);
    }
    for (m, tool) in migrations.iter().zip(tools) {
        assert_eq!(stop(tool), 0, "{}", m.log_text());
    }
    eprintln!("{test}: writes per master {written:?}");
    assert!(written.iter().all(|w| *w > 0));
    assert_same(&union(&[a.state(), b.state()]), &state());
    true
}

#[test]
fn two_masters_into_one_redis_each_killed_twice_are_exact() {
    let redis = RedisServer::start();
    let sinks = format!(
        "  - type: redis\n    url: {}\n    senders: 4\n    batch: 64\n",
        redis.url()
    );
    let ran = two_migrations_killed_twice(
        "two_masters_into_one_redis_each_killed_twice_are_exact",
        &sinks,
        || redis.state(),
    );
    if !ran {
        return;
    }
    // Each migration's keys name it: `pika@<master>`, one per lane.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pika-migrate:checkpoint:*")
        .query(&mut redis.client())
        .unwrap();
    let masters: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("pika-migrate:checkpoint:pika@127.0.0.1:"))
        .filter_map(|rest| rest.split(':').next())
        .collect();
    assert_eq!(masters.len(), 2, "{keys:?}");
}

#[test]
fn two_masters_into_one_redis_cluster_each_killed_twice_are_exact() {
    let cluster = RedisCluster::start(3);
    let sinks = format!(
        "  - type: redis\n    url: {}\n    cluster: true\n    senders: 2\n    batch: 64\n",
        cluster.url()
    );
    two_migrations_killed_twice(
        "two_masters_into_one_redis_cluster_each_killed_twice_are_exact",
        &sinks,
        || cluster.state(),
    );
}

/// Database `db`'s writes: each database its own key names.
fn write_db0(i: usize) -> Vec<Vec<u8>> {
    counted("d0", i)
}

fn write_db1(i: usize) -> Vec<Vec<u8>> {
    counted("d1", i)
}

fn write_db2(i: usize) -> Vec<Vec<u8>> {
    counted("d2", i)
}

#[test]
fn three_databases_merged_by_a_db_map_and_killed_are_exact() {
    let test = "three_databases_merged_by_a_db_map_and_killed_are_exact";
    let Some(pika) = master(test, 3) else {
        return;
    };
    preload(&pika, "m", 3);
    let redis = RedisServer::start();
    let m = Migration::new(
        &pika.addr(),
        &redis.url(),
        "filters:\n  - type: db\n    map: {0: 0, 1: 0, 2: 0}\n",
    );
    let writers = [
        Writer::start_on(&pika, 0, write_db0),
        Writer::start_on(&pika, 1, write_db1),
        Writer::start_on(&pika, 2, write_db2),
    ];
    let tool = killed_twice(&[&m], &[0, 1, 2]).remove(0);
    let written: Vec<usize> = writers.into_iter().map(Writer::stop).collect();
    m.wait_caught_up_dbs(&pika, &[0, 1, 2]);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    eprintln!("{test}: writes per database {written:?}");
    assert!(written.iter().all(|w| *w > 0));
    let every = union(&[
        pika.state_of_db(0),
        pika.state_of_db(1),
        pika.state_of_db(2),
    ]);
    assert_same(&every, &redis.state());
    for db in [1, 2] {
        assert!(redis.state_of_db(db).is_empty(), "Redis db{db} stays empty");
    }
}

#[test]
fn three_databases_into_a_redis_of_one_are_refused_before_anything_is_written() {
    let test = "three_databases_into_a_redis_of_one_are_refused_before_anything_is_written";
    let Some(pika) = master(test, 3) else {
        return;
    };
    preload(&pika, "m", 3);
    let redis = RedisServer::start_with(&["--databases", "1"]);
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let (code, log) = m.run_to_end();
    assert_eq!(code, 78, "{log}");
    assert!(
        log.contains("db0, db1, db2")
            && log.contains("only database 0")
            && log.contains("db1, db2 would have nowhere to go")
            && log.contains("`db` filter")
            && log.contains("{db}"),
        "{log}"
    );
    let size: i64 = redis::cmd("DBSIZE").query(&mut redis.client()).unwrap();
    assert_eq!(size, 0, "nothing written, no checkpoint key either");
    assert_eq!(pika.full_syncs_served(), 0, "refused before any full sync");

    // With the databases mapped into the one Redis has, and kept apart by name, the
    // same master goes through.
    let m = Migration::new(
        &pika.addr(),
        &redis.url(),
        "filters:\n  - type: rename\n    add_prefix: 'db{db}:'\n  - type: db\n    map: {1: 0, 2: 0}\n",
    );
    let tool = m.start();
    m.wait_streaming_dbs(&tool, &[0, 1, 2]);
    m.wait_caught_up_dbs(&pika, &[0, 1, 2]);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    let size: i64 = redis::cmd("DBSIZE").query(&mut redis.client()).unwrap();
    assert!(size > 0);
}
