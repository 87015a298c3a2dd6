//! A mock Pika 3.3 master for integration tests: std threads and sockets only.
//!
//! What it models (shared/docs/pika-internals.md §1–2, checked against the fixture capture):
//! - a client port `P` (RESP: `AUTH`, `PING`, `INFO [server|replication]`) and the
//!   replication port `P + 2000`, where every message is a 4-byte big-endian length and a
//!   protobuf `InnerRequest` / `InnerResponse`;
//! - MetaSync (auth, "Slave AlreadyExist"), TrySync (larger / purged / not a boundary /
//!   ok), DBSync (the fixture dump pushed with the real `rsync` client to the replica's
//!   daemon at its announced port + 1000, `info` last), BinlogSync streaming with a
//!   per-replica window of unacked items, exact-offset acks (a bad ack closes the
//!   connection), 2 s keepalives and the 20 s silent drop;
//! - the binlog of db0 = every item of the fixture `binlog/` with its real end offset,
//!   followed by items injected with [`PikaMaster::write`], laid out as Pika lays out
//!   physical records (so injected offsets are what a real master would report).
//!
//! Simplifications, each a choice a test can rely on:
//! - the dump is always the fixture's (taken at 1:507340). A real master re-dumps when
//!   the dump's binlog file is gone; here, once writes have rotated past file 1 and
//!   `purge_before(2)` removed it, a full sync still lands at 1:507340 and the following
//!   TrySync gets kSyncPointBePurged (the "purged during a full sync" loop of §2.5);
//! - its `info` names this master (127.0.0.1 and port `P`), as a dump taken by it would;
//! - only db0 has data: with `databases > 1` the other DBs have an empty binlog (at 0:0)
//!   and a DBSync on them is answered but nothing is pushed;
//! - sharding mode only changes MetaSync's `classic_mode`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::binlog::{
    BinlogItem, BinlogReader, ReadOutcome, BLOCK_SIZE, RECORD_HEADER_LEN,
};
use pika_migrate_core::pika::repl::frame;
use pika_migrate_core::pika::repl::proto::{self, StatusCode, TrySyncReplyCode, Type};
use prost::Message;

use super::{fixture, free_port};

/// `binlog-file-size` of the fixture master (1 MiB).
const FILE_SIZE: u64 = 1 << 20;
/// Items per BinlogSync response (`kBinlogSendBatchNum`).
const BATCH: usize = 100;
/// The dump's type directories, in the fixed order of the `--delete` pass.
const TYPES: [&str; 5] = ["strings", "hashes", "lists", "sets", "zsets"];

pub struct MasterOptions {
    /// MetaSync `auth` and RESP `AUTH` must equal it; also the rsync password.
    pub requirepass: Option<String>,
    /// false = sharding mode (only MetaSync's `classic_mode` changes).
    pub classic_mode: bool,
    /// MetaSync lists db0..db{N-1}; only db0 has data.
    pub databases: u32,
    /// INFO replication `role:` (`master`, `slave`, `master&&slave`).
    pub role: &'static str,
    /// INFO server `pika_version:`.
    pub version: String,
    /// `sync-window-size`: most items sent and not yet acked.
    pub window: usize,
    /// Send silence after which an all-acked replica gets a keepalive (`kSendKeepAliveTimeout`).
    pub keepalive: Duration,
    /// Request silence after which a replica is dropped (`kRecvKeepAliveTimeout`).
    pub drop_after: Duration,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            requirepass: None,
            classic_mode: true,
            databases: 1,
            role: "master",
            version: "3.3.6".into(),
            window: 9000,
            keepalive: Duration::from_secs(2),
            drop_after: Duration::from_secs(20),
        }
    }
}

/// A running mock master; dropping it stops every thread and closes every socket.
pub struct PikaMaster {
    shared: Arc<Shared>,
}

struct Shared {
    opts: MasterOptions,
    port: u16,
    state: Mutex<State>,
    /// Wakes pushers: new items, acks, new streams, closed connections.
    wake: Condvar,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Pika runs dumps and their pushes on one background thread: one at a time.
    push_lock: Mutex<()>,
    tmp: tempfile::TempDir,
}

#[derive(Default)]
struct State {
    dbs: Vec<Db>,
    /// The master's slave list (MetaSync): `ip:port` → the connection it came on.
    slaves: BTreeMap<String, u64>,
    conns: HashMap<u64, Conn>,
    clients: HashMap<u64, TcpStream>,
    next_conn: u64,
    dbsyncs: usize,
    acked: Option<BinlogOffset>,
    push_delay: Duration,
    /// Sends nothing on the replication connections (no pushes, no keepalives): a
    /// master gone silent without closing, which a real one cannot be made to be.
    muted: bool,
    /// The next push starts with the item pushed last, sent a second time: what a
    /// replica must not apply twice.
    resend_once: bool,
    /// INFO's `role:` since `set_role` (else the options' role).
    role: Option<&'static str>,
    /// The writable dump copy and the rsync password file, made at the first DBSync.
    dump: Option<(PathBuf, PathBuf)>,
}

