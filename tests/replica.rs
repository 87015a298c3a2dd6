//! The live replica against the mock Pika master (`common::pika_master`, which pushes
//! the fixture dump with the real rsync client), for what a real master cannot be made
//! to do: a network cut without a FIN, a master gone silent on an open connection, a
//! dump that never comes, a version we do not speak, a replication port that does not
//! answer. Everything a real master can show is in `real_master.rs`.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::pika_master::{MasterOptions, PikaMaster};
use common::tool::*;
use common::*;

/// The mock master's client address.
fn mock_addr(master: &PikaMaster) -> String {
    format!("127.0.0.1:{}", master.port())
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
        let _: redis::Value = command_of(&argv).query(reference).unwrap();
    }
}

/// What Redis must hold: the fixture master's final state as it is now (the mock
/// master serves items written on the fixture's day: those whose keys' time has passed
/// since arrive late, and their expiries are held back as a late replay's), plus the
/// test's writes (as the reference Redis holds them).
fn assert_redis_holds_the_masters_data(redis: &RedisServer, reference: &RedisServer) {
    let mut expected = binlog_state_at(now_ms());
    expected.extend(reference.state());
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same(&expected, &actual);
}

fn caught_up(master: &PikaMaster) -> bool {
    master.acked() == Some(master.position())
}

const CATCH_UP: Duration = Duration::from_secs(90);

fn refused(options: MasterOptions) -> (i32, String) {
    let redis = RedisServer::start();
    let master = PikaMaster::start(options);
    Migration::new(&mock_addr(&master), &redis.url(), "").run_to_end()
}

/// A master built from `options` is refused with exit code 76 and a message saying why.
fn assert_unsupported(options: MasterOptions, says: &str) {
    let (code, log) = refused(options);
    assert_eq!(code, 76, "{log}");
    assert!(log.contains(says), "{log}");
}

#[test]
fn a_pika_version_we_do_not_speak_is_refused() {
    let options = MasterOptions {
        version: "4.1.0".into(),
        ..MasterOptions::default()
    };
    assert_unsupported(options, "runs Pika 4.1.0");
}

