//! Running the real `pika-migrate` binary as a live replica: one migration is a work
//! dir, a pipeline file and a log of every run of the tool, with the checkpoint and the
//! status endpoint read back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::real_pika::RealPika;

use super::{announce_port, free_port, http_get, wait_exit, wait_until, write_pipeline};

/// How long a test waits for a migration to stream, or to catch up with its master.
pub const CATCH_UP: Duration = Duration::from_secs(120);
use pika_migrate_core::event::BinlogOffset;

/// How long a full sync and the stream's catching up may take in the tests.
pub const STREAMING_WITHIN: Duration = Duration::from_secs(120);

/// One migration: a work dir, a pipeline file, a log of every run of the tool. A failing
/// test leaves them to read.
pub struct Migration {
    pub dir: tempfile::TempDir,
    pub pipeline: PathBuf,
    /// The tool's `status.listen` port.
    pub status_port: u16,
    /// The announced replica port (the dump arrives on + 1000).
    pub announce_port: u16,
}

impl Migration {
    /// A migration from the master at `master` (`127.0.0.1:<port>`) into the Redis at
    /// `redis_url`; `source_extra` adds lines to the source (two-space indented).
    pub fn new(master: &str, redis_url: &str, source_extra: &str) -> Migration {
        Migration::with_sinks(
            master,
            source_extra,
            &format!("  - type: redis\n    url: {redis_url}\n    senders: 4\n    batch: 64\n"),
        )
    }

