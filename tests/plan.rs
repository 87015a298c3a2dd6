//! `plan`, the pre-flight report, against a real redis-server: what the fixture dump and
//! a generated dump of every type and size class hold, the memory estimated for them
//! against what `used_memory` grew by when `run` loaded them, fits and does not fit, a
//! cluster's keys per node.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value as Json;

fn used_memory(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut redis.client())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `used_memory` once Redis has freed what finished clients held (it trims idle query
/// buffers every second or so).
fn settled_used_memory(redis: &RedisServer) -> u64 {
    let mut last = used_memory(redis);
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = used_memory(redis);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn plan_json(pipeline: &std::path::Path) -> (i32, Json) {
    let (code, stdout, stderr) = run_cli(&["plan", "-c", pipeline.to_str().unwrap(), "--json"]);
    let report =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    (code, report)
}

/// Plans, loads with `run`, and checks the estimate against what Redis grew by.
fn estimate_against_used_memory(source: &str) -> Json {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "source:\n{source}\nsinks:\n  - type: redis\n    url: {}\n",
            redis.url()
        ),
    );
    let (code, report) = plan_json(&pipeline);
    assert_eq!(code, 0, "{report}");
    assert_eq!(redis.client_dbsize(), 0, "plan wrote nothing");
    let before = settled_used_memory(&redis);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let grew = settled_used_memory(&redis) - before;
    let estimate = report["estimated_memory"].as_u64().unwrap();
    let error = (estimate as f64 - grew as f64) / grew as f64;
    eprintln!(
        "estimated {estimate} bytes, Redis grew by {grew}: {:+.1}%",
        error * 100.0
    );
    assert!(
        error.abs() <= 0.15,
        "estimated {estimate}, Redis grew by {grew}"
    );
    report
}

trait Dbsize {
    fn client_dbsize(&self) -> i64;
}

impl Dbsize for RedisServer {
    fn client_dbsize(&self) -> i64 {
        redis::cmd("DBSIZE").query(&mut self.client()).unwrap()
    }
}

#[test]
fn the_fixture_dump_is_profiled_and_its_memory_estimated_within_15_percent() {
    let report = estimate_against_used_memory(&dump_source());
    assert_eq!(report["keys"], 864);
    assert_eq!(
        report["keys_written"], 859,
        "first-wins leaves 5 types of 2 names"
    );
    assert_eq!(report["expired_keys_left_out"], 14);
    assert_eq!(report["multi_type_keys"], 2);
    assert_eq!(report["databases"]["0"]["hash"]["keys"], 106);
    assert_eq!(report["biggest_by_bytes"][0]["key"], "s1:big");
    assert_eq!(report["biggest_by_elements"][0]["key"], "s1:list:big");
    let ttl: u64 = report["ttl_histogram"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(ttl, 864);
    assert_eq!(report["ttl_histogram"]["none"], 828);
    assert_eq!(report["fits"], true);
}

#[test]
fn a_generated_dump_of_every_type_and_size_class_is_estimated_within_15_percent() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("db0");
    generate_dump(&dump, &["--keys", "12000", "--kind", "varied"]);
    let report =
        estimate_against_used_memory(&format!("  type: snapshot\n  path: {}", dump.display()));
    assert_eq!(report["keys"], 12000);
    for t in ["string", "hash", "list", "zset", "set"] {
        assert!(
            report["databases"]["0"][t]["keys"].as_u64().unwrap() > 500,
            "{t}: {report}"
        );
    }
}

#[test]
fn a_target_too_small_does_not_fit_and_nothing_is_written() {
    let redis = RedisServer::start_with(&["--maxmemory", "2mb"]);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "source:\n{}\nsinks:\n  - type: redis\n    url: {}\n",
            dump_source(),
            redis.url()
        ),
    );
    let (code, stdout, _) = run_cli(&["plan", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("DOES NOT FIT") && stdout.ends_with("does not fit\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the target takes 859 keys: about "),
        "{stdout}"
    );
    assert_eq!(redis.client_dbsize(), 0);
}

#[test]
fn a_cluster_target_is_weighed_per_master_with_its_hottest_slots() {
    let cluster = RedisCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "source:\n{}\nsinks:\n  - type: redis\n    url: {}\n    cluster: true\n",
            dump_source(),
            cluster.url()
        ),
    );
    let (code, report) = plan_json(&pipeline);
    assert_eq!(code, 0, "{report}");
    let servers = report["target"]["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    let per_node: Vec<u64> = servers
        .iter()
        .map(|s| s["keys"].as_u64().unwrap())
        .collect();
    assert!(per_node.iter().all(|n| *n > 200), "{per_node:?}");
    assert_eq!(per_node.iter().sum::<u64>(), 859);
    let hottest = report["target"]["hottest_slots"].as_array().unwrap();
    assert_eq!(hottest.len(), 10);
    // s1:big, the biggest value, is in the hottest slot.
    let slot_of_big = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("s1:big")
        .query::<i64>(&mut cluster.nodes[0].client())
        .unwrap();
    assert_eq!(hottest[0]["slot"], slot_of_big);
}