struct Conn {
    /// Frames go out whole under this lock (replies and pushes share the socket).
    writer: Arc<Mutex<TcpStream>>,
    /// For shutting the socket down without waiting for a writer.
    handle: TcpStream,
}

struct Item {
    end: BinlogOffset,
    term: u32,
    logic_id: u64,
    bytes: Bytes,
}

/// One partition (classic mode: one per DB) with its binlog and slave nodes.
#[derive(Default)]
struct Db {
    items: Vec<Item>,
    /// Files below this number are purged.
    first_file: u32,
    next_session: i32,
    nodes: BTreeMap<String, SlaveNode>,
}

struct SlaveNode {
    session: i32,
    conn: u64,
    /// Set by the first BinlogSync.
    stream: Option<Stream>,
    last_recv: Instant,
    last_send: Instant,
}

struct Stream {
    /// Index in `Db::items` of the next item to send.
    next: usize,
    /// Items sent and not yet popped: (end offset, acked), like Pika's `SyncWindow`.
    window: VecDeque<(BinlogOffset, bool)>,
}

/// Where an item of `len` bytes written at `start` ends: records of at most one 64 KiB
/// block, each with an 8-byte header; a block tail too short for a header is skipped.
/// (Pika's `Binlog::Produce`; it reproduces every fixture item's end.)
pub fn record_end(start: u64, len: u64) -> u64 {
    let (mut at, mut left) = (start, len);
    loop {
        let room = BLOCK_SIZE - at % BLOCK_SIZE;
        if room < RECORD_HEADER_LEN {
            at += room;
            continue;
        }
        let take = left.min(room - RECORD_HEADER_LEN);
        at += RECORD_HEADER_LEN + take;
        left -= take;
        if left == 0 {
            return at;
        }
    }
}

impl Db {
    fn position(&self) -> BinlogOffset {
        self.items
            .last()
            .map_or(BinlogOffset::new(self.first_file, 0), |i| i.end)
    }

    fn file_exists(&self, filenum: u32) -> bool {
        (self.first_file..=self.position().filenum).contains(&filenum)
    }

    /// Where a reader can start: the start of a file, or the end of an item.
    fn is_boundary(&self, at: BinlogOffset) -> bool {
        self.file_exists(at.filenum)
            && (at.offset == 0 || self.items.binary_search_by(|i| i.end.cmp(&at)).is_ok())
    }

    fn append(&mut self, argv: Vec<Bytes>) -> BinlogOffset {
        let last = self.position();
        let (term, logic_id) = self.items.last().map_or((0, 0), |i| (i.term, i.logic_id));
        let exec_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as u32;
        // The header names the writer's position before the item, even across a rotation.
        let item = BinlogItem {
            exec_time,
            term, // the manifest's term, as the real master keeps writing it
            logic_id: logic_id + 1,
            filenum: last.filenum,
            offset: last.offset,
            argv,
        };
        let bytes = Bytes::from(item.encode());
        // Pika starts a new file before an item once the current one is past the size.
        let start = if last.offset > FILE_SIZE {
            BinlogOffset::new(last.filenum + 1, 0)
        } else {
            last
        };
        let end = BinlogOffset::new(start.filenum, record_end(start.offset, bytes.len() as u64));
        self.items.push(Item {
            end,
            term,
            logic_id: item.logic_id,
            bytes,
        });
        end
    }

    /// The node's existing session, or a new one (`GenSessionId`).
    fn register(&mut self, key: String, conn: u64) -> i32 {
        let next = &mut self.next_session;
        let node = self.nodes.entry(key).or_insert_with(|| {
            *next += 1;
            SlaveNode {
                session: *next - 1,
                conn,
                stream: None,
                last_recv: Instant::now(),
                last_send: Instant::now(),
            }
        });
        node.session
    }
}

