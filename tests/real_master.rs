//! The live replica against real Pika masters: every scenario runs on Pika 3.2.9, 3.3.6,
//! 3.5.5 and 4.0.1 (unmodified servers from `PIKA_BIN_DIR`, see `common::real_pika`),
//! into a real redis-server, with the real binary; the dump is pushed to us by 3.2/3.3
//! and pulled by us from 3.5 and 4.0 (a floyd dump, one directory per instance). Redis is compared with what the master itself
//! shows, key by key, type by type, with expiries.
//!
//! Without the Pika binaries each test prints one line saying it was skipped.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::real_pika::*;
use common::tool::*;
use common::*;

/// Every scenario, once per Pika version, each as its own test: the `every` ones on
/// 3.2.9, 3.3.6, 3.5.5 and 4.0.1, the `push` ones only on the versions whose master pushes the
/// dump with rsync (they slow or hijack that push).
macro_rules! on_each_version {
    (every: [$($scenario:ident),* $(,)?], push: [$($push:ident),* $(,)?] $(,)?) => {
        mod pika_3_2_9 {
            $( #[test] fn $scenario() { super::$scenario("3.2.9", stringify!($scenario)); } )*
            $( #[test] fn $push() { super::$push("3.2.9", stringify!($push)); } )*
        }
        mod pika_3_3_6 {
            $( #[test] fn $scenario() { super::$scenario("3.3.6", stringify!($scenario)); } )*
            $( #[test] fn $push() { super::$push("3.3.6", stringify!($push)); } )*
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
    every: [
        full_sync_while_writes_of_every_type_go_on_lands_exactly,
        a_burst_at_the_masters_full_rate_after_the_full_sync_all_lands,
        five_kill_9_of_the_tool_while_counters_are_written_are_exact,
        master_restarts_and_a_kill_9_of_the_master_are_exact_with_one_full_sync,
        a_binlog_purged_while_the_tool_is_stopped_is_refused_with_65,
        with_resync_flush_a_purge_while_the_tool_is_away_takes_a_second_full_sync_exactly,
        a_wrong_or_missing_password_is_refused_with_77,
        a_master_that_is_itself_a_replica_is_refused_with_76,
        a_stalled_target_holding_acks_does_not_get_us_dropped,
        sigterm_while_streaming_saves_the_position_and_exits_0,
        events_dropped_by_filters_are_acked_and_do_not_stall_the_stream,
        run_as_an_unprivileged_user_it_full_syncs_and_streams,
        a_stalled_checkpoint_write_does_not_get_us_dropped,
        the_status_counts_the_dump_while_it_arrives,
    ],
    push: [
        a_master_in_sharding_mode_is_refused_with_76,
        a_foreign_rsync_daemon_on_the_dump_port_fails_the_start,
    ],
);

const CATCH_UP: Duration = STREAMING_WITHIN;

fn master(version: &'static str, test: &str, options: PikaOptions) -> Option<RealPika> {
    let bin = pika_or_skip(version, test)?;
    Some(RealPika::start(&bin, options))
}

fn full_sync_while_writes_of_every_type_go_on_lands_exactly(version: &'static str, test: &str) {
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    preload(&pika, 3000);
    let redis = RedisServer::start();
    // The dump read on three threads, whatever the machine.
    let m = Migration::new(&pika.addr(), &redis.url(), "  scan_threads: 3\n");
    let writer = Writer::start(&pika, live_write);
    let started = Instant::now();
    let tool = m.start();
    wait_until("the full sync to start", CATCH_UP, || m.stage().is_some());
    let before_load = writer.written();
    m.wait_streaming(&tool);
    let full_sync = started.elapsed();
    let during = writer.written() - before_load;
    std::thread::sleep(Duration::from_secs(1));
    let written = writer.stop();
    m.wait_caught_up(&pika);
    assert!(m.listed_by(&pika), "the master lists us as its replica");
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    assert!(during > 0, "writes went on during the full sync");
    eprintln!(
        "{test}: full sync of {} keys in {} ms; {written} writes, {during} of them during the full sync",
        pika.state().len(),
        full_sync.as_millis()
    );
    assert_eq!(pika.full_syncs_served(), 1);
    assert!(m.log_text().contains("threads=3"), "{}", m.log_text());
    assert_same_as_master(&pika, &redis);
}

fn a_burst_at_the_masters_full_rate_after_the_full_sync_all_lands(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    preload(&pika, 600);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    m.wait_caught_up(&pika);

    const BURST: usize = 120_000;
    let started = Instant::now();
    let out = redis_program("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &pika.port.to_string()])
        .args(["-t", "set", "-n", &BURST.to_string(), "-r", "1000000000"])
        .args(["-P", "16", "-d", "16", "-q"])
        .output()
        .expect("redis-benchmark (redis-tools) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = Instant::now();
    m.wait_caught_up(&pika);
    let caught_up = ended.elapsed();
    let metrics = http_get(m.status_port, "/metrics").unwrap();
    let (p50, p99) = (quantile(&metrics, 0.5), quantile(&metrics, 0.99));
    eprintln!(
        "{test}: a burst of {BURST} SETs in {:.1} s ({:.0}/s), caught up {} ms after it ended; \
         arrival to ack p50 <= {p50} s, p99 <= {p99} s",
        (ended - started).as_secs_f64(),
        BURST as f64 / (ended - started).as_secs_f64(),
        caught_up.as_millis()
    );
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    // The burst's keys (`key:<n>`) value by value, then everything else.
    let mut from_pika = pika.client();
    let mut from_redis = redis.client();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("key:*")
        .query(&mut from_pika)
        .unwrap();
    assert!(keys.len() > BURST * 9 / 10, "{} keys", keys.len());
    for chunk in keys.chunks(1000) {
        let a: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(chunk).query(&mut from_pika).unwrap();
        let b: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(chunk)
            .query(&mut from_redis)
            .unwrap();
        assert!(a == b, "the burst's values differ");
    }
    let in_redis: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("key:*")
        .query(&mut from_redis)
        .unwrap();
    assert_eq!(in_redis.len(), keys.len());
    let mut rest = redis_view(&pika.state());
    rest.retain(|(k, _), _| !k.starts_with(b"key:"));
    let mut actual = redis.state();
    actual.retain(|(k, _), _| !k.starts_with(b"key:"));
    assert_same(&rest, &actual);
}

/// The upper bound of the `pika_migrate_ack_latency_seconds` bucket holding quantile `q`.
fn quantile(metrics: &str, q: f64) -> String {
    let buckets: Vec<(String, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("pika_migrate_ack_latency_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            Some((le.to_owned(), count.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or("?".into(), |(le, _)| le.clone())
}

/// A dump that moves at 1 MB/s: the master's push held by its `db-sync-speed` (3.2,
/// 3.3), our pull by `pull_rate` (3.5). The master's options and the source's lines.
fn slow_transfer(version: &'static str) -> (PikaOptions, &'static str) {
    // 3.5 and 4.0: we pull the dump, so our pull_rate holds it.
    if version.starts_with("3.5") || version.starts_with("4.") {
        (PikaOptions::default(), "  pull_rate: 1000000\n")
    } else {
        (PikaOptions::default().set("db-sync-speed", "1"), "")
    }
}

fn five_kill_9_of_the_tool_while_counters_are_written_are_exact(version: &'static str, test: &str) {
    // The dump moves at 1 MB/s and holds 3 MB: a kill lands in the transfer.
    let (options, slow) = slow_transfer(version);
    let Some(pika) = master(version, test, options) else {
        return;
    };
    let mut dice = Dice::new(test);
    preload(&pika, 4000);
    incompressible(&pika, &mut dice, 3000);
    let redis = RedisServer::start();
    // The dump (over 7000 events) loads for seconds: a kill lands in the load.
    // A transfer cut short by a kill may leave the master pushing to the old daemon
    // for a moment; a DBSync then is not served, and the stalled transfer is asked for
    // again after `transfer_timeout`.
    let m = Migration::new(
        &pika.addr(),
        &redis.url(),
        &format!("{slow}  load_rate: 1500\n  transfer_timeout: 10\n"),
    );
    let writer = Writer::start(&pika, counter_write);
    let mut killed_in = Vec::new();

    let tool = m.start();
    m.wait_for(CATCH_UP, "the dump to arrive in part", || {
        m.status()
            .is_some_and(|s| s["dump_bytes"].as_u64() > Some(0))
    });
    killed_in.push(m.stage().unwrap_or_default());
    kill9(tool);
    let tool = m.start();
    m.wait_for(CATCH_UP, "the load", || {
        m.stage().as_deref() == Some("load")
    });
    std::thread::sleep(Duration::from_millis(700));
    killed_in.push(m.stage().unwrap_or_default());
    kill9(tool);
    assert_eq!(
        killed_in,
        ["transfer", "load"],
        "the first kills land in the transfer and the load"
    );

    // Then at random moments: one anywhere, two once the stream runs.
    for round in 0..3 {
        let tool = m.start();
        if round > 0 {
            m.wait_streaming(&tool);
        }
        std::thread::sleep(Duration::from_millis(300 + dice.below(3000)));
        killed_in.push(m.stage().unwrap_or_default());
        kill9(tool);
    }
    eprintln!("{test}: killed in stages {killed_in:?}");
    wait_until(
        "no rsync daemon to outlive the tool",
        Duration::from_secs(10),
        || m.processes_in_work_dir().is_empty(),
    );

    let tool = m.start();
    m.wait_streaming(&tool);
    std::thread::sleep(Duration::from_millis(500));
    let written = writer.stop();
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    assert!(written > 0);
    // A kill while the dump was still arriving asks for it again; a kill after it
    // arrived reloads it from disk.
    let transfers = killed_in.iter().filter(|s| *s == "transfer").count();
    if !pika.bin.pushes_dump() {
        // The pull cut by the first kill was taken up with the files it had completed.
        let log = m.log_text();
        let resumed = log
            .split("already_here=")
            .skip(1)
            .any(|rest| rest.split(' ').next().is_some_and(|n| n != "0"));
        assert!(resumed, "no pull kept files of the one killed: {log}");
    }
    let asked_again = m
        .log_text()
        .matches("no new byte of the dump arrived")
        .count();
    assert_eq!(
        pika.full_syncs_served(),
        1 + transfers + asked_again,
        "{killed_in:?}"
    );
    assert_same_as_master(&pika, &redis);
}

fn master_restarts_and_a_kill_9_of_the_master_are_exact_with_one_full_sync(
    version: &'static str,
    test: &str,
) {
    let Some(mut pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    preload(&pika, 600);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    let writer = Writer::start(&pika, counter_write);

    for restart in ["restart", "kill -9"] {
        std::thread::sleep(Duration::from_secs(1));
        let before = writer.written();
        match restart {
            "restart" => pika.restart(),
            _ => {
                // Pika writes a command to its database, then to its binlog: a SIGKILL
                // between the two leaves the master holding a write no replica is ever
                // sent. The writes hold off for the kill; the stream is cut as it is.
                writer.pause();
                pika.kill9();
                writer.resume();
                std::thread::sleep(Duration::from_millis(500));
                pika.start_again();
            }
        }
        wait_until("the tool to rejoin the master", CATCH_UP, || {
            m.listed_by(&pika)
        });
        wait_until("writes after the master came back", CATCH_UP, || {
            writer.written() > before + 200
        });
    }
    let written = writer.stop();
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    assert!(written > 0);
    assert!(m.interruptions() >= 2, "{}", m.log_text());
    assert_eq!(pika.full_syncs_served(), 1, "resumed by TrySync every time");
    assert_same_as_master(&pika, &redis);
}

/// A master whose binlog rotates every KiB and keeps only 10 files.
fn purging_master(version: &'static str, test: &str) -> Option<RealPika> {
    master(
        version,
        test,
        PikaOptions::default()
            .set("binlog-file-size", "1024")
            .set("expire-logs-nums", "10"),
    )
}

/// Writes until the master has rolled over many binlog files, then purges all it may.
fn roll_and_purge(pika: &RealPika) {
    let mut con = pika.client();
    let start = pika.binlog_offset(0).0;
    let mut i = 0;
    while pika.binlog_offset(0).0 < start + 15 {
        pipeline(&mut con, (i..i + 20).map(live_write));
        i += 20;
    }
    let last = pika.binlog_offset(0).0;
    let purge_to = format!("write2file{}", last - 10);
    let reply: String = redis::cmd("PURGELOGSTO")
        .arg(&purge_to)
        .query(&mut con)
        .unwrap();
    assert_eq!(reply, "OK");
    let first = pika
        .dir()
        .join("log/log_db0")
        .join(format!("write2file{start}"));
    wait_until("the purge", Duration::from_secs(30), || !first.exists());
}

fn a_binlog_purged_while_the_tool_is_stopped_is_refused_with_65(version: &'static str, test: &str) {
    let Some(pika) = purging_master(version, test) else {
        return;
    };
    preload(&pika, 300);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    roll_and_purge(&pika);
    let (code, log) = m.run_to_end();
    assert_eq!(code, 65, "{log}");
    assert!(log.contains("its binlog was purged"), "{log}");
    assert!(log.contains("resync: flush"), "{log}");
    assert_eq!(pika.full_syncs_served(), 1, "no second full sync");
}

fn with_resync_flush_a_purge_while_the_tool_is_away_takes_a_second_full_sync_exactly(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = purging_master(version, test) else {
        return;
    };
    preload(&pika, 300);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "  resync: flush\n");
    let tool = m.start();
    m.wait_streaming(&tool);
    // Keys the stream brings after the first full sync, deleted while the tool is away.
    let mut con = pika.client();
    let s = |x: String| x.into_bytes();
    pipeline(
        &mut con,
        (0..20).map(|i| vec![s("SET".into()), s(format!("gap:{i}")), s(format!("{i}"))]),
    );
    m.wait_caught_up(&pika);

    // Frozen past the master's 20-s rule, the tool is dropped, and nothing protects its
    // binlog position any more. Meanwhile collections lose members and keys are
    // deleted: a second full sync loaded over the first would keep them (and double
    // the lists without DELs).
    signal(&tool, "-STOP");
    std::thread::sleep(Duration::from_secs(22));
    for i in (3..300).step_by(6) {
        pipeline(
            &mut con,
            [
                vec![s("LPOP".into()), s(format!("pre:l:{i}"))],
                vec![
                    s("HDEL".into()),
                    s(format!("pre:h:{}", i - 1)),
                    s("b".into()),
                ],
                vec![
                    s("SREM".into()),
                    s(format!("pre:set:{}", i + 1)),
                    s("m1".into()),
                ],
                vec![
                    s("ZREM".into()),
                    s(format!("pre:z:{}", i + 2)),
                    s("a".into()),
                ],
                vec![s("DEL".into()), s(format!("pre:s:{}", i - 3))],
            ],
        );
    }
    pipeline(
        &mut con,
        (0..20).map(|i| vec![s("DEL".into()), s(format!("gap:{i}"))]),
    );
    roll_and_purge(&pika);
    signal(&tool, "-CONT");

    wait_until("the second full sync", CATCH_UP, || {
        pika.full_syncs_served() == 2
    });
    wait_until("streaming again", CATCH_UP, || {
        m.live_stage().as_deref() == Some("streaming")
    });
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert!(m
        .log_text()
        .contains("taking a new full sync (resync: flush)"));
    assert_same_as_master(&pika, &redis);
    // The checkpoint keys outlived the flush.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pika-migrate:checkpoint:*")
        .query(&mut redis.client())
        .unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
}

fn a_wrong_or_missing_password_is_refused_with_77(version: &'static str, test: &str) {
    let Some(pika) = master(version, test, PikaOptions::default().password("s3cret")) else {
        return;
    };
    let redis = RedisServer::start();
    // Without a password, Pika answers INFO anyway: the replication link refuses us.
    for extra in ["  password: wrong\n", ""] {
        let m = Migration::new(&pika.addr(), &redis.url(), extra);
        let (code, log) = m.run_to_end();
        assert_eq!(code, 77, "{extra:?}: {log}");
        assert!(log.contains("requirepass"), "{log}");
        assert!(!log.contains("wrong"), "the password is not printed: {log}");
    }
    let m = Migration::new(&pika.addr(), &redis.url(), "  password: s3cret\n");
    let tool = m.start();
    m.wait_streaming(&tool);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
}

fn a_master_that_is_itself_a_replica_is_refused_with_76(version: &'static str, test: &str) {
    let Some(top) = master(version, test, PikaOptions::default()) else {
        return;
    };
    let Some(middle) = master(version, test, PikaOptions::default()) else {
        return;
    };
    let reply: String = redis::cmd("SLAVEOF")
        .arg("127.0.0.1")
        .arg(top.port)
        .query(&mut middle.client())
        .unwrap();
    assert_eq!(reply, "OK");
    wait_until("the replica's role", CATCH_UP, || {
        middle.info().contains("role:slave")
    });
    let redis = RedisServer::start();
    let m = Migration::new(&middle.addr(), &redis.url(), "");
    let (code, log) = m.run_to_end();
    assert_eq!(code, 76, "{log}");
    assert!(log.contains("is itself a replica"), "{log}");
}

/// A master started with `options` is refused with 76 and a message that `says` why.
fn assert_refused_with_76(version: &'static str, test: &str, options: PikaOptions, says: &str) {
    let Some(pika) = master(version, test, options) else {
        return;
    };
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let (code, log) = m.run_to_end();
    assert_eq!(code, 76, "{log}");
    assert!(log.contains(says), "{log}");
}

fn run_as_an_unprivileged_user_it_full_syncs_and_streams(version: &'static str, test: &str) {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "switches to the user nobody, which needs root");
        return;
    }
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    preload(&pika, 600);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    // nobody must reach the pipeline and own the work dir.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(m.work_dir()).unwrap();
    std::os::unix::fs::chown(m.work_dir(), Some(65534), Some(65534)).unwrap();
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    command
        .arg(bin())
        .args(["run", "-c", m.pipeline.to_str().unwrap()]);
    let log = std::fs::File::create(m.log()).unwrap();
    let tool = command.stderr(log).spawn().unwrap();

    m.wait_streaming(&tool);
    let mut con = pika.client();
    pipeline(&mut con, (0..2000).map(live_write));
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_same_as_master(&pika, &redis);
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(m.work_dir().join("checkpoint.json")).unwrap(),
    );
    assert_eq!(owner, 65534, "the tool ran as nobody");
}

fn a_stalled_checkpoint_write_does_not_get_us_dropped(version: &'static str, test: &str) {
    if Command::new("strace").arg("-V").output().is_err() {
        skip(
            test,
            "stalls the tool's fsync calls with strace, which is not installed",
        );
        return;
    }
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    m.wait_caught_up(&pika);

    // Every fsync of the tool (the checkpoint's) waits 25 s while strace is attached:
    // longer than the 20 s of silence after which the master drops a replica.
    let trace = m.dir.path().join("strace.txt");
    let mut stall = Command::new("strace")
        .args(["-f", "-qq", "-T", "-e", "signal=none", "-e", "trace=fsync"])
        .args(["-e", "inject=fsync:delay_enter=25000000", "-o"])
        .arg(&trace)
        .args(["-p", &tool.id().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    if let Ok(Some(status)) = stall.try_wait() {
        let mut why = String::new();
        let _ = std::io::Read::read_to_string(&mut stall.stderr.take().unwrap(), &mut why);
        kill9(tool);
        skip(test, &format!("strace could not attach ({status}): {why}"));
        return;
    }
    let mut con = pika.client();
    pipeline(&mut con, (0..500).map(live_write));
    // The checkpoint's fsync comes back after its 25 s (strace writes the line then).
    let mut delayed = Vec::new();
    m.wait_for(Duration::from_secs(60), "a delayed fsync", || {
        delayed = delayed_fsyncs(&trace);
        !delayed.is_empty()
    });
    assert!(delayed[0] >= 20.0, "fsyncs delayed by {delayed:?} s");
    assert!(m.listed_by(&pika), "the master still lists us");
    signal(&stall, "-TERM");
    let _ = stall.wait();

    pipeline(&mut con, (500..1000).map(live_write));
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_eq!(m.interruptions(), 0, "the link lived on: {}", m.log_text());
    assert_same_as_master(&pika, &redis);
}

/// How long each fsync that strace delayed took, in seconds (`fsync(5) = 0 (DELAYED)
/// <25.000661>` in its `-T` output).
fn delayed_fsyncs(trace: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("fsync(") && l.contains("(DELAYED)"))
        .filter_map(|l| {
            let (_, took) = l.rsplit_once('<')?;
            took.strip_suffix('>')?.parse().ok()
        })
        .collect()
}

fn the_status_counts_the_dump_while_it_arrives(version: &'static str, test: &str) {
    // The dump moves at 1 MB/s: 4 MB take seconds to arrive.
    let (options, slow) = slow_transfer(version);
    let Some(pika) = master(version, test, options) else {
        return;
    };
    incompressible(&pika, &mut Dice::new(test), 4000);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), slow);
    // In a terminal (`script` gives it one), a progress line shows the transfer.
    let screen = m.dir.path().join("screen.txt");
    let tool = Command::new("script")
        .args(["-q", "-f", "-e", "-c"])
        .arg(format!(
            "{} run -c {}",
            bin().display(),
            m.pipeline.display()
        ))
        .arg(&screen)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    m.wait_for(CATCH_UP, "the dump to arrive", || {
        if let Some(s) = m.status() {
            if s["stage"] == "full_sync_transfer" {
                seen.push(s["dump_bytes"].as_u64().unwrap_or(0));
            }
            return s["stage"] == "full_sync_load" || s["stage"] == "streaming";
        }
        false
    });
    assert!(
        seen.iter().any(|b| *b > 0),
        "dump_bytes during the transfer: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    let done = m.status().unwrap()["dump_bytes"].as_u64().unwrap();
    assert!(done > 4_000_000, "{done} bytes received");
    // Through `script`: the tool is its child, the only run there is.
    m.wait_for(CATCH_UP, "streaming", || {
        m.live_stage().as_deref() == Some("streaming")
    });
    let shown = String::from_utf8_lossy(&std::fs::read(&screen).unwrap()).into_owned();
    assert!(shown.contains("receiving the dump:"), "{shown}");
    assert!(shown.contains("MiB/s"), "{shown}");
    // `script` passes the signal on to the tool; it exits 0, and so does `script -e`.
    assert_eq!(stop(tool), 0);
}

fn a_foreign_rsync_daemon_on_the_dump_port_fails_the_start(version: &'static str, test: &str) {
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    // Someone else's rsync daemon on our dump port (announce + 1000).
    let other = tempfile::tempdir().unwrap();
    let conf = other.path().join("rsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            "pid file = {0}/pid\nlock file = {0}/lock\nuse chroot = no\n[document]\npath = {0}\nread only = no\n",
            other.path().display()
        ),
    )
    .unwrap();
    let mut daemon = Command::new("rsync")
        .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
        .arg(format!("--port={}", m.announce_port + 1000))
        .arg(format!("--config={}", conf.display()))
        .spawn()
        .unwrap();
    wait_until("the other daemon", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", m.announce_port + 1000)).is_ok()
    });
    let (code, log) = m.run_to_end();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(code, 1, "{log}");
    let port = (m.announce_port + 1000).to_string();
    assert!(log.contains(&format!("port {port}")), "{log}");
    assert!(log.contains("already held by pid"), "{log}");
    assert!(log.contains("rsync --daemon"), "{log}");
}

fn a_master_in_sharding_mode_is_refused_with_76(version: &'static str, test: &str) {
    let options = PikaOptions::default()
        .set("instance-mode", "sharding")
        .set("default-slot-num", "16");
    assert_refused_with_76(version, test, options, "sharding mode");
}

fn a_stalled_target_holding_acks_does_not_get_us_dropped(version: &'static str, test: &str) {
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    m.wait_caught_up(&pika);

    // Redis takes no write for longer than the master tolerates silence (20 s): the
    // acks are held back, the tool's own pings keep the session.
    const PAUSE: Duration = Duration::from_secs(26);
    let paused_at = Instant::now();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(PAUSE.as_millis().to_string())
        .arg("WRITE")
        .query(&mut redis.client())
        .unwrap();
    let mut con = pika.client();
    pipeline(&mut con, (0..2000).map(live_write));
    std::thread::sleep(Duration::from_secs(22));
    assert!(
        paused_at.elapsed() < PAUSE,
        "the checks ran after the pause"
    );
    assert!(
        !m.caught_up_with(pika.binlog_offset(0)),
        "nothing acked while Redis is paused"
    );
    let status = m.status().unwrap();
    assert!(status["lag_items"].as_u64() > Some(0), "{status}");
    assert!(status["lag_ms"].as_u64() > Some(15_000), "{status}");

    m.wait_caught_up(&pika);
    assert!(paused_at.elapsed() >= PAUSE);
    assert!(m.listed_by(&pika), "the master still lists us");
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_eq!(
        m.interruptions(),
        0,
        "the same session caught up: {}",
        m.log_text()
    );
    assert_same_as_master(&pika, &redis);
}

fn sigterm_while_streaming_saves_the_position_and_exits_0(version: &'static str, test: &str) {
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    preload(&pika, 600);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let mut con = pika.client();

    // 1. Caught up, then SIGTERM: the checkpoint is the master's position, and the
    // full sync's rsync daemon is gone with the run.
    let tool = m.start();
    m.wait_streaming(&tool);
    pipeline(&mut con, (0..2000).map(live_write));
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    let (f, o) = pika.binlog_offset(0);
    assert_eq!(m.stage().as_deref(), Some("stream"));
    assert_eq!(
        m.checkpoint_at(),
        Some(pika_migrate_core::event::BinlogOffset::new(f, o))
    );
    assert!(m.processes_in_work_dir().is_empty(), "left behind");

    // 2. SIGTERM while writes still arrive: it drains what it read and exits 0.
    let tool = m.start();
    let writer = Writer::start(&pika, live_write);
    wait_until("writes while we stream", CATCH_UP, || {
        writer.written() > 1000
    });
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    writer.stop();

    // 3. And on from there: exact, with no second full sync.
    let tool = m.start();
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert_eq!(pika.full_syncs_served(), 1);
    assert_eq!(m.interruptions(), 0, "{}", m.log_text());
    assert_same_as_master(&pika, &redis);
}

fn events_dropped_by_filters_are_acked_and_do_not_stall_the_stream(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test, PikaOptions::default()) else {
        return;
    };
    let redis = RedisServer::start();
    let filters = "filters:\n  - type: key\n    exclude: ['live:s:*', 'live:n:*']\n";
    let m = Migration::new(&pika.addr(), &redis.url(), filters);
    let tool = m.start();
    m.wait_streaming(&tool);
    let mut con = pika.client();
    pipeline(&mut con, (0..3000).map(live_write));
    // The last writes are all dropped: the master must still see them acked.
    let s = |x: String| x.into_bytes();
    pipeline(
        &mut con,
        (0..50).map(|i| vec![s("SET".into()), s(format!("live:s:{i}")), s("x".into())]),
    );
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    let mut expected = redis_view(&pika.state());
    expected.retain(|(k, _), _| !k.starts_with(b"live:s:") && !k.starts_with(b"live:n:"));
    assert_same(&expected, &redis.state());
}

/// 4.0.1's own binlog forms streamed from a real 4.0.1 master: PSETEX logged as
/// `pksetexat` in milliseconds (a real 4.0.1 replica stops there), SET PX and SETEX as
/// `pksetexat` in seconds, PEXPIRE as `pexpireat`, INCR/APPEND on a key with a TTL as
/// `pksetexat <its expiry>`, and the reads SDIFF/SINTER/SUNION it logs as writes.
#[test]
fn pika_4_0_1_forms_stream_as_the_master_applied_them() {
    let test = "pika_4_0_1_forms_stream_as_the_master_applied_them";
    let Some(pika) = master("4.0.1", test, PikaOptions::default()) else {
        return;
    };
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    let mut con = pika.client();
    let w =
        |words: &[&str]| -> Vec<Vec<u8>> { words.iter().map(|x| x.as_bytes().to_vec()).collect() };
    pipeline(
        &mut con,
        [
            w(&["PSETEX", "f:psetex", "500000000", "v"]),
            w(&["PSETEX", "f:psetex2", "500000777", "v"]),
            w(&["SET", "f:px", "v", "PX", "900000999"]),
            w(&["SET", "f:ex", "v", "EX", "1000000"]),
            w(&["SETEX", "f:setex", "1000000", "v"]),
            w(&["SET", "f:pexp", "v"]),
            w(&["PEXPIRE", "f:pexp", "800000123"]),
            w(&["SET", "f:n", "1"]),
            w(&["EXPIRE", "f:n", "700000"]),
            w(&["INCR", "f:n"]),
            w(&["APPEND", "f:n", "0"]),
            w(&["INCRBYFLOAT", "f:f", "1.5"]),
            w(&["SADD", "f:s1", "a", "b"]),
            w(&["SADD", "f:s2", "b", "c"]),
            w(&["SDIFF", "f:s1", "f:s2"]),
            w(&["SINTER", "f:s1", "f:s2"]),
            w(&["SUNION", "f:s1", "f:s2"]),
            w(&["SUNIONSTORE", "f:u", "f:s1", "f:s2"]),
            w(&["SET", "f:last", "x"]),
        ],
    );
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    let state = redis.state();
    let ttl = |k: &str| state[&(k.as_bytes().to_vec(), "string".to_owned())].expire_at_ms;
    // The PSETEX keys hold their ms expiries, some 5.8 days ahead, not centuries.
    let ahead = ttl("f:psetex").unwrap() - now_ms();
    assert!((499_000_000..=500_000_000).contains(&ahead), "{ahead}");
    assert_same_as_master(&pika, &redis);
}

/// A 4.0 master's full sync carries its streams (floyd's `stream_data_cf` is in the
/// instance directories pulled): every entry with its id and fields, a big stream in
/// several chunks, and the last generated id where the newest entries were deleted.
#[test]
fn pika_4_0_1_full_sync_carries_streams_and_their_last_id() {
    let test = "pika_4_0_1_full_sync_carries_streams_and_their_last_id";
    let Some(pika) = master("4.0.1", test, PikaOptions::default()) else {
        return;
    };
    let w =
        |words: &[&str]| -> Vec<Vec<u8>> { words.iter().map(|x| x.as_bytes().to_vec()).collect() };
    let mut con = pika.client();
    let mut writes = vec![
        w(&["XADD", "x:ids", "1-1", "f", "v"]),
        w(&["XADD", "x:ids", "5-0", "g", "w", "h", ""]),
        w(&["XADD", "x:ids", "9-0", "k", "v"]),
        w(&["XADD", "x:tail", "1-0", "f", "v"]),
        w(&["XADD", "x:tail", "2-0", "f", "v"]),
        // The newest entry deleted: the stream's last id stays 2-0.
        w(&["XDEL", "x:tail", "2-0"]),
        w(&["XADD", "x:auto", "*", "f", "v"]),
        w(&["XADD", "x:auto", "*", "f", "\u{7f}bin"]),
    ];
    writes.extend((0..1300).map(|i| {
        let (id, value) = (
            format!("{}-{}", 1_600_000_000_000u64 + i / 3, i % 3),
            format!("v{i}"),
        );
        w(&["XADD", "x:big", &id, "n", &value])
    }));
    pipeline(&mut con, writes);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    // Streamed after the full sync, onto a stream the full sync brought.
    pipeline(&mut con, [w(&["XADD", "x:ids", "10-0", "after", "1"])]);
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    let streams = (pika.state().into_keys())
        .filter(|(_, t)| t == "stream")
        .count();
    assert_eq!(streams, 4);
    assert_same_as_master(&pika, &redis);
    // The last generated id came along: `x:tail` holds 1-0 only, and 2-0 is refused by
    // Redis as by the master (without it, Redis would take 2-0).
    let mut target = redis.client();
    for con in [&mut con, &mut target] {
        let below: redis::RedisResult<String> = redis::cmd("XADD")
            .arg("x:tail")
            .arg("2-0")
            .arg("f")
            .arg("v")
            .query(con);
        assert!(below.is_err(), "{below:?}");
    }
}
