//! Shared test support: the real-Pika fixtures (`tests/fixtures/`), their expected data, a real redis-server
//! started on a free 127.0.0.1 port, and readers that turn Redis or pika-migrate output
//! into comparable key states.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::Value as Json;

pub mod pcap;
pub mod pika_master;
pub mod proxy;
pub mod real_pika;
pub mod sentinel;
pub mod tool;

/// The fixture directory written by a real Pika 3.3.6 (`tests/fixtures/pika-v3.3.6`).
pub fn fixture(rel: &str) -> PathBuf {
    fixture_of("3.3.6", rel)
}

/// A file of the fixture recorded from Pika `version` (`tests/fixtures/pika-v<version>`).
pub fn fixture_of(version: &str, rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/pika-v{version}"))
        .join(rel)
}

/// The built `pika-migrate` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pika-migrate"))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A value as a user reads it back (scores exactly, sets and hashes unordered).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    String(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    Zset(BTreeMap<Vec<u8>, f64>),
    /// Entries in id order: the id as `ms-seq` text, fields in the entry's order.
    Stream(Vec<StreamEntryVal>),
}

/// A stream entry as XRANGE shows it.
pub type StreamEntryVal = (String, Vec<(Vec<u8>, Vec<u8>)>);

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::String(_) => "string",
            Val::Hash(_) => "hash",
            Val::List(_) => "list",
            Val::Set(_) => "set",
            Val::Zset(_) => "zset",
            Val::Stream(_) => "stream",
        }
    }
}

/// One (key, type) with its value and absolute expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    pub val: Val,
    pub expire_at_ms: Option<i64>,
}

/// State keyed by (key, type name): Pika can hold one key as several types.
pub type State = BTreeMap<(Vec<u8>, String), KeyState>;

pub fn parse_score(text: &str) -> f64 {
    match text {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        t => t.parse().unwrap_or_else(|_| panic!("bad score {t:?}")),
    }
}

/// Loads an expected file of the fixture (`expected.jsonl`, `binlog-expected.jsonl`).
pub fn load_expected(name: &str) -> State {
    load_expected_file(&fixture(name))
}

