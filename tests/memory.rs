//! Memory stays flat however big a collection is: keys three times bigger load with
//! the same peak RSS, and land exactly. A string, which RocksDB reads in one piece, is
//! in memory once.

mod common;

use common::*;

/// Loads a dump whose hash and list have `elements` elements (set and sorted set half
/// as many) and whose big string has `string_mib` into a fresh Redis, checks it with
/// `verify`, and returns the run's peak RSS in MiB as its summary prints it.
fn peak_rss_loading_big_keys(elements: u64, string_mib: u64) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("db0");
    let (elements_arg, string_arg) = (elements.to_string(), string_mib.to_string());
    generate_dump(
        &dump,
        &[
            "--keys",
            "100",
            "--kind",
            "mixed",
            "--big",
            "--big-elements",
            &elements_arg,
            "--big-string-mib",
            &string_arg,
        ],
    );
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
    let len: u64 = redis::cmd("HLEN")
        .arg("big:hash")
        .query(&mut redis.client())
        .unwrap();
    assert_eq!(len, elements);
    let summary = run_log.lines().find(|l| l.starts_with("done:")).unwrap();
    let rss = summary.rsplit("peak RSS ").next().unwrap();
    rss.trim_end_matches(" MiB").parse().unwrap()
}

#[test]
fn peak_memory_does_not_grow_with_the_biggest_collection() {
    // At 1,000,000 elements a key is already more than every queue holds; 3,000,000
    // adds about 120 MiB of elements (the hash alone has 72 MiB).
    let small = peak_rss_loading_big_keys(1_000_000, 1);
    let big = peak_rss_loading_big_keys(3_000_000, 1);
    eprintln!("peak RSS: {small} MiB (1,000,000 elements), {big} MiB (3,000,000)");
    assert!(
        big <= small + 8,
        "peak RSS {small} MiB with 1,000,000-element keys but {big} MiB with 3,000,000"
    );
    assert!(big < 200, "peak RSS {big} MiB");
}

#[test]
fn a_big_string_is_in_memory_once() {
    // A 33 MiB string already fills every queue with its slices; 64 MiB more may only
    // add those 64 MiB.
    let small = peak_rss_loading_big_keys(1000, 33);
    let big = peak_rss_loading_big_keys(1000, 97);
    eprintln!("peak RSS: {small} MiB (33 MiB string), {big} MiB (97 MiB)");
    assert!(
        big <= small + 64 + 12,
        "peak RSS {small} MiB with a 33 MiB string but {big} MiB with 97 MiB"
    );
}
