//! Filters in real pipelines: the fixture through a chain of built-ins into a file and
//! into Redis, a live replica whose filters drop events (its acks must not stall), and
//! bad filter settings named by the validator.

mod common;

use common::*;

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn key_of(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    let k = &v["key"];
    k.as_str()
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| {
            k["b64"]
                .as_str()
                .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
        })
        .unwrap_or_default()
}

#[test]
fn a_chain_of_built_ins_shapes_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let yaml = format!(
        "source:\n  type: snapshot\n  path: {}\nfilters:\n  - type: key\n    include: ['s1:hash:*', 's1:zset:*']\n    exclude: [{{regex: 'big$'}}]\n  - type: type\n    drop: [zset]\n  - type: rename\n    replace_prefix: {{from: 's1:', to: 'moved:'}}\nsinks:\n  - type: file\n    path: {}\n    format: jsonl\n",
        fixture("dump").display(),
        out.display()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("events filtered out"), "{stderr}");
    let events = jsonl(&out);
    assert!(!events.is_empty());
    for e in &events {
        let key = key_of(e);
        assert!(
            key.starts_with(b"moved:hash:"),
            "{}",
            String::from_utf8_lossy(&key)
        );
        assert!(!key.ends_with(b"big"));
    }
}

#[test]
fn the_binlog_renamed_into_redis_lands_under_the_new_names() {
    // Every key argument of multi-key commands (RPOPLPUSH, SMOVE, MSET, *STORE …) is
    // renamed, so the replay gives the same data under the new prefix.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "source:\n{}\nfilters:\n  - type: rename\n    add_prefix: 'p:'\n  - type: command\n    drop: [flushdb, flushall]\nsinks:\n  - type: redis\n    url: {}\n",
        binlog_source(None),
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let mut expected = binlog_end_state();
    expected = expected
        .into_iter()
        .map(|((k, t), v)| ((["p:".as_bytes(), &k].concat(), t), v))
        .collect();
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same_as_of(&expected, &actual, fixture_moment());
}

#[test]
fn bad_filter_settings_are_named_by_the_validator() {
    let dir = tempfile::tempdir().unwrap();
    for (filter, says) in [
        (
            "  - type: key\n    include: [{regex: '(unclosed'}]\n",
            "filters[0] (key): regex",
        ),
        ("  - type: type\n    keep: [geo]\n", "unknown type \"geo\""),
        (
            "  - type: rename\n    add_prefix: a\n    strip_prefix: b\n",
            "exactly one of",
        ),
        ("  - type: nosuch\n", "nosuch"),
    ] {
        let yaml = format!(
            "source:\n  type: snapshot\n  path: {}\nfilters:\n{filter}sinks:\n  - type: file\n    path: '-'\n    format: jsonl\n",
            fixture("dump").display()
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        let (code, _, stderr) = run_cli(&["validate", "-c", pipeline.to_str().unwrap()]);
        assert_eq!(code, 78, "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
}

#[test]
fn the_db_filter_moves_the_dump_and_the_binlog_to_another_database() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    for source in [dump_source(), binlog_source(Some("1:507340"))] {
        let yaml = format!(
            "source:\n{source}\nfilters:\n  - type: db\n    map: {{0: 2}}\nsinks:\n  - type: redis\n    url: {}\n",
            redis.url()
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
    }
    assert!(redis.state().is_empty(), "nothing in db 0");
    assert_binlog_end_state(redis.state_of_db(2));
}
