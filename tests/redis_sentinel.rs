//! The Redis sink behind Sentinel (Debian's `redis-sentinel`): one master, one replica
//! and three sentinels on loopback. The master is killed while a binlog replay or a
//! live stream from a real Pika is being written; the sentinels promote the replica,
//! the sink follows them, and the new master ends with exactly the source's data:
//! counters and list pushes written during the failover are neither lost nor doubled.
//! Misconfigurations fail at start with their own message and exit code.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::real_pika::{pika_or_skip, PikaOptions, RealPika};
use common::sentinel::{start_replica, Sentinel, SentinelSet, MASTER_NAME};
use common::*;

/// A pipeline file and the log of the tool run on it.
struct Run {
    dir: tempfile::TempDir,
    pipeline: PathBuf,
}

impl Run {
    fn new(source: &str, sink_extra: &str, url: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let yaml =
            format!("source:\n{source}\nsinks:\n  - type: redis\n    url: \"{url}\"\n{sink_extra}");
        let pipeline = write_pipeline(dir.path(), &yaml);
        Run { dir, pipeline }
    }

    /// A live migration from `pika` into `url`, its work dir under `work`.
    fn live(pika: &RealPika, url: &str, work: &std::path::Path) -> Run {
        let source = format!(
            "  type: pika\n  master: {}\n  announce: 127.0.0.1:{}\n  work_dir: {}",
            pika.addr(),
            announce_port(),
            work.join("work").display()
        );
        Run::new(&source, "    senders: 4\n    batch: 64\n", url)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("tool.log")
    }

    fn start(&self) -> Child {
        Command::new(bin())
            .args(["run", "-c", self.pipeline.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log()).unwrap())
            .spawn()
            .unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A failing test leaves the tool's log to read.
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("the run's directory kept: {}", dir.keep().display());
        }
    }
}

fn dbsize(server: &RedisServer) -> i64 {
    redis::cmd("DBSIZE")
        .query(&mut server.client())
        .unwrap_or(0)
}

#[test]
fn a_binlog_replay_goes_on_through_a_failover_exactly_once() {
    let started = Instant::now();
    let mut set = SentinelSet::start();
    eprintln!("sentinels up after {:?}", started.elapsed());
    // 1430 items at 150/s: the replay lasts about 10 s, the master dies after ~2 s.
    let run = Run::new(
        &format!("{}\n  rate: 150", binlog_source(None)),
        "    senders: 4\n    batch: 32\n",
        &set.url(0),
    );
    let mut tool = run.start();
    wait_until("the replay to start", Duration::from_secs(30), || {
        dbsize(&set.master) > 100
    });
    set.fail_master();
    let code = wait_exit(&mut tool, Duration::from_secs(120));
    let log = run.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("sentinel: the master switched"), "{log}");
    assert!(log.contains("reconnected"), "{log}");
    // INCRBYs, RPUSH/LPUSH/LINSERT, APPENDs: applied twice or lost, they would show.
    assert_binlog_end_state(set.replica.state());
    eprintln!("took {:?}\n{log}", started.elapsed());
}

#[test]
fn a_failover_asked_of_the_sentinels_is_followed_through_readonly_or_the_switch() {
    // SENTINEL FAILOVER: the old master stays up and turns replica, so lanes still
    // connected to it meet READONLY (or the +switch-master announcement) rather than a
    // lost connection.
    let set = SentinelSet::start();
    let run = Run::new(
        &format!("{}\n  rate: 200", binlog_source(None)),
        "    senders: 4\n    batch: 32\n",
        &set.url(0),
    );
    let mut tool = run.start();
    wait_until("the replay to start", Duration::from_secs(30), || {
        dbsize(&set.master) > 100
    });
    let _: redis::Value = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(MASTER_NAME)
        .query(&mut set.sentinels[0].client())
        .unwrap();
    let code = wait_exit(&mut tool, Duration::from_secs(120));
    let log = run.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("sentinel: the master switched"), "{log}");
    let now_master = set.sentinels[0].master_port(MASTER_NAME);
    assert_eq!(now_master, Some(set.replica.port), "{log}");
    assert_binlog_end_state(set.replica.state());
    // The old master, now a replica of the new one, holds the same.
    wait_until(
        "the old master to catch up",
        Duration::from_secs(30),
        || diff(&set.replica.state(), &set.master.state()).is_empty(),
    );
}

