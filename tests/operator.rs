//! The operator's path to the switch, against real Pika masters (3.2.9, 3.3.6, 3.5.5 and
//! 4.0.1 from `PIKA_BIN_DIR`) and a real redis-server: `verify` of a live master while
//! writes go on.
//!
//! Without the Pika binaries each test prints one line saying it was skipped.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::real_pika::*;
use common::tool::*;
use common::*;

macro_rules! on_each_version {
    ($($scenario:ident),* $(,)?) => {
        mod pika_3_2_9 {
            $( #[test] fn $scenario() { super::$scenario("3.2.9", stringify!($scenario)); } )*
        }
        mod pika_3_3_6 {
            $( #[test] fn $scenario() { super::$scenario("3.3.6", stringify!($scenario)); } )*
        }
        mod pika_3_5_5 {
            $( #[test] fn $scenario() { super::$scenario("3.5.5", stringify!($scenario)); } )*
        }
        mod pika_4_0_1 {
            $( #[test] fn $scenario() { super::$scenario("4.0.1", stringify!($scenario)); } )*
        }
    };
}

on_each_version!(
    plan_of_a_live_master_takes_its_dump_and_the_run_loads_it_with_no_second_full_sync,
    live_verify_finds_nothing_while_writes_go_on_and_exactly_what_was_broken,
    pause_holds_everything_back_with_the_link_up_and_resume_goes_on_exactly,
    cutover_waits_for_the_writes_to_stop_then_verifies_stops_and_reports,
);

const CATCH_UP: Duration = Duration::from_secs(120);

fn master(version: &'static str, test: &str) -> Option<RealPika> {
    let bin = pika_or_skip(version, test)?;
    Some(RealPika::start(&bin, PikaOptions::default()))
}

/// A master holding db 0's usual keys, an empty Redis, and a migration between them.
fn filled_master_into_redis(
    version: &'static str,
    test: &str,
) -> Option<(RealPika, RedisServer, Migration)> {
    let pika = master(version, test)?;
    fill_db(&pika, 0, "before");
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    Some((pika, redis, m))
}

fn redis_do(redis: &RedisServer, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(&mut redis.client()).unwrap();
}

/// The keys a `verify --json` run reports, as `db:key`.
fn reported(stdout: &str) -> BTreeSet<String> {
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}:{}", d["db"], d["key"].as_str().unwrap()))
        .collect()
}

fn live_verify_finds_nothing_while_writes_go_on_and_exactly_what_was_broken(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test) else {
        return;
    };
    fill_db(&pika, 0, "before");
    // A big hash, list and sorted set (read in chunks), a score of -inf.
    let mut con = pika.client();
    for i in 0..1500 {
        let _: () = redis::cmd("HSET")
            .arg("big:h")
            .arg(format!("f{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
        let _: () = redis::cmd("RPUSH")
            .arg("big:l")
            .arg(i)
            .query(&mut con)
            .unwrap();
        let _: () = redis::cmd("ZADD")
            .arg("big:z")
            .arg(i)
            .arg(format!("m{i}"))
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("ZADD")
        .arg("big:z")
        .arg("-inf")
        .arg("bottom")
        .query(&mut con)
        .unwrap();
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);

    // Writes go on all through the first verify: what differs for a moment (a write
    // not yet carried) is compared again and agrees.
    let writer = Writer::start(&pika, live_write);
    std::thread::sleep(Duration::from_millis(500));
    let (code, stdout, stderr) = run_cli(&[
        "verify",
        "-c",
        m.pipeline.to_str().unwrap(),
        "--settle",
        "2",
        "--rounds",
        "5",
    ]);
    let written = writer.stop();
    assert!(written > 0);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(" 0 differ"), "{stdout}");
    m.wait_caught_up(&pika);

    // Redis broken on purpose: exactly those keys are reported.
    redis_do(&redis, &["DEL", "s:5"]);
    redis_do(&redis, &["HSET", "h:1", "f1", "tampered"]);
    redis_do(&redis, &["ZADD", "z", "99.25", "before-db0-3"]);
    redis_do(&redis, &["PEXPIRE", "ttl:before", "99999999"]);
    redis_do(&redis, &["LSET", "l:2", "0", "swapped"]);
    redis_do(&redis, &["HSET", "big:h", "f1234", "tampered"]);
    redis_do(&redis, &["SET", "only:in:redis", "x"]);
    let (code, stdout, stderr) = run_cli(&[
        "verify",
        "-c",
        m.pipeline.to_str().unwrap(),
        "--json",
        "--settle",
        "1",
        "--rounds",
        "2",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let want: BTreeSet<String> = [
        "s:5",
        "h:1",
        "z",
        "ttl:before",
        "l:2",
        "big:h",
        "only:in:redis",
    ]
    .iter()
    .map(|k| format!("0:{k}"))
    .collect();
    assert_eq!(reported(&stdout), want, "{stdout}");
    assert_eq!(stop(tool), 0, "{}", m.log_text());
}

/// Three databases into a 3-master Redis Cluster, their keys apart by a `{db}` rename:
/// verify reads each database of the master, renames as the pipeline does, finds each
/// key on its node; a key broken in db 2 is reported as db 2's. A sample of 20 keys per
/// database at 200 keys/s checks 60.
#[test]
fn live_verify_of_three_databases_into_a_cluster_through_a_rename() {
    let test = "live_verify_of_three_databases_into_a_cluster_through_a_rename";
    let Some(bin) = pika_or_skip("3.3.6", test) else {
        return;
    };
    let pika = RealPika::start(&bin, PikaOptions::default().databases(3));
    for db in 0..3 {
        fill_db(&pika, db, "before");
    }
    let cluster = RedisCluster::start(3);
    let sinks = format!(
        "  - type: redis\n    url: {}\n    cluster: true\n",
        cluster.url()
    );
    let m = Migration::with_sinks(
        &pika.addr(),
        "filters:\n  - type: rename\n    add_prefix: 'db{db}:'\n",
        &sinks,
    );
    let tool = m.start();
    m.wait_streaming_dbs(&tool, &[0, 1, 2]);
    m.wait_for(CATCH_UP, "every database caught up", || {
        (0..3).all(|db| m.db_caught_up_with(db, pika.binlog_offset(db)))
    });
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "-c", m.pipeline.to_str().unwrap(), "--json"];
        args.extend_from_slice(&["--settle", "1", "--rounds", "2"]);
        args.extend_from_slice(extra);
        run_cli(&args)
    };
    let (code, stdout, stderr) = verify(&[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let whole: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let keys = whole["keys"].as_u64().unwrap();
    assert!(keys > 3 * 50, "{whole}");

    let mut node = cluster
        .nodes
        .iter()
        .map(|n| n.client())
        .find_map(|mut c| {
            // The other nodes answer MOVED.
            let held: Option<i64> = redis::cmd("EXISTS").arg("db2:h:3").query(&mut c).ok();
            (held == Some(1)).then_some(c)
        })
        .expect("some node holds db2:h:3");
    let _: () = redis::cmd("HDEL")
        .arg("db2:h:3")
        .arg("f3")
        .query(&mut node)
        .unwrap();
    let (code, stdout, stderr) = verify(&[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        reported(&stdout),
        BTreeSet::from(["2:h:3".to_owned()]),
        "{stdout}"
    );

    let (_, stdout, stderr) = verify(&["--sample", "20", "--rate", "200"]);
    let sampled: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    assert_eq!(sampled["keys"], 60, "{sampled}");
    assert!(sampled["seconds"].as_f64().unwrap() >= 0.25, "{sampled}");
    assert_eq!(stop(tool), 0, "{}", m.log_text());
}

fn pause_holds_everything_back_with_the_link_up_and_resume_goes_on_exactly(
    version: &'static str,
    test: &str,
) {
    let Some((pika, redis, m)) = filled_master_into_redis(version, test) else {
        return;
    };
    let tool = m.start();
    m.wait_streaming(&tool);
    let writer = Writer::start(&pika, counter_and_list);
    std::thread::sleep(Duration::from_millis(500));
    let (code, stdout, stderr) = run_cli(&["pause", "-c", m.pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("paused"), "{stdout}");
    // The stream moves its position a few milliseconds after the sinks acknowledge:
    // once it stands, nothing may move it while paused.
    let mut position = m.status().unwrap()["position"].clone();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = m.status().unwrap()["position"].clone();
        if now == position {
            break;
        }
        position = now;
    }
    let held = redis.state();
    // Writes go on on the master for longer than its 20-s silence rule: nothing is
    // applied, nothing acked, and the master keeps us as its replica.
    let before = writer.written();
    std::thread::sleep(Duration::from_secs(22));
    assert!(writer.written() > before + 100);
    assert_same(&held, &redis.state());
    let status = m.status().unwrap();
    assert_eq!(status["paused"], true);
    assert_eq!(
        status["position"], position,
        "nothing acknowledged while paused"
    );
    assert!(
        pika.replicas()
            .contains(&format!("127.0.0.1:{}", m.announce_port)),
        "the master still lists us"
    );
    let (code, stdout, stderr) = run_cli(&["resume", "-c", m.pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    writer.stop();
    m.wait_caught_up(&pika);
    assert_eq!(m.interruptions(), 0, "{}", m.log_text());
    assert_eq!(pika.full_syncs_served(), 1);
    assert_same(&redis_view(&pika.state()), &redis.state());
    assert_eq!(stop(tool), 0, "{}", m.log_text());
}

/// Counters and list pushes: applied twice or skipped, they would show.
fn counter_and_list(i: usize) -> Vec<Vec<u8>> {
    let words: Vec<String> = match i % 3 {
        0 => vec!["INCR".into(), format!("ctr:{}", i % 7)],
        1 => vec!["RPUSH".into(), format!("log:{}", i % 5), i.to_string()],
        _ => vec![
            "HINCRBY".into(),
            "hc".into(),
            format!("f{}", i % 11),
            "1".into(),
        ],
    };
    words.into_iter().map(String::into_bytes).collect()
}

fn cutover_waits_for_the_writes_to_stop_then_verifies_stops_and_reports(
    version: &'static str,
    test: &str,
) {
    let Some((pika, redis, m)) = filled_master_into_redis(version, test) else {
        return;
    };
    let mut tool = m.start();
    m.wait_streaming(&tool);
    let writer = Writer::start(&pika, counter_and_list);
    let pipeline = m.pipeline.to_str().unwrap().to_owned();

    // While the master takes writes, the gate does not open; it says why.
    let (code, stdout, stderr) = run_cli(&[
        "cutover",
        "-c",
        &pipeline,
        "--quiet-for",
        "3",
        "--timeout",
        "4",
    ]);
    assert_eq!(code, 75, "{stdout}{stderr}");
    assert!(stdout.contains("the master's binlog moved"), "{stdout}");
    let (code, stdout, _) =
        run_cli(&["status", "-c", &pipeline, "--wait-synced", "--timeout", "1"]);
    // Writes at the master's full rate: some are always in flight, or not: either way
    // the answer names it.
    assert!(
        code == 0 || (code == 75 && stdout.contains("not synced")),
        "{stdout}"
    );

    // The gate, waiting; the writes stop; it opens, verifies, stops the pipeline.
    let report = m.dir.path().join("cutover.json");
    let gate = std::process::Command::new(bin())
        .args([
            "cutover",
            "-c",
            &pipeline,
            "--quiet-for",
            "2",
            "--timeout",
            "120",
        ])
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    writer.stop();
    let out = gate.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ready to switch"), "{stdout}");
    // What the operator sees (`--nocapture` shows it; the README quotes it).
    println!("{stdout}");
    assert_eq!(
        wait_exit(&mut tool, Duration::from_secs(30)),
        0,
        "{}",
        m.log_text()
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    println!("{report:#}");
    let (f, o) = pika.binlog_offset(0);
    let at = format!("{f}:{o}");
    assert_eq!(report["master_positions"]["0"], at.as_str(), "{report}");
    assert_eq!(report["applied_positions"]["0"], at.as_str(), "{report}");
    assert_eq!(report["verify"]["equal"], true, "{report}");
    assert_eq!(report["ready"], true);
    // Stopped cleanly, its position saved: the master's.
    assert_eq!(
        m.checkpoint_at(),
        Some(pika_migrate_core::event::BinlogOffset::new(f, o))
    );
    assert_same(&redis_view(&pika.state()), &redis.state());
}

fn plan_of_a_live_master_takes_its_dump_and_the_run_loads_it_with_no_second_full_sync(
    version: &'static str,
    test: &str,
) {
    let Some((pika, redis, m)) = filled_master_into_redis(version, test) else {
        return;
    };
    let (code, stdout, stderr) = run_cli(&["plan", "-c", m.pipeline.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let shown = pika.state();
    assert_eq!(report["keys"], shown.len() as u64, "{report}");
    assert_eq!(report["fits"], true);
    assert!(report["estimated_memory"].as_u64().unwrap() > 0);
    let written: i64 = redis::cmd("DBSIZE").query(&mut redis.client()).unwrap();
    assert_eq!(written, 0, "plan wrote nothing");
    assert_eq!(pika.full_syncs_served(), 1);

    // The run loads the dump plan took, then streams: one full sync in all.
    let tool = m.start();
    m.wait_streaming(&tool);
    m.wait_caught_up(&pika);
    assert_eq!(pika.full_syncs_served(), 1);
    assert_same(&redis_view(&pika.state()), &redis.state());
    assert_eq!(stop(tool), 0, "{}", m.log_text());
}