/// An expected-state file of a fixture, streams included (3.5's and 4.0's list them).
/// 4.0's `none` rows are left out: names SCAN listed that no read finds (the
/// embedded-NUL names 4.0 stored cut short).
pub fn load_expected_file(path: &Path) -> State {
    let text = std::fs::read_to_string(path).unwrap();
    let mut state = State::new();
    for line in text.lines() {
        let row: Json = serde_json::from_str(line).unwrap();
        let key = b64(row["key"].as_str().unwrap());
        let t = row["type"].as_str().unwrap().to_owned();
        if t == "none" {
            continue;
        }
        let pair = |p: &Json| (b64(p[0].as_str().unwrap()), p[1].clone());
        let val = match t.as_str() {
            "string" => Val::String(b64(row["value"].as_str().unwrap())),
            "hash" => Val::Hash(
                row["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(pair)
                    .map(|(f, v)| (f, b64(v.as_str().unwrap())))
                    .collect(),
            ),
            "list" => Val::List(
                row["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| b64(v.as_str().unwrap()))
                    .collect(),
            ),
            "set" => Val::Set(
                row["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| b64(v.as_str().unwrap()))
                    .collect(),
            ),
            "zset" => Val::Zset(
                row["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(pair)
                    .map(|(m, s)| (m, parse_score(s.as_str().unwrap())))
                    .collect(),
            ),
            "stream" => Val::Stream(
                row["value"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        let fields = e[1].as_array().unwrap().iter().map(pair);
                        (
                            e[0].as_str().unwrap().to_owned(),
                            fields.map(|(f, v)| (f, b64(v.as_str().unwrap()))).collect(),
                        )
                    })
                    .collect(),
            ),
            other => panic!("unknown type {other}"),
        };
        state.insert(
            (key, t),
            KeyState {
                val,
                expire_at_ms: row["expire_at_ms"].as_i64(),
            },
        );
    }
    state
}

/// Expiry slack: Pika keeps whole seconds and the expected files were read ±2 s.
pub const EXPIRY_SLACK_MS: i64 = 2500;

/// The moment an expected file of a fixture was read: each row's expiry less the PTTL
/// Pika answered then (the latest of them; rows were read within a second).
pub fn moment_of(path: &Path) -> i64 {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|line| {
            let row: Json = serde_json::from_str(line).unwrap();
            let pttl = row["pika_pttl"].as_i64().filter(|p| *p >= 0)?;
            Some(row["expire_at_ms"].as_i64()? - pttl)
        })
        .max()
        .unwrap_or_else(|| panic!("{}: no row with an expiry", path.display()))
}

/// The moment the 3.3.6 fixture is read as of in the tests: when its binlog's expected
/// state was read, the end of everything it holds. The dump was read 15 s before with
/// the same keys alive, so one moment serves both (a dump and then the binlog applied
/// onto it must be read as of one moment, or their times would not agree).
pub fn fixture_moment() -> i64 {
    fixture_moment_of("3.3.6")
}

/// The same moment for the fixture of Pika `version`.
pub fn fixture_moment_of(version: &str) -> i64 {
    moment_of(&fixture_of(version, "binlog-expected.jsonl"))
}

/// The `source:` body for the dump of the fixture of Pika `version`, read as of its
/// moment.
pub fn fixture_dump_source(version: &str) -> String {
    format!(
        "  type: snapshot\n  path: {}{}",
        fixture_of(version, "dump").display(),
        as_of_line(fixture_moment_of(version))
    )
}

/// `\n  as_of: "<RFC 3339>"`: the source line that reads it as of `moment_ms`.
pub fn as_of_line(moment_ms: i64) -> String {
    let at = pika_migrate_core::replay::AsOf { unix_ms: moment_ms };
    format!("\n  as_of: \"{at}\"")
}

/// Compares what a run as of `moment` wrote with the expected state (the keys alive
/// then, at their stored expiry times): every expiry written must be the stored one
/// moved by one and the same amount, now − `moment` as the run saw it (a little before
/// the test looks: it is measured from the written times and must be close to it).
pub fn assert_same_as_of(expected: &State, actual: &State, moment: i64) {
    let shifts: Vec<i64> = expected
        .iter()
        .filter_map(|(k, e)| Some(actual.get(k)?.expire_at_ms? - e.expire_at_ms?))
        .collect();
    let shift = match shifts.len() {
        0 => now_ms() - moment,
        n => {
            let mut sorted = shifts.clone();
            sorted.sort_unstable();
            sorted[n / 2]
        }
    };
    let lag = now_ms() - moment - shift;
    assert!(
        (-EXPIRY_SLACK_MS..600_000).contains(&lag),
        "the expiries written moved by {shift} ms, {lag} ms from now − as_of: not read as of {moment}"
    );
    let moved: State = expected
        .iter()
        .map(|(k, e)| {
            let mut e = e.clone();
            e.expire_at_ms = e.expire_at_ms.map(|at| at + shift);
            (k.clone(), e)
        })
        .collect();
    assert_same(&moved, actual);
}

/// Drops entries that have expired by `now` (and those too close to call).
pub fn live_at(state: &State, now: i64) -> State {
    state
        .iter()
        .filter(|(_, s)| s.expire_at_ms.is_none_or(|at| at > now + EXPIRY_SLACK_MS))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What Redis can hold of a Pika state: per key, the first type in the order Pika's
/// TYPE reports (string, hash, list, zset, set), then stream.
pub fn redis_view(state: &State) -> State {
    let order = ["string", "hash", "list", "zset", "set", "stream"];
    let mut out = State::new();
    let mut keys: BTreeMap<Vec<u8>, Vec<(&String, &KeyState)>> = BTreeMap::new();
    for ((k, t), s) in state {
        keys.entry(k.clone()).or_default().push((t, s));
    }
    for (k, mut types) in keys {
        types.sort_by_key(|(t, _)| order.iter().position(|o| o == t));
        let (t, s) = types[0];
        out.insert((k, t.clone()), s.clone());
    }
    out
}

/// Compares two states: values exactly, expiries within the slack. Returns a list of
/// human-readable differences (empty when equal).
pub fn diff(expected: &State, actual: &State) -> Vec<String> {
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let mut out = Vec::new();
    for ((k, t), e) in expected {
        match actual.get(&(k.clone(), t.clone())) {
            None => out.push(format!("missing {} ({t})", show(k))),
            Some(a) => {
                if a.val != e.val {
                    out.push(format!(
                        "value of {} ({t}) differs: expected {:?}, got {:?}",
                        show(k),
                        short(&e.val),
                        short(&a.val)
                    ));
                }
                let close = match (e.expire_at_ms, a.expire_at_ms) {
                    (None, None) => true,
                    (Some(x), Some(y)) => (x - y).abs() <= EXPIRY_SLACK_MS,
                    _ => false,
                };
                if !close {
                    out.push(format!(
                        "expiry of {} ({t}) differs: expected {:?}, got {:?}",
                        show(k),
                        e.expire_at_ms,
                        a.expire_at_ms
                    ));
                }
            }
        }
    }
    for (k, t) in actual.keys() {
        if !expected.contains_key(&(k.clone(), t.clone())) {
            out.push(format!("unexpected {} ({t})", show(k)));
        }
    }
    out
}

fn short(v: &Val) -> String {
    let s = format!("{v:?}");
    if s.len() > 200 {
        format!("{}…", &s[..200])
    } else {
        s
    }
}

pub fn assert_same(expected: &State, actual: &State) {
    let d = diff(expected, actual);
    assert!(
        d.is_empty(),
        "{} differences, first ones:\n{}",
        d.len(),
        d.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// A redis-server on a free 127.0.0.1 port, in its own directory; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if hand_out(port) {
            return port;
        }
    }
}

/// Ports handed out in this test process: the OS may give a port free again right
/// after it was handed out, before the test that got it listens on it (two migrations
/// of one test once got the same announce port, and the second one's rsync daemon
/// found the first one's on its port).
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Whether `port` was not handed out yet (it is now).
fn hand_out(port: u16) -> bool {
    HANDED_OUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port)
}

/// A Redis program (server, cli, sentinel) to run. Never under libfaketime: the tests
/// run under it years ahead to prove they do not depend on the date, and Debian's Redis
/// allocates with jemalloc, which libfaketime cannot start in (its issue #130). Redis then
/// keeps the real time, as a target whose clock differs from the migration host's: what
/// the tests read of it (absolute expiry times, `PEXPIRETIME`) does not depend on it.
pub fn redis_program(name: &str) -> Command {
    let mut command = Command::new(name);
    command.env_remove("LD_PRELOAD").env_remove("FAKETIME");
    command
}

fn spawn_redis(port: u16, dir: &Path, extra: &[String]) -> Child {
    redis_program("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/install-deps --test)")
}

/// Up means answering PING, with PONG or (password set) NOAUTH; not while LOADING.
fn wait_until_up(port: u16, child: &mut Child) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut reply = [0u8; 64];
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
            if tcp.write_all(b"PING\r\n").is_ok() {
                if let Ok(n) = tcp.read(&mut reply) {
                    let reply = &reply[..n];
                    if reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH") {
                        return true;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts with extra redis-server arguments (`--appendonly yes` by default is off).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = vec!["--appendonly".into(), "no".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn_redis(port, dir.path(), &args);
            if wait_until_up(port, &mut child) {
                return RedisServer {
                    port,
                    child,
                    args,
                    dir,
                };
            }
            let _ = child.kill();
        }
        panic!("redis-server did not start");
    }

    /// The server's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no shutdown, no save).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory (its AOF, if any, reloads).
    pub fn restart(&mut self) {
        self.child = spawn_redis(self.port, self.dir.path(), &self.args);
        assert!(
            wait_until_up(self.port, &mut self.child),
            "redis-server did not come back"
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Loads a RESP file with `redis-cli --pipe`; returns its output.
    pub fn pipe(&self, resp_file: &Path) -> String {
        let out = redis_program("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--pipe"])
            .stdin(std::fs::File::open(resp_file).unwrap())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Every key of db 0 with its type, value and absolute expiry.
    pub fn state(&self) -> State {
        self.state_of_db(0)
    }

    /// Every key of database `db` with its type, value and absolute expiry.
    pub fn state_of_db(&self, db: u32) -> State {
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/{db}", self.port))
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
        let mut state = State::new();
        for key in keys {
            if key.starts_with(b"pika-migrate:") {
                continue; // the Redis sink's own marker keys
            }
            let t: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
            let val = match t.as_str() {
                "string" => Val::String(redis::cmd("GET").arg(&key).query(&mut con).unwrap()),
                "hash" => Val::Hash(redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap()),
                "list" => Val::List(
                    redis::cmd("LRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query(&mut con)
                        .unwrap(),
                ),
                "set" => Val::Set(redis::cmd("SMEMBERS").arg(&key).query(&mut con).unwrap()),
                "zset" => {
                    let pairs: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query(&mut con)
                        .unwrap();
                    Val::Zset(
                        pairs
                            .into_iter()
                            .map(|(m, s)| (m, parse_score(&s)))
                            .collect(),
                    )
                }
                "stream" => Val::Stream(xrange(&mut con, &key)),
                "none" => continue,
                other => panic!("unexpected type {other}"),
            };
            // The absolute time Redis holds (whatever its own clock says now).
            let at: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut con).unwrap();
            let expire_at_ms = (at >= 0).then_some(at);
            state.insert((key, t), KeyState { val, expire_at_ms });
        }
        state
    }
}

/// Every entry of the stream `key` (`XRANGE key - +`); none when it is no stream.
pub fn xrange(con: &mut redis::Connection, key: &[u8]) -> Vec<StreamEntryVal> {
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(con)
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|(id, flat)| {
            let pairs = flat.chunks(2).map(|p| (p[0].clone(), p[1].clone()));
            (id, pairs.collect())
        })
        .collect()
}

/// A Redis Cluster of masters only, built with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        while nodes.len() < masters {
            let node = RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ]);
            // The cluster bus listens on port + 10000 (a node whose bus port is taken
            // does not start, and start_with tries another port).
            if node.port < 50000 {
                nodes.push(node);
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = redis_program("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.client())
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// A seed node's URL.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every key of every master.
    pub fn state(&self) -> State {
        let mut state = State::new();
        for node in &self.nodes {
            state.extend(node.state());
        }
        state
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits for `child` to exit; its exit code. Kills it and fails the test after `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the tool did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `done`, failing the test with `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A replica address to announce: a free port whose port + 1000 (where the tool's
/// rsync daemon listens for the dump) is free too.
pub fn announce_port() -> u16 {
    loop {
        let p = free_port();
        if p < 60000 && TcpListener::bind(("127.0.0.1", p + 1000)).is_ok() && hand_out(p + 1000) {
            return p;
        }
    }
}

/// `GET path` on 127.0.0.1:`port`; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The `source:` body for the fixture dump, read as of [`fixture_moment`].
pub fn dump_source() -> String {
    format!(
        "  type: snapshot\n  path: {}{}",
        fixture("dump").display(),
        as_of_line(fixture_moment())
    )
}

/// The `source:` body for the fixture binlog, from `from` (a `F:O` position) or its
/// first item, read as of [`fixture_moment`].
pub fn binlog_source(from: Option<&str>) -> String {
    let from = from
        .map(|f| format!("\n  from: \"{f}\""))
        .unwrap_or_default();
    format!(
        "  type: binlog\n  path: {}{from}{}",
        fixture("binlog").display(),
        as_of_line(fixture_moment())
    )
}

/// What Redis holds after the fixture dump was loaded as of [`fixture_moment`], before
/// the times are moved: the keys alive then.
pub fn dump_state() -> State {
    redis_view(&live_at(&load_expected("expected.jsonl"), fixture_moment()))
}

/// Asserts that `actual` is the fixture dump loaded as of [`fixture_moment`].
pub fn assert_dump_state(actual: &State) {
    assert_same_as_of(&dump_state(), actual, fixture_moment());
}

/// Writes a pipeline file into `dir` and returns its path.
/// Writes a synthetic dump with `pika-migrate bench generate --out out` and `args`.
pub fn generate_dump(out: &Path, args: &[&str]) {
    let mut all = vec!["bench", "generate", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, _, stderr) = run_cli(&all);
    assert_eq!(code, 0, "{stderr}");
}

pub fn write_pipeline(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Rebuilds the state a sequence of snapshot events describes (chunks joined in order).
pub fn state_from_snapshot(events: &[pika_migrate_core::event::Event]) -> State {
    use pika_migrate_core::event::{Chunk, Op};
    let mut state = State::new();
    for e in events {
        let Op::Snapshot {
            chunk,
            part,
            expire_at_ms,
            ..
        } = &e.op
        else {
            panic!("not a snapshot event")
        };
        let t = chunk.data_type().as_str().to_owned();
        let entry = (e.key.to_vec(), t);
        if part.starts_key() {
            assert!(!state.contains_key(&entry), "key {:?} started twice", entry);
            let empty = match chunk {
                Chunk::String(_) => Val::String(Vec::new()),
                Chunk::Hash(_) => Val::Hash(BTreeMap::new()),
                Chunk::List(_) => Val::List(Vec::new()),
                Chunk::Set(_) => Val::Set(BTreeSet::new()),
                Chunk::Zset(_) => Val::Zset(BTreeMap::new()),
                Chunk::Stream { .. } => Val::Stream(Vec::new()),
            };
            state.insert(
                entry.clone(),
                KeyState {
                    val: empty,
                    expire_at_ms: *expire_at_ms,
                },
            );
        }
        let s = state
            .get_mut(&entry)
            .expect("chunk before the key's first chunk");
        match (&mut s.val, chunk) {
            (Val::String(v), Chunk::String(c)) => v.extend_from_slice(c),
            (Val::Hash(v), Chunk::Hash(c)) => {
                v.extend(c.iter().map(|(f, x)| (f.to_vec(), x.to_vec())))
            }
            (Val::List(v), Chunk::List(c)) => v.extend(c.iter().map(|x| x.to_vec())),
            (Val::Set(v), Chunk::Set(c)) => v.extend(c.iter().map(|x| x.to_vec())),
            (Val::Zset(v), Chunk::Zset(c)) => v.extend(c.iter().map(|(m, sc)| (m.to_vec(), *sc))),
            (Val::Stream(v), Chunk::Stream { entries, .. }) => v.extend(entries.iter().map(|e| {
                let fields = e.fields.iter().map(|(f, x)| (f.to_vec(), x.to_vec()));
                (e.id.to_string(), fields.collect())
            })),
            _ => panic!("chunk of another type"),
        }
    }
    state
}

/// Every snapshot event of a dump or db directory, scanned as of `moment` (unix ms).
pub fn scan_all(
    path: &Path,
    limits: pika_migrate_core::pika::storage::ChunkLimits,
    moment: i64,
) -> Vec<pika_migrate_core::event::Event> {
    let snapshot = pika_migrate_core::pika::storage::Snapshot::open(path).unwrap();
    let mut events = Vec::new();
    let mut seq = 0;
    let now = moment / 1000;
    for db in &snapshot.dbs {
        db.scan(limits, now, &mut seq, &mut |e| {
            events.push(e);
            true
        })
        .unwrap();
    }
    events
}

/// A writable copy of the fixture binlog directory, as `<tmp>/log_db0`.
pub fn binlog_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("log_db0");
    std::fs::create_dir(&copy).unwrap();
    for name in ["manifest", "write2file0", "write2file1"] {
        std::fs::copy(fixture("binlog").join(name), copy.join(name)).unwrap();
    }
    (dir, copy)
}

/// The state the binlog fixture ends in (the keys alive at [`fixture_moment`], at
/// their stored times), as Redis shows it.
pub fn binlog_end_state() -> State {
    binlog_state_at(fixture_moment())
}

/// The binlog fixture's end state as the master holds it at `moment` (its keys alive
/// then, at their stored times), as Redis shows it.
pub fn binlog_state_at(moment: i64) -> State {
    redis_view(&live_at(&load_expected("binlog-expected.jsonl"), moment))
}

/// Asserts that `actual` is the binlog fixture's end state read as of
/// [`fixture_moment`], HyperLogLogs Redis rebuilt from a replayed PFADD aside.
pub fn assert_binlog_end_state(mut actual: State) {
    let mut expected = binlog_end_state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same_as_of(&expected, &actual, fixture_moment());
}

/// Pika stores HyperLogLogs in its own register format; a replayed PFADD makes Redis
/// build its own (`HYLL`) instead. Keys Redis rebuilt that way are left out of the byte
/// comparison; HyperLogLogs copied from a dump stay in it.
pub fn without_replayed_hyperloglogs(expected: &mut State, actual: &mut State) {
    let replayed: Vec<_> = expected
        .keys()
        .filter(|k| matches!(actual.get(*k), Some(KeyState { val: Val::String(v), .. }) if v.starts_with(b"HYLL")))
        .cloned()
        .collect();
    for key in replayed {
        expected.remove(&key);
        actual.remove(&key);
    }
}

/// The XADD 3.5.5 and 4.0.1 logged with an id below `s1:p2:x`'s last (`9999999999999-1`
/// after `9999999999999-6`, each fixture's `binlog-forms.md`) is refused by Redis, as by
/// Pika's own replica: checks that Redis holds `s1:p2:x` without that one entry, every
/// other entry (ids and fields) as the master showed it, then sets the key aside.
pub fn without_the_refused_xadd(expected: &mut State, actual: &mut State) {
    let x = (b"s1:p2:x".to_vec(), "stream".to_owned());
    let (Some(want), Some(got)) = (expected.remove(&x), actual.remove(&x)) else {
        panic!("s1:p2:x is missing on one side");
    };
    let (Val::Stream(want), Val::Stream(got)) = (want.val, got.val) else {
        panic!("s1:p2:x is not a stream on both sides");
    };
    let refused: Vec<_> = want.iter().filter(|e| !got.contains(e)).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "9999999999999-1");
    assert_eq!(want.len(), got.len() + 1);
}

/// A binlog directory of `items`, framed as Pika writes it: one full-type record each
/// (3-byte length, 4-byte time, type 1), then the manifest naming the end.
pub fn write_binlog(dir: &std::path::Path, items: &[&[&[u8]]]) {
    let timed: Vec<(u32, &[&[u8]])> = items.iter().map(|argv| (1_700_000_000, *argv)).collect();
    write_binlog_at(dir, &timed);
}

/// The same with each item's own time (`exec_time`, unix seconds).
pub fn write_binlog_at(dir: &std::path::Path, items: &[(u32, &[&[u8]])]) {
    let mut file = Vec::new();
    for (n, (exec_time, argv)) in items.iter().enumerate() {
        let item = pika_migrate_core::pika::binlog::BinlogItem {
            exec_time: *exec_time,
            term: 0,
            logic_id: n as u64 + 1,
            filenum: 0,
            offset: file.len() as u64,
            argv: argv
                .iter()
                .map(|a| bytes::Bytes::copy_from_slice(a))
                .collect(),
        }
        .encode();
        file.extend_from_slice(&(item.len() as u32).to_le_bytes()[..3]);
        file.extend_from_slice(&exec_time.to_le_bytes());
        file.push(1);
        file.extend_from_slice(&item);
    }
    let mut manifest = vec![0u8; 64];
    manifest[4..12].copy_from_slice(&(file.len() as u64).to_le_bytes());
    std::fs::write(dir.join("write2file0"), file).unwrap();
    std::fs::write(dir.join("manifest"), manifest).unwrap();
}

/// Pika's `log/` under `dir` with a `log_db<N>/` per database: `SET k <value>` and
/// `INCR n` in each.
pub fn write_log_dir(dir: &Path, dbs: &[(u32, &str)]) -> PathBuf {
    let log = dir.join("log");
    for (db, value) in dbs {
        let path = log.join(format!("log_db{db}"));
        std::fs::create_dir_all(&path).unwrap();
        write_binlog(
            &path,
            &[&[b"SET", b"k", value.as_bytes()], &[b"INCR", b"n"]],
        );
    }
    log
}

/// The text Chromium renders for `url` once its scripts ran (tags stripped).
pub fn rendered_text(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("chromium must be installed (scripts/install-deps --test)");
    assert!(out.status.success(), "chromium failed");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    // The body only, tags out, spaces folded.
    let body = dom.split_once("<body>").map_or(dom.as_str(), |(_, b)| b);
    let body = body.split("<script").next().unwrap_or(body);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The fixture's binlog replayed by the real binary into a fresh Redis, with a status
/// endpoint: what the status, page and monitoring tests look at. `source_extra` and
/// `status_extra` add two-space indented lines to the source and to `status:`.
pub struct ReplayWithStatus {
    pub redis: RedisServer,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub pipeline: PathBuf,
    pub tool: Child,
}

pub fn replay_with_status(source_extra: &str, status_extra: &str) -> ReplayWithStatus {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "source:\n{}\n{source_extra}sinks:\n  - type: redis\n    url: {}\nstatus:\n  listen: 127.0.0.1:{port}\n{status_extra}",
        binlog_source(None),
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let tool = Command::new(bin())
        .args(["run", "-c", pipeline.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ReplayWithStatus {
        redis,
        dir,
        port,
        pipeline,
        tool,
    }
}
