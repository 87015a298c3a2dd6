//! What ships for watching a migration with Prometheus and Grafana (`deploy/`): the alert
//! rules pass `promtool check rules` and their own `promtool test rules` cases, and every
//! metric the rules and the Grafana dashboard query is one a running pipeline serves.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus: scripts/install-deps --test)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// `pika_migrate_…` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("pika_migrate_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn the_alert_rules_check_and_pass_their_tests() {
    let dir = deploy("prometheus");
    let checked = promtool(&["check", "rules", "pika-migrate-alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "pika-migrate-alerts.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_rules_and_the_dashboard_query_only_metrics_a_pipeline_serves() {
    let ReplayWithStatus {
        redis: _redis,
        dir: _dir,
        port,
        pipeline: _,
        mut tool,
    } = replay_with_status("  follow: true\n", "");
    let mut served = String::new();
    wait_until("metrics", Duration::from_secs(30), || {
        served = http_get(port, "/metrics").unwrap_or_default();
        served.contains("pika_migrate_events_total")
    });
    let _ = tool.kill();
    let _ = tool.wait();
    // The per-database series are served for each database of a live master only
    // (`db` label; core/src/status.rs).
    let mut known = metric_names(&served);
    for db_series in [
        "pika_migrate_db_lag_milliseconds",
        "pika_migrate_db_position_offset",
    ] {
        known.insert(db_series.into());
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/pika-migrate.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    exprs.push_str(&std::fs::read_to_string(deploy("prometheus/pika-migrate-alerts.yml")).unwrap());
    let queried = metric_names(&exprs);
    assert!(queried.len() >= 10, "{queried:?}");
    let unknown: Vec<&String> = queried.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "queried but not served: {unknown:?}\nserved: {known:?}"
    );
}
