//! The command line as an operator uses it: run (one-shot and following), validate,
//! inspect, and the JSON-lines output.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;

/// Whether a JSON line is the release of a held expiry (not an item of the binlog).
fn is_release(line: &str) -> bool {
    line.contains(pika_migrate_core::replay::late_expiry::RELEASE_SCRIPT)
}

/// Waits until `path` holds `n` binlog items (releases of held expiries not counted).
fn wait_for_lines(path: &std::path::Path, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = std::fs::read_to_string(path)
            .map(|t| t.lines().filter(|l| !is_release(l)).count())
            .unwrap_or(0);
        if have >= n || Instant::now() > deadline {
            return have;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pipeline in `work` that follows the binlog directory `binlog` into `out` (JSON lines).
fn following_binlog_into_jsonl(
    work: &std::path::Path,
    binlog: &std::path::Path,
    out: &std::path::Path,
) -> std::path::PathBuf {
    write_pipeline(
        work,
        &format!(
            "source:\n  type: binlog\n  path: {}\n  follow: true{}\nsinks:\n  - type: file\n    path: {}\n    format: jsonl\n",
            binlog.display(),
            as_of_line(fixture_moment()),
            out.display()
        ),
    )
}

#[test]
fn follow_picks_up_new_binlog_data_and_sigterm_stops_cleanly() {
    let (tmp, dir) = binlog_copy();
    let active = dir.join("write2file1");
    let full = std::fs::read(&active).unwrap();
    std::fs::write(&active, &full[..507_400]).unwrap();
    let out = tmp.path().join("out.jsonl");
    let pipeline = following_binlog_into_jsonl(tmp.path(), &dir, &out);
    let child = Command::new(bin())
        .args(["run", "-c", pipeline.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        wait_for_lines(&out, 1043),
        1043,
        "whole items before the partial tail"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        wait_for_lines(&out, 1043),
        1043,
        "still waiting at the partial item"
    );
    std::fs::write(&active, &full).unwrap();
    assert_eq!(wait_for_lines(&out, 1430), 1430, "the rest once written");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("source position at the end: 1:542923"),
        "{stderr}"
    );
    let last: Json = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .rfind(|l| !is_release(l))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["position"]["binlog"]["offset"], 542923);
}

#[test]
fn jsonl_output_is_the_documented_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dump.jsonl");
    let pipeline = write_pipeline(
        tmp.path(),
        &format!(
            "source:\n{}\nsinks:\n  - type: file\n    path: {}\n    format: jsonl\n",
            dump_source(),
            out.display()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Json> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // s1:big, a 1 MiB string, is four slices of 256 KiB.
    assert_eq!(rows.len(), 897);
    for row in &rows {
        assert_eq!(row["op"], "snapshot");
        assert_eq!(row["db"], 0);
        assert!(["string", "hash", "list", "zset", "set"].contains(&row["type"].as_str().unwrap()));
        assert_eq!(row["position"]["snapshot"]["filenum"], 1);
        assert_eq!(row["position"]["snapshot"]["offset"], 507340);
        assert!(row["exec_time"].is_null());
    }
    let binary = rows
        .iter()
        .find(|r| {
            r["key"]["base64"]
                .as_str()
                .is_some_and(|k| b64(k).starts_with(b"s1:bin:\x00\xff"))
        })
        .expect("the binary key is base64-marked");
    assert_eq!(binary["type"], "string");
    assert!(binary["value"]["base64"].is_string());
    let zset = rows
        .iter()
        .find(|r| r["key"] == "s1:zset:inf")
        .expect("zset with infinite scores");
    let scores: Vec<&str> = zset["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert!(
        scores.contains(&"-inf") && scores.contains(&"inf"),
        "{scores:?}"
    );
}

#[test]
fn inspect_binlog_prints_one_line_per_item_position_first() {
    let (code, stdout, _) = run_cli(&["inspect", "binlog", fixture("binlog").to_str().unwrap()]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1430);
    assert!(
        lines[0].starts_with("0:0..0:84\t#1\texec_time="),
        "{}",
        lines[0]
    );
    assert!(lines[0].ends_with("SET s1:str:0 eqh524yng"), "{}", lines[0]);
    let rewritten = lines.iter().find(|l| l.contains("pksetexat")).unwrap();
    assert!(rewritten.contains("=> SET "), "{rewritten}");

    let (code, stdout, _) = run_cli(&[
        "inspect",
        "binlog",
        "--json",
        "--from",
        "1:507340",
        fixture("binlog").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let first: Json = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["start"], "1:507340");
    assert_eq!(first["args"], serde_json::json!(["SET", "s1:p2:a", "1"]));
    assert_eq!(stdout.lines().count(), 387);

    let (code, _, stderr) = run_cli(&[
        "inspect",
        "binlog",
        "--from",
        "1:3",
        fixture("binlog").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("offset 3 is not the start of a binlog item"),
        "{stderr}"
    );
}

#[test]
fn inspect_snapshot_lists_every_key() {
    let moment = (fixture_moment() / 1000).to_string();
    let dump = fixture("dump");
    let (code, stdout, _) = run_cli(&[
        "inspect",
        "snapshot",
        "--as-of",
        &moment,
        dump.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    // One line per event: s1:big, a 1 MiB string, is four slices of 256 KiB.
    assert_eq!(stdout.lines().count(), 897);
    let multi = stdout
        .lines()
        .find(|l| l.contains("\tstring\ts1:multi\t"))
        .unwrap();
    assert!(multi.contains("also_types=hash,list,zset,set"), "{multi}");
    let (code, stdout, _) = run_cli(&[
        "inspect",
        "snapshot",
        "--json",
        "--as-of",
        "2026-11-25T01:08:03Z",
        dump.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 897);
    // Expiry times are shown as stored, whatever the moment.
    let ttl = (stdout.lines())
        .find(|l| l.contains("\"s1:multi:ttl\""))
        .unwrap();
    assert!(ttl.contains("\"expire_at_ms\":1798568837"), "{ttl}");
    // A year later, every key with a time to live has expired.
    let (code, later, _) = run_cli(&[
        "inspect",
        "snapshot",
        "--as-of",
        "2027-11-25T00:00:00+08:00",
        dump.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(later.lines().count(), 897 - 36);
    let (code, _, stderr) = run_cli(&[
        "inspect",
        "snapshot",
        "--as-of",
        "tomorrow",
        dump.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("RFC 3339"), "{stderr}");
}

#[test]
fn validate_accepts_the_shipped_examples_and_help_is_everywhere() {
    let root = env!("CARGO_MANIFEST_DIR");
    for entry in std::fs::read_dir(format!("{root}/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (code, stdout, stderr) = run_cli(&["validate", "-c", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {stderr}", path.display());
            assert!(stdout.contains(": ok: "), "{stdout}");
        }
    }
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["validate", "--help"],
        &["status", "--help"],
        &["inspect", "binlog", "--help"],
        &["inspect", "snapshot", "--help"],
    ] {
        let (code, stdout, _) = run_cli(args);
        assert_eq!(code, 0);
        assert!(stdout.contains("Usage:"), "{args:?}");
    }
}

#[test]
fn a_followed_binlog_runs_at_the_priority_the_tool_started_with_whatever_nice_says() {
    let (tmp, dir) = binlog_copy();
    let out = tmp.path().join("out.jsonl");
    let pipeline = following_binlog_into_jsonl(tmp.path(), &dir, &out);
    let bin = bin();
    let bin = bin.to_str().unwrap();
    // `--nice` is for loads (`replica.rs` shows one); a process started lower
    // (`nice -n 15`) stays there.
    let runs: [(&[&str], i64); 3] = [
        (&[bin], 0),
        (&[bin, "--nice", "3"], 0),
        (&["nice", "-n", "15", bin], 15),
    ];
    for (command, nice) in runs {
        let child = Command::new(command[0])
            .args(&command[1..])
            .args(["run", "-c", pipeline.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Following: the source's blocking thread and the runtime are both up by now.
        assert_eq!(wait_for_lines(&out, 1430), 1430);
        let values: Vec<i64> = common::tool::thread_nices(child.id())
            .into_iter()
            .map(|(_, nice)| nice)
            .collect();
        assert!(values.len() >= 2, "{values:?}");
        assert!(
            values.iter().all(|v| *v == nice),
            "{values:?} (want {nice})"
        );
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
        std::fs::remove_file(&out).unwrap();
    }
    let (code, _, stderr) = run_cli(&["--nice", "20", "validate", "-c", "x.yaml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--nice"), "{stderr}");
}

#[test]
fn inspect_binlog_shows_a_flushdb_of_one_type_as_the_named_pika_version_applied_it() {
    let dir = tempfile::tempdir().unwrap();
    write_binlog(dir.path(), &[&[b"FLUSHDB", b"hash"]]);
    let path = dir.path().to_str().unwrap();
    // 3.2-3.4 (the default) delete the hashes only; 3.5 empties the database.
    let (code, stdout, _) = run_cli(&["inspect", "binlog", "--json", path]);
    assert_eq!(code, 0);
    let item: Json = serde_json::from_str(stdout.trim()).unwrap();
    assert_ne!(item["redis"], serde_json::json!(["FLUSHDB"]), "{item}");
    for version in ["3.5.5", "4.0"] {
        let (code, stdout, _) = run_cli(&[
            "inspect",
            "binlog",
            "--json",
            "--pika-version",
            version,
            path,
        ]);
        assert_eq!(code, 0);
        let item: Json = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(item["redis"], serde_json::json!(["FLUSHDB"]), "{item}");
    }
    let (code, _, stderr) = run_cli(&["inspect", "binlog", "--pika-version", "2.3", path]);
    assert_eq!(code, 2);
    assert!(stderr.contains("Pika 3.2 to 4.0"), "{stderr}");
}

#[test]
fn several_databases_into_a_redis_cluster_are_refused_unless_the_keys_name_their_database() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    for db in [0, 2] {
        let path = log.join(format!("log_db{db}"));
        std::fs::create_dir_all(&path).unwrap();
        write_binlog(&path, &[&[b"SET", b"k", b"v"]]);
    }
    let pipeline = |filters: &str| {
        write_pipeline(
            dir.path(),
            &format!(
                "source:\n  type: binlog\n  path: {}\n{filters}sinks:\n  - type: redis\n    url: redis://127.0.0.1:1\n    cluster: true\n",
                log.display()
            ),
        )
    };
    let (code, _, stderr) = run_cli(&["validate", "-c", pipeline("").to_str().unwrap()]);
    assert_eq!(code, 78, "a configuration error: {stderr}");
    assert!(
        stderr.contains("only database 0") && stderr.contains("db0, db2"),
        "{stderr}"
    );
    assert!(stderr.contains("{db}"), "the message says how: {stderr}");
    // A prefix naming the database keeps k of db0 and k of db2 apart.
    let tagged = pipeline("filters:\n  - type: rename\n    add_prefix: 'db{db}:'\n");
    let (code, stdout, stderr) = run_cli(&["validate", "-c", tagged.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": ok:"), "{stdout}");
    // One database's directory alone is fine.
    let one = write_pipeline(
        dir.path(),
        &format!(
            "source:\n  type: binlog\n  path: {}\nsinks:\n  - type: redis\n    url: redis://127.0.0.1:1\n    cluster: true\n",
            log.join("log_db2").display()
        ),
    );
    let (code, _, stderr) = run_cli(&["validate", "-c", one.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_binlog_replay_of_a_whole_log_directory_tags_each_event_with_its_database() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log_dir(dir.path(), &[(0, "zero"), (1, "one"), (3, "three")]);
    let out = dir.path().join("out.jsonl");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "source:\n  type: binlog\n  path: {}\n  from: {{3: '0:0'}}\nsinks:\n  - type: file\n    path: {}\n    format: jsonl\n",
            log.display(),
            out.display()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<Json> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 6);
    for (db, value) in [(0, "zero"), (1, "one"), (3, "three")] {
        let of_db: Vec<&Json> = events.iter().filter(|e| e["db"] == db).collect();
        assert_eq!(of_db.len(), 2, "db{db}: {events:?}");
        assert_eq!(of_db[0]["args"], serde_json::json!(["SET", "k", value]));
    }
    assert!(
        stderr.contains("source positions at the end, per database: {0: \"0:"),
        "{stderr}"
    );
    // One position for several databases is ambiguous.
    let ambiguous = write_pipeline(
        dir.path(),
        &format!(
            "source:\n  type: binlog\n  path: {}\n  from: '0:0'\nsinks:\n  - type: file\n    path: {}\n    format: jsonl\n",
            log.display(),
            out.display()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", ambiguous.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("one per database"), "{stderr}");
}

#[test]
fn a_capture_of_several_databases_replays_each_into_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log_dir(dir.path(), &[(0, "zero"), (2, "two")]);
    let capture = dir.path().join("capture");
    let to_capture = write_pipeline(
        dir.path(),
        &format!(
            "source:\n  type: binlog\n  path: {}\nsinks:\n  - type: capture\n    path: {}\n",
            log.display(),
            capture.display()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", to_capture.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let redis = RedisServer::start();
    let replay = write_pipeline(
        dir.path(),
        &format!(
            "source:\n  type: capture\n  path: {}\nsinks:\n  - type: redis\n    url: {}\n",
            capture.display(),
            redis.url()
        ),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", replay.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for (db, value) in [(0, "zero"), (2, "two")] {
        let mut con = redis.client();
        let _: () = redis::cmd("SELECT").arg(db).query(&mut con).unwrap();
        let got: (String, i64) = redis::pipe()
            .cmd("GET")
            .arg("k")
            .cmd("GET")
            .arg("n")
            .query(&mut con)
            .unwrap();
        assert_eq!(got, (value.to_owned(), 1), "Redis db{db}");
    }
    assert!(redis.state_of_db(1).is_empty());
}
