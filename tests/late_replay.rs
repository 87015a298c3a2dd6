//! A binlog or a capture replayed long after it was written gives the state the master
//! has, not a state where every expiry that is past by now deleted its key at once: an
//! expiry past only at the moment of the replay is held back, and the key is deleted
//! when the replay reaches its time, unless the master kept it (PERSIST, SET, a new
//! EXPIRE, …). Into a real redis-server, as of stated moments.

mod common;

use common::*;

const DAY_MS: i64 = 86_400_000;

fn run_into(redis: &RedisServer, source: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "source:\n{source}\nsinks:\n  - type: redis\n    url: {}\n",
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    stderr
}

fn binlog_as_of(from: Option<&str>, moment: i64) -> String {
    let from = from
        .map(|f| format!("\n  from: \"{f}\""))
        .unwrap_or_default();
    format!(
        "  type: binlog\n  path: {}{from}{}",
        fixture("binlog").display(),
        as_of_line(moment)
    )
}

/// What the master holds at `moment`: the keys of the binlog's end state still alive
/// then (the expected file was read right after the last write).
fn master_at(moment: i64) -> State {
    binlog_end_state()
        .into_iter()
        .filter(|(_, s)| s.expire_at_ms.is_none_or(|at| at > moment))
        .collect()
}

fn assert_master_state_at(redis: &RedisServer, moment: i64) {
    let mut expected = master_at(moment);
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same_as_of(&expected, &actual, moment);
}

fn persistent(redis: &RedisServer, key: &str) -> bool {
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query(&mut redis.client())
        .unwrap();
    pttl == -1
}

/// `s1:p2:e5` is `SET`, `EXPIRE 800000`, `PERSIST` on the master, which still holds it:
/// replayed years later, the EXPIRE names a past time and is held back, the PERSIST
/// keeps the key.
#[test]
fn the_fixture_binlog_replayed_years_later_gives_the_masters_state() {
    let later = fixture_moment() + 3650 * DAY_MS;
    let redis = RedisServer::start();
    let stderr = run_into(&redis, &binlog_as_of(None, later));
    assert!(persistent(&redis, "s1:p2:e5"), "{stderr}");
    // Every expiry of the binlog is past by then: no key keeps a time to live, no key
    // was left with a held one (a marker centuries ahead).
    assert!(master_at(later).values().all(|s| s.expire_at_ms.is_none()));
    assert_master_state_at(&redis, later);
    assert!(stderr.contains("late replay: "), "{stderr}");
    assert!(stderr.contains("cancelled by a later command"), "{stderr}");
}

#[test]
fn the_dump_then_the_binlog_read_years_later_agree_with_the_master() {
    let later = fixture_moment() + 3650 * DAY_MS;
    let redis = RedisServer::start();
    let dump = format!(
        "  type: snapshot\n  path: {}{}",
        fixture("dump").display(),
        as_of_line(later)
    );
    let stderr = run_into(&redis, &dump);
    assert!(
        // The 36 keys with a time to live, and 14 already expired when it was dumped.
        stderr.contains("snapshot: 50 expired key(s) skipped"),
        "{stderr}"
    );
    run_into(&redis, &binlog_as_of(Some("1:507340"), later));
    assert!(persistent(&redis, "s1:p2:e5"));
    assert_master_state_at(&redis, later);
}

/// Between the expiries of the binlog's keys: those past by then are gone, the others
/// there with the time they had left then.
#[test]
fn read_as_of_a_moment_between_expiries_the_binlog_gives_that_moments_state() {
    let mut expiries: Vec<i64> = (binlog_end_state().values())
        .filter_map(|s| s.expire_at_ms)
        .collect();
    expiries.sort_unstable();
    // Half-way across the widest gap between neighbouring expiries.
    let (a, b) = (expiries.windows(2))
        .map(|w| (w[0], w[1]))
        .max_by_key(|(a, b)| b - a)
        .unwrap();
    let moment = (a + b) / 2;
    let redis = RedisServer::start();
    run_into(&redis, &binlog_as_of(None, moment));
    let live = master_at(moment);
    assert!(live.values().any(|s| s.expire_at_ms.is_some()));
    assert!(live.len() < binlog_end_state().len());
    assert_master_state_at(&redis, moment);
}

/// Without `as_of` the wall clock judges: the replay gives what the master holds now,
/// whatever today is (expected from the time of the run).
#[test]
fn replayed_on_the_wall_clock_the_binlog_gives_todays_state() {
    let redis = RedisServer::start();
    let source = format!("  type: binlog\n  path: {}", fixture("binlog").display());
    run_into(&redis, &source);
    let now = now_ms();
    let mut expected = live_at(&binlog_end_state(), now);
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    // Nothing moved: the times written are the master's own.
    assert_same(&expected, &actual);
    assert!(persistent(&redis, "s1:p2:e5"));
}