#[test]
fn a_live_stream_from_a_real_pika_goes_on_through_a_failover_exactly_once() {
    let Some(bin) = pika_or_skip(
        "3.3.6",
        "a_live_stream_from_a_real_pika_goes_on_through_a_failover_exactly_once",
    ) else {
        return;
    };
    let started = Instant::now();
    let pika = RealPika::start(&bin, PikaOptions::default());
    let mut con = pika.client();
    for i in 0..200 {
        redis::cmd("SET")
            .arg(format!("before:{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
        redis::cmd("HSET")
            .arg(format!("hash:{i}"))
            .arg("f")
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    let mut set = SentinelSet::start();
    let work = tempfile::tempdir().unwrap();
    let run = Run::live(&pika, &set.url(0), work.path());
    let tool = run.start();
    wait_until(
        "the full sync to be loaded",
        Duration::from_secs(60),
        || dbsize(&set.master) >= 400,
    );

    // Counters and list pushes while the master is killed and the replica promoted.
    let writes = 2000;
    std::thread::scope(|s| {
        let writer = s.spawn(|| count_and_push(&pika, writes, true));
        wait_until("the stream to be written", Duration::from_secs(30), || {
            redis::cmd("GET")
                .arg("counter")
                .query::<Option<i64>>(&mut set.master.client())
                .ok()
                .flatten()
                .is_some_and(|n| n > 200)
        });
        set.fail_master();
        writer.join().unwrap();
    });

    let new_master = &set.replica;
    // The counter and the list go through different lanes, each caught up on its own.
    wait_until(
        "the new master to catch up",
        Duration::from_secs(120),
        || caught_up(new_master, writes),
    );
    let list: Vec<i64> = redis::cmd("LRANGE")
        .arg("list")
        .arg(0)
        .arg(-1)
        .query(&mut new_master.client())
        .unwrap();
    assert_eq!(
        list,
        (0..writes).collect::<Vec<_>>(),
        "every push once, in order"
    );
    // The other lanes (the SETs) catch up on their own too.
    let expected = pika.state();
    let until = Instant::now() + Duration::from_secs(60);
    while !diff(&expected, &new_master.state()).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_same(&expected, &new_master.state());

    let code = stop(tool);
    let log = run.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("sentinel: the master switched"), "{log}");
    eprintln!("took {:?}\n{log}", started.elapsed());
}

#[test]
fn a_failover_asked_for_then_the_new_master_shut_down_goes_on_at_the_third_node_exactly_once() {
    let Some(bin) = pika_or_skip(
        "3.3.6",
        "a_failover_asked_for_then_the_new_master_shut_down_goes_on_at_the_third_node_exactly_once",
    ) else {
        return;
    };
    let pika = RealPika::start(&bin, PikaOptions::default());
    let set = SentinelSet::start_with_replicas(2);
    let work = tempfile::tempdir().unwrap();
    let run = Run::live(&pika, &set.url(0), work.path());
    let tool = run.start();
    let counter = |port: u16| -> Option<i64> {
        let node = set.node(port)?;
        redis::cmd("GET")
            .arg("counter")
            .query::<Option<i64>>(&mut node.client())
            .ok()
            .flatten()
    };
    let writes = 3000;
    let mut master = set.master.port;
    std::thread::scope(|s| {
        let writer = s.spawn(|| count_and_push(&pika, writes, false));
        wait_until("the stream to be written", Duration::from_secs(60), || {
            counter(master).is_some_and(|n| n > 200)
        });
        // The old master stays up and turns replica of the one promoted...
        let _: redis::Value = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query(&mut set.sentinels[0].client())
            .unwrap();
        let promoted = set.wait_new_master(master);
        let before = counter(promoted).unwrap_or(0);
        wait_until(
            "the stream to go on at the promoted node",
            Duration::from_secs(60),
            || counter(promoted).is_some_and(|n| n > before + 100),
        );
        // ... which then goes away: the sentinels promote the third node.
        let _ = redis::cmd("SHUTDOWN")
            .arg("NOSAVE")
            .exec(&mut set.node(promoted).unwrap().client());
        master = set.wait_new_master(promoted);
        writer.join().unwrap();
    });
    wait_until(
        "every increment and push at the third node",
        Duration::from_secs(60),
        || set.node(master).is_some_and(|node| caught_up(node, writes)),
    );
    let list: Vec<i64> = redis::cmd("LRANGE")
        .arg("list")
        .arg(0)
        .arg(-1)
        .query(&mut set.node(master).unwrap().client())
        .unwrap();
    assert_eq!(
        list,
        (0..writes).collect::<Vec<_>>(),
        "every push once, in order"
    );
    let code = stop(tool);
    let log = run.log_text();
    assert_eq!(code, 0, "{log}");
    // The lanes find each new master by themselves; the watcher's announcement (at
    // least the first) only makes it sooner.
    assert!(log.contains("sentinel: the master switched"), "{log}");
    assert!(log.matches("reconnected").count() >= 2, "{log}");
}

#[test]
fn pipelines_count_as_applied_only_once_a_replica_has_them() {
    let master = RedisServer::start();
    let replica = start_replica(&master, &["--enable-debug-command", "local"]);
    let sleep_replica = |seconds: u32| {
        let port = replica.port;
        std::thread::spawn(move || {
            let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .get_connection()
                .unwrap();
            redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(seconds)
                .exec(&mut con)
                .unwrap();
        })
    };
    let extra = "    wait_replicas: 1\n    wait_timeout_ms: 200\n";
    let source = format!("{}\n  rate: 300", binlog_source(None));
    let replaying = || {
        wait_until("the replay to start", Duration::from_secs(30), || {
            dbsize(&master) > 50
        })
    };
    // The replica asleep for `seconds` once the replay is under way: (exit code, log).
    let run_while_asleep = |extra: &str, seconds: u32| {
        let run = Run::new(&source, extra, &master.url());
        let mut tool = run.start();
        replaying();
        let asleep = sleep_replica(seconds);
        let code = wait_exit(&mut tool, Duration::from_secs(60));
        asleep.join().unwrap();
        (code, run.log_text())
    };
    // The replica cannot confirm for 3 s: the run waits for it, then ends complete.
    let (code, log) = run_while_asleep(extra, 3);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("replicas have not confirmed the last pipeline yet"),
        "{log}"
    );
    assert_binlog_end_state(replica.state());

    // Longer than retry_seconds: the run stops, saying so, rather than count unconfirmed
    // pipelines as applied.
    redis::cmd("FLUSHALL").exec(&mut master.client()).unwrap();
    let (code, log) = run_while_asleep(&format!("{extra}    retry_seconds: 1\n"), 5);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(
            "the master's replicas did not confirm a pipeline within 1 s (0 of 1 confirmed)"
        ),
        "{log}"
    );
}

