//! A Pika as the target (an online upgrade from Pika 3.x to 4.0, and Pika to Pika), on
//! real servers from `PIKA_BIN_DIR` (`common::real_pika`): live masters into Pika 3.5.5
//! and 4.0.1 targets, the 3.3.6 fixture offline into 4.0.1, and a 4.0.1 master whose
//! `PEXPIREAT` deleted keys into Redis. Each side is read back from its own server
//! (`RealPika::state`: every type of a name probed, expiries from PTTL).
//!
//! Without the Pika binaries each test prints one line saying it was skipped.

mod common;

use std::time::Duration;

use common::real_pika::*;
use common::tool::*;
use common::*;
use pika_migrate_sinks::redis::pika_target::cut_by_pika_4;

fn servers(test: &str, master: &'static str, target: &'static str) -> Option<(RealPika, RealPika)> {
    let master = pika_or_skip(master, test)?;
    let target = pika_or_skip(target, test)?;
    // Started side by side: each takes seconds to come up.
    let t = std::thread::spawn(move || RealPika::start(&target, PikaOptions::default()));
    let m = RealPika::start(&master, PikaOptions::default());
    Some((m, t.join().unwrap()))
}

/// What a Pika target holds, without this tool's checkpoint keys.
fn target_state(target: &RealPika) -> State {
    let mut state = target.state();
    state.retain(|(k, _), _| !k.starts_with(b"pika-migrate:checkpoint:"));
    state
}

fn url_of(pika: &RealPika) -> String {
    format!("redis://127.0.0.1:{}/0", pika.port)
}

/// Names holding several types, and a HyperLogLog, written on a 3.x master.
fn several_types_and_a_hyperloglog(pika: &RealPika) {
    let s = |x: &str| x.as_bytes().to_vec();
    let argvs = [
        ["SET", "multi:1", "a string"].map(s).to_vec(),
        ["HSET", "multi:1", "f", "a hash"].map(s).to_vec(),
        ["RPUSH", "multi:2", "a", "list"].map(s).to_vec(),
        ["SADD", "multi:2", "a", "set"].map(s).to_vec(),
        ["ZADD", "multi:2", "1", "zset"].map(s).to_vec(),
        ["EXPIRE", "multi:2", "5000"].map(s).to_vec(),
        ["PFADD", "hll", "a", "b", "c", "d"].map(s).to_vec(),
    ];
    pipeline(&mut pika.client(), argvs);
}

/// Counters and pushes (exactly once shows at once) and every type's writes.
fn mixed_write(i: usize) -> Vec<Vec<u8>> {
    if i % 2 == 0 {
        counter_write(i / 2)
    } else {
        live_write(i / 2)
    }
}

/// On a 3.5/4.0 master: counters, pushes, appends, hashes, expiring strings, and
/// INCR and APPEND on keys with an expiry, which the master logs as "a new value, the
/// expiry kept" (Pika has no KEEPTTL: the lane writes the time left). (A 3.5 master's
/// full sync carries no stream: streams are written once the stream runs,
/// `streams_after_the_full_sync`.)
fn ttl_keeping_write(i: usize) -> Vec<Vec<u8>> {
    let args: Vec<String> = match i % 8 {
        0 => vec!["INCR".into(), format!("n:{}", i % 40)],
        1 => vec!["RPUSH".into(), format!("l:{}", i % 20), format!("{i}")],
        2 => vec!["APPEND".into(), "app".into(), format!("+{i}")],
        3 => vec![
            "HSET".into(),
            format!("h:{}", i % 10),
            format!("f{}", i % 7),
            format!("{i}"),
        ],
        4 => vec![
            "SETEX".into(),
            format!("t:{}", i % 30),
            "3600".into(),
            format!("{i}"),
        ],
        5 => vec!["INCR".into(), format!("t:{}", (i + 7) % 30)],
        6 => vec![
            "SETEX".into(),
            format!("a:{}", i % 10),
            "7200".into(),
            "x".into(),
        ],
        _ => vec![
            "APPEND".into(),
            format!("a:{}", (i + 3) % 10),
            format!("+{i}"),
        ],
    };
    args.into_iter().map(String::into_bytes).collect()
}

fn nothing(_: &RealPika) {}

/// A Pika 4.0.1 started for `test`, or `None` after saying why it is skipped.
fn a_4_0_1(test: &str) -> Option<RealPika> {
    let bin = pika_or_skip("4.0.1", test)?;
    Some(RealPika::start(&bin, PikaOptions::default()))
}

