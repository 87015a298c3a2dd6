//! The status endpoint of a running pipeline: JSON and Prometheus text over HTTP, and
//! `pika-migrate status` reading it.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn get(port: u16, path: &str) -> Option<String> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

#[test]
fn a_running_pipeline_serves_json_and_prometheus_and_status_prints_it() {
    let redis = RedisServer::start();
    let (_binlog_dir, binlog) = binlog_copy();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "source:\n  type: binlog\n  path: {}\n  follow: true\nsinks:\n  - type: redis\n    url: {}\nstatus:\n  listen: 127.0.0.1:{port}\n",
        binlog.display(),
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let mut tool = Command::new(bin())
        .args(["run", "-c", pipeline.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The binlog has 1430 items; once all are acknowledged the status says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(body) = get(port, "/status") {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if json["sinks"][0]["acknowledged"]
                .as_str()
                .is_some_and(|a| a.ends_with("1:542923"))
            {
                break json;
            }
        }
        assert!(Instant::now() < deadline, "no complete status");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["stage"], "reading");
    assert_eq!(status["events"], 1430);
    assert_eq!(status["sinks"][0]["events"], 1430);
    assert!(status["sinks"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("redis"));

    let metrics = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("pika_migrate_events_total 1430"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pika_migrate_stage{stage=\"reading\"} 1"),
        "{metrics}"
    );
    assert!(get(port, "/nothing").is_none(), "unknown paths are 404");

    let (code, out, err) = run_cli(&["status", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stage:     reading"), "{out}");
    assert!(out.contains("events:    1430"), "{out}");
    let (code, out, _) = run_cli(&["status", "--addr", &format!("127.0.0.1:{port}"), "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"stage\": \"reading\""), "{out}");

    tool.kill().unwrap();
    let _ = tool.wait();
    let (code, _, err) = run_cli(&["status", "--addr", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1);
    assert!(err.contains("no status at"), "{err}");
}