/// `writes` times on `pika`: `INCR counter`, `RPUSH list <i>` (and `SET live:<i> <i>`
/// with `sets`), a few ms apart.
/// Whether `node` has the counter at `writes` and as many pushes (more shows as a
/// difference afterwards).
fn caught_up(node: &RedisServer, writes: i64) -> bool {
    let mut con = node.client();
    let counter: Option<i64> = redis::cmd("GET")
        .arg("counter")
        .query(&mut con)
        .ok()
        .flatten();
    let pushes: Option<i64> = redis::cmd("LLEN").arg("list").query(&mut con).ok();
    counter >= Some(writes) && pushes >= Some(writes)
}

fn count_and_push(pika: &RealPika, writes: i64, sets: bool) {
    let mut con = pika.client();
    for i in 0..writes {
        redis::cmd("INCR").arg("counter").exec(&mut con).unwrap();
        redis::cmd("RPUSH")
            .arg("list")
            .arg(i)
            .exec(&mut con)
            .unwrap();
        if sets {
            redis::cmd("SET")
                .arg(format!("live:{i}"))
                .arg(i)
                .exec(&mut con)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// SIGTERM, then the exit code of the clean stop.
fn stop(mut child: Child) -> i32 {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    wait_exit(&mut child, Duration::from_secs(60))
}

/// Runs the fixture dump into `url`; (exit code, stderr).
fn run_dump(url: &str, extra: &str) -> (i32, String) {
    let run = Run::new(&dump_source(), extra, url);
    let (code, _, stderr) = run_cli(&["run", "-c", run.pipeline.to_str().unwrap()]);
    (code, stderr)
}

#[test]
fn sentinel_misconfigurations_fail_at_start_with_their_exit_codes() {
    let master = RedisServer::start_with(&["--requirepass", "data-pw"]);
    let sentinel = Sentinel::start(MASTER_NAME, master.port, 1);
    let url = |name: &str| format!("redis-sentinel://127.0.0.1:{}#{name}", sentinel.port);

    // The master's own password, given apart from the (password-less) sentinels'.
    let (code, stderr) = run_dump(&url(MASTER_NAME), "    password: data-pw\n");
    assert_eq!(code, 0, "{stderr}");
    let expected = dump_state();
    let client =
        redis::Client::open(format!("redis://:data-pw@127.0.0.1:{}/0", master.port)).unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    let data = keys.iter().filter(|k| !k.starts_with(b"pika-migrate:"));
    assert_eq!(data.count(), expected.len());

    let (code, stderr) = run_dump(&url(MASTER_NAME), "    password: wrong\n");
    assert_eq!(code, 77, "{stderr}");
    assert!(
        stderr.contains("authentication refused") && !stderr.contains("wrong"),
        "{stderr}"
    );

    let (code, stderr) = run_dump(&url("nosuchmaster"), "");
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("no sentinel knows a master named \"nosuchmaster\""),
        "{stderr}"
    );

    let (a, b) = (free_port(), free_port());
    let (code, stderr) = run_dump(
        &format!("redis-sentinel://127.0.0.1:{a},127.0.0.1:{b}#{MASTER_NAME}"),
        "",
    );
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains("no sentinel answered")
            && stderr.contains(&format!("127.0.0.1:{a}"))
            && stderr.contains(&format!("127.0.0.1:{b}")),
        "{stderr}"
    );

    let gone = free_port();
    let lost = Sentinel::start(MASTER_NAME, gone, 1);
    let (code, stderr) = run_dump(
        &format!("redis-sentinel://127.0.0.1:{}#{MASTER_NAME}", lost.port),
        "",
    );
    assert_eq!(code, 69, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the sentinels name 127.0.0.1:{gone} as the master of \"{MASTER_NAME}\", but it cannot be reached"
        )),
        "{stderr}"
    );
}
