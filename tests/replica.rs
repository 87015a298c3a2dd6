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
use pika_migrate_core::event::BinlogOffset;

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
        self.checkpoint()?["stage"].as_str().map(str::to_owned)
    }

    fn checkpoint(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.work_dir().join("checkpoint.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The checkpoint's `at` (stage `stream`): where a restart resumes the binlog.
    fn checkpoint_at(&self) -> Option<BinlogOffset> {
        serde_json::from_value(self.checkpoint()?.get("at")?.clone()).ok()
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Processes (pid, command line) running with this migration's work dir in their
    /// command line: our rsync daemon (`--config=<work_dir>/rsync/rsyncd.conf`) and its
    /// children. The tool itself names only the pipeline file.
    fn processes_in_work_dir(&self) -> Vec<(u32, String)> {
        let work = self.work_dir().display().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&work) {
                found.push((pid, cmdline));
            }
        }
        found
    }

    /// How many times the tool lost its link and went back to reconnecting.
    fn interruptions(&self) -> usize {
        self.log_text().matches("replication interrupted").count()
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
    let mut expected = binlog_end_state();
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

/// A master built from `options` is refused with exit code 76 and a message saying why.
fn assert_unsupported(options: MasterOptions, says: &str) {
    let (code, log) = refused(options, None);
    assert_eq!(code, 76, "{log}");
    assert!(log.contains(says), "{log}");
}

#[test]
fn a_master_in_sharding_mode_is_refused() {
    let options = MasterOptions {
        classic_mode: false,
        ..MasterOptions::default()
    };
    assert_unsupported(options, "sharding mode");
}

#[test]
fn a_master_with_several_databases_is_refused() {
    let options = MasterOptions {
        databases: 3,
        ..MasterOptions::default()
    };
    assert_unsupported(options, "has 3 databases");
}

#[test]
fn a_master_that_is_itself_a_replica_is_refused() {
    let options = MasterOptions {
        role: "slave",
        ..MasterOptions::default()
    };
    assert_unsupported(options, "is itself a replica");
}

#[test]
fn a_pika_version_we_do_not_speak_is_refused() {
    let options = MasterOptions {
        version: "3.5.2".into(),
        ..MasterOptions::default()
    };
    assert_unsupported(options, "runs Pika 3.5.2");
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

/// Starts the tool on a fresh migration and waits until it streams, caught up.
fn streaming(master: &PikaMaster, m: &Migration) -> Child {
    let tool = m.start();
    wait_until("streaming", CATCH_UP, || {
        m.stage().as_deref() == Some("stream")
    });
    wait_until("the stream to catch up", CATCH_UP, || caught_up(master));
    tool
}

/// After a cut or a master restart the tool rejoins on its own: the master lists it
/// again and takes its acks.
fn wait_rejoined(master: &PikaMaster) {
    wait_until("the tool to rejoin the master", CATCH_UP, || {
        master.replicas().len() == 1
    });
}

#[test]
fn a_network_cut_while_streaming_is_resumed_without_loss_or_duplicates() {
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions::default());
    let m = Migration::new(&master, &redis, "");
    let tool = streaming(&master, &m);

    // Three cuts, each with writes before it (some still in flight, unacked, when it
    // hits) and writes while the tool is away.
    let mut next = 0;
    for round in 0..3 {
        write_both(&master, &mut ref_conn, next..next + 1000);
        next += 1000;
        master.cut();
        assert!(master.replicas().is_empty(), "round {round}: cut");
        write_both(&master, &mut ref_conn, next..next + 500);
        next += 500;
        wait_rejoined(&master);
    }
    write_both(&master, &mut ref_conn, next..next + 1000);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(master.replicas().len(), 1, "the master lists us again");
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    assert!(m.interruptions() >= 3, "{}", m.log_text());
    assert_resumed_exactly(&master, &m, &redis, &reference);
}

/// After a clean stop: still the one full sync, the checkpoint at the master's
/// position, and exactly the master's data.
fn assert_resumed_exactly(
    master: &PikaMaster,
    m: &Migration,
    redis: &RedisServer,
    reference: &RedisServer,
) {
    assert_eq!(
        master.dbsyncs(),
        1,
        "resumed by TrySync, no second full sync"
    );
    assert_eq!(m.checkpoint_at(), Some(master.position()));
    assert_redis_holds_the_masters_data(redis, reference);
}

#[test]
fn a_master_restart_is_resumed_from_the_checkpoint() {
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions::default());
    let m = Migration::new(&master, &redis, "");
    let tool = streaming(&master, &m);

    // A restart with writes in flight, then more writes while the tool is away.
    write_both(&master, &mut ref_conn, 0..1500);
    master.restart();
    write_both(&master, &mut ref_conn, 1500..2500);
    wait_rejoined(&master);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    // A restart of an idle master (everything acked), then writes.
    master.restart();
    write_both(&master, &mut ref_conn, 2500..4000);
    wait_rejoined(&master);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(master.replicas().len(), 1, "the master lists us again");
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    assert!(m.interruptions() >= 2, "{}", m.log_text());
    assert_resumed_exactly(&master, &m, &redis, &reference);
}

#[test]
fn a_slow_sink_holding_acks_does_not_get_us_dropped() {
    const DROP_AFTER: Duration = Duration::from_secs(5);
    const PAUSE: Duration = Duration::from_secs(8);
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions {
        drop_after: DROP_AFTER,
        ..MasterOptions::default()
    });
    let m = Migration::new(&master, &redis, "");
    let tool = streaming(&master, &m);
    write_both(&master, &mut ref_conn, 0..500);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));

    // The target stalls every write for longer than the master tolerates silence
    // (CLIENT PAUSE ... WRITE since Redis 6.2; a plain pause before that).
    let mut pauser = redis.client();
    let ms = PAUSE.as_millis().to_string();
    let paused_at = Instant::now();
    let write_only: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(&ms)
        .arg("WRITE")
        .query(&mut pauser);
    if write_only.is_err() {
        let () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(&ms)
            .query(&mut pauser)
            .unwrap();
    }
    let before = master.acked();
    write_both(&master, &mut ref_conn, 500..2500);

    // Past the master's drop timeout the sink still holds the acks back...
    let past_drop = paused_at + DROP_AFTER + Duration::from_secs(1);
    std::thread::sleep(past_drop.saturating_duration_since(Instant::now()));
    assert!(
        paused_at.elapsed() < PAUSE,
        "the checks ran after the pause"
    );
    assert_eq!(
        master.acked(),
        before,
        "nothing acked while Redis is paused"
    );
    assert!(!caught_up(&master));

    // ...yet once Redis takes writes again, the same session catches up.
    wait_until("the stream to catch up after the pause", CATCH_UP, || {
        caught_up(&master)
    });
    assert!(paused_at.elapsed() >= PAUSE);
    assert_eq!(m.interruptions(), 0, "{}", m.log_text());
    assert_eq!(master.replicas().len(), 1, "the master still lists us");
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    assert_resumed_exactly(&master, &m, &redis, &reference);
}

