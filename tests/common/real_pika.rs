//! Real Pika masters for tests: the unmodified servers of `PIKA_BIN_DIR` (by default
//! `../shared/tools/pika` beside the clone), started as throwaway masters on free
//! loopback ports, each in its own directory, and read back through the `redis` crate.
//!
//! When the binaries are not there, a test asks [`pika_or_skip`] and skips with one line
//! saying why; with `PIKA_REQUIRED=1` (set by `.ci/run` when `../shared/tools/pika`
//! exists) a missing binary fails the test instead.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{now_ms, parse_score, KeyState, State, Val};

/// One Pika release: its binary and the config template it starts from.
#[derive(Debug, Clone)]
pub struct PikaBin {
    pub version: &'static str,
    pub path: PathBuf,
    template: PathBuf,
}

impl PikaBin {
    /// 3.2, 3.3 and 3.4 take the dump pushed by rsync; 3.5 and 4.0 let us pull it.
    pub fn pushes_dump(&self) -> bool {
        self.version.starts_with("3.2") || self.version.starts_with("3.3")
    }
}

/// Where the Pika binaries are looked for.
pub fn pika_bin_dir() -> PathBuf {
    match std::env::var_os("PIKA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/pika"),
    }
}

/// The Pika `version` (`3.3.6`, …), or why it cannot be had here.
pub fn find_pika(version: &'static str) -> Result<PikaBin, String> {
    let dir = pika_bin_dir();
    let path = dir.join(format!("pika-{version}"));
    let template = match version.get(..3) {
        Some("3.5") => dir.join("pika-3.5.conf.template"),
        Some("4.0") => dir.join("pika-4.0.conf.template"),
        _ => dir.join("pika.conf.template"),
    };
    for needed in [&path, &template] {
        if !needed.is_file() {
            return Err(format!("{} not found (PIKA_BIN_DIR)", needed.display()));
        }
    }
    Ok(PikaBin {
        version,
        path,
        template,
    })
}

/// The Pika `version`, or `None` after saying why the calling test is skipped. Under
/// `PIKA_REQUIRED=1`, a missing binary fails the test.
pub fn pika_or_skip(version: &'static str, test: &str) -> Option<PikaBin> {
    match find_pika(version) {
        Ok(bin) => Some(bin),
        Err(why) => {
            skip(test, &format!("needs a real Pika {version}: {why}"));
            None
        }
    }
}

/// Says, in one line that the test harness does not capture, that `test` is skipped
/// and why; under `PIKA_REQUIRED=1` (CI with the Pika binaries) a skip is a failure.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("PIKA_REQUIRED").is_some_and(|v| v != "0") {
        panic!("{test} {why}, and PIKA_REQUIRED forbids skipping");
    }
    // Straight to the process's stderr: `eprintln!` would be captured with the output
    // of a passing test, and the line never seen.
    let _ = writeln!(std::io::stderr(), "skipped: {test} {why}");
}

/// Settings a test gives its master; the rest come from the template.
#[derive(Debug, Clone)]
pub struct PikaOptions {
    pub password: Option<String>,
    pub databases: u32,
    /// `config-key : value` lines replacing the template's.
    pub settings: Vec<(String, String)>,
}

impl Default for PikaOptions {
    fn default() -> Self {
        PikaOptions {
            password: None,
            databases: 1,
            settings: Vec::new(),
        }
    }
}

impl PikaOptions {
    pub fn password(mut self, p: &str) -> Self {
        self.password = Some(p.to_owned());
        self
    }

