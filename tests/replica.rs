//! The live replica end to end: the real binary joins the mock Pika master
//! (`common::pika_master`, which pushes the fixture dump with the real rsync client),
//! takes a full sync, streams the binlog into a real redis-server, survives `kill -9`,
//! and refuses what it must.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pika_master::{MasterOptions, PikaMaster};
use common::*;

/// An announced replica port whose port + 1000 (our rsync daemon's) is free too.
fn announce_port() -> u16 {
    loop {
        let p = free_port();
        if p < 60000 && std::net::TcpListener::bind(("127.0.0.1", p + 1000)).is_ok() {
            return p;
        }
    }
}

/// One migration: a work dir, a pipeline file, a log of every run of the tool.
struct Migration {
    dir: tempfile::TempDir,
    pipeline: PathBuf,
}

impl Migration {
    fn new(master: &PikaMaster, redis: &RedisServer, source_extra: &str) -> Migration {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "source:\n  type: pika\n  master: 127.0.0.1:{}\n  announce: 127.0.0.1:{}\n  work_dir: {}\n{source_extra}sinks:\n  - type: redis\n    url: {}\n    senders: 4\n    batch: 64\n",
            master.port(),
            announce_port(),
            dir.path().join("work").display(),
            redis.url()
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        Migration { dir, pipeline }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("tool.log")
    }

    fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        Command::new(bin())
            .args(["run", "-c", self.pipeline.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Runs the tool to its end; (exit code, everything it printed).
    fn run_to_end(&self) -> (i32, String) {
        let mut child = self.start();
        let status = wait_exit(&mut child, Duration::from_secs(60));
        (status, self.log_text())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The checkpoint's stage (`transfer`, `load`, `stream`), if any.
    fn stage(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.path().join("work/checkpoint.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["stage"].as_str().map(str::to_owned)
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the tool did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// SIGTERM, then the exit code of the clean stop.
fn stop(mut child: Child) -> i32 {
    signal(&child, "-TERM");
    wait_exit(&mut child, Duration::from_secs(60))
}

fn kill9(mut child: Child) {
    signal(&child, "-KILL");
    let _ = child.wait();
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `i`-th of the writes a test makes on the master while we replicate: every type,
/// counters, pushes and pops, deletes and expiries, all under `live:`.
fn live_write(i: usize) -> Vec<Vec<u8>> {
    let s = |x: String| x.into_bytes();
    let k = i % 97;
    let args: Vec<String> = match i % 12 {
        0 => vec!["SET".into(), format!("live:s:{k}"), format!("v{i}")],
        1 => vec!["INCRBY".into(), format!("live:n:{}", i % 13), "3".into()],
        2 => vec![
            "HSET".into(),
            format!("live:h:{k}"),
            format!("f{}", i % 31),
            format!("v{i}"),
        ],
        3 => vec!["RPUSH".into(), format!("live:l:{k}"), format!("v{i}")],
        4 => vec![
            "SADD".into(),
            format!("live:set:{k}"),
            format!("m{}", i % 61),
        ],
        5 => vec![
            "ZADD".into(),
            format!("live:z:{k}"),
            format!("{}", i % 17),
            format!("m{}", i % 29),
        ],
        6 => vec!["LPOP".into(), format!("live:l:{}", (k + 5) % 97)],
        7 => vec![
            "HINCRBY".into(),
            format!("live:h:{k}"),
            "count".into(),
            "1".into(),
        ],
        8 => vec!["APPEND".into(), format!("live:s:{k}"), format!("+{i}")],
        9 => vec![
            "SREM".into(),
            format!("live:set:{}", (k + 3) % 97),
            format!("m{}", i % 61),
        ],
        10 => vec![
            "EXPIRE".into(),
            format!("live:s:{}", (k + 1) % 97),
            "3600".into(),
        ],
        _ => vec!["DEL".into(), format!("live:s:{}", (k + 11) % 97)],
    };
    args.into_iter().map(s).collect()
}

/// Makes writes `range` on the master and on the reference Redis.
fn write_both(
    master: &PikaMaster,
    reference: &mut redis::Connection,
    range: std::ops::Range<usize>,
) {
    for i in range {
        let argv = live_write(i);
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        master.write(&refs);
        let mut cmd = redis::cmd(std::str::from_utf8(&argv[0]).unwrap());
        for a in &argv[1..] {
            cmd.arg(a.as_slice());
        }
        let _: redis::Value = cmd.query(reference).unwrap();
    }
}

/// What Redis must hold: the fixture master's final state plus the test's writes (as
/// the reference Redis holds them).
fn assert_redis_holds_the_masters_data(redis: &RedisServer, reference: &RedisServer) {
    let mut expected = redis_view(&live_at(&load_expected("binlog-expected.jsonl"), now_ms()));
    expected.extend(reference.state());
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same(&expected, &actual);
}

fn caught_up(master: &PikaMaster) -> bool {
    master.acked() == Some(master.position())
}

const CATCH_UP: Duration = Duration::from_secs(90);

#[test]
fn full_sync_then_the_binlog_with_writes_during_and_after_lands_exactly() {
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions::default());
    // Slow the dump's push so that writes land while it is on its way.
    master.set_push_delay(Duration::from_millis(200));
    let m = Migration::new(&master, &redis, "");
    let tool = m.start();

    wait_until("the full sync to start", Duration::from_secs(20), || {
        m.stage().as_deref() == Some("transfer")
    });
    write_both(&master, &mut ref_conn, 0..5000);
    wait_until("streaming", CATCH_UP, || {
        m.stage().as_deref() == Some("stream")
    });
    write_both(&master, &mut ref_conn, 5000..10000);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(
        master.replicas().len(),
        1,
        "the master lists us as its replica"
    );
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    assert_eq!(master.dbsyncs(), 1);
    assert_redis_holds_the_masters_data(&redis, &reference);
    let log = m.log_text();
    assert!(log.contains("full sync: dump received"), "{log}");
}

#[test]
fn kill_9_at_transfer_load_and_streaming_loses_nothing_and_full_syncs_once() {
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions::default());
    master.set_push_delay(Duration::from_millis(300));
    let m = Migration::new(&master, &redis, "");
    let mut kills = Vec::new();

    // 1. In the middle of the dump's transfer.
    let tool = m.start();
    wait_until("the transfer", Duration::from_secs(20), || {
        m.stage().as_deref() == Some("transfer")
    });
    std::thread::sleep(Duration::from_millis(700));
    kill9(tool);
    kills.push("transfer");
    let transfer_kills = master.dbsyncs();
    master.set_push_delay(Duration::ZERO);

    // 2. As soon as the dump is complete and loading (if we catch it; the fixture dump
    // loads fast).
    let tool = m.start();
    wait_until("the load", CATCH_UP, || {
        matches!(m.stage().as_deref(), Some("load" | "stream"))
    });
    if m.stage().as_deref() == Some("load") {
        kills.push("load");
    }
    kill9(tool);

    // 3. Streaming, with writes flowing, several times.
    let mut next = 0;
    for round in 0..4 {
        let tool = m.start();
        wait_until("streaming", CATCH_UP, || {
            m.stage().as_deref() == Some("stream")
        });
        write_both(&master, &mut ref_conn, next..next + 1500);
        next += 1500;
        std::thread::sleep(Duration::from_millis(50 + 97 * round));
        kill9(tool);
        kills.push("stream");
    }

    let tool = m.start();
    write_both(&master, &mut ref_conn, next..next + 1000);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    eprintln!("kills: {kills:?}, full syncs: {}", master.dbsyncs());
    assert!(kills.len() >= 5, "{kills:?}");
    assert_eq!(
        master.dbsyncs(),
        transfer_kills + 1,
        "one full sync after the killed transfer, none after it completed"
    );
    assert_redis_holds_the_masters_data(&redis, &reference);
}

fn refused(options: MasterOptions, password: Option<&str>) -> (i32, String) {
    let redis = RedisServer::start();
    let master = PikaMaster::start(options);
    let extra = password
        .map(|p| format!("  password: {p}\n"))
        .unwrap_or_default();
    let m = Migration::new(&master, &redis, &extra);
    m.run_to_end()
}

#[test]
fn a_master_in_sharding_mode_is_refused() {
    let (code, log) = refused(
        MasterOptions {
            classic_mode: false,
            ..MasterOptions::default()
        },
        None,
    );
    assert_eq!(code, 76, "{log}");
    assert!(log.contains("sharding mode"), "{log}");
}

#[test]
fn a_master_with_several_databases_is_refused() {
    let (code, log) = refused(
        MasterOptions {
            databases: 3,
            ..MasterOptions::default()
        },
        None,
    );
    assert_eq!(code, 76, "{log}");
    assert!(log.contains("has 3 databases"), "{log}");
}

#[test]
fn a_master_that_is_itself_a_replica_is_refused() {
    let (code, log) = refused(
        MasterOptions {
            role: "slave",
            ..MasterOptions::default()
        },
        None,
    );
    assert_eq!(code, 76, "{log}");
    assert!(log.contains("is itself a replica"), "{log}");
}

#[test]
fn a_pika_version_we_do_not_speak_is_refused() {
    let (code, log) = refused(
        MasterOptions {
            version: "3.5.2".into(),
            ..MasterOptions::default()
        },
        None,
    );
    assert_eq!(code, 76, "{log}");
    assert!(log.contains("runs Pika 3.5.2"), "{log}");
}

#[test]
fn a_wrong_password_is_refused() {
    let options = || MasterOptions {
        requirepass: Some("s3cret".into()),
        ..MasterOptions::default()
    };
    let (code, log) = refused(options(), Some("wrong"));
    assert_eq!(code, 77, "{log}");
    assert!(log.contains("refused our password"), "{log}");
    assert!(!log.contains("wrong"), "the password is not printed: {log}");
    let (code, log) = refused(options(), None);
    assert_eq!(code, 77, "{log}");
}

#[test]
fn an_unreachable_master_is_reported_at_once() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "source:\n  type: pika\n  master: 127.0.0.1:{port}\n  announce: 127.0.0.1:{}\n  work_dir: {}\nsinks:\n  - type: redis\n    url: {}\n",
        announce_port(),
        dir.path().join("work").display(),
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the Pika master at 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn a_purged_position_after_a_full_sync_is_refused_unless_resync_is_allowed() {
    let redis = RedisServer::start();
    let master = PikaMaster::start(MasterOptions::default());
    let m = Migration::new(&master, &redis, "");
    let tool = m.start();
    wait_until("streaming", CATCH_UP, || {
        m.stage().as_deref() == Some("stream")
    });
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    // The master rotates to a new file and purges the one we stand in.
    let at = master.position();
    while master.position().filenum == at.filenum {
        master.write(&[b"SET", b"filler", &[b'x'; 4000]]);
    }
    master.purge_before(master.position().filenum);
    let (code, log) = m.run_to_end();
    assert_eq!(code, 65, "{log}");
    assert!(log.contains("its binlog was purged"), "{log}");
    assert!(log.contains("resync: allow"), "{log}");
    assert_eq!(master.dbsyncs(), 1, "no second full sync");

    // The operator allows it: a new full sync is asked for. (The mock master only has
    // the fixture's dump, from the purged file, so it cannot go further here.)
    let text = std::fs::read_to_string(&m.pipeline).unwrap();
    std::fs::write(
        &m.pipeline,
        text.replace("sinks:", "  resync: allow\nsinks:"),
    )
    .unwrap();
    let tool = m.start();
    wait_until("the second full sync", CATCH_UP, || master.dbsyncs() == 2);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert!(m
        .log_text()
        .contains("taking a new full sync (resync: allow)"));
}
