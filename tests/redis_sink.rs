//! The Redis sink against real redis-server processes: the fixtures land exactly, each
//! type-conflict policy does what it says, credentials work or fail clearly.

mod common;

use common::*;

/// Runs a pipeline from `source` into the Redis at `url`; returns (exit code, stderr).
fn run_into(source: &str, url: &str, extra: &str) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!("source:\n{source}\nsinks:\n  - type: redis\n    url: {url}\n{extra}");
    let pipeline = write_pipeline(tmp.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    (code, stderr)
}

#[test]
fn snapshot_lands_exactly_with_first_wins() {
    let redis = RedisServer::start();
    let (code, stderr) = run_into(
        &dump_source(),
        &redis.url(),
        "    senders: 4\n    batch: 64\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("5 writes skipped: the key holds another type first"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Pika HyperLogLog keys copied as raw strings"),
        "{stderr}"
    );
    assert_dump_state(&redis.state());
}

#[test]
fn binlog_replays_exactly_and_type_conflicts_do_not_fail_the_run() {
    let redis = RedisServer::start();
    let (code, stderr) = run_into(&binlog_source(None), &redis.url(), "");
    assert_eq!(code, 0, "{stderr}");
    // HSET/RPUSH/SADD/ZADD on s1:multi and HSET on s1:multi:ttl hit WRONGTYPE.
    assert!(stderr.contains("5 writes skipped"), "{stderr}");
    assert_binlog_end_state(redis.state());
}

#[test]
fn dump_then_binlog_tail_gives_the_later_state() {
    let redis = RedisServer::start();
    let (code, stderr) = run_into(&dump_source(), &redis.url(), "");
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = run_into(&binlog_source(Some("1:507340")), &redis.url(), "");
    assert_eq!(code, 0, "{stderr}");
    assert_binlog_end_state(redis.state());
}