#[test]
fn a_capture_replayed_years_later_gives_the_masters_state() {
    let work = tempfile::tempdir().unwrap();
    let capture = work.path().join("capture");
    let sink = format!("  - type: capture\n    path: {}\n", capture.display());
    for source in [dump_source(), binlog_source(Some("1:507340"))] {
        let pipeline = write_pipeline(work.path(), &format!("source:\n{source}\nsinks:\n{sink}"));
        let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
    }
    // The capture holds the times as the recording runs wrote them (moved to today):
    // read ten years from now, every one of them is past.
    let later = now_ms() + 3650 * DAY_MS;
    let redis = RedisServer::start();
    let stderr = run_into(
        &redis,
        &format!(
            "  type: capture\n  path: {}{}",
            capture.display(),
            as_of_line(later)
        ),
    );
    assert!(
        stderr.contains("capture: 36 snapshot event(s) of expired keys skipped"),
        "{stderr}"
    );
    assert!(persistent(&redis, "s1:p2:e5"));
    let mut expected = master_at(i64::MAX);
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same(&expected, &actual);
}

/// Each way the master can keep, drop, move or renew a key whose expiry a late replay
/// holds back, written as a binlog with its own times, replayed as of a moment after
/// that expiry: Redis ends as the master did.
#[test]
fn what_the_master_did_after_a_held_expiry_decides_each_key() {
    const T0: u32 = 1_700_000_000;
    let dir = tempfile::tempdir().unwrap();
    let expire = |k: &'static [u8]| -> [&'static [u8]; 3] { [b"EXPIRE", k, b"100"] };
    let e1 = expire(b"k1");
    let e2 = expire(b"k2");
    let e3 = expire(b"k3");
    let e4 = expire(b"k4");
    let e5 = expire(b"k5");
    let e6 = expire(b"k6");
    let e7 = expire(b"k7");
    let e8 = expire(b"k8");
    let e9 = expire(b"k9");
    let items: Vec<(u32, &[&[u8]])> = vec![
        (T0, &[b"SET", b"k1", b"v"]),
        (T0, &e1),
        (T0 + 10, &[b"PERSIST", b"k1"]),
        (T0, &[b"SET", b"k2", b"v"]),
        (T0, &e2),
        (T0 + 20, &[b"SET", b"k2", b"new"]),
        (T0, &[b"SET", b"k3", b"v"]),
        (T0, &e3),
        (T0 + 5, &[b"DEL", b"k3"]),
        (T0, &[b"SET", b"k4", b"v"]),
        (T0, &e4),
        (T0 + 30, &[b"RENAME", b"k4", b"k4b"]),
        // A list emptied and made again: the new key has no expiry on the master.
        (T0, &[b"RPUSH", b"k5", b"a"]),
        (T0, &e5),
        (T0 + 10, &[b"LPOP", b"k5"]),
        (T0 + 20, &[b"RPUSH", b"k5", b"x"]),
        // A new expiry, in the future at the moment read.
        (T0, &[b"SET", b"k6", b"v"]),
        (T0, &e6),
        (T0 + 50, &[b"EXPIRE", b"k6", b"1000"]),
        // Written again after its expiry: a new key.
        (T0, &[b"SET", b"k7", b"v"]),
        (T0, &e7),
        (T0 + 200, &[b"HSET", b"other", b"f", b"v"]),
        (T0 + 300, &[b"SET", b"k7", b"again"]),
        // Writes that keep the expiry: gone at its time.
        (T0, &[b"SET", b"k8", b"v"]),
        (T0, &e8),
        (T0 + 50, &[b"APPEND", b"k8", b"w"]),
        (T0, &[b"HSET", b"k9", b"f", b"v"]),
        (T0, &e9),
        (T0 + 50, &[b"HSET", b"k9", b"g", b"v"]),
    ];
    write_binlog_at(dir.path(), &items);
    let moment = i64::from(T0 + 500) * 1000;
    let redis = RedisServer::start();
    let stderr = run_into(
        &redis,
        &format!(
            "  type: binlog\n  path: {}{}",
            dir.path().display(),
            as_of_line(moment)
        ),
    );
    assert!(
        stderr.contains("late replay: 9 expiry(ies) already past held back"),
        "{stderr}"
    );
    let state = redis.state();
    let get = |k: &str, t: &str| state.get(&(k.as_bytes().to_vec(), t.to_owned()));
    let string = |v: &str| Val::String(v.as_bytes().to_vec());
    let kept = |k: &str, t: &str, val: Val| {
        let s = get(k, t).unwrap_or_else(|| panic!("{k} is gone: {state:?}"));
        assert_eq!((&s.val, s.expire_at_ms), (&val, None), "{k}");
    };
    kept("k1", "string", string("v"));
    kept("k2", "string", string("new"));
    kept("k5", "list", Val::List(vec![b"x".to_vec()]));
    kept("k7", "string", string("again"));
    for gone in ["k3", "k4", "k4b", "k8", "k9"] {
        assert!(
            !state.keys().any(|(k, _)| k == gone.as_bytes()),
            "{gone}: {state:?}"
        );
    }
    // EXPIRE 1000 at T0 + 50: 550 s left at the moment read, 550 s left now.
    let k6 = get("k6", "string").expect("k6");
    let left = k6.expire_at_ms.unwrap() - now_ms();
    assert!((540_000..=550_000).contains(&left), "{left}");
    assert!(get("other", "hash").is_some());
    assert_eq!(state.len(), 6, "{state:?}");
}
