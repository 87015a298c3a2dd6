//! Capture and replay: the fixture's stream recorded by the `capture` sink (rotating),
//! replayed by the `capture` source into a real redis-server, from/to a position, at a
//! limited rate, following a growing capture; damaged records named, or skipped.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn run(dir: &Path, source: &str, sink: &str) -> (i32, String) {
    let file = write_pipeline(dir, &format!("source:\n{source}\nsinks:\n{sink}"));
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    (code, stderr)
}

/// The dump, then the binlog from the dump's position, recorded into `capture`.
fn record_fixture(capture: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "  - type: capture\n    path: {}\n    rotate_mb: 1\n",
        capture.display()
    );
    let (code, stderr) = run(dir.path(), &dump_source(), &sink);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("events recorded"), "{stderr}");
    let (code, stderr) = run(dir.path(), &binlog_source(Some("1:507340")), &sink);
    assert_eq!(code, 0, "{stderr}");
}

fn replay_source(capture: &Path, extra: &str) -> String {
    format!("  type: capture\n  path: {}\n{extra}", capture.display())
}

fn redis_sink(redis: &RedisServer) -> String {
    format!("  - type: redis\n    url: {}\n", redis.url())
}

fn capture_files(capture: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(capture)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn a_capture_of_the_fixture_replays_into_redis_exactly() {
    let work = tempfile::tempdir().unwrap();
    let capture = work.path().join("capture");
    record_fixture(&capture);
    assert!(capture_files(&capture).len() >= 2, "rotated at 1 MiB");

    let redis = RedisServer::start();
    let (code, stderr) = run(
        work.path(),
        &replay_source(&capture, ""),
        &redis_sink(&redis),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_binlog_end_state(redis.state());
}

#[test]
fn replay_up_to_the_dumps_position_gives_the_dumps_state_at_a_limited_rate() {
    let work = tempfile::tempdir().unwrap();
    let capture = work.path().join("capture");
    record_fixture(&capture);
    let redis = RedisServer::start();
    let (code, stderr) = run(
        work.path(),
        &replay_source(&capture, "  to: \"1:507340\"\n  rate: 20000\n"),
        &redis_sink(&redis),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_dump_state(&redis.state());

    // From the dump's position on: only the binlog part.
    let out = work.path().join("tail.jsonl");
    let (code, stderr) = run(
        work.path(),
        &replay_source(&capture, "  from: \"1:507340\"\n"),
        &format!(
            "  - type: file\n    path: {}\n    format: jsonl\n",
            out.display()
        ),
    );
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.lines().count() > 100);
    assert!(
        text.lines().all(|l| l.contains("\"op\":\"command\"")),
        "no snapshot events"
    );
}

#[test]
fn a_damaged_record_is_named_and_can_be_skipped() {
    let work = tempfile::tempdir().unwrap();
    let capture = work.path().join("capture");
    record_fixture(&capture);
    // Flip one byte inside the first file's records.
    let first = capture_files(&capture)[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();

    let redis = RedisServer::start();
    let (code, stderr) = run(
        work.path(),
        &replay_source(&capture, ""),
        &redis_sink(&redis),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("capture-000001.pmc offset "), "{stderr}");
    assert!(stderr.contains("damaged record: CRC mismatch"), "{stderr}");

    let (code, stderr) = run(
        work.path(),
        &replay_source(&capture, "  skip_corrupt: true\n"),
        &redis_sink(&redis),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("capture: 1 damaged record(s) skipped"),
        "{stderr}"
    );
}

#[test]
fn follow_picks_up_what_is_recorded_later() {
    let work = tempfile::tempdir().unwrap();
    let capture = work.path().join("capture");
    let dir = tempfile::tempdir().unwrap();
    let sink = format!("  - type: capture\n    path: {}\n", capture.display());
    let (code, stderr) = run(dir.path(), &dump_source(), &sink);
    assert_eq!(code, 0, "{stderr}");

    let out = work.path().join("followed.jsonl");
    let file = write_pipeline(
        work.path(),
        &format!(
            "source:\n{}sinks:\n  - type: file\n    path: {}\n    format: jsonl\n",
            replay_source(&capture, "  follow: true\n"),
            out.display()
        ),
    );
    let mut follower = Command::new(bin())
        .args(["run", "-c", file.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let within = Duration::from_secs(30);
    wait_until("the dump's events", within, || lines() > 500);
    let before = lines();
    let (code, stderr) = run(dir.path(), &binlog_source(Some("1:507340")), &sink);
    assert_eq!(code, 0, "{stderr}");
    wait_until("the binlog's events", within, || lines() > before + 100);
    Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(follower.wait().unwrap().success());
}