fn load_fixture_binlog() -> Vec<Item> {
    let mut reader = BinlogReader::open(&fixture("binlog"), None).expect("fixture binlog");
    let mut items: Vec<Item> = Vec::new();
    while let ReadOutcome::Entry(e) = reader.read_next().expect("fixture binlog item") {
        let bytes = Bytes::from(e.item.encode());
        // The layout rules `append` uses hold for every item a real master wrote.
        let prev = items.last().map_or(BinlogOffset::default(), |i| i.end);
        assert_eq!((e.item.filenum, e.item.offset), (prev.filenum, prev.offset));
        assert_eq!(e.start.filenum > prev.filenum, prev.offset > FILE_SIZE);
        assert_eq!(record_end(e.start.offset, bytes.len() as u64), e.end.offset);
        items.push(Item {
            end: e.end,
            term: e.item.term,
            logic_id: e.item.logic_id,
            bytes,
        });
    }
    items
}

fn node_key(node: &proto::Node) -> String {
    format!("{}:{}", node.ip, node.port)
}

fn offset_of(o: &proto::BinlogOffset) -> BinlogOffset {
    BinlogOffset::new(o.filenum, o.offset)
}

fn response(t: Type, code: StatusCode) -> proto::InnerResponse {
    proto::InnerResponse {
        r#type: t as i32,
        code: code as i32,
        ..Default::default()
    }
}

fn framed(msg: &proto::InnerResponse) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(&mut out, &msg.encode_to_vec());
    out
}

/// A BinlogSync response, as the capture shows them: one entry per item, the item's END
/// offset with term and index; a keepalive is one entry with 0:0 (term 0, index 0) and
/// empty bytes.
fn binlog_response(
    table: &str,
    session: i32,
    entries: &[(BinlogOffset, u32, u64, Bytes)],
) -> Vec<u8> {
    let mut r = response(Type::BinlogSync, StatusCode::Ok);
    r.binlog_sync = entries
        .iter()
        .map(|(at, term, index, bytes)| proto::BinlogSyncResponse {
            partition: proto::Partition {
                table_name: table.into(),
                partition_id: 0,
            },
            binlog_offset: proto::BinlogOffset {
                filenum: at.filenum,
                offset: at.offset,
                term: Some(*term),
                index: Some(*index),
            },
            binlog: bytes.clone(),
            session_id: session,
        })
        .collect();
    framed(&r)
}