/// Runs an offline `source` (the `source:` body) into `target` with `sink_extra` sink
/// lines, from a pipeline file in `dir`; asserts exit 0. The pipeline file, and what
/// the run printed.
fn run_into(
    dir: &std::path::Path,
    source: &str,
    target: &RealPika,
    sink_extra: &str,
) -> (std::path::PathBuf, String) {
    let yaml = format!(
        "source:\n{source}\nsinks:\n  - type: redis\n    url: {}\n{sink_extra}",
        url_of(target)
    );
    let pipeline = write_pipeline(dir, &yaml);
    let (code, stdout, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    (pipeline, stdout + &stderr)
}

/// XADDs (ids the master generates) once the stream runs.
fn streams(master: &RealPika) {
    let s = |x: &str| x.as_bytes().to_vec();
    let xadds = (0..30).map(|i| {
        let key = format!("x:{}", i % 3);
        vec![s("XADD"), s(&key), s("*"), s("i"), s(&i.to_string())]
    });
    pipeline(&mut master.client(), xadds);
}

/// Writes during the full sync and after it, the tool `kill -9`ed `kills` times, then
/// caught up and stopped; returns the migration and the tool's log.
fn migrate_live(
    master: &RealPika,
    target: &RealPika,
    write: fn(usize) -> Vec<Vec<u8>>,
    kills: usize,
    while_streaming: fn(&RealPika),
) -> (Migration, String) {
    // A kill during a 3.2 master's push of the dump (into the rsync daemon that died
    // with the tool) stalls that push: the next run asks for the dump again after
    // `transfer_timeout`, which must come well within the test's wait.
    let m = Migration::new(&master.addr(), &url_of(target), "  transfer_timeout: 15\n");
    let writer = Writer::start(master, write);
    let mut dice = Dice::new("pika_targets");
    for _ in 0..kills {
        let tool = m.start();
        m.wait_for(STREAMING_WITHIN, "the full sync to start", || {
            m.stage().is_some()
        });
        std::thread::sleep(Duration::from_millis(300 + dice.below(2500)));
        kill9(tool);
    }
    let tool = m.start();
    m.wait_streaming(&tool);
    while_streaming(master);
    std::thread::sleep(Duration::from_millis(500));
    let written = writer.stop();
    assert!(written > 0);
    m.wait_caught_up(master);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    let log = m.log_text();
    assert!(
        log.contains("the target is a Pika, not a Redis"),
        "the start says what the target is: {log}"
    );
    (m, log)
}

/// `pika-migrate verify -c FILE` (`args` added): its exit code and what it printed.
fn verify(pipeline: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["verify", "-c", pipeline.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_cli(&all);
    (code, stdout + &stderr)
}

/// The operator's check after a live migration into a Pika: the live `verify` finds
/// every key equal (exit 0, the keys counted), then, with `tamper` run on the target,
/// exits 1 naming `key`.
fn live_verify_finds_equal_then_the_tampered_key(
    m: &Migration,
    target: &RealPika,
    tamper: Vec<Vec<u8>>,
    key: &str,
) {
    let rounds = ["--settle", "1", "--rounds", "2"];
    let (code, out) = verify(&m.pipeline, &rounds);
    assert_eq!(code, 0, "{out}");
    let keys: u64 = out
        .split_once("verified ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {out}"));
    assert!(keys > 600 && out.contains(": 0 differ"), "{out}");
    pipeline(&mut target.client(), [tamper]);
    let (code, out) = verify(&m.pipeline, &rounds);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("db0 {key}: ")), "{out}");
    assert!(out.contains(": 1 differ"), "{out}");
}

#[test]
fn live_3_3_6_into_4_0_1_every_type_ttls_several_types_kill_9_exactly_once() {
    let test = "live_3_3_6_into_4_0_1";
    let Some((master, target)) = servers(test, "3.3.6", "4.0.1") else {
        return;
    };
    preload(&master, 1500);
    several_types_and_a_hyperloglog(&master);
    let (m, log) = migrate_live(&master, &target, mixed_write, 3, nothing);
    assert!(log.contains("pika_version=4.0.0"), "{log}");
    // 4.0 holds one type per name: `first-wins` keeps what Pika 3.3's TYPE shows.
    assert_same(&redis_view(&master.state()), &target_state(&target));
    let s = |x: &str| x.as_bytes().to_vec();
    let hdel = vec![s("HDEL"), s("pre:h:2"), s("a")];
    live_verify_finds_equal_then_the_tampered_key(&m, &target, hdel, "pre:h:2");
}

