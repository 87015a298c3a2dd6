//! Memory stays bounded however big a collection is, and a string, which RocksDB
//! reads in one piece, is in memory once. Both land exactly.

mod common;

use common::*;

/// Loads a dump with big keys (`bench generate --big` and `big_args`) into a fresh
/// Redis, checks it with `verify`, and returns the run's peak RSS in MiB as its summary
/// prints it.
fn peak_rss_loading_big_keys(big_args: &[&str]) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("db0");
    let mut args = vec!["--keys", "100", "--kind", "mixed", "--big"];
    args.extend_from_slice(big_args);
    generate_dump(&dump, &args);
    let redis = RedisServer::start();
    let pipeline = write_pipeline(
        tmp.path(),
        &format!(
            "source:\n  type: snapshot\n  path: {}\nsinks:\n  - type: redis\n    url: {}\n",
            dump.display(),
            redis.url()
        ),
    );
    let (code, _, run_log) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{run_log}");
    let (code, stdout, stderr) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("verified 105 keys: 0 differ"), "{stdout}");
    let summary = run_log.lines().find(|l| l.starts_with("done:")).unwrap();
    let rss = summary.rsplit("peak RSS ").next().unwrap();
    rss.trim_end_matches(" MiB").parse().unwrap()
}

/// What a run needs besides the biggest string: the program, RocksDB, and the queues
/// and lane buffers full of big values (about 50 MiB in a release build).
const BOUND_MIB: u64 = 100;

#[test]
fn a_hash_bigger_than_the_memory_bound_loads_within_it() {
    // 1,000,000 fields of 16 bytes with values of 128: 137 MiB of elements in one key.
    let peak = peak_rss_loading_big_keys(&[
        "--big-elements",
        "1000000",
        "--big-value-bytes",
        "128",
        "--big-string-mib",
        "1",
    ]);
    eprintln!("peak RSS {peak} MiB");
    assert!(peak < BOUND_MIB, "peak RSS {peak} MiB");
}

#[test]
fn a_big_string_is_in_memory_once() {
    let peak = peak_rss_loading_big_keys(&["--big-elements", "1000", "--big-string-mib", "97"]);
    eprintln!("peak RSS {peak} MiB");
    assert!(peak < 97 + BOUND_MIB, "peak RSS {peak} MiB");
}