    pub fn databases(mut self, n: u32) -> Self {
        self.databases = n;
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A real Pika master in its own directory, on free loopback ports; stopped on drop
/// (with the rsync daemon Pika 3.2/3.3 leaves behind).
pub struct RealPika {
    pub bin: PikaBin,
    pub port: u16,
    pub password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// How long a master may take to answer after being started.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd master may take to exit before it is killed (3.3.6 can hang in
/// its exit path with a replica attached).
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// A client port whose companions are free too: P + 1000 (Pika 3.x's rsync daemon),
/// P + 2000 (replication), P + 10001 (3.5+'s rsync service).
fn free_pika_port() -> u16 {
    loop {
        let p = super::free_port();
        if p >= 50000 {
            continue;
        }
        let free = [1000, 2000, 10001]
            .iter()
            .all(|d| TcpListener::bind(("127.0.0.1", p + d)).is_ok());
        if free {
            return p;
        }
    }
}

impl RealPika {
    pub fn start(bin: &PikaBin, options: PikaOptions) -> RealPika {
        let mut why = String::new();
        // A port found free can be taken before Pika binds it: try a few.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("pika-master-")
                .tempdir()
                .unwrap();
            let port = free_pika_port();
            write_config(bin, dir.path(), port, &options);
            let mut pika = RealPika {
                bin: bin.clone(),
                port,
                password: options.password.clone(),
                dir,
                child: None,
            };
            pika.spawn();
            if pika.wait_up() {
                return pika;
            }
            why = pika.fatal_log();
            pika.stop();
        }
        panic!("Pika {} did not start: {why}", bin.version);
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        let mut command = Command::new(&self.bin.path);
        command
            .arg("-c")
            .arg(self.conf())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // 3.5 and 4.0 refuse to start below maxclients + 5000 open files.
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 65536,
                    rlim_max: 65536,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                Ok(())
            });
        }
        self.child = Some(command.spawn().unwrap());
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("pika.conf")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `127.0.0.1:<client port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_up(&mut self) -> bool {
        let deadline = Instant::now() + START_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 64];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp
                .read(&mut reply)
                .is_ok_and(|n| reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-"))
    }

    /// What Pika wrote to `log/pika.FATAL` (why it would not start), if anything.
    fn fatal_log(&self) -> String {
        let log = self.dir.path().join("log");
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(&log) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains("FATAL") {
                    text += &std::fs::read_to_string(e.path()).unwrap_or_default();
                }
            }
        }
        text + &std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it has not exited in time; and Pika's own rsync daemon.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + STOP_WITHIN;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_leftover_rsync();
    }

    /// `kill -9` of the master (its rsync daemon is killed too).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_leftover_rsync();
    }

    /// Starts the master again on the same ports and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped (or killed) master again on the same ports and directory.
    pub fn start_again(&mut self) {
        self.spawn();
        let up = self.wait_up();
        assert!(up, "Pika did not come back: {}", self.fatal_log());
    }

    /// Pika 3.2/3.3 run `rsync --daemon` on port + 1000, which outlives them; it is found
    /// by its config path on its command line.
    fn kill_leftover_rsync(&self) {
        let mark = self.dir.path().join("dbsync").display().to_string();
        for (pid, cmdline) in processes() {
            if cmdline.contains("rsync") && cmdline.contains(&mark) {
                signal(pid, libc::SIGKILL);
            }
        }
    }

    /// A client of the master (authenticated when it has a password).
    pub fn client(&self) -> redis::Connection {
        self.client_of_db(0)
    }

    pub fn client_of_db(&self, db: u32) -> redis::Connection {
        let auth = self
            .password
            .as_deref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        redis::Client::open(format!("redis://{auth}127.0.0.1:{}/{db}", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// `INFO` (all sections).
    pub fn info(&self) -> String {
        redis::cmd("INFO").query(&mut self.client()).unwrap()
    }

    /// The master's current binlog position of `db` (`INFO replication`).
    pub fn binlog_offset(&self, db: u32) -> (u32, u64) {
        let info = self.info();
        // `db0 binlog_offset=` on 3.2/3.3, `db0:binlog_offset=` on 3.5.
        let prefixes = [
            format!("db{db} binlog_offset="),
            format!("db{db}:binlog_offset="),
        ];
        let line = info
            .lines()
            .find_map(|l| prefixes.iter().find_map(|p| l.strip_prefix(p.as_str())))
            .unwrap_or_else(|| panic!("no db{db} binlog_offset in INFO:\n{info}"));
        let at = line.split(',').next().unwrap();
        let (f, o) = at.split_once(' ').unwrap();
        (f.parse().unwrap(), o.parse().unwrap())
    }

    /// The replicas the master lists (`slaveN:ip=…,port=…`), as `ip:port`.
    pub fn replicas(&self) -> Vec<String> {
        self.info()
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("ip="))
            .filter_map(|l| {
                let field = |name: &str| {
                    l.split(',')
                        .find_map(|f| f.split_once(&format!("{name}=")).map(|(_, v)| v))
                };
                Some(format!("{}:{}", field("ip")?, field("port")?))
            })
            .collect()
    }

    /// How many full syncs the master has served, counted in its logs across restarts.
    pub fn full_syncs_served(&self) -> usize {
        let log = self.dir.path().join("log");
        let mut n = 0;
        for e in std::fs::read_dir(&log).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `pika.INFO` is a link to the newest file; count the files themselves.
            if name.contains(".log.INFO.") {
                let text = std::fs::read(e.path()).unwrap_or_default();
                n += String::from_utf8_lossy(&text)
                    .matches("Handle DBSync Request Success")
                    .count();
            }
        }
        n
    }

    /// Every key of database `db` with its types, values and absolute expiries, as the
    /// master shows them. Pika 3.x can hold one name as several types: each is probed.
    pub fn state_of_db(&self, db: u32) -> State {
        let mut con = self.client_of_db(db);
        let keys: BTreeSet<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
        let mut state = State::new();
        for key in keys {
            // The time of each PTTL: reading a big database takes a while.
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap_or(-1);
            let expire_at_ms = (pttl >= 0).then_some(now_ms() + pttl);
            // 4.0 holds one type per name, and its WRONGTYPE errors quote the name raw:
            // a name that is not UTF-8 makes the client drop the connection, and every
            // later read come back empty. Only the type it names is read.
            let only: Option<String> = self
                .bin
                .version
                .starts_with("4.")
                .then(|| redis::cmd("TYPE").arg(&key).query(&mut con).unwrap());
            for val in values_of(&mut con, &key, only.as_deref()) {
                let t = val.type_name().to_owned();
                // Pika's streams never expire; 4.0.1's PTTL answers 0 for them.
                let expire_at_ms = expire_at_ms.filter(|_| !matches!(val, Val::Stream(_)));
                state.insert((key.clone(), t), KeyState { val, expire_at_ms });
            }
        }
        state
    }

    pub fn state(&self) -> State {
        self.state_of_db(0)
    }
}

/// The values one key name holds, one per type (Pika keeps each type apart); only the
/// type `only` when given.
fn values_of(con: &mut redis::Connection, key: &[u8], only: Option<&str>) -> Vec<Val> {
    // 4.0.1's TYPE names a stream `streams`.
    let read = |t: &str| only.is_none_or(|o| o == t || (t == "stream" && o == "streams"));
    let mut out = Vec::new();
    if read("string") {
        let string: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(con).unwrap_or(None);
        out.extend(string.map(Val::String));
    }
    if read("hash") {
        let hash: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
            .arg(key)
            .query(con)
            .unwrap_or_default();
        out.extend((!hash.is_empty()).then_some(Val::Hash(hash)));
    }
    if read("list") {
        let list: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(con)
            .unwrap_or_default();
        out.extend((!list.is_empty()).then_some(Val::List(list)));
    }
    if read("zset") {
        // ZSCAN, not ZRANGE: Pika 3.3.6's ZRANGE skips a member scored -inf.
        let mut zset = std::collections::BTreeMap::new();
        let mut cursor = 0u64;
        loop {
            let (next, page): (u64, Vec<(Vec<u8>, String)>) = redis::cmd("ZSCAN")
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query(con)
                .unwrap_or_default();
            zset.extend(page.into_iter().map(|(m, s)| (m, parse_score(&s))));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.extend((!zset.is_empty()).then_some(Val::Zset(zset)));
    }
    if read("set") {
        let set: BTreeSet<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(key)
            .query(con)
            .unwrap_or_default();
        out.extend((!set.is_empty()).then_some(Val::Set(set)));
    }
    // 4.0's TYPE says `stream`; XRANGE fails before 3.5 (no streams): no entries.
    if read("stream") {
        let stream = super::xrange(con, key);
        out.extend((!stream.is_empty()).then_some(Val::Stream(stream)));
    }
    out
}

impl Drop for RealPika {
    fn drop(&mut self) {
        self.kill9();
        // A failing test leaves the master's directory (logs, binlog, dumps) to read.
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = writeln!(
                std::io::stderr(),
                "Pika {} master's directory kept: {}",
                self.bin.version,
                dir.keep().display()
            );
        }
    }
}

fn write_config(bin: &PikaBin, dir: &Path, port: u16, options: &PikaOptions) {
    let template = std::fs::read_to_string(&bin.template).unwrap();
    let mut text = template
        .replace("@DIR@", &dir.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@PASS@", options.password.as_deref().unwrap_or(""));
    let mut settings = options.settings.clone();
    settings.push(("databases".into(), options.databases.to_string()));
    // The 3.5/4.0 templates turn on Pika's read cache. On a real 3.5.5, after a client
    // read a 3,000-element list ("can not load key, because item size:3000 beyond max
    // item size:2048"), its cache-load thread spun at 100% CPU and the server stopped
    // answering clients: the tests read every key back. The replica never reads keys.
    if template.contains("cache-model") {
        settings.push(("cache-model".into(), "0".into()));
    }
    for (key, value) in settings {
        let line = format!("{key} : {value}");
        let mut found = false;
        text = text
            .lines()
            .map(|l| {
                let is_it = l
                    .split_once(':')
                    .is_some_and(|(k, _)| k.trim() == key && !l.trim_start().starts_with('#'));
                if is_it {
                    found = true;
                    line.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        if !found {
            text.push_str(&line);
            text.push('\n');
        }
    }
    std::fs::write(dir.join("pika.conf"), text).unwrap();
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: a plain syscall on a pid this test started (or found by its own paths).
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Every process as (pid, command line).
pub fn processes() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
    }
    found
}

fn run(con: &mut redis::Connection, argv: &[&str]) {
    let _: redis::Value = super::tool::command_of(
        &argv
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )
    .query(con)
    .unwrap();
}

/// Data that differs per database: `db` in every value, and `shared` a string in db0, a
/// hash in db1 and a list in db2.
pub fn fill_db(pika: &RealPika, db: u32, round: &str) {
    let mut con = pika.client_of_db(db);
    let tag = format!("{round}-db{db}");
    for i in 0..40 {
        run(&mut con, &["SET", &format!("s:{i}"), &format!("{tag}-{i}")]);
        run(
            &mut con,
            &["HSET", &format!("h:{}", i % 5), &format!("f{i}"), &tag],
        );
        run(
            &mut con,
            &["RPUSH", &format!("l:{}", i % 4), &format!("{tag}-{i}")],
        );
        run(
            &mut con,
            &["SADD", &format!("set:{}", i % 3), &format!("{tag}-{i}")],
        );
        run(
            &mut con,
            &["ZADD", "z", &format!("{i}.5"), &format!("{tag}-{i}")],
        );
    }
    run(&mut con, &["SETEX", &format!("ttl:{round}"), "7200", &tag]);
    run(&mut con, &["EXPIRE", "h:0", "9000"]);
    match db {
        0 => run(&mut con, &["SET", "shared", &tag]),
        1 => run(&mut con, &["HSET", "shared", "f", &tag]),
        _ => run(&mut con, &["RPUSH", "shared", &tag]),
    }
}

/// Changes after the dump: overwrites, deletes, removals, a new expiry.
pub fn change_db(pika: &RealPika, db: u32) {
    let mut con = pika.client_of_db(db);
    fill_db(pika, db, "after");
    run(&mut con, &["DEL", "s:1"]);
    run(&mut con, &["HDEL", "h:2", "f2"]);
    run(&mut con, &["LPOP", "l:3"]);
    run(&mut con, &["SREM", "set:0", &format!("before-db{db}-3")]);
    run(
        &mut con,
        &["ZINCRBY", "z", "100", &format!("before-db{db}-7")],
    );
    run(&mut con, &["EXPIRE", "s:2", "8000"]);
    run(
        &mut con,
        &["INCRBY", &format!("counter:{db}"), &(db + 10).to_string()],
    );
}

/// Redis holds exactly what the master shows: every key, type, value and expiry.
pub fn assert_same_as_master(pika: &RealPika, redis: &super::RedisServer) {
    super::assert_same(&super::redis_view(&pika.state()), &redis.state());
}

/// Runs `argv`s on `con` as one pipeline.
pub fn pipeline(con: &mut redis::Connection, argvs: impl IntoIterator<Item = Vec<Vec<u8>>>) {
    let mut pipe = redis::pipe();
    for argv in argvs {
        pipe.add_command(super::tool::command_of(&argv)).ignore();
    }
    let () = pipe.query(con).unwrap();
}

/// `n` keys of every type (some with expiries, a few big ones) under `pre:`, so a dump
/// has something of each to carry.
pub fn preload(pika: &RealPika, n: usize) {
    let mut con = pika.client();
    let s = |x: &str| x.as_bytes().to_vec();
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut argvs = Vec::new();
        for &i in chunk {
            let argv: Vec<String> = match i % 6 {
                0 => vec!["SET".into(), format!("pre:s:{i}"), format!("value {i}")],
                1 => vec![
                    "SETEX".into(),
                    format!("pre:t:{i}"),
                    "7200".into(),
                    format!("t{i}"),
                ],
                2 => vec![
                    "HMSET".into(),
                    format!("pre:h:{i}"),
                    "a".into(),
                    format!("{i}"),
                    "b".into(),
                    "x".into(),
                ],
                3 => vec![
                    "RPUSH".into(),
                    format!("pre:l:{i}"),
                    "1".into(),
                    "2".into(),
                    format!("{i}"),
                ],
                4 => vec![
                    "SADD".into(),
                    format!("pre:set:{i}"),
                    "m1".into(),
                    format!("m{i}"),
                ],
                _ => vec![
                    "ZADD".into(),
                    format!("pre:z:{i}"),
                    "1.5".into(),
                    "a".into(),
                    format!("{i}"),
                    "b".into(),
                ],
            };
            argvs.push(argv.iter().map(|a| s(a)).collect());
        }
        pipeline(&mut con, argvs);
    }
    let big_hash = (0..2000).flat_map(|f| [format!("f{f}"), format!("v{f}")]);
    let mut hmset = vec![s("HMSET"), s("pre:bighash")];
    hmset.extend(big_hash.map(String::into_bytes));
    let mut rpush = vec![s("RPUSH"), s("pre:biglist")];
    rpush.extend((0..3000).map(|i| format!("item{i}").into_bytes()));
    pipeline(
        &mut con,
        [hmset, rpush, vec![s("EXPIRE"), s("pre:bighash"), s("9000")]],
    );
}

/// A small random generator for test timings; the seed is printed so a failure can be
/// replayed.
pub struct Dice(u64);

impl Dice {
    pub fn new(test: &str) -> Dice {
        let seed = std::env::var("TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_ms() as u64);
        eprintln!("{test}: TEST_SEED={seed}");
        Dice(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `n` strings of 1 KiB random bytes (`rnd:<i>`), which no compression shrinks.
pub fn incompressible(pika: &RealPika, dice: &mut Dice, n: usize) {
    let mut con = pika.client();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let values: Vec<_> = chunk
            .iter()
            .map(|i| {
                let v: Vec<u8> = (0..1024).map(|_| dice.below(256) as u8).collect();
                vec![b"SET".to_vec(), format!("rnd:{i}").into_bytes(), v]
            })
            .collect();
        pipeline(&mut con, values);
    }
}
