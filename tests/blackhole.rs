//! The blackhole sink in real runs: the fixture dump and binlog discarded, its summary
//! line's counts checked against the fixture and against the run's own summary, alone
//! and behind a filter.

mod common;

use common::*;

/// The blackhole's summary line: (events, MiB as printed).
fn blackhole_line(stderr: &str) -> (u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("blackhole: "))
        .unwrap_or_else(|| panic!("no blackhole line in {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (words[2], words[4], words[6]),
        ("events,", "bytes", "MiB)"),
        "{line}"
    );
    let bytes: u64 = words[3].parse().unwrap();
    assert!(bytes > 0, "{line}");
    (
        words[1].parse().unwrap(),
        words[5].trim_start_matches('(').to_owned(),
    )
}

/// The run summary's "N events, M MiB".
fn summary_counts(stderr: &str) -> (u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("done: "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let tail = line.rsplit("; ").next().unwrap();
    let words: Vec<&str> = tail.split_whitespace().collect();
    assert_eq!((words[1], words[3]), ("events,", "MiB"), "{line}");
    (words[0].parse().unwrap(), words[2].to_owned())
}

fn run(source: &str, filters: &str, sink: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("source:\n{source}\n{filters}sinks:\n{sink}");
    let file = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    stderr
}

#[test]
fn the_dump_is_counted_and_discarded() {
    let stderr = run(&dump_source(), "", "  - type: blackhole\n");
    assert_eq!(blackhole_line(&stderr), (897, "1.9".into()), "{stderr}");
    assert_eq!(summary_counts(&stderr), (897, "1.9".into()), "{stderr}");
    assert!(
        stderr.contains("done: 864 keys (446 string, 106 hash, 103 list, 105 zset, 104 set)"),
        "{stderr}"
    );
}

#[test]
fn the_binlog_behind_a_filter_is_counted_and_discarded() {
    let all = run(&binlog_source(None), "", "  - type: blackhole\n");
    // 1430 items, and the release of the 15 short expiries past at the fixture's moment.
    assert_eq!(blackhole_line(&all).0, 1445, "{all}");
    assert!(
        all.contains("late replay: 15 expiry(ies) already past held back; 15 key(s) released"),
        "{all}"
    );
    assert_eq!(blackhole_line(&all), summary_counts(&all), "{all}");

    let filters = "filters:\n  - type: type\n    drop: [string]\n";
    let sink = "  - type: blackhole\n    print_interval_secs: 1\n";
    let kept = run(&binlog_source(None), filters, sink);
    let (events, _) = blackhole_line(&kept);
    assert!(events > 0 && events < 1445, "{kept}");
    assert_eq!(blackhole_line(&kept), summary_counts(&kept), "{kept}");
    assert!(
        kept.contains(&format!("{} events filtered out", 1445 - events)),
        "{kept}"
    );
}

#[test]
fn a_rate_holds_the_run_back_and_unknown_settings_are_refused() {
    let started = std::time::Instant::now();
    let stderr = run(
        &binlog_source(None),
        "",
        "  - type: blackhole\n    rate: 2000\n",
    );
    let (events, _) = blackhole_line(&stderr);
    let least = std::time::Duration::from_secs_f64(events as f64 / 2000.0 * 0.9);
    assert!(
        started.elapsed() >= least,
        "{events} events in {:?}",
        started.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "source:\n{}\nsinks:\n  - type: blackhole\n    speed: 5\n",
        dump_source()
    );
    let file = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["validate", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("unknown field `speed`"), "{stderr}");
}