#[test]
fn several_network_threads_land_the_same_data() {
    // One thread is the default; a multi-thread runtime must keep every key's order too.
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    for source in [dump_source(), binlog_source(Some("1:507340"))] {
        let yaml = format!(
            "source:\n{source}\nsinks:\n  - type: redis\n    url: {}\n    senders: 4\n    batch: 16\n",
            redis.url()
        );
        let pipeline = write_pipeline(tmp.path(), &yaml);
        let (code, _, stderr) =
            run_cli(&["--threads", "3", "run", "-c", pipeline.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
    }
    assert_binlog_end_state(redis.state());

    let (code, _, stderr) = run_cli(&["--threads", "0", "run", "-c", "unused.yaml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--threads"), "{stderr}");
}

#[test]
fn a_binlog_sent_again_is_applied_once_thanks_to_the_lane_checkpoints() {
    // The binlog has INCRs, list pushes and appends: applied twice, they would show.
    let redis = RedisServer::start();
    let extra = "    senders: 4\n    batch: 32\n";
    let (code, stderr) = run_into(&binlog_source(None), &redis.url(), extra);
    assert_eq!(code, 0, "{stderr}");
    let once = redis.state();
    let (code, stderr) = run_into(&binlog_source(None), &redis.url(), extra);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("binlog commands were already applied before a restart"),
        "{stderr}"
    );
    assert_same(&once, &redis.state());
    assert_binlog_end_state(redis.state());

    // Fewer senders move keys to other lanes: every lane starts after the lowest lane
    // position, so what came after it may apply twice, and the operator is told.
    let (code, stderr) = run_into(&binlog_source(None), &redis.url(), "    senders: 2\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("senders changed since the last run"),
        "{stderr}"
    );
}

fn multi_state(redis: &RedisServer) -> Vec<(String, String)> {
    redis
        .state()
        .into_iter()
        .filter(|((k, _), _)| k.starts_with(b"s1:multi"))
        .map(|((k, t), _)| (String::from_utf8(k).unwrap(), t))
        .collect()
}

#[test]
fn overwrite_lets_the_last_type_in_pika_order_win() {
    let redis = RedisServer::start();
    let (code, stderr) = run_into(
        &dump_source(),
        &redis.url(),
        "    type_conflict: overwrite\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let expected = load_expected("expected.jsonl");
    assert_eq!(
        multi_state(&redis),
        [
            ("s1:multi".to_owned(), "set".to_owned()),
            ("s1:multi:ttl".to_owned(), "hash".to_owned())
        ]
    );
    let state = redis.state();
    let set = &state[&(b"s1:multi".to_vec(), "set".to_owned())];
    assert_eq!(
        set.val,
        expected[&(b"s1:multi".to_vec(), "set".to_owned())].val
    );
}

#[test]
fn suffix_keeps_every_type_under_its_own_name() {
    let redis = RedisServer::start();
    let (code, stderr) = run_into(&dump_source(), &redis.url(), "    type_conflict: suffix\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("5 writes went to key:<type>"), "{stderr}");
    let names: Vec<(String, String)> = multi_state(&redis);
    assert_eq!(
        names,
        [
            ("s1:multi", "string"),
            ("s1:multi:hash", "hash"),
            ("s1:multi:list", "list"),
            ("s1:multi:set", "set"),
            ("s1:multi:ttl", "string"),
            ("s1:multi:ttl:hash", "hash"),
            ("s1:multi:zset", "zset"),
        ]
        .map(|(k, t)| (k.to_owned(), t.to_owned()))
    );
    let expected = load_expected("expected.jsonl");
    let state = redis.state();
    let renamed = &state[&(b"s1:multi:ttl:hash".to_vec(), "hash".to_owned())];
    let original = &expected[&(b"s1:multi:ttl".to_vec(), "hash".to_owned())];
    assert_eq!(renamed.val, original.val);
    // Its time to live as of the fixture's moment, moved to the run.
    let early = original.expire_at_ms.unwrap() + (now_ms() - fixture_moment())
        - renamed.expire_at_ms.unwrap();
    assert!((-EXPIRY_SLACK_MS..60_000).contains(&early), "{early}");
}

#[test]
fn type_conflicts_of_the_binlog_are_resolved_in_order_inside_their_transaction() {
    // Pika holds `k` as a string and a hash, `n` as a string and a list; each later
    // write of the other type comes in the same transaction as the first.
    let tmp = tempfile::tempdir().unwrap();
    write_binlog(
        tmp.path(),
        &[
            &[b"SET", b"k", b"v"],
            &[b"HSET", b"k", b"f", b"1"],
            &[b"HSET", b"k", b"g", b"2"],
            &[b"SET", b"n", b"1"],
            &[b"RPUSH", b"n", b"a"],
            &[b"RPUSH", b"n", b"b"],
        ],
    );
    let source = format!("  type: binlog\n  path: {}", tmp.path().display());
    let value = |redis: &RedisServer, key: &str, t: &str| {
        redis.state()[&(key.as_bytes().to_vec(), t.to_owned())]
            .val
            .clone()
    };
    let hash = |pairs: &[(&str, &str)]| {
        Val::Hash(
            pairs
                .iter()
                .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        )
    };
    let list = |items: &[&str]| Val::List(items.iter().map(|i| i.as_bytes().to_vec()).collect());

    // overwrite: the other type goes before the first write, not after the last.
    let redis = RedisServer::start();
    let (code, stderr) = run_into(
        &source,
        &redis.url(),
        "    senders: 1\n    type_conflict: overwrite\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(value(&redis, "k", "hash"), hash(&[("f", "1"), ("g", "2")]));
    assert_eq!(value(&redis, "n", "list"), list(&["a", "b"]));
    assert!(
        stderr.contains("2 writes replaced a key of another type"),
        "{stderr}"
    );

    // suffix: every write of the later type under `key:<type>`, the key untouched.
    let redis = RedisServer::start();
    let (code, stderr) = run_into(
        &source,
        &redis.url(),
        "    senders: 1\n    type_conflict: suffix\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(value(&redis, "k", "string"), Val::String(b"v".to_vec()));
    assert_eq!(
        value(&redis, "k:hash", "hash"),
        hash(&[("f", "1"), ("g", "2")])
    );
    assert_eq!(value(&redis, "n", "string"), Val::String(b"1".to_vec()));
    assert_eq!(value(&redis, "n:list", "list"), list(&["a", "b"]));
    assert!(stderr.contains("4 writes went to key:<type>"), "{stderr}");
}

#[test]
fn hyperloglogs_can_be_left_out() {
    let redis = RedisServer::start();
    let (code, stderr) = run_into(&dump_source(), &redis.url(), "    hyperloglog: skip\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("Pika HyperLogLog keys left out (hyperloglog: skip): s1:hll:0"),
        "{stderr}"
    );
    let mut expected = dump_state();
    expected.retain(|_, s| !matches!(&s.val, Val::String(v) if v.len() == 131072));
    assert_same_as_of(&expected, &redis.state(), fixture_moment());
}

#[test]
fn password_and_acl_users_work_and_bad_credentials_fail_at_start() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/0", redis.port);
    let (code, stderr) = run_into(&dump_source(), &url, "");
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = run_into(
        &dump_source(),
        &format!("redis://:wrong@127.0.0.1:{}/0", redis.port),
        "",
    );
    assert_eq!(code, 77, "refused credentials: EX_NOPERM; {stderr}");
    assert!(stderr.contains("authentication refused"), "{stderr}");
    assert!(
        !stderr.contains("wrong@"),
        "the password is not printed: {stderr}"
    );

    let acl = RedisServer::start();
    let mut con = acl.client();
    redis::cmd("ACL")
        .arg(&["SETUSER", "migrator", "on", ">m1grate", "~*", "&*", "+@all"])
        .exec(&mut con)
        .unwrap();
    let url = format!("redis://migrator:m1grate@127.0.0.1:{}/0", acl.port);
    let (code, stderr) = run_into(&dump_source(), &url, "");
    assert_eq!(code, 0, "{stderr}");
    assert_dump_state(&acl.state());
    let (code, stderr) = run_into(
        &dump_source(),
        &format!("redis://migrator:nope@127.0.0.1:{}/0", acl.port),
        "",
    );
    assert_eq!(code, 77, "{stderr}");
    assert!(
        stderr.contains("authentication refused") && stderr.contains("WRONGPASS"),
        "{stderr}"
    );
}

#[test]
fn a_unix_socket_target_works_in_both_url_forms() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let redis = RedisServer::start_with(&[
        "--unixsocket",
        socket.to_str().unwrap(),
        "--unixsocketperm",
        "700",
    ]);
    let url = format!("redis+unix://{}?db=0", socket.display());
    let (code, stderr) = run_into(&dump_source(), &url, "    senders: 2\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("redis {url}: ")), "{stderr}");
    assert_dump_state(&redis.state());

    let url = format!("unix://{}?db=3", socket.display());
    let (code, stderr) = run_into(&binlog_source(None), &url, "");
    assert_eq!(code, 0, "{stderr}");
    assert_binlog_end_state(redis.state_of_db(3));
}

#[test]
fn unreachable_targets_fail_at_start_with_the_address() {
    let port = free_port();
    let (code, stderr) = run_into(&dump_source(), &format!("redis://127.0.0.1:{port}/0"), "");
    assert_eq!(code, 69, "unreachable: EX_UNAVAILABLE; {stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}/0: cannot connect")),
        "{stderr}"
    );
    let (code, stderr) = run_into(&dump_source(), "redis://no-such-host.invalid:6379/0", "");
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("no-such-host.invalid"), "{stderr}");
}

#[test]
fn command_errors_stop_the_run_with_the_position_or_are_skipped() {
    // A Redis too small for the dump refuses writes with OOM.
    let redis =
        RedisServer::start_with(&["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"]);
    let (code, stderr) = run_into(&dump_source(), &redis.url(), "");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("OOM") && stderr.contains("at snapshot@1:507340#"),
        "{stderr}"
    );
    let (code, stderr) = run_into(&dump_source(), &redis.url(), "    on_error: skip\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("commands refused by Redis and skipped (on_error: skip)"),
        "{stderr}"
    );
}