#[test]
fn sigterm_while_streaming_saves_the_position_and_exits_0() {
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions::default());
    let m = Migration::new(&master, &redis, "");

    // 1. A full sync (its rsync daemon seen while the dump is pushed), writes, caught
    // up: the checkpoint after SIGTERM is exactly where the master's acks stand.
    master.set_push_delay(Duration::from_millis(100));
    let tool = m.start();
    wait_until("our rsync daemon", Duration::from_secs(20), || {
        m.processes_in_work_dir()
            .iter()
            .any(|(_, cmd)| cmd.contains("rsync") && cmd.contains("--daemon"))
    });
    master.set_push_delay(Duration::ZERO);
    wait_until("streaming", CATCH_UP, || {
        m.stage().as_deref() == Some("stream")
    });
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    write_both(&master, &mut ref_conn, 0..2000);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_eq!(m.stage().as_deref(), Some("stream"));
    assert_eq!(m.checkpoint_at(), master.acked(), "{:?}", m.checkpoint());
    assert_eq!(m.checkpoint_at(), Some(master.position()));
    // The rsync daemon of the full sync is gone with the run.
    assert_eq!(m.processes_in_work_dir(), vec![], "left behind");

    // 2. A restart streams on from there; SIGTERM while writes are still arriving: the
    // checkpoint covers what Redis took, at least all the master heard acks for.
    let tool = m.start();
    wait_rejoined(&master);
    write_both(&master, &mut ref_conn, 2000..4000);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_eq!(m.stage().as_deref(), Some("stream"));
    let at = m.checkpoint_at().expect("a stream position");
    let acked = master.acked().expect("acks");
    eprintln!(
        "stopped with acked {acked}, checkpoint {at}, master at {}",
        master.position()
    );
    assert!(
        acked <= at && at <= master.position(),
        "acked {acked}, checkpoint {at}, master at {}",
        master.position()
    );

    // 3. And on again: more writes land exactly, no second full sync.
    let tool = m.start();
    write_both(&master, &mut ref_conn, 4000..5000);
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_eq!(m.checkpoint_at(), master.acked());
    assert_eq!(master.dbsyncs(), 1, "no second full sync");
    assert_eq!(m.interruptions(), 0, "{}", m.log_text());
    assert_redis_holds_the_masters_data(&redis, &reference);
    assert_eq!(m.processes_in_work_dir(), vec![], "left behind");
}

#[test]
fn events_dropped_by_filters_are_acked_and_do_not_stall_the_stream() {
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions::default());
    let filters = "filters:\n  - type: key\n    exclude: ['live:s:*', 'live:n:*']\n";
    let m = Migration::new(&master, &redis, filters);
    let tool = m.start();
    wait_until("streaming", CATCH_UP, || {
        m.stage().as_deref() == Some("stream")
    });
    write_both(&master, &mut ref_conn, 0..3000);
    // The last writes are all dropped: the master must still see them acked.
    for i in 0..50 {
        master.write(&[b"SET", format!("live:s:tail{i}").as_bytes(), b"x"]);
    }
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_eq!(m.checkpoint_at(), Some(master.position()));

    let mut expected = binlog_end_state();
    expected.extend(
        reference
            .state()
            .into_iter()
            .filter(|((k, _), _)| !k.starts_with(b"live:s:") && !k.starts_with(b"live:n:")),
    );
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same(&expected, &actual);
}