impl PikaMaster {
    /// Loads the fixture binlog into db0 and starts listening on `P` and `P + 2000`.
    pub fn start(opts: MasterOptions) -> PikaMaster {
        assert!(opts.databases >= 1, "a Pika has at least db0");
        let (client, repl, port) = bind_pair();
        let mut dbs: Vec<Db> = (0..opts.databases).map(|_| Db::default()).collect();
        dbs[0].items = load_fixture_binlog();
        let shared = Arc::new(Shared {
            opts,
            port,
            state: Mutex::new(State {
                dbs,
                ..State::default()
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            push_lock: Mutex::new(()),
            tmp: tempfile::tempdir().expect("temp dir"),
        });
        shared.spawn(move |sh| sh.accept_loop(client, false));
        shared.spawn(move |sh| sh.accept_loop(repl, true));
        PikaMaster { shared }
    }

    /// The client (RESP) port; replication is on `port() + 2000`.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Appends a write to db0's binlog (pushed to streaming replicas); returns its end.
    pub fn write(&self, argv: &[&[u8]]) -> BinlogOffset {
        let argv = argv.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let end = self.shared.lock().dbs[0].append(argv);
        self.shared.wake.notify_all();
        end
    }

    /// db0's write position: the end of its last item.
    pub fn position(&self) -> BinlogOffset {
        self.shared.lock().dbs[0].position()
    }

    /// Purges db0's binlog files below `filenum` (never the file being written).
    pub fn purge_before(&self, filenum: u32) {
        let mut st = self.shared.lock();
        let db = &mut st.dbs[0];
        db.first_file = db.first_file.max(filenum.min(db.position().filenum));
    }

    /// Closes every replication connection now (the master's close handler runs at once).
    pub fn cut(&self) {
        let ids: Vec<u64> = self.shared.lock().conns.keys().copied().collect();
        for id in ids {
            self.shared.close_conn(id);
        }
    }

    /// A process restart: connections cut, slave list, nodes and session counters gone.
    pub fn restart(&self) {
        self.cut();
        let mut st = self.shared.lock();
        st.slaves.clear();
        for db in &mut st.dbs {
            db.nodes.clear();
            db.next_session = 0;
        }
    }

    /// DBSync requests answered with kOk so far.
    pub fn dbsyncs(&self) -> usize {
        self.shared.lock().dbsyncs
    }

    /// `ip:port` of every replica in the slave list (what INFO replication lists).
    pub fn replicas(&self) -> Vec<String> {
        self.shared.lock().slaves.keys().cloned().collect()
    }

    /// The last db0 offset a replica's acks moved the window past.
    pub fn acked(&self) -> Option<BinlogOffset> {
        self.shared.lock().acked
    }

    /// Pause before each rsync step of a dump push (to kill a replica mid-transfer).
    /// Stops sending anything on replication connections (or starts again).
    pub fn mute(&self, on: bool) {
        self.shared.lock().muted = on;
    }

    /// What INFO says the role is from now on (a master restarted as a replica).
    pub fn set_role(&self, role: &'static str) {
        self.shared.lock().role = Some(role);
    }

    /// The next push repeats the item pushed before it.
    pub fn resend_once(&self) {
        self.shared.lock().resend_once = true;
    }

    pub fn set_push_delay(&self, d: Duration) {
        self.shared.lock().push_delay = d;
    }
}

impl Drop for PikaMaster {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let st = self.shared.lock();
            for c in st.conns.values() {
                let _ = c.handle.shutdown(Shutdown::Both);
            }
            for c in st.clients.values() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        self.shared.wake.notify_all();
        loop {
            let handles = std::mem::take(&mut *self.shared.threads.lock().expect("threads"));
            if handles.is_empty() {
                break;
            }
            for h in handles {
                let _ = h.join();
            }
        }
    }
}

/// A free port `P` with `P + 2000` free too.
fn bind_pair() -> (TcpListener, TcpListener, u16) {
    for _ in 0..100 {
        let p = free_port();
        if p > u16::MAX - 2000 {
            continue;
        }
        if let (Ok(a), Ok(b)) = (
            TcpListener::bind(("127.0.0.1", p)),
            TcpListener::bind(("127.0.0.1", p + 2000)),
        ) {
            return (a, b, p);
        }
    }
    panic!("no free port pair P, P+2000");
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("mock master state")
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn spawn(self: &Arc<Self>, f: impl FnOnce(Arc<Shared>) + Send + 'static) {
        let sh = Arc::clone(self);
        let handle = thread::spawn(move || f(sh));
        let mut threads = self.threads.lock().expect("threads");
        threads.retain(|h| !h.is_finished());
        threads.push(handle);
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener, repl: bool) {
        // Polling keeps shutdown simple: no thread ever blocks in accept.
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        while !self.stopped() {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_nodelay(true);
                    if repl {
                        self.spawn(move |sh| sh.serve_repl(stream));
                    } else {
                        self.spawn(move |sh| sh.serve_client(stream));
                    }
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Registers a socket for shutdown; `None` once the master is stopping.
    fn add_conn(&self, stream: &TcpStream, client: bool) -> Option<u64> {
        let mut st = self.lock();
        if self.stopped() {
            return None;
        }
        st.next_conn += 1;
        let id = st.next_conn;
        let handle = stream.try_clone().ok()?;
        if client {
            st.clients.insert(id, handle);
        } else {
            let writer = Arc::new(Mutex::new(stream.try_clone().ok()?));
            st.conns.insert(id, Conn { writer, handle });
        }
        Some(id)
    }

    /// The close handler: the slave list entry and the slave nodes tied to it go.
    fn close_conn(&self, id: u64) {
        let mut st = self.lock();
        if let Some(c) = st.conns.remove(&id) {
            let _ = c.handle.shutdown(Shutdown::Both);
        }
        let gone: Vec<String> = st
            .slaves
            .iter()
            .filter(|(_, c)| **c == id)
            .map(|(k, _)| k.clone())
            .collect();
        st.slaves.retain(|_, c| *c != id);
        for db in &mut st.dbs {
            db.nodes.retain(|k, n| n.conn != id && !gone.contains(k));
        }
        self.wake.notify_all();
    }

    fn send(&self, conn: u64, msg: &proto::InnerResponse) -> bool {
        let Some(writer) = self.lock().conns.get(&conn).map(|c| c.writer.clone()) else {
            return false;
        };
        let ok = writer
            .lock()
            .expect("writer")
            .write_all(&framed(msg))
            .is_ok();
        ok
    }

    fn serve_repl(self: Arc<Self>, mut stream: TcpStream) {
        let Some(id) = self.add_conn(&stream, false) else {
            return;
        };
        self.spawn(move |sh| sh.pusher(id));
        let mut buf = BytesMut::new();
        let mut chunk = vec![0u8; 64 << 10];
        'conn: loop {
            loop {
                // A frame or message that does not parse closes the connection, as in Pika.
                let body = match frame::decode(&mut buf, frame::MAX_FRAME) {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(_) => break 'conn,
                };
                let keep = match proto::InnerRequest::decode(body) {
                    Ok(req) => self.handle(id, req),
                    Err(_) => false,
                };
                if !keep {
                    break 'conn;
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        self.close_conn(id);
    }

    /// Handles one request; false closes the connection.
    fn handle(self: &Arc<Self>, conn: u64, req: proto::InnerRequest) -> bool {
        match Type::try_from(req.r#type) {
            Ok(Type::MetaSync) => match req.meta_sync {
                Some(m) => self.send(conn, &self.meta_sync(conn, &m)),
                None => false,
            },
            Ok(Type::TrySync) => match req.try_sync {
                Some(t) => self.send(conn, &self.try_sync(conn, &t)),
                None => false,
            },
            Ok(Type::DbSync) => {
                let Some(d) = req.db_sync else { return false };
                let (reply, push) = self.db_sync(conn, &d);
                let sent = self.send(conn, &reply);
                // Pika answers at once; its dump and push follow on a background thread.
                if let Some(db) = push {
                    let (ip, port) = (d.node.ip.clone(), d.node.port + 1000);
                    self.spawn(move |sh| sh.push_dump(db, &ip, port));
                }
                sent
            }
            // A missing sub-message is only logged by Pika.
            Ok(Type::BinlogSync) => req.binlog_sync.is_none_or(|b| self.binlog_sync(&b)),
            _ => true,
        }
    }

    fn db_index(&self, st: &State, table: &str, partition_id: u32) -> Option<usize> {
        let i: usize = table.strip_prefix("db")?.parse().ok()?;
        (partition_id == 0 && table == format!("db{i}") && i < st.dbs.len()).then_some(i)
    }

    fn meta_sync(&self, conn: u64, req: &proto::MetaSyncRequest) -> proto::InnerResponse {
        let pass = self.opts.requirepass.as_deref().filter(|p| !p.is_empty());
        if pass.is_some_and(|p| req.auth.as_deref().unwrap_or("") != p) {
            let mut r = response(Type::MetaSync, StatusCode::Error);
            r.reply = Some("Auth with master error, Invalid masterauth".into());
            return r;
        }
        let mut st = self.lock();
        let key = node_key(&req.node);
        if st.slaves.contains_key(&key) {
            let mut r = response(Type::MetaSync, StatusCode::Other);
            r.reply = Some("Slave AlreadyExist".into());
            return r;
        }
        st.slaves.insert(key, conn);
        let mut r = response(Type::MetaSync, StatusCode::Ok);
        r.meta_sync = Some(proto::MetaSyncResponse {
            classic_mode: self.opts.classic_mode,
            tables_info: (0..st.dbs.len())
                .map(|i| proto::TableInfo {
                    table_name: format!("db{i}"),
                    partition_num: 1,
                    db_instance_num: None,
                })
                .collect(),
            run_id: None,
            replication_id: None,
        });
        r
    }

    fn try_sync(&self, conn: u64, req: &proto::SyncPointRequest) -> proto::InnerResponse {
        let mut st = self.lock();
        let mut r = response(Type::TrySync, StatusCode::Ok);
        let mut t = proto::TrySyncResponse {
            reply_code: TrySyncReplyCode::Error as i32,
            partition: req.partition.clone(),
            binlog_offset: None,
            session_id: None,
        };
        let part = &req.partition;
        match self.db_index(&st, &part.table_name, part.partition_id) {
            None => {
                r.code = StatusCode::Error as i32;
                r.reply = Some("Partition not found".into());
            }
            Some(i) => {
                let db = &mut st.dbs[i];
                let at = offset_of(&req.binlog_offset);
                let pos = db.position();
                // The master's position, file and offset only (as in the capture).
                t.binlog_offset = Some(proto::BinlogOffset {
                    filenum: pos.filenum,
                    offset: pos.offset,
                    term: None,
                    index: None,
                });
                let code = if at > pos {
                    TrySyncReplyCode::SyncPointLarger
                } else if !db.file_exists(at.filenum) {
                    TrySyncReplyCode::SyncPointBePurged
                } else if !db.is_boundary(at) {
                    TrySyncReplyCode::Error
                } else {
                    t.session_id = Some(db.register(node_key(&req.node), conn));
                    TrySyncReplyCode::Ok
                };
                t.reply_code = code as i32;
            }
        }
        r.try_sync = Some(t);
        r
    }

    /// The reply, and the DB whose dump to push.
    fn db_sync(
        &self,
        conn: u64,
        req: &proto::SyncPointRequest,
    ) -> (proto::InnerResponse, Option<usize>) {
        let mut st = self.lock();
        let mut r = response(Type::DbSync, StatusCode::Ok);
        let part = &req.partition;
        let (session, push) = match self.db_index(&st, &part.table_name, part.partition_id) {
            None => {
                r.code = StatusCode::Error as i32;
                (-1, None)
            }
            Some(i) => {
                st.dbsyncs += 1;
                (st.dbs[i].register(node_key(&req.node), conn), Some(i))
            }
        };
        r.db_sync = Some(proto::DbSyncResponse {
            partition: part.clone(),
            session_id: session,
        });
        (r, push)
    }

    /// First send (start streaming), ping, or ack; false closes the connection.
    fn binlog_sync(&self, req: &proto::BinlogSyncRequest) -> bool {
        let mut st = self.lock();
        // Unknown partition or node, or another session: ignored, not refused.
        let Some(i) = self.db_index(&st, &req.table_name, req.partition_id) else {
            return true;
        };
        let db = &mut st.dbs[i];
        let (start, end) = (
            offset_of(&req.ack_range_start),
            offset_of(&req.ack_range_end),
        );
        let valid_start = db.is_boundary(start);
        let next = db.items.partition_point(|it| it.end <= start);
        let Some(node) = db.nodes.get_mut(&node_key(&req.node)) else {
            return true;
        };
        if node.session != req.session_id {
            return true;
        }
        node.last_recv = Instant::now();
        if req.first_send {
            if start != end || !valid_start {
                return false;
            }
            node.stream = Some(Stream {
                next,
                window: VecDeque::new(),
            });
            self.wake.notify_all();
            return true;
        }
        if start == BinlogOffset::default() && end == BinlogOffset::default() {
            return true; // a ping
        }
        // Pika's SyncWindow::Update: both ends must be in the window, start first.
        let Some(stream) = node.stream.as_mut() else {
            return false;
        };
        let find = |at| stream.window.iter().position(|(e, _)| *e == at);
        let (Some(a), Some(b)) = (find(start), find(end)) else {
            return false;
        };
        if a > b {
            return false;
        }
        stream.window.range_mut(a..=b).for_each(|w| w.1 = true);
        let mut acked = None;
        while let Some(&(at, true)) = stream.window.front() {
            acked = Some(at);
            stream.window.pop_front();
        }
        if i == 0 && acked.is_some() {
            st.acked = acked;
        }
        self.wake.notify_all();
        true
    }

    /// One per connection: pushes items and keepalives to the slave nodes tied to it,
    /// and drops the silent ones.
    fn pusher(self: Arc<Self>, conn: u64) {
        let mut st = self.lock();
        loop {
            if self.stopped() {
                return;
            }
            let Some(writer) = st.conns.get(&conn).map(|c| c.writer.clone()) else {
                return;
            };
            let frames = self.due_frames(&mut st, conn);
            if frames.is_empty() {
                st = self
                    .wake
                    .wait_timeout(st, Duration::from_millis(50))
                    .expect("state")
                    .0;
                continue;
            }
            drop(st);
            let mut w = writer.lock().expect("writer");
            if frames.iter().any(|f| w.write_all(f).is_err()) {
                let _ = w.shutdown(Shutdown::Both);
            }
            drop(w);
            st = self.lock();
        }
    }

    fn due_frames(&self, st: &mut State, conn: u64) -> Vec<Vec<u8>> {
        if st.muted {
            return Vec::new();
        }
        let now = Instant::now();
        let opts = &self.opts;
        let mut out = Vec::new();
        let mut st_resend = std::mem::take(&mut st.resend_once);
        for (i, db) in st.dbs.iter_mut().enumerate() {
            let table = format!("db{i}");
            // Silent for too long: removed from the partition; the connection stays open.
            db.nodes
                .retain(|_, n| n.conn != conn || now - n.last_recv < opts.drop_after);
            for node in db.nodes.values_mut().filter(|n| n.conn == conn) {
                if let Some(s) = &mut node.stream {
                    while s.window.len() < opts.window && s.next < db.items.len() {
                        let n = BATCH
                            .min(opts.window - s.window.len())
                            .min(db.items.len() - s.next);
                        let batch = &db.items[s.next..s.next + n];
                        let again = (std::mem::take(&mut st_resend) && s.next > 0)
                            .then(|| &db.items[s.next - 1]);
                        let entries: Vec<_> = again
                            .into_iter()
                            .chain(batch)
                            .map(|it| (it.end, it.term, it.logic_id, it.bytes.clone()))
                            .collect();
                        out.push(binlog_response(&table, node.session, &entries));
                        s.window.extend(batch.iter().map(|it| (it.end, false)));
                        s.next += n;
                        node.last_send = now;
                    }
                }
                // Keepalives only when everything sent is acked (3.3).
                let all_acked = node.stream.as_ref().is_none_or(|s| s.window.is_empty());
                if all_acked && now - node.last_send >= opts.keepalive {
                    let zero = (BinlogOffset::default(), 0, 0, Bytes::new());
                    out.push(binlog_response(&table, node.session, &[zero]));
                    node.last_send = now;
                }
            }
        }
        // Not used yet (nothing new to push): the next push repeats.
        st.resend_once |= st_resend;
        out
    }

    /// The writable dump copy (its `info` naming this master) and the password file.
    fn prepare_dump(&self) -> io::Result<(PathBuf, PathBuf)> {
        if let Some(d) = self.lock().dump.clone() {
            return Ok(d);
        }
        let dump = self.tmp.path().join("dump");
        copy_writable(&fixture("dump"), &dump)?;
        let info = dump.join("db0/info");
        let mut lines: Vec<String> = fs::read_to_string(&info)?
            .lines()
            .map(str::to_owned)
            .collect();
        lines[2] = self.port.to_string();
        fs::write(&info, lines.join("\n") + "\n")?;
        let secret = self.tmp.path().join("rsync.secret");
        let pass = self.opts.requirepass.as_deref().filter(|p| !p.is_empty());
        fs::write(&secret, pass.unwrap_or("default"))?;
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;
        self.lock().dump = Some((dump.clone(), secret.clone()));
        Ok((dump, secret))
    }

    /// Pushes the dump the way `PikaServer::DbSyncSendFile` does; the first failure
    /// stops it, so `info` (the replica's completion signal) only arrives after the rest.
    fn push_dump(self: Arc<Self>, db: usize, ip: &str, port: i32) {
        let _one_at_a_time = self.push_lock.lock().expect("push lock");
        if db != 0 {
            return; // only db0 has a dump
        }
        let (dump, secret) = match self.prepare_dump() {
            Ok(d) => d,
            Err(e) => return eprintln!("mock master: preparing the dump: {e}"),
        };
        let dir = dump.join("db0");
        // `rsync -avP <flag> --password-file=… --port=… db0/<rel> rsync_user@ip::document/db0/<rel>`
        let step = |flag: &str, rel: &str| -> Vec<String> {
            let (from, to) = (
                dir.join(rel),
                format!("rsync_user@{ip}::document/db0/{rel}"),
            );
            let pw = format!("--password-file={}", secret.display());
            let from = format!(
                "{}{}",
                from.display(),
                if rel.ends_with('/') { "/" } else { "" }
            );
            ["-avP", flag, &pw, &format!("--port={port}"), &from, &to]
                .map(String::from)
                .into()
        };
        // Every entry but `info` in directory-listing order, then a `--delete` pass per
        // type directory in a fixed order.
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        let mut steps: Vec<Vec<String>> = entries
            .flatten()
            .filter(|e| e.file_name() != "info")
            .map(|e| {
                let slash = if e.path().is_dir() { "/" } else { "" };
                let rel = format!("{}{slash}", e.file_name().to_string_lossy());
                step("--bwlimit=1048576", &rel)
            })
            .collect();
        steps.extend(TYPES.map(|t| step("--delete", &format!("{t}/"))));
        if !steps.iter().all(|args| self.rsync(args)) {
            return;
        }
        // Pika connects once to learn its own address toward the replica; `info` last.
        if TcpStream::connect((ip, port as u16)).is_ok() {
            self.rsync(&step("--bwlimit=1048576", "info"));
        }
    }

    /// Runs the real rsync client once; killed if the master stops.
    fn rsync(&self, args: &[String]) -> bool {
        let delay = self.lock().push_delay;
        let until = Instant::now() + delay;
        while Instant::now() < until && !self.stopped() {
            thread::sleep(Duration::from_millis(10));
        }
        let mut child = match Command::new("rsync")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mock master: cannot run rsync: {e}");
                return false;
            }
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("mock master: rsync {args:?} failed: {status}");
                    }
                    return status.success();
                }
                Ok(None) if !self.stopped() => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    fn serve_client(self: Arc<Self>, stream: TcpStream) {
        let Some(id) = self.add_conn(&stream, true) else {
            return;
        };
        let mut out = stream;
        let Ok(read_half) = out.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let mut authed = self.opts.requirepass.as_deref().is_none_or(str::is_empty);
        while let Some(argv) = read_command(&mut reader) {
            if argv.is_empty() {
                continue;
            }
            let reply = self.client_command(&argv, &mut authed);
            if out.write_all(reply.as_bytes()).is_err() {
                break;
            }
        }
        self.lock().clients.remove(&id);
    }

    fn client_command(&self, argv: &[Vec<u8>], authed: &mut bool) -> String {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        let pass = self.opts.requirepass.as_deref().filter(|p| !p.is_empty());
        match name.as_str() {
            "auth" => match (pass, argv.get(1)) {
                (None, _) => "-ERR Client sent AUTH, but no password is set\r\n".into(),
                (Some(p), Some(given)) if given.as_slice() == p.as_bytes() => {
                    *authed = true;
                    "+OK\r\n".into()
                }
                _ => "-ERR invalid password\r\n".into(),
            },
            _ if !*authed => "-NOAUTH Authentication required.\r\n".into(),
            "ping" => "+PONG\r\n".into(),
            "info" => {
                let section = argv
                    .get(1)
                    .map(|s| String::from_utf8_lossy(s).to_lowercase());
                let text = self.info(section.as_deref().unwrap_or("default"));
                format!("${}\r\n{text}\r\n", text.len())
            }
            other => format!("-ERR unknown command '{other}'\r\n"),
        }
    }

    fn info(&self, section: &str) -> String {
        let all = matches!(section, "all" | "default");
        let mut parts = Vec::new();
        if all || section == "server" {
            parts.push(format!(
                "# Server\r\npika_version:{}\r\nos:Linux\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nserver_id:1\r\n",
                self.opts.version,
                std::process::id(),
                self.port
            ));
        }
        if all || section == "replication" {
            parts.push(self.info_replication());
        }
        parts.join("\r\n")
    }

    /// §7.2: header and role, the replica lines of a slave, the slave list of a master,
    /// then every DB's binlog position.
    fn info_replication(&self) -> String {
        let st = self.lock();
        let role = st.role.unwrap_or(self.opts.role);
        let header = match role {
            "slave" => "SLAVE",
            "master&&slave" => "Master && SLAVE",
            _ => "MASTER",
        };
        let mut s = format!("# Replication({header})\r\nrole:{role}\r\n");
        if role.contains("slave") {
            s += "master_host:127.0.0.1\r\nmaster_port:9221\r\nmaster_link_status:up\r\n";
            s += "slave_priority:100\r\nslave_read_only:1\r\n";
        }
        if role != "slave" {
            s += &format!("connected_slaves:{}\r\n", st.slaves.len());
            for (n, (key, conn)) in st.slaves.iter().enumerate() {
                let (ip, port) = key.rsplit_once(':').unwrap_or((key, ""));
                // Bytes between the master's position and the last item sent.
                let lag: String = (st.dbs.iter().enumerate())
                    .map(
                        |(i, db)| match db.nodes.get(key).and_then(|n| n.stream.as_ref()) {
                            None => format!("(db{i}:not syncing)"),
                            Some(s) => {
                                let (pos, sent) = (db.position(), s.next.checked_sub(1));
                                let sent =
                                    sent.map_or(BinlogOffset::default(), |k| db.items[k].end);
                                let bytes =
                                    |o: BinlogOffset| u64::from(o.filenum) * FILE_SIZE + o.offset;
                                format!("(db{i}:{})", bytes(pos).saturating_sub(bytes(sent)))
                            }
                        },
                    )
                    .collect();
                s += &format!("slave{n}:ip={ip},port={port},conn_fd={conn},lag={lag}\r\n");
            }
        }
        for (i, db) in st.dbs.iter().enumerate() {
            let p = db.position();
            s += &format!(
                "db{i} binlog_offset={} {},safety_purge=none\r\n",
                p.filenum, p.offset
            );
        }
        s
    }
}

/// `cp -r` then `chmod -R u+w`: the fixtures are read-only.
fn copy_writable(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_writable(&e.path(), &dst)?;
        } else {
            fs::copy(e.path(), &dst)?;
        }
        let mut perm = fs::metadata(&dst)?.permissions();
        perm.set_mode(perm.mode() | 0o200);
        fs::set_permissions(&dst, perm)?;
    }
    Ok(())
}

/// One RESP array (or an inline command); `None` at EOF or on bad input.
fn read_command(r: &mut impl BufRead) -> Option<Vec<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end();
    let Some(count) = line.strip_prefix('*') else {
        return Some(
            line.split_whitespace()
                .map(|w| w.as_bytes().to_vec())
                .collect(),
        );
    };
    let count: usize = count.parse().ok()?;
    (0..count)
        .map(|_| {
            let mut head = String::new();
            r.read_line(&mut head).ok()?;
            let len: usize = head.trim_end().strip_prefix('$')?.parse().ok()?;
            let mut arg = vec![0; len + 2];
            r.read_exact(&mut arg).ok()?;
            arg.truncate(len);
            Some(arg)
        })
        .collect()
}
