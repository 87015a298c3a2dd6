//! A fleet of real Pika masters (3.3.6, 3.5.5 and 4.0.1, as Codis groups would be: key
//! sets apart, every type, times to live) into one 3-master Redis Cluster: through one
//! pipeline (`sources:`), killed with `-9` while all stream, full syncs one at a time
//! as the masters' own logs show, the status page and the cut-over gate over the
//! whole fleet; one master lost for good while the others go on; and the same masters
//! as three separate processes into one cluster. Redis is compared with what the
//! masters show. Without the Pika binaries each test says it skipped.

mod common;

use std::process::Child;
use std::time::Duration;

use common::real_pika::*;
use common::tool::*;
use common::*;

const VERSIONS: [&str; 3] = ["3.3.6", "3.5.5", "4.0.1"];

/// One real master per version, or `None` (skipped) when a binary is missing.
fn masters(test: &str, versions: &[&'static str]) -> Option<Vec<RealPika>> {
    let bins: Option<Vec<PikaBin>> = versions.iter().map(|v| pika_or_skip(v, test)).collect();
    Some(
        bins?
            .iter()
            .map(|bin| RealPika::start(bin, PikaOptions::default()))
            .collect(),
    )
}

/// A Codis group's keys, all under its own name: every type, hash tags, times to live.
fn fill_group(pika: &RealPika, group: &str) {
    let mut con = pika.client();
    let mut argvs = Vec::new();
    for i in 0..30 {
        let s = |t: &str| t.to_owned();
        argvs.push(vec![s("SET"), format!("{group}:s:{i}"), format!("v{i}")]);
        argvs.push(vec![
            s("HSET"),
            format!("{group}:h:{}", i % 4),
            format!("f{i}"),
            format!("{i}"),
        ]);
        argvs.push(vec![
            s("RPUSH"),
            format!("{group}:l:{}", i % 3),
            format!("{i}"),
        ]);
        argvs.push(vec![s("SADD"), format!("{group}:set"), format!("m{i}")]);
        argvs.push(vec![
            s("ZADD"),
            format!("{group}:z"),
            format!("{i}.25"),
            format!("m{i}"),
        ]);
        // Codis users keep related keys together with a hash tag: one slot in a cluster.
        argvs.push(vec![
            s("SET"),
            format!("user:{{{group}-{i}}}:name"),
            format!("n{i}"),
        ]);
    }
    argvs.push(vec![
        "SETEX".into(),
        format!("{group}:ttl"),
        "7200".into(),
        "t".into(),
    ]);
    argvs.push(vec!["EXPIRE".into(), format!("{group}:h:0"), "9000".into()]);
    pipeline(
        &mut con,
        argvs
            .into_iter()
            .map(|argv| argv.into_iter().map(String::into_bytes).collect()),
    );
}

fn write_g0(i: usize) -> Vec<Vec<u8>> {
    counted("g0", i)
}
fn write_g1(i: usize) -> Vec<Vec<u8>> {
    counted("g1", i)
}
fn write_g2(i: usize) -> Vec<Vec<u8>> {
    counted("g2", i)
}
/// A writer's command for its i-th write.
type Write = fn(usize) -> Vec<Vec<u8>>;
const WRITERS: [Write; 3] = [write_g0, write_g1, write_g2];

/// What the masters hold, in one key space (their names are apart).
fn union(masters: &[RealPika]) -> State {
    let mut all = State::new();
    for m in masters {
        all.extend(redis_view(&m.state()));
    }
    all
}

/// One pipeline file over several masters: a work dir, the file, the tool's log.
struct FleetRun {
    dir: tempfile::TempDir,
    pipeline: std::path::PathBuf,
    status_port: u16,
    names: Vec<String>,
}

impl FleetRun {
    /// `g0`, `g1`, … from `masters`, into `sinks_yaml`; `top` adds top-level lines and
    /// `source_extra` lines to each source (four-space indented).
    fn new(masters: &[RealPika], top: &str, source_extra: &str, sinks_yaml: &str) -> FleetRun {
        let dir = tempfile::tempdir().unwrap();
        let status_port = free_port();
        let mut names = Vec::new();
        let mut sources = String::new();
        for (i, m) in masters.iter().enumerate() {
            let name = format!("g{i}");
            sources.push_str(&format!(
                "  - name: {name}\n    type: pika\n    master: {}\n    announce: 127.0.0.1:{}\n{source_extra}",
                m.addr(),
                announce_port()
            ));
            names.push(name);
        }
        let yaml = format!(
            "work_dir: {}\n{top}sources:\n{sources}sinks:\n{sinks_yaml}status:\n  listen: 127.0.0.1:{status_port}\n",
            dir.path().join("work").display()
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        FleetRun {
            dir,
            pipeline,
            status_port,
            names,
        }
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("tool.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        std::process::Command::new(bin())
            .args(["run", "-c", self.pipeline.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(self.status_port, "/status")?).ok()
    }

    fn wait(&self, what: &str, mut done: impl FnMut(&serde_json::Value) -> bool) {
        let deadline = std::time::Instant::now() + STREAMING_WITHIN * 2;
        loop {
            if self.status().is_some_and(|s| done(&s)) {
                return;
            }
            if std::time::Instant::now() > deadline {
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                panic!(
                    "timed out waiting for {what}; status {:?}; the log ends:\n{}",
                    self.status(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the process `tool` streams db 0 of every source in `names`.
    fn wait_streaming(&self, tool: &Child, names: &[String]) {
        self.wait("every source to stream", |s| {
            s["pid"] == tool.id()
                && names
                    .iter()
                    .all(|n| s["sources"][n]["dbs"]["0"]["stage"] == "streaming")
        });
    }

    /// Waits until each source in `names` has applied everything its master has.
    fn wait_caught_up(&self, masters: &[&RealPika], names: &[String]) {
        for (pika, name) in masters.iter().zip(names) {
            self.wait(&format!("{name} to catch up"), |s| {
                let (f, o) = pika.binlog_offset(0);
                s["sources"][name]["dbs"]["0"]["position"].as_str() == Some(&format!("{f}:{o}"))
            });
        }
    }
}

impl Drop for FleetRun {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("the fleet's directory kept: {}", dir.keep().display());
        }
    }
}

/// A glog line's time (`I20261207 13:10:43.451011 …`) in microseconds of its day,
/// with its date: enough to order lines of masters on one machine.
fn glog_time(line: &str) -> Option<(u32, u64)> {
    let mut words = line.split_whitespace();
    let date: u32 = words.next()?.get(1..)?.parse().ok()?;
    let (hms, micros) = words.next()?.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some((
        date,
        ((h * 60 + m) * 60 + s) * 1_000_000 + micros.parse::<u64>().ok()?,
    ))
}

/// When a master served a full sync, from its own log: from the DBSync request it
/// accepted to its rsync push finished (3.2–3.4) or our pull's connection closed
/// (3.5, 4.0).
fn transfers_in_log(pika: &RealPika) -> Vec<((u32, u64), (u32, u64))> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(pika.dir().join("log")).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains(".log.INFO.")
            || path.to_string_lossy().contains(".log.WARNING.")
        {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    lines.sort_by_key(|l| glog_time(l));
    let mut spans = Vec::new();
    let mut began = None;
    for line in &lines {
        if line.contains("Handle DBSync Request Success") {
            began = glog_time(line);
        }
        let ended = line.contains("RSync Send Files Success")
            || (line.contains("rsync_server.cc") && line.contains("connection closed"));
        if let (true, Some(from)) = (ended, began) {
            if let Some(to) = glog_time(line) {
                spans.push((from, to));
                began = None;
            }
        }
    }
    spans
}

#[test]
fn three_masters_of_three_versions_into_one_cluster_through_one_pipeline_one_dump_at_a_time() {
    let test =
        "three_masters_of_three_versions_into_one_cluster_through_one_pipeline_one_dump_at_a_time";
    let Some(masters) = masters(test, &VERSIONS) else {
        return;
    };
    for (i, m) in masters.iter().enumerate() {
        fill_group(m, &format!("g{i}"));
    }
    let cluster = RedisCluster::start(3);
    let fleet = FleetRun::new(
        &masters,
        // Every master on one host here: the fleet-wide limit is the one tested.
        "max_parallel_full_syncs: 1\nmax_parallel_full_syncs_per_host: 3\n",
        "",
        &format!(
            "  - type: redis\n    url: {}\n    cluster: true\n    senders: 2\n    batch: 64\n",
            cluster.url()
        ),
    );
    let names = fleet.names.clone();
    let writers: Vec<Writer> = masters
        .iter()
        .zip(WRITERS)
        .map(|(m, w)| Writer::start(m, w))
        .collect();

    // The full syncs, one at a time; the page shows each source while they go on.
    let tool = fleet.start();
    fleet.wait("a source to wait for its turn", |s| {
        s["sources"]
            .as_object()
            .is_some_and(|all| all.values().any(|r| r["stage"] == "full_sync_waiting"))
    });
    fleet.wait_streaming(&tool, &names);
    let page = rendered_text(&format!("http://127.0.0.1:{}/", fleet.status_port));
    assert!(page.contains("fleet of 3 sources"), "{page}");
    for name in &names {
        assert!(page.contains(&format!("{name}/0 streaming")), "{page}");
    }
    let metrics = http_get(fleet.status_port, "/metrics").unwrap();
    for name in &names {
        assert!(
            metrics.contains(&format!(
                "pika_migrate_db_stage{{db=\"0\",stage=\"streaming\",source=\"{name}\"}} 1"
            )),
            "{metrics}"
        );
    }
    assert!(metrics.contains("pika_migrate_fleet_sources{state=\"streaming\"} 3"));

    // kill -9 while all three stream and are written; started again: exact.
    std::thread::sleep(Duration::from_millis(800));
    kill9(tool);
    let tool = fleet.start();
    fleet.wait_streaming(&tool, &names);
    std::thread::sleep(Duration::from_millis(500));
    let written: Vec<usize> = writers.into_iter().map(Writer::stop).collect();
    assert!(written.iter().all(|w| *w > 0), "{written:?}");
    let refs: Vec<&RealPika> = masters.iter().collect();
    fleet.wait_caught_up(&refs, &names);

    // `status` shows the fleet; the gate opens over all three, verifies, stops.
    let (code, stdout, _) = run_cli(&["status", "-c", fleet.pipeline.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("fleet:     3 source(s), 3 streaming, 0 failed"),
        "{stdout}"
    );
    let report = fleet.dir.path().join("cutover.json");
    let (code, stdout, stderr) = run_cli(&[
        "cutover",
        "-c",
        fleet.pipeline.to_str().unwrap(),
        "--quiet-for",
        "1",
        "--timeout",
        "60",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("synced with all 3 masters"), "{stdout}");
    let mut tool = tool;
    assert_eq!(
        wait_exit(&mut tool, Duration::from_secs(30)),
        0,
        "{}",
        fleet.log_text()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["ready"], true, "{report}");
    assert_eq!(report["sources"].as_array().unwrap().len(), 3);

    assert_same(&union(&masters), &cluster.state());
    for m in &masters {
        assert_eq!(m.full_syncs_served(), 1, "one full sync per master");
    }
    // The masters' own logs: no two dumps were sent at once.
    let mut spans: Vec<_> = masters.iter().flat_map(transfers_in_log).collect();
    assert_eq!(spans.len(), 3, "{spans:?}");
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "transfers overlapped: {spans:?}\n{}",
            fleet.log_text()
        );
    }
    eprintln!("{test}: writes per master {written:?}; transfers {spans:?}");
}

#[test]
fn a_master_lost_for_good_leaves_the_others_streaming_and_is_named() {
    let test = "a_master_lost_for_good_leaves_the_others_streaming_and_is_named";
    let Some(mut masters) = masters(test, &["3.3.6", "3.5.5"]) else {
        return;
    };
    for (i, m) in masters.iter().enumerate() {
        fill_group(m, &format!("g{i}"));
    }
    let redis = RedisServer::start();
    let fleet = FleetRun::new(
        &masters,
        "on_source_error: continue\n",
        "    retry_seconds: 3\n",
        &format!(
            "  - type: redis\n    url: {}\n    senders: 2\n    batch: 64\n",
            redis.url()
        ),
    );
    let names = fleet.names.clone();
    let mut tool = fleet.start();
    fleet.wait_streaming(&tool, &names);

    // g0's master goes for good: after its retry_seconds g0 fails, g1 goes on.
    masters[0].kill9();
    fleet.wait("g0 to fail", |s| s["fleet"]["failed"][0] == "g0");
    let writer = Writer::start(&masters[1], write_g1);
    std::thread::sleep(Duration::from_millis(800));
    writer.stop();
    fleet.wait_caught_up(&[&masters[1]], &names[1..]);
    let status = fleet.status().unwrap();
    assert_eq!(status["fleet"]["streaming"], 1, "{status}");
    assert!(
        status["sources"]["g0"]["failed"]
            .as_str()
            .is_some_and(|why| why.contains("unreachable") || why.contains("retried")),
        "{status}"
    );
    let (code, stdout, _) = run_cli(&["status", "-c", fleet.pipeline.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("1 failed (g0)"), "{stdout}");
    assert_same(&redis_view(&masters[1].state()), &{
        let mut only_g1 = redis.state();
        only_g1.retain(|(key, _), _| key.starts_with(b"g1:") || key.starts_with(b"user:{g1"));
        only_g1
    });

    // Stopped, the run exits with the lost master's code (69, unreachable).
    signal(&tool, "-TERM");
    assert_eq!(
        wait_exit(&mut tool, Duration::from_secs(30)),
        69,
        "{}",
        fleet.log_text()
    );
    assert!(
        fleet.log_text().contains("[g0] failed"),
        "{}",
        fleet.log_text()
    );
}

#[test]
fn three_masters_as_three_processes_into_one_cluster_each_killed_once_are_exact() {
    let test = "three_masters_as_three_processes_into_one_cluster_each_killed_once_are_exact";
    let Some(masters) = masters(test, &VERSIONS) else {
        return;
    };
    for (i, m) in masters.iter().enumerate() {
        fill_group(m, &format!("g{i}"));
    }
    let cluster = RedisCluster::start(3);
    let sinks = format!(
        "  - type: redis\n    url: {}\n    cluster: true\n    senders: 2\n    batch: 64\n",
        cluster.url()
    );
    let migrations: Vec<Migration> = masters
        .iter()
        .map(|m| Migration::with_sinks(&m.addr(), "", &sinks))
        .collect();
    let writers: Vec<Writer> = masters
        .iter()
        .zip(WRITERS)
        .map(|(m, w)| Writer::start(m, w))
        .collect();
    let tools: Vec<Child> = migrations.iter().map(Migration::start).collect();
    for (m, tool) in migrations.iter().zip(&tools) {
        m.wait_streaming(tool);
    }
    std::thread::sleep(Duration::from_millis(600));
    for tool in tools {
        kill9(tool);
    }
    let tools: Vec<Child> = migrations.iter().map(Migration::start).collect();
    for (m, tool) in migrations.iter().zip(&tools) {
        m.wait_streaming(tool);
    }
    std::thread::sleep(Duration::from_millis(500));
    let written: Vec<usize> = writers.into_iter().map(Writer::stop).collect();
    assert!(written.iter().all(|w| *w > 0), "{written:?}");
    for (m, pika) in migrations.iter().zip(&masters) {
        m.wait_caught_up(pika);
    }

    // One look at the three processes, then the gate over the three files.
    let addrs: Vec<String> = migrations
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.status_port))
        .collect();
    let (code, stdout, _) = run_cli(&["status", "--addr", &addrs.join(",")]);
    assert_eq!(code, 0);
    for addr in &addrs {
        assert!(stdout.contains(&format!("== {addr}")), "{stdout}");
    }
    assert_eq!(
        stdout.matches("stage:     streaming").count(),
        3,
        "{stdout}"
    );
    let (code, stdout, _) = run_cli(&[
        "status",
        "--addr",
        &addrs.join(","),
        "--wait-synced",
        "--timeout",
        "30",
    ]);
    assert_eq!(code, 0, "{stdout}");
    let mut args = vec!["cutover".to_owned()];
    for m in &migrations {
        args.extend(["-c".to_owned(), m.pipeline.display().to_string()]);
    }
    args.extend(["--writes-stopped".into(), "--timeout".into(), "60".into()]);
    let report = migrations[0].dir.path().join("cutover.json");
    args.extend(["--report".into(), report.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_cli(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("the pipelines are stopped"), "{stdout}");
    for (m, mut tool) in migrations.iter().zip(tools) {
        assert_eq!(
            wait_exit(&mut tool, Duration::from_secs(30)),
            0,
            "{}",
            m.log_text()
        );
    }
    assert_same(&union(&masters), &cluster.state());
    for m in &masters {
        assert_eq!(m.full_syncs_served(), 1, "one full sync per master");
    }
}
