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
        "source:\n  type: binlog\n  path: {}\n  follow: true{}\nsinks:\n  - type: redis\n    url: {}\nstatus:\n  listen: 127.0.0.1:{port}\n",
        binlog.display(),
        as_of_line(fixture_moment()),
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let mut tool = Command::new(bin())
        .args(["run", "-c", pipeline.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The binlog has 1430 items, and as of the fixture's moment 15 expiries past only
    // then are held back and released (tests/late_replay.rs): once every event is
    // acknowledged, up to the last release after the binlog's end, the status says so.
    let mut status = serde_json::Value::Null;
    wait_until("a complete status", Duration::from_secs(30), || {
        if let Some(body) = http_get(port, "/status") {
            status = serde_json::from_str(&body).unwrap();
        }
        let acked = status["sinks"][0]["acknowledged"].as_str().unwrap_or("");
        status["events"] == 1445 && acked.starts_with("binlog@1:5429")
    });
    assert_eq!(status["stage"], "reading");
    assert_eq!(status["sinks"][0]["events"], 1445);
    assert!(status["sinks"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("redis"));

    let metrics = http_get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("pika_migrate_events_total 1445"),
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
    assert!(out.contains("events:    1445"), "{out}");
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

/// The endpoint's cap on connections served at once (`MAX_CONNECTIONS` in
/// `src/cli/status.rs`) and how long it waits for a request (`REQUEST_WITHIN`).
const STATUS_CONNECTIONS: usize = 32;
const STATUS_REQUEST_WITHIN: Duration = Duration::from_secs(5);

/// A run that stays up with nothing to do: the fixture dump into a blackhole sink that
/// takes one event a second. The dump is read ahead into the pipeline's channels in
/// the first moments, so no file is opened after that.
struct IdleRun {
    _dir: tempfile::TempDir,
    tool: std::process::Child,
    port: u16,
}

impl IdleRun {
    fn start() -> IdleRun {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let yaml = format!(
            "source:\n{}\nsinks:\n  - type: blackhole\n    rate: 1\nstatus:\n  listen: 127.0.0.1:{port}\n",
            dump_source()
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        let tool = Command::new(bin())
            .args(["run", "-c", pipeline.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let run = IdleRun {
            _dir: dir,
            tool,
            port,
        };
        // Read ahead: events counted, and no file of the dump open any more.
        let dump = fixture("dump");
        wait_until("the dump read ahead", Duration::from_secs(30), || {
            let events = run.get(Duration::from_secs(5)).and_then(|body| {
                serde_json::from_str::<serde_json::Value>(&body).ok()?["events"].as_u64()
            });
            let reading = std::fs::read_dir(format!("/proc/{}/fd", run.tool.id()))
                .unwrap()
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p.starts_with(&dump)));
            events > Some(0) && !reading
        });
        run
    }

    /// `GET /status`, its body if answered within `within`.
    fn get(&self, within: Duration) -> Option<String> {
        use std::io::Read;
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        conn.set_read_timeout(Some(within)).unwrap();
        write!(conn, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    /// Connections that send nothing.
    fn idle_connections(&self, n: usize) -> Vec<std::net::TcpStream> {
        (0..n)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap())
            .collect()
    }

    /// CPU time the tool has used, in clock ticks (`/proc/<pid>/stat` utime + stime).
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.tool.id())).unwrap();
        // The fields after the command name (which may hold spaces) in parentheses.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for IdleRun {
    fn drop(&mut self) {
        let _ = self.tool.kill();
        let _ = self.tool.wait();
    }
}

/// Whether the server closed `conn` (end of stream or reset) within `within`.
fn closed_by_server(conn: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    conn.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match conn.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn idle_connections_past_the_cap_are_closed_and_the_status_still_answers() {
    let run = IdleRun::start();
    let mut idle = run.idle_connections(STATUS_CONNECTIONS + 8);
    // Past the cap the oldest are closed at once, so a request is answered.
    let body = run
        .get(Duration::from_secs(5))
        .expect("GET /status answered");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["pid"], run.tool.id());
    // Connections that never send a request are closed after a few seconds, the newest
    // too: none holds a file descriptor of the tool for good.
    for (i, conn) in idle.iter_mut().enumerate().rev().step_by(7) {
        assert!(
            closed_by_server(conn, STATUS_REQUEST_WITHIN * 3),
            "idle connection {i} still open"
        );
    }
}

#[test]
fn out_of_file_descriptors_the_endpoint_waits_instead_of_spinning_and_still_answers() {
    let run = IdleRun::start();
    // The tool may open three more files; then a dozen connections arrive and sit idle.
    let pid = run.tool.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a process this test started, with valid pointers.
    unsafe {
        assert_eq!(
            libc::prlimit(
                pid as i32,
                libc::RLIMIT_NOFILE,
                std::ptr::null(),
                &mut limit
            ),
            0
        );
        limit.rlim_cur = fds + 3;
        assert_eq!(
            libc::prlimit(
                pid as i32,
                libc::RLIMIT_NOFILE,
                &limit,
                std::ptr::null_mut()
            ),
            0
        );
    }
    let _idle = run.idle_connections(12);
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let before = run.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = run.cpu_ticks() - before;
    // A loop retrying the failed accept at once burns a whole core: 3 s in 3 s.
    assert!(
        used < ticks_per_second,
        "the tool used {used} ticks of CPU in 3 s ({ticks_per_second}/s)"
    );
    assert!(
        run.get(Duration::from_secs(20)).is_some(),
        "GET /status answered with the file descriptors gone"
    );
}

/// `POST /control/…` with or without the token: 401 without it; `pika-migrate pause`
/// and `resume` (which take it from the pipeline file) hold a replay and let it go on;
/// a stop ends the run cleanly.
#[test]
fn control_needs_the_token_pause_holds_a_replay_resume_and_stop_end_it_cleanly() {
    let ReplayWithStatus {
        redis: _redis,
        dir: _dir,
        port,
        pipeline,
        mut tool,
    } = replay_with_status("  rate: 300\n", "  token: s3cret\n");
    let events = || -> u64 {
        http_get(port, "/status")
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|s| s["sinks"][0]["events"].as_u64())
            .unwrap_or(0)
    };
    wait_until("the replay to start", Duration::from_secs(30), || {
        events() > 50
    });

    let post = |path: &str, token: Option<&str>| -> String {
        use std::io::Read;
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(conn, "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(post("/control/pause", None).starts_with("HTTP/1.1 401"));
    assert!(post("/control/pause", Some("wrong")).starts_with("HTTP/1.1 401"));

    let config = pipeline.to_str().unwrap();
    let (code, stdout, stderr) = run_cli(&["pause", "-c", config]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let held = events();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(events(), held, "nothing is applied while paused");
    let metrics = http_get(port, "/metrics").unwrap();
    assert!(metrics.contains("pika_migrate_paused 1"), "{metrics}");

    let (code, stdout, stderr) = run_cli(&["resume", "-c", config]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    wait_until("the replay to go on", Duration::from_secs(10), || {
        events() > held + 50
    });

    assert!(post("/control/stop", Some("s3cret")).starts_with("HTTP/1.1 200"));
    assert_eq!(wait_exit(&mut tool, Duration::from_secs(30)), 0);
}