#[test]
fn live_3_2_9_into_3_5_5_keeps_every_type_of_a_name() {
    let test = "live_3_2_9_into_3_5_5";
    let Some((master, target)) = servers(test, "3.2.9", "3.5.5") else {
        return;
    };
    preload(&master, 600);
    several_types_and_a_hyperloglog(&master);
    let (m, _) = migrate_live(&master, &target, mixed_write, 1, nothing);
    // Pika 3.5 keeps a string and a hash under one name, as 3.2 does: all of them.
    let want = master.state();
    assert!(want.contains_key(&(b"multi:1".to_vec(), "hash".to_owned())));
    assert_same(&want, &target_state(&target));
    // The hash behind `multi:1`'s string (3.5's TYPE says string) is checked too.
    let s = |x: &str| x.as_bytes().to_vec();
    let hdel = vec![s("HDEL"), s("multi:1"), s("f")];
    live_verify_finds_equal_then_the_tampered_key(&m, &target, hdel, "multi:1");
}

#[test]
fn live_3_5_5_into_4_0_1_streams_and_counters_exactly() {
    let test = "live_3_5_5_into_4_0_1";
    let Some((master, target)) = servers(test, "3.5.5", "4.0.1") else {
        return;
    };
    preload(&master, 600);
    migrate_live(&master, &target, ttl_keeping_write, 1, streams);
    assert_same(&master.state(), &target_state(&target));
}

#[test]
fn the_3_3_6_fixture_dump_and_binlog_offline_into_4_0_1_exactly() {
    let Some(target) = a_4_0_1("the_3_3_6_fixture_offline_into_4_0_1") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut summaries = String::new();
    for source in [dump_source(), binlog_source(Some("1:507340"))] {
        let sink = "    senders: 4\n    batch: 64\n";
        let (pipeline, out) = run_into(tmp.path(), &source, &target, sink);
        summaries += &out;
        if source.contains("type: snapshot") {
            verify_the_dump_then_a_tampered_set_and_zset(&pipeline, &target);
        }
    }
    // 4.0 stores a name with a NUL followed by more bytes cut after the NUL, where no
    // read finds it: such names are left out, and the summary names them.
    assert!(
        summaries.contains("left out: a name with a NUL byte followed by more bytes")
            && summaries.contains("s1:hash:\\x00bin"),
        "{summaries}"
    );
    let mut expected = binlog_end_state();
    expected.retain(|(k, _), _| !cut_by_pika_4(k));
    assert!(expected.len() > 1000);
    // HyperLogLogs included: Pika keeps its own register strings, copied and replayed.
    assert_same_as_of(&expected, &target_state(&target), fixture_moment());
}

/// `verify` of the dump's pipeline on the Pika target (every key of the dump, as of its
/// moment) exits 0; a member removed from a set and a score changed on the target make
/// it exit 1 naming both keys. Both are put back.
fn verify_the_dump_then_a_tampered_set_and_zset(pipeline: &std::path::Path, target: &RealPika) {
    let dump = dump_state();
    let held = dump.keys().filter(|(k, _)| !cut_by_pika_4(k)).count();
    let (code, out) = verify(pipeline, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("verified {held} keys: 0 differ")),
        "{held}: {out}"
    );
    let printable = |k: &[u8]| k.iter().all(|b| b.is_ascii_graphic());
    let (set, member) = dump
        .iter()
        .find_map(|((k, _), e)| match &e.val {
            Val::Set(m) if printable(k) => Some((k.clone(), m.first()?.clone())),
            _ => None,
        })
        .unwrap();
    let (zset, (zmember, score)) = dump
        .iter()
        .find_map(|((k, _), e)| match &e.val {
            Val::Zset(m) if printable(k) => Some((k.clone(), m.first_key_value()?)),
            _ => None,
        })
        .unwrap();
    let changed = (score + 1.0).to_string().into_bytes();
    let s = |x: &str| x.as_bytes().to_vec();
    pipeline_on(
        target,
        [
            vec![s("SREM"), set.clone(), member.clone()],
            vec![s("ZADD"), zset.clone(), changed, zmember.clone()],
        ],
    );
    let (code, out) = verify(pipeline, &[]);
    assert_eq!(code, 1, "{out}");
    let name = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    assert!(
        out.contains(&format!("{}: a member is missing", name(&set))),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}: a score differs", name(&zset))),
        "{out}"
    );
    assert!(out.contains(": 2 differ"), "{out}");
    pipeline_on(
        target,
        [
            vec![s("SADD"), set, member],
            vec![
                s("ZADD"),
                zset,
                score.to_string().into_bytes(),
                zmember.clone(),
            ],
        ],
    );
}

