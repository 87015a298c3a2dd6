//! The status endpoint of a running pipeline: JSON and Prometheus text over HTTP, and
//! `pika-migrate status` reading it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

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
    let mut status = serde_json::Value::Null;
    wait_until("a complete status", Duration::from_secs(30), || {
        if let Some(body) = http_get(port, "/status") {
            status = serde_json::from_str(&body).unwrap();
        }
        status["sinks"][0]["acknowledged"]
            .as_str()
            .is_some_and(|a| a.ends_with("1:542923"))
    });
    assert_eq!(status["stage"], "reading");
    assert_eq!(status["events"], 1430);
    assert_eq!(status["sinks"][0]["events"], 1430);
    assert!(status["sinks"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("redis"));

    let metrics = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("pika_migrate_events_total 1430"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pika_migrate_stage{stage=\"reading\"} 1"),
        "{metrics}"
    );
    assert!(
        http_get(port, "/nothing").is_none(),
        "unknown paths are 404"
    );
    assert_promtool_accepts(&metrics);

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

/// Prometheus' own checker (`promtool check metrics`, Debian's `prometheus` package)
/// finds nothing to say about the exposition: each family's HELP and TYPE once, counters
/// typed as counters and named `_total`, base units.
fn assert_promtool_accepts(metrics: &str) {
    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: the promtool check of /metrics (install Debian's prometheus package)"
        );
        return;
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{metrics}"
    );
}
