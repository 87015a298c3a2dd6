//! A Redis target that fails under a running migration: one that stops answering
//! without closing its connections (SIGSTOP), and one that goes away while the source
//! has nothing to send. The fixture binlog is replayed into a real redis-server; its
//! end state shows whatever was lost or applied twice.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A pipeline file and the log of the tool run on it.
struct Run {
    dir: tempfile::TempDir,
    pipeline: PathBuf,
}

impl Run {
    fn new(yaml: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let pipeline = write_pipeline(dir.path(), yaml);
        Run { dir, pipeline }
    }

    fn start(&self) -> Child {
        Command::new(bin())
            .args(["run", "-c", self.pipeline.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("tool.log")).unwrap())
            .spawn()
            .unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tool.log")).unwrap_or_default()
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn dbsize(redis: &RedisServer) -> i64 {
    redis::cmd("DBSIZE").query(&mut redis.client()).unwrap_or(0)
}

#[test]
fn a_redis_that_stops_answering_is_noticed_and_the_stream_stays_exact() {
    let redis = RedisServer::start();
    // 1430 items at 150/s: about 10 s of replay, Redis stopped for 3 s of it.
    let run = Run::new(&format!(
        "source:\n{}\n  rate: 150\nsinks:\n  - type: redis\n    url: {}\n    senders: 4\n    batch: 32\n    response_timeout_ms: 1000\n",
        binlog_source(None),
        redis.url()
    ));
    let mut tool = run.start();
    wait_until("the replay to start", Duration::from_secs(30), || {
        dbsize(&redis) > 100
    });
    signal(redis.pid(), "-STOP");
    std::thread::sleep(Duration::from_secs(3));
    // Pipelines sent before the stop wait in Redis' sockets: when it runs again it
    // reads them, unless the lanes that gave up on them had them dropped.
    signal(redis.pid(), "-CONT");
    let code = wait_exit(&mut tool, Duration::from_secs(120));
    let log = run.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("cannot write to Redis now") && log.contains("reconnected"),
        "the lanes noticed within their timeout and reconnected: {log}"
    );
    assert_binlog_end_state(redis.state());
}

#[test]
fn a_redis_gone_while_the_source_is_idle_shows_in_the_status_and_ends_the_run() {
    let mut redis = RedisServer::start();
    let status_port = free_port();
    let run = Run::new(&format!(
        "source:\n{}\n  follow: true\nsinks:\n  - type: redis\n    url: {}\n    senders: 2\n    retry_seconds: 4\nstatus:\n  listen: 127.0.0.1:{status_port}\n",
        binlog_source(None),
        redis.url()
    ));
    let mut tool = run.start();
    // Applied once the keys stop changing; the source then follows a binlog that does
    // not grow: nothing more to write.
    let mut seen = (0, 0);
    wait_until("the replay to be applied", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = dbsize(&redis);
        seen = if now == seen.0 {
            (now, seen.1 + 1)
        } else {
            (now, 0)
        };
        now > 100 && seen.1 >= 3
    });
    redis.kill();

    let status = || -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(status_port, "/status")?).ok()
    };
    wait_until(
        "the status to show the sink failing",
        Duration::from_secs(30),
        || status().is_some_and(|s| s["sinks"][0]["error"].is_string()),
    );
    let shown = status().unwrap();
    let error = shown["sinks"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("lanes cannot write"), "{shown}");
    assert!(
        shown["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("lanes cannot write")),
        "{shown}"
    );
    let metrics = http_get(status_port, "/metrics").unwrap_or_default();
    let failing = metrics
        .lines()
        .find(|l| l.starts_with("pika_migrate_sink_failing{"))
        .unwrap_or_default();
    assert!(failing.ends_with(" 1"), "{metrics}");

    // After retry_seconds the run ends, saying why, with the code of a target that
    // cannot be reached.
    let code = wait_exit(&mut tool, Duration::from_secs(60));
    let log = run.log_text();
    assert_eq!(code, 69, "{log}");
    assert!(log.contains("gave up after 4 s"), "{log}");
}

/// Keeps Redis busy for 1.5 s inside a transaction (its key is `KEYS[1]`).
const BUSY: &[u8] = b"local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 1500000 return 1";

#[test]
fn a_transaction_whose_replies_were_lost_is_reported_not_taken_for_success() {
    // One transaction: a slow script, an INCR Redis refuses (a string), an INCR it
    // applies. Its replies come after the lane stopped waiting for them.
    let tmp = tempfile::tempdir().unwrap();
    write_binlog(
        tmp.path(),
        &[
            &[b"SET", b"s", b"abc"],
            &[b"EVAL", BUSY, b"1", b"s"],
            &[b"INCR", b"s"],
            &[b"INCR", b"c"],
        ],
    );
    let redis = RedisServer::start();
    let run = Run::new(&format!(
        "source:\n  type: binlog\n  path: {}\nsinks:\n  - type: redis\n    url: {}\n    senders: 1\n    response_timeout_ms: 500\n",
        tmp.path().display(),
        redis.url()
    ));
    let mut tool = run.start();
    let code = wait_exit(&mut tool, Duration::from_secs(60));
    let log = run.log_text();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("the lost transaction had been applied; not resending")
            && log.contains("whether Redis refused one of its commands is unknown")
            && log.contains("1 transactions ran but their replies were lost"),
        "{log}"
    );
    let get = |key: &str| -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut redis.client())
            .unwrap()
    };
    assert_eq!(get("s").as_deref(), Some("abc"));
    assert_eq!(
        get("c").as_deref(),
        Some("1"),
        "applied once, not sent again"
    );
}