    /// A migration into the sinks of `sinks_yaml` (the list under `sinks:`).
    pub fn with_sinks(master: &str, source_extra: &str, sinks_yaml: &str) -> Migration {
        let dir = tempfile::tempdir().unwrap();
        let announce_port = announce_port();
        let status_port = free_port();
        let yaml = format!(
            "source:\n  type: pika\n  master: {master}\n  announce: 127.0.0.1:{announce_port}\n  work_dir: {}\n{source_extra}sinks:\n{sinks_yaml}status:\n  listen: 127.0.0.1:{status_port}\n",
            dir.path().join("work").display(),
        );
        let pipeline = write_pipeline(dir.path(), &yaml);
        Migration {
            dir,
            pipeline,
            status_port,
            announce_port,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("tool.log")
    }

    /// The command that runs the tool on this migration, its output appended to the log.
    pub fn command(&self) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut command = Command::new(super::bin());
        command
            .args(["run", "-c", self.pipeline.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    pub fn start(&self) -> Child {
        self.command().spawn().unwrap()
    }

    /// Runs the tool to its end; (exit code, everything it printed).
    pub fn run_to_end(&self) -> (i32, String) {
        let mut child = self.start();
        let status = wait_exit(&mut child, Duration::from_secs(90));
        (status, self.log_text())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Waits until `done`, failing with the end of the tool's log after `within`.
    pub fn wait_for(&self, within: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + within;
        while !done() {
            if std::time::Instant::now() > deadline {
                let log = self.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "timed out waiting for {what}; the tool's log ends:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// db0's stage in the checkpoint (`transfer`, `load`, `stream`), if any.
    pub fn stage(&self) -> Option<String> {
        self.stage_of(0)
    }

    /// Database `db`'s stage in the checkpoint, if any.
    pub fn stage_of(&self, db: u32) -> Option<String> {
        self.checkpoint_of(db)?["stage"].as_str().map(str::to_owned)
    }

    pub fn checkpoint(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.work_dir().join("checkpoint.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Database `db`'s entry in the checkpoint.
    pub fn checkpoint_of(&self, db: u32) -> Option<serde_json::Value> {
        self.checkpoint()?.get("dbs")?.get(db.to_string()).cloned()
    }

    /// db0's `at` (stage `stream`): where a restart resumes its binlog.
    pub fn checkpoint_at(&self) -> Option<BinlogOffset> {
        self.checkpoint_at_of(0)
    }

    /// Database `db`'s `at` (stage `stream`).
    pub fn checkpoint_at_of(&self, db: u32) -> Option<BinlogOffset> {
        serde_json::from_value(self.checkpoint_of(db)?.get("at")?.clone()).ok()
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// `GET /status` of the running tool.
    pub fn status(&self) -> Option<serde_json::Value> {
        let body = http_get(self.status_port, "/status")?;
        serde_json::from_str(&body).ok()
    }

    /// The running tool's stage as its status endpoint says (`streaming`, …).
    pub fn live_stage(&self) -> Option<String> {
        self.status()?["stage"].as_str().map(str::to_owned)
    }

    /// Waits until the process `tool` itself (its status endpoint, not a checkpoint an
    /// earlier run left) streams every database in `dbs`: the master took its TrySync.
    pub fn wait_streaming_dbs(&self, tool: &Child, dbs: &[u32]) {
        self.wait_for(STREAMING_WITHIN, "this run to stream", || {
            let Some(s) = self.status() else {
                return false;
            };
            s["pid"] == tool.id()
                && dbs
                    .iter()
                    .all(|db| s["dbs"][db.to_string()]["stage"] == "streaming")
        });
    }

    /// Waits until the process `tool` streams db 0.
    pub fn wait_streaming(&self, tool: &Child) {
        self.wait_streaming_dbs(tool, &[0]);
    }

    /// Waits until the running tool streams with everything the master has (its
    /// `binlog_offset` of db 0) acknowledged by every sink.
    pub fn wait_caught_up(&self, pika: &RealPika) {
        self.wait_for(
            STREAMING_WITHIN,
            "the stream to catch up with the master",
            || self.caught_up_with(pika.binlog_offset(0)),
        );
    }

    /// Whether the master lists this migration as its replica.
    pub fn listed_by(&self, pika: &RealPika) -> bool {
        pika.replicas()
            .contains(&format!("127.0.0.1:{}", self.announce_port))
    }

    /// Whether the running tool streams database `db` with every item of it received
    /// acknowledged, at `master_at` (the master's `binlog_offset` of `db`).
    pub fn db_caught_up_with(&self, db: u32, master_at: (u32, u64)) -> bool {
        let Some(s) = self.status() else {
            return false;
        };
        let d = &s["dbs"][db.to_string()];
        let at = format!("{}:{}", master_at.0, master_at.1);
        d["stage"] == "streaming" && d["position"].as_str() == Some(at.as_str())
    }

    /// Whether the running tool streams with every item it received acknowledged, at
    /// `master_at` (the master's `binlog_offset`).
    pub fn caught_up_with(&self, master_at: (u32, u64)) -> bool {
        let Some(s) = self.status() else {
            return false;
        };
        let at = format!("{}:{}", master_at.0, master_at.1);
        s["stage"] == "streaming" && s["position"].as_str() == Some(at.as_str())
    }

    /// Processes (pid, command line) running with this migration's work dir in their
    /// command line: our rsync daemon (`--config=<work_dir>/rsync/rsyncd.conf`) and its
    /// children. The tool itself names only the pipeline file.
    pub fn processes_in_work_dir(&self) -> Vec<(u32, String)> {
        let work = self.work_dir().display().to_string();
        super::real_pika::processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains(&work))
            .collect()
    }

    /// Waits until every database in `dbs` streams caught up with `pika`.
    pub fn wait_caught_up_dbs(&self, pika: &RealPika, dbs: &[u32]) {
        for &db in dbs {
            self.wait_for(CATCH_UP, &format!("db{db} to catch up"), || {
                self.db_caught_up_with(db, pika.binlog_offset(db))
            });
        }
    }

    /// How many times the tool lost its link and went back to reconnecting.
    pub fn interruptions(&self) -> usize {
        self.log_text().matches("replication interrupted").count()
    }
}

/// The pids of processes whose command line names `path` (a tool running a pipeline).
fn processes_naming(path: &std::path::Path) -> Vec<u32> {
    let want = path.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(want.len()).any(|w| w == want))
        })
        .collect()
}

impl Drop for Migration {
    fn drop(&mut self) {
        // A test that failed while a tool ran leaves no tool behind to write on into
        // the servers of later tests.
        for pid in processes_naming(&self.pipeline) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("the migration's directory kept: {}\n", dir.keep().display()),
            );
        }
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// SIGTERM, then the exit code of the clean stop.
pub fn stop(mut child: Child) -> i32 {
    signal(&child, "-TERM");
    wait_exit(&mut child, Duration::from_secs(60))
}

pub fn kill9(mut child: Child) {
    signal(&child, "-KILL");
    let _ = child.wait();
}

/// The `i`-th of the writes a test makes on the master while we replicate: every type,
/// counters, pushes and pops, deletes and expiries, all under `live:`. Deterministic
/// (no SPOP), so a replica applying them ends equal to the master.
pub fn live_write(i: usize) -> Vec<Vec<u8>> {
    let k = i % 97;
    let args: Vec<String> = match i % 12 {
        0 => vec!["SET".into(), format!("live:s:{k}"), format!("v{i}")],
        1 => vec!["INCRBY".into(), format!("live:n:{}", i % 13), "3".into()],
        2 => vec![
            "HSET".into(),
            format!("live:h:{k}"),
            format!("f{}", i % 31),
            format!("v{i}"),
        ],
        3 => vec!["RPUSH".into(), format!("live:l:{k}"), format!("v{i}")],
        4 => vec![
            "SADD".into(),
            format!("live:set:{k}"),
            format!("m{}", i % 61),
        ],
        5 => vec![
            "ZADD".into(),
            format!("live:z:{k}"),
            format!("{}", i % 17),
            format!("m{}", i % 29),
        ],
        6 => vec!["LPOP".into(), format!("live:l:{}", (k + 5) % 97)],
        7 => vec![
            "HINCRBY".into(),
            format!("live:h:{k}"),
            "count".into(),
            "1".into(),
        ],
        // The key SET 8 writes ago, which no DEL or EXPIRE touched since: Pika 3.5.5
        // logs an APPEND to a missing key with an empty value (its own replicas lose
        // the appended bytes), which no replica can follow exactly.
        8 => vec![
            "APPEND".into(),
            format!("live:s:{}", (i - 8) % 97),
            format!("+{i}"),
        ],
        9 => vec![
            "SREM".into(),
            format!("live:set:{}", (k + 3) % 97),
            format!("m{}", i % 61),
        ],
        10 => vec![
            "EXPIRE".into(),
            format!("live:s:{}", (k + 1) % 97),
            "3600".into(),
        ],
        _ => vec!["DEL".into(), format!("live:s:{}", (k + 11) % 97)],
    };
    args.into_iter().map(String::into_bytes).collect()
}

/// Counters, pushes, hash increments and expiring sets: what a lost or doubled write
/// shows at once.
pub fn counter_write(i: usize) -> Vec<Vec<u8>> {
    let args = match i % 4 {
        0 => vec!["INCR".into(), format!("c:n:{}", i % 50)],
        1 => vec!["RPUSH".into(), format!("c:l:{}", i % 20), format!("{i}")],
        2 => vec![
            "HINCRBY".into(),
            format!("c:h:{}", i % 10),
            format!("f{}", i % 5),
            "1".into(),
        ],
        _ => vec![
            "SETEX".into(),
            format!("c:s:{}", i % 30),
            "3600".into(),
            format!("v{i}"),
        ],
    };
    args.into_iter().map(String::into_bytes).collect()
}

/// `argv` as a redis-crate command.
pub fn command_of(argv: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd(std::str::from_utf8(&argv[0]).unwrap());
    for a in &argv[1..] {
        cmd.arg(a.as_slice());
    }
    cmd
}

/// A thread writing to the master until stopped, `batch` commands at a time, riding
/// out a master that restarts.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// Asked to hold off, and whether the thread is holding off (no write in flight).
    pause: Arc<(AtomicBool, AtomicBool)>,
    written: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Writes `write(0)`, `write(1)`, … to `pika`'s db 0.
    pub fn start(pika: &RealPika, write: fn(usize) -> Vec<Vec<u8>>) -> Writer {
        Writer::start_on(pika, 0, write)
    }

    /// Writes `write(0)`, `write(1)`, … to `pika`'s database `db`.
    pub fn start_on(pika: &RealPika, db: u32, write: fn(usize) -> Vec<Vec<u8>>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicUsize::new(0));
        let url = format!(
            "redis://{}127.0.0.1:{}/{db}",
            pika.password
                .as_deref()
                .map(|p| format!(":{p}@"))
                .unwrap_or_default(),
            pika.port
        );
        let (stopping, counting) = (stop.clone(), written.clone());
        let pause = Arc::new((AtomicBool::new(false), AtomicBool::new(false)));
        let pausing = pause.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            let mut con = None;
            while !stopping.load(Ordering::SeqCst) {
                let (asked, holding) = &*pausing;
                holding.store(asked.load(Ordering::SeqCst), Ordering::SeqCst);
                if asked.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let c = match con.as_mut() {
                    Some(c) => c,
                    None => {
                        match redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                            Ok(c) => con.insert(c),
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                        }
                    }
                };
                let mut pipe = redis::pipe();
                for n in i..i + 20 {
                    pipe.add_command(command_of(&write(n))).ignore();
                }
                // A write that failed with the master going down may or may not have
                // happened: the comparison is with what the master holds in the end.
                if pipe.query::<()>(c).is_ok() {
                    i += 20;
                    counting.store(i, Ordering::SeqCst);
                } else {
                    con = None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            pause,
            written,
            thread: Some(thread),
        }
    }

    /// Holds the writes off: returns once none is in flight.
    pub fn pause(&self) {
        let (asked, holding) = &*self.pause;
        asked.store(true, Ordering::SeqCst);
        wait_until("the writer to hold off", Duration::from_secs(30), || {
            holding.load(Ordering::SeqCst)
        });
    }

    /// Writes again after `pause`.
    pub fn resume(&self) {
        let (asked, holding) = &*self.pause;
        asked.store(false, Ordering::SeqCst);
        holding.store(false, Ordering::SeqCst);
    }

    pub fn written(&self) -> usize {
        self.written.load(Ordering::SeqCst)
    }

    /// Stops writing; how many commands were written.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.written()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Writes a lost or doubled command shows at once: counters, list pushes, hash
/// increments, each master under its own prefix.
pub fn counted(prefix: &str, i: usize) -> Vec<Vec<u8>> {
    let args = match i % 3 {
        0 => vec!["INCR".into(), format!("{prefix}:n:{}", i % 7)],
        1 => vec![
            "RPUSH".into(),
            format!("{prefix}:l:{}", i % 5),
            format!("{i}"),
        ],
        _ => vec![
            "HINCRBY".into(),
            format!("{prefix}:h:{}", i % 3),
            format!("f{}", i % 4),
            "1".into(),
        ],
    };
    args.into_iter().map(String::into_bytes).collect()
}

/// The nice value of each thread of process `pid`, by thread name (from /proc).
pub fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (head, tail) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            // After the name: the state is field 3, the nice value field 19.
            let nice = tail.split_whitespace().nth(16)?.parse().ok()?;
            Some((name, nice))
        })
        .collect()
}
