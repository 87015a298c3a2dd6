//! The Redis sink into a real 3-master Redis Cluster (built with `redis-cli --cluster
//! create`): commands are routed by hash slot, each transaction stays in one slot, a
//! stale slot map is corrected by MOVED, and `verify` reads every master.

mod common;

use common::*;

fn run_into_cluster(
    source: &str,
    url: &str,
    extra: &str,
) -> (i32, String, std::path::PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "source:\n{source}\nsinks:\n  - type: redis\n    url: {url}\n    cluster: true\n    senders: 2\n    batch: 64\n{extra}"
    );
    let pipeline = write_pipeline(tmp.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    (code, stderr, pipeline, tmp)
}

/// The sink's summary: commands sent, and the pipelines they went in.
fn sent(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" commands in ") && l.contains(" transactions"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let number_before = |word: &str| -> u64 {
        let head = &line[..line.find(word).unwrap()];
        head.split_whitespace().last().unwrap().parse().unwrap()
    };
    (
        number_before(" commands in"),
        number_before(" transactions"),
    )
}

#[test]
fn the_snapshot_lands_exactly_across_three_masters() {
    let cluster = RedisCluster::start(3);
    let (code, stderr, pipeline, _tmp) = run_into_cluster(&dump_source(), &cluster.url(), "");
    assert_eq!(code, 0, "{stderr}");
    assert_dump_state(&cluster.state());
    // Snapshot commands go to a master in pipelines of many slots, not one round trip
    // per slot (which, with keys spread over every slot, was one per command).
    let (commands, pipelines) = sent(&stderr);
    assert!(
        pipelines * 4 < commands,
        "{commands} commands in {pipelines} pipelines: {stderr}"
    );
    for node in &cluster.nodes {
        let n: i64 = redis::cmd("DBSIZE").query(&mut node.client()).unwrap();
        assert!(n > 50, "every master holds a share of the keys ({n})");
    }
    let (code, stdout, stderr) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // A tampered key on whichever master holds it is found.
    let key = "s1:hash:big";
    for node in &cluster.nodes {
        let _: Result<i64, _> = redis::cmd("HSET")
            .arg(key)
            .arg("f0")
            .arg("tampered")
            .query(&mut node.client());
    }
    let (code, stdout, _) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains(key), "{stdout}");
}

#[test]
fn the_binlog_replays_exactly_commands_across_slots_included() {
    // Pika has no slots: its binlog has RPOPLPUSH, SMOVE, *STORE, MSET, PFMERGE … over
    // keys of different slots, which a cluster refuses as such.
    let cluster = RedisCluster::start(3);
    let source = binlog_source(None);
    let (code, stderr, _, _tmp) = run_into_cluster(&source, &cluster.url(), "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("commands over keys of several cluster slots run by copying"),
        "{stderr}"
    );
    assert_binlog_end_state(cluster.state());
}

/// Which of the cluster's nodes serves `slot` (from its own `CLUSTER NODES` line).
fn owner_of(cluster: &RedisCluster, slot: i64) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| {
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut n.client()).unwrap();
            nodes
                .lines()
                .filter(|l| l.contains("myself"))
                .flat_map(|l| l.split(' ').skip(8))
                .any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    matches!((a.parse::<i64>(), b.parse::<i64>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                })
        })
        .expect("a node serves the slot")
}

#[test]
fn a_slot_moved_while_streaming_is_followed_by_moved() {
    use common::pika_master::{MasterOptions, PikaMaster};
    let cluster = RedisCluster::start(3);
    let master = PikaMaster::start(MasterOptions::default());
    let tmp = tempfile::tempdir().unwrap();
    let announce = announce_port();
    let yaml = format!(
        "source:\n  type: pika\n  master: 127.0.0.1:{}\n  announce: 127.0.0.1:{announce}\n  work_dir: {}\nsinks:\n  - type: redis\n    url: {}\n    cluster: true\n    senders: 2\n    on_error: skip\n",
        master.port(),
        tmp.path().join("work").display(),
        cluster.url()
    );
    let pipeline = write_pipeline(tmp.path(), &yaml);
    let log = tmp.path().join("tool.log");
    let mut tool = std::process::Command::new(bin())
        .args(["run", "-c", pipeline.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let caught_up = || master.acked() == Some(master.position());
    let within = std::time::Duration::from_secs(60);
    wait_until("the stream to catch up", within, caught_up);

    // The slot of `moved:key` (empty so far) now belongs to another master; the sink
    // still has the old map.
    let key = "moved:key";
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut cluster.nodes[0].client())
        .unwrap();
    let new_owner = (owner_of(&cluster, slot) + 1) % 3;
    let id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut cluster.nodes[new_owner].client())
        .unwrap();
    for n in &cluster.nodes {
        let _: redis::Value = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&id)
            .query(&mut n.client())
            .unwrap();
    }
    for i in 0..20 {
        master.write(&[b"RPUSH", key.as_bytes(), format!("v{i}").as_bytes()]);
    }
    // The next batch is routed with the reloaded map.
    for round in 0..2 {
        master.write(&[b"RPUSH", key.as_bytes(), format!("after{round}").as_bytes()]);
        wait_until("the stream to catch up after the move", within, caught_up);
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &tool.id().to_string()])
        .status();
    assert!(tool.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cluster redirection"), "{text}");
    assert!(text.contains("slot map reloaded"), "{text}");
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(&mut cluster.nodes[new_owner].client())
        .unwrap();
    let mut expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    expected.extend(["after0".to_owned(), "after1".to_owned()]);
    assert_eq!(list, expected, "in order, once");
}