#[test]
fn verify_finds_the_fixture_equal_and_names_a_tampered_key() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        &format!(
            "source:\n{}\nsinks:\n  - type: redis\n    url: {}\n",
            dump_source(),
            redis.url()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("verified 859 keys: 0 differ, 5 not expected in Redis"),
        "{stdout}"
    );

    let mut con = redis.client();
    redis::cmd("HSET")
        .arg(&["s1:hash:big", "field7", "tampered"])
        .exec(&mut con)
        .unwrap();
    redis::cmd("RPUSH")
        .arg(&["s1:list:big", "extra"])
        .exec(&mut con)
        .unwrap();
    redis::cmd("PERSIST")
        .arg("s1:multi:ttl")
        .exec(&mut con)
        .unwrap();
    // One of the keys whose times the run moved (as of the fixture's moment) gets a
    // minute more than the others: the only one not moved by the same amount.
    let pttl: i64 = redis::cmd("PTTL")
        .arg("s1:ttl:exp:3")
        .query(&mut con)
        .unwrap();
    redis::cmd("PEXPIRE")
        .arg("s1:ttl:exp:3")
        .arg(pttl + 60_000)
        .exec(&mut con)
        .unwrap();
    redis::cmd("DEL").arg("s1:zset:inf").exec(&mut con).unwrap();
    let (code, stdout, _) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    for key in [
        "s1:hash:big: ",
        "s1:list:big: length is",
        "s1:multi:ttl: expiry differs",
        "s1:ttl:exp:3: expiry differs",
        "s1:zset:inf: type is",
    ] {
        assert!(stdout.contains(key), "{key} in {stdout}");
    }
    assert!(stdout.contains("verified 859 keys: 5 differ"), "{stdout}");
}
