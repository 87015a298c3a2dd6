//! A redis-server killed and restarted in the middle of a large load: the run rides it
//! out and ends with exactly the source data (checked by `verify`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Waits until `redis` holds more than `keys` keys.
fn wait_for_keys(redis: &RedisServer, keys: u64) {
    wait_until("the run to write", Duration::from_secs(120), || {
        redis::cmd("DBSIZE")
            .query::<u64>(&mut redis.client())
            .is_ok_and(|size| size > keys)
    });
}

/// Starts the tool on `pipeline`, its standard error piped.
fn start(pipeline: &Path) -> Child {
    Command::new(bin())
        .args(["run", "-c", pipeline.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_redis_killed_mid_load_ends_with_exactly_the_source_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("db0");
    generate_dump(&dump, &["--keys", "200000", "--kind", "mixed"]);
    // Every transaction is on disk before Redis answers, so a SIGKILL loses nothing
    // that was acknowledged.
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let pipeline = write_pipeline(
        tmp.path(),
        &format!(
            "source:\n  type: snapshot\n  path: {}\nsinks:\n  - type: redis\n    url: {}\n    batch: 256\n    senders: 4\n",
            dump.display(),
            redis.url()
        ),
    );
    let child = start(&pipeline);
    wait_for_keys(&redis, 30_000);
    redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("reconnect"),
        "the lanes reconnected: {stderr}"
    );
    assert!(stderr.contains("done: 200000 keys"), "{stderr}");

    let (code, stdout, stderr) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("verified 200000 keys: 0 differ"),
        "{stdout}"
    );
    let size: u64 = redis::cmd("DBSIZE").query(&mut redis.client()).unwrap();
    assert_eq!(
        size,
        200_000 + 4,
        "every key once, plus the 4 lanes' marker keys"
    );
}

#[test]
fn a_redis_restarted_empty_mid_stream_stops_the_run_naming_what_was_lost() {
    // No persistence: what Redis acknowledged before the restart is gone. Going on would
    // leave a target without those writes; the lanes see it in their checkpoint keys.
    let mut redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        &format!(
            "source:\n{}\n  rate: 300\nsinks:\n  - type: redis\n    url: {}\n    senders: 2\n",
            binlog_source(None),
            redis.url()
        ),
    );
    let child = start(&pipeline);
    wait_for_keys(&redis, 50);
    redis.kill();
    redis.restart();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lacks writes it had acknowledged")
            && stderr.contains("there is at nothing"),
        "{stderr}"
    );
}