/// INFO names the version, MetaSync's reply shows the generation: a master whose two
/// disagree (here a 3.5 version with a 3.3 reply, no `run_id`) is not one we know.
#[test]
fn a_meta_sync_reply_of_another_generation_than_info_says_is_refused() {
    let options = MasterOptions {
        version: "3.5.5".into(),
        ..MasterOptions::default()
    };
    assert_unsupported(options, "answers MetaSync as Pika 3.2–3.4");
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
    let m = Migration::new(&mock_addr(&master), &redis.url(), "");
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

#[test]
fn a_binlog_item_the_master_sends_twice_is_applied_once() {
    let redis = RedisServer::start();
    let reference = RedisServer::start();
    let mut ref_conn = reference.client();
    let master = PikaMaster::start(MasterOptions::default());
    let m = Migration::new(&mock_addr(&master), &redis.url(), "");
    let tool = streaming(&master, &m);
    // INCRs and pushes among the writes: a second application would show.
    for round in 0..3 {
        master.resend_once();
        write_both(&master, &mut ref_conn, round * 100..round * 100 + 100);
        wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    }
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert!(
        m.log_text().contains("sent a binlog item again"),
        "{}",
        m.log_text()
    );
    assert_resumed_exactly(&master, &m, &redis, &reference);
}

#[test]
fn a_master_back_from_a_restart_as_a_replica_stops_the_run_with_76() {
    // After an interruption the tool reads the master's INFO again before it rejoins:
    // a restarting Pika opens its replication port before its databases (a TrySync in
    // between crashes 3.2.9), and a master may come back as someone's replica.
    let redis = RedisServer::start();
    let master = PikaMaster::start(MasterOptions::default());
    let m = Migration::new(&mock_addr(&master), &redis.url(), "");
    let mut tool = streaming(&master, &m);
    master.set_role("slave");
    master.restart();
    let code = wait_exit(&mut tool, Duration::from_secs(60));
    let log = m.log_text();
    assert_eq!(code, 76, "{log}");
    assert!(log.contains("replica"), "{log}");
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
fn a_master_that_never_sends_the_dump_is_asked_again_then_given_up_with_69() {
    let redis = RedisServer::start();
    let master = PikaMaster::start(MasterOptions::default());
    // The push waits far longer than the transfer timeout.
    master.set_push_delay(Duration::from_secs(600));
    let m = Migration::new(&mock_addr(&master), &redis.url(), "  transfer_timeout: 2\n");
    let (code, log) = m.run_to_end();
    assert_eq!(code, 69, "{log}");
    assert!(
        log.contains("no new byte of the dump arrived for 2 s, 3 full syncs in a row"),
        "{log}"
    );
    assert_eq!(master.dbsyncs(), 3, "the dump was asked for three times");
}

#[test]
fn a_master_gone_silent_during_the_transfer_is_left_and_joined_again() {
    let redis = RedisServer::start();
    let master = PikaMaster::start(MasterOptions::default());
    master.set_push_delay(Duration::from_secs(600));
    let m = Migration::new(&mock_addr(&master), &redis.url(), "");
    let tool = m.start();
    wait_until("the full sync to start", Duration::from_secs(20), || {
        master.dbsyncs() == 1
    });
    // No keepalive, no byte: the connection stays open but the master says nothing.
    master.mute(true);
    wait_until(
        "the tool to give up on the silent link",
        Duration::from_secs(60),
        || m.log_text().contains("while we waited for the dump"),
    );
    master.mute(false);
    wait_until("a new full sync", Duration::from_secs(30), || {
        master.dbsyncs() == 2
    });
    kill9(tool);
    assert!(m.interruptions() >= 1, "{}", m.log_text());
}

#[test]
fn an_unreachable_replication_port_exits_69_after_a_few_seconds() {
    // A client port answering INFO like a Pika, and nothing on port + 2000.
    let (listener, port) = loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 60000 && std::net::TcpListener::bind(("127.0.0.1", port + 2000)).is_ok() {
            break (l, port);
        }
    };
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten() {
            let info = "# Server\r\npika_version:3.3.6\r\n\r\n# Replication(MASTER)\r\nrole:master\r\ndb0 binlog_offset=0 0,safety_purge=none\r\n";
            let mut request = [0u8; 64];
            let _ = conn.read(&mut request);
            let _ = write!(conn, "${}\r\n{info}\r\n", info.len());
        }
    });
    let redis = RedisServer::start();
    let m = Migration::new(&format!("127.0.0.1:{port}"), &redis.url(), "");
    let started = Instant::now();
    let (code, log) = m.run_to_end();
    assert_eq!(code, 69, "{log}");
    assert!(log.contains(&format!("127.0.0.1:{}", port + 2000)), "{log}");
    assert!(log.contains("retried for"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_load_runs_at_a_lower_priority_and_the_stream_at_the_one_the_tool_started_with() {
    let own = thread_nices(std::process::id())[0].1;
    let redis = RedisServer::start();
    let master = PikaMaster::start(MasterOptions::default());
    // Held back to 400 keys a second, so the load is there to be looked at.
    let m = Migration::new(&mock_addr(&master), &redis.url(), "  load_rate: 400\n");
    let tool = m.start();
    wait_until("the load", CATCH_UP, || {
        m.log_text().contains("loading the dump into the sinks")
    });
    // `--nice` defaults to 10: every thread while the dump loads, the runtime's too.
    let lowered = |threads: &[(String, i64)]| {
        threads.iter().any(|(name, _)| name == "pika-migrate")
            && threads.iter().all(|(_, nice)| *nice == own.max(10))
    };
    wait_until("every thread lowered for the load", CATCH_UP, || {
        lowered(&thread_nices(tool.id())) && m.stage().as_deref() != Some("stream")
    });
    wait_until("streaming", CATCH_UP, || {
        m.stage().as_deref() == Some("stream")
    });
    wait_until("the stream to catch up", CATCH_UP, || caught_up(&master));
    // Back where it started, given the right to raise its priority again (root here);
    // without it, the tool says it stays lower.
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let want = if root { own } else { own.max(10) };
    let streaming = thread_nices(tool.id());
    assert!(
        streaming.iter().all(|(_, nice)| *nice == want),
        "{streaming:?}"
    );
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    if !root {
        assert!(m.log_text().contains("stays at its lower priority"));
    }
}
