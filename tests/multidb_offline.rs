//! Several databases offline: a real Pika master with `databases 3` and different data
//! in each (every type, expiries, one name holding another type in another database),
//! its BGSAVE dump and then its whole `log/` directory (every `log_db<N>/`, each from its
//! own database's dump position) replayed into a real Redis: Redis db N equals Pika's
//! db N. Runs on Pika 3.2.9, 3.3.6, 3.5.5 and 4.0.1 (a floyd dump) from `PIKA_BIN_DIR`; skipped without them.

mod common;

use std::time::{Duration, Instant};

use common::real_pika::*;
use common::*;

#[test]
fn pika_3_2_9_dump_and_log_dir_of_three_databases_replay_exactly() {
    dump_and_log_dir_replay_exactly("3.2.9", "pika_3_2_9_dump_and_log_dir");
}

#[test]
fn pika_3_3_6_dump_and_log_dir_of_three_databases_replay_exactly() {
    dump_and_log_dir_replay_exactly("3.3.6", "pika_3_3_6_dump_and_log_dir");
}

#[test]
fn pika_3_5_5_dump_and_log_dir_of_three_databases_replay_exactly() {
    dump_and_log_dir_replay_exactly("3.5.5", "pika_3_5_5_dump_and_log_dir");
}

#[test]
fn pika_4_0_1_dump_and_log_dir_of_three_databases_replay_exactly() {
    dump_and_log_dir_replay_exactly("4.0.1", "pika_4_0_1_dump_and_log_dir");
}

/// The dated directory BGSAVE writes under `dump/`, once every database's `info` is in it.
fn wait_for_dump(pika: &RealPika, databases: u32) -> std::path::PathBuf {
    let root = pika.dir().join("dump");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dated = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_dir());
        if let Some(dir) = dated {
            if (0..databases).all(|db| dir.join(format!("db{db}/info")).exists()) {
                return dir;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete dump under {}",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dump_and_log_dir_replay_exactly(version: &'static str, test: &str) {
    let Some(bin) = pika_or_skip(version, test) else {
        return;
    };
    let mut pika = RealPika::start(&bin, PikaOptions::default().databases(3));
    for db in 0..3 {
        fill_db(&pika, db, "before");
    }
    let _: redis::Value = redis::cmd("BGSAVE").query(&mut pika.client()).unwrap();
    let dump = wait_for_dump(&pika, 3);
    for db in 0..3 {
        change_db(&pika, db);
    }
    let expected: Vec<State> = (0..3).map(|db| redis_view(&pika.state_of_db(db))).collect();
    assert_ne!(expected[0], expected[1], "the databases must differ");
    pika.stop();

    let redis = RedisServer::start();
    let work = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        work.path(),
        &format!(
            "source:\n  type: snapshot\n  path: {}\nsinks:\n  - type: redis\n    url: {}\n",
            dump.display(),
            redis.url()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    // The tool names where each database's binlog goes on, in the form `from:` takes.
    let from = stderr
        .lines()
        .find_map(|l| l.strip_prefix("source positions at the end, per database: "))
        .unwrap_or_else(|| panic!("no positions per database in:\n{stderr}"))
        .to_owned();
    assert!(
        from.contains("0: ") && from.contains("1: ") && from.contains("2: "),
        "{from}"
    );

    let log = pika.dir().join("log");
    let pipeline = write_pipeline(
        work.path(),
        &format!(
            "source:\n  type: binlog\n  path: {}\n  from: {from}\nsinks:\n  - type: redis\n    url: {}\n",
            log.display(),
            redis.url()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for (db, want) in expected.iter().enumerate() {
        let got = redis.state_of_db(db as u32);
        let differences = diff(want, &got);
        assert!(
            differences.is_empty(),
            "db{db} differs from Pika's:\n{}",
            differences.join("\n")
        );
    }

    // `inspect binlog` on the whole log/ names each item's database.
    let (code, stdout, _) = run_cli(&["inspect", "binlog", "--json", log.to_str().unwrap()]);
    assert_eq!(code, 0);
    let dbs: std::collections::BTreeSet<u64> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["db"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(dbs, [0, 1, 2].into_iter().collect());
}