fn pipeline_on(pika: &RealPika, argvs: impl IntoIterator<Item = Vec<Vec<u8>>>) {
    pipeline(&mut pika.client(), argvs);
}

#[test]
fn a_4_0_1_masters_pexpireat_deletes_in_redis_as_on_the_master_and_is_counted() {
    let Some(master) = a_4_0_1("a_4_0_1_masters_pexpireat") else {
        return;
    };
    let redis = RedisServer::start();
    let m = Migration::new(&master.addr(), &redis.url(), "");
    let tool = m.start();
    m.wait_streaming(&tool);
    let in_2_h = now_ms() + 7_200_000;
    let s = |x: &str| x.as_bytes().to_vec();
    let mut argvs = Vec::new();
    for i in 0..3 {
        argvs.push(vec![s("SET"), s(&format!("pexpireat:{i}")), s("v")]);
        argvs.push(vec![
            s("PEXPIREAT"),
            s(&format!("pexpireat:{i}")),
            s(&in_2_h.to_string()),
        ]);
    }
    // PEXPIRE (logged as lowercase `pexpireat`) keeps the key on the master.
    argvs.push(vec![s("SET"), s("pexpire"), s("v")]);
    argvs.push(vec![s("PEXPIRE"), s("pexpire"), s("7200000")]);
    pipeline(&mut master.client(), argvs);
    m.wait_caught_up(&master);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    let log = m.log_text();

    let on_master = master.state();
    assert!(!on_master.contains_key(&(b"pexpireat:0".to_vec(), "string".to_owned())));
    assert!(on_master.contains_key(&(b"pexpire".to_vec(), "string".to_owned())));
    assert_same(&on_master, &redis.state());
    assert!(
        log.contains("deleted this key on a PEXPIREAT"),
        "each such key is warned about: {log}"
    );
    assert!(
        log.contains("binlog: 3 PEXPIREAT/PKSETEXAT that deleted the key"),
        "and counted: {log}"
    );
}

#[test]
fn a_flush_on_a_pika_target_leaves_every_lanes_checkpoint_key_written_again() {
    let Some(target) = a_4_0_1("a_flush_on_a_pika_target") else {
        return;
    };
    // Counters over every lane, a FLUSHDB (sent to a Pika alone, outside a transaction:
    // it wipes the checkpoint keys too), then one counter on one lane.
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<Vec<u8>> = (0..16).map(|i| format!("c:{i}").into_bytes()).collect();
    let mut items: Vec<Vec<&[u8]>> = names.iter().map(|k| vec![&b"INCR"[..], k]).collect();
    items.push(vec![b"FLUSHDB"]);
    items.push(vec![b"INCR", b"after"]);
    let items: Vec<&[&[u8]]> = items.iter().map(Vec::as_slice).collect();
    write_binlog(tmp.path(), &items);
    let source = format!("  type: binlog\n  path: {}", tmp.path().display());
    run_into(tmp.path(), &source, &target, "    senders: 4\n");
    let state = target.state();
    let checkpoints: Vec<String> = state
        .iter()
        .filter(|((k, _), _)| k.starts_with(b"pika-migrate:checkpoint:"))
        .map(|(_, v)| match &v.val {
            Val::String(v) => String::from_utf8_lossy(v).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    // Each lane's key is back, at the flush's position or later (`token lanes at`):
    // a restart skips the flush and everything before it, on every lane.
    assert_eq!(checkpoints.len(), 4, "{checkpoints:?}");
    assert!(
        checkpoints.iter().all(|c| c.split(' ').nth(2) != Some("-")),
        "{checkpoints:?}"
    );
    assert_same(
        &target_state(&target),
        &[(
            (b"after".to_vec(), "string".to_owned()),
            KeyState {
                val: Val::String(b"1".to_vec()),
                expire_at_ms: None,
            },
        )]
        .into_iter()
        .collect(),
    );
}
