//! The mock Pika master (`common::pika_master`) against what a real 3.3.6 master did:
//! a replica built from the core request builders streams the fixture binlog with exact
//! acks, receives a full sync through a real `rsync --daemon`, and meets each refusal.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::pika_master::{MasterOptions, PikaMaster};
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::binlog::{BinlogItem, BinlogReader, ReadOutcome};
use pika_migrate_core::pika::repl::frame;
use pika_migrate_core::pika::repl::proto::{self, StatusCode, TrySyncReplyCode};
use pika_migrate_core::pika::repl::requests::{self, Announce};
use prost::Message;

/// A replica's one connection to the master's replication port.
struct Replica {
    me: Announce,
    stream: TcpStream,
    buf: BytesMut,
}

impl Replica {
    fn connect(master: &PikaMaster, me: &Announce) -> Replica {
        let stream =
            TcpStream::connect(("127.0.0.1", master.port() + 2000)).expect("replication port");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Replica {
            me: me.clone(),
            stream,
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, req: &proto::InnerRequest) {
        let mut out = Vec::new();
        frame::encode(&mut out, &req.encode_to_vec());
        self.stream.write_all(&out).expect("send a request");
    }

    /// The next response; `None` once the master closed the connection.
    fn recv(&mut self) -> Option<proto::InnerResponse> {
        loop {
            if let Some(body) = frame::decode(&mut self.buf, frame::MAX_FRAME).expect("frame") {
                return Some(proto::InnerResponse::decode(body).expect("an InnerResponse"));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no response from the master: {e}"),
            }
        }
    }

    /// Every frame that arrives until the master has been silent for `quiet`.
    fn until_quiet(&mut self, quiet: Duration) -> Vec<proto::InnerResponse> {
        self.stream.set_read_timeout(Some(quiet)).expect("timeout");
        let mut got = Vec::new();
        loop {
            while let Some(body) = frame::decode(&mut self.buf, frame::MAX_FRAME).expect("frame") {
                got.push(proto::InnerResponse::decode(body).expect("an InnerResponse"));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the master closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        got
    }

    fn call(&mut self, req: &proto::InnerRequest) -> proto::InnerResponse {
        self.send(req);
        self.recv().expect("a reply")
    }

    /// Receives `n` items, acking each response from its first item to its last exactly
    /// as sent and answering keepalives with a ping.
    fn items(&mut self, session: i32, n: usize) -> Vec<(proto::BinlogOffset, Bytes)> {
        let mut got = Vec::new();
        while got.len() < n {
            let r = self.recv().expect("binlog pushes");
            assert_eq!(r.r#type, proto::Type::BinlogSync as i32);
            let items: Vec<_> = r
                .binlog_sync
                .iter()
                .filter(|e| !e.binlog.is_empty())
                .collect();
            let Some(first) = items.first() else {
                self.send(&requests::ping(&self.me, 0, session));
                continue;
            };
            let last = items[items.len() - 1];
            let ack = requests::binlog_ack(
                &self.me,
                0,
                session,
                &first.binlog_offset,
                &last.binlog_offset,
            );
            self.send(&ack);
            got.extend(items.iter().map(|e| {
                assert_eq!(e.session_id, session);
                (e.binlog_offset.clone(), e.binlog.clone())
            }));
        }
        got
    }
}

fn announce(port: u16) -> Announce {
    Announce {
        ip: "127.0.0.1".into(),
        port,
    }
}

fn at(filenum: u32, offset: u64) -> BinlogOffset {
    BinlogOffset::new(filenum, offset)
}

fn fixture_items() -> Vec<(BinlogOffset, BinlogItem)> {
    let mut reader = BinlogReader::open(&common::fixture("binlog"), None).expect("fixture");
    let mut out = Vec::new();
    while let ReadOutcome::Entry(e) = reader.read_next().expect("fixture item") {
        out.push((e.end, e.item));
    }
    out
}

/// Acks travel asynchronously: poll for their effect.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn try_sync_reply(r: &proto::InnerResponse) -> &proto::TrySyncResponse {
    r.try_sync.as_ref().expect("a try_sync reply")
}

#[test]
fn streams_the_fixture_binlog_then_new_writes_with_exact_acks() {
    let master = PikaMaster::start(MasterOptions::default());
    let me = announce(9231);
    let mut r = Replica::connect(&master, &me);

    let meta = r.call(&requests::meta_sync(&me, None));
    assert_eq!(meta.code, StatusCode::Ok as i32);
    let tables = &meta.meta_sync.as_ref().expect("meta_sync").tables_info;
    assert_eq!(tables.len(), 1);
    assert_eq!(
        (tables[0].table_name.as_str(), tables[0].partition_num),
        ("db0", 1)
    );

    let reply = r.call(&requests::try_sync(&me, 0, at(0, 0)));
    let t = try_sync_reply(&reply);
    assert_eq!(t.reply_code, TrySyncReplyCode::Ok as i32);
    assert_eq!(t.session_id, Some(0));
    let pos = t.binlog_offset.clone().expect("master position");
    assert_eq!((pos.filenum, pos.offset, pos.term), (1, 542923, None));
    assert_eq!(master.position(), at(1, 542923));

    r.send(&requests::binlog_sync_first(&me, 0, 0, at(0, 0)));
    let expected = fixture_items();
    let got = r.items(0, expected.len());
    assert_eq!(got.len(), expected.len());
    for (i, ((sent_at, bytes), (end, item))) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            (sent_at.filenum, sent_at.offset),
            (end.filenum, end.offset),
            "item {i}"
        );
        assert_eq!(sent_at.term, Some(item.term), "item {i}");
        assert_eq!(sent_at.index, Some(item.logic_id), "item {i}");
        assert_eq!(&BinlogItem::decode(bytes).expect("item"), item, "item {i}");
    }
    wait_for("the last ack", || master.acked() == Some(at(1, 542923)));
    assert_eq!(master.replicas(), vec!["127.0.0.1:9231".to_string()]);

    let ends: Vec<BinlogOffset> = (0..3)
        .map(|i| master.write(&[b"SET", format!("k{i}").as_bytes(), b"v"]))
        .collect();
    assert!(ends[0] > at(1, 542923) && ends[0] < ends[1] && ends[1] < ends[2]);
    let new = r.items(0, 3);
    for (i, (sent_at, bytes)) in new.iter().enumerate() {
        assert_eq!(
            (sent_at.filenum, sent_at.offset),
            (ends[i].filenum, ends[i].offset)
        );
        let item = BinlogItem::decode(bytes).expect("new item");
        assert_eq!(item.logic_id, 1431 + i as u64);
        assert_eq!(sent_at.index, Some(item.logic_id));
        assert_eq!(item.argv[1].as_ref(), format!("k{i}").as_bytes());
    }
    wait_for("the ack of the writes", || master.acked() == Some(ends[2]));

    // Idle and all acked: a keepalive exactly like the captured one, answered by a ping.
    let keepalive = r.recv().expect("a keepalive within ~2 s");
    assert_eq!(keepalive.binlog_sync.len(), 1);
    let k = &keepalive.binlog_sync[0];
    assert!(k.binlog.is_empty());
    assert_eq!(
        k.binlog_offset,
        proto::BinlogOffset {
            filenum: 0,
            offset: 0,
            term: Some(0),
            index: Some(0)
        }
    );
    assert_eq!(
        keepalive.encode_to_vec().len(),
        29,
        "the captured keepalive's size"
    );
    r.send(&requests::ping(&me, 0, 0));
}

/// A real `rsync --daemon` set up as a Pika replica sets up its own (module `document`).
struct RsyncDaemon {
    child: Child,
    dir: tempfile::TempDir,
    announced: Announce,
}

impl RsyncDaemon {
    fn start() -> RsyncDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let module = dir.path().join("module");
        for t in ["strings", "hashes", "lists", "sets", "zsets"] {
            std::fs::create_dir_all(module.join("db0").join(t)).expect("module dirs");
        }
        let secrets = dir.path().join("secrets");
        std::fs::write(&secrets, "rsync_user:default\n").expect("secrets");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))
            .expect("secrets mode");
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        // As Pika does: as root the daemon must not switch to `nobody`.
        let root = if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
            "uid = root\ngid = root\n"
        } else {
            ""
        };
        let conf = dir.path().join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "{root}use chroot = no\nmax connections = 10\nlist = no\nstrict modes = no\n\
                 log file = {log}\nauth users = rsync_user\nsecrets file = {secrets}\n\
                 [document]\npath = {module}/\nread only = no\n",
                log = dir.path().join("rsyncd.log").display(),
                secrets = secrets.display(),
                module = module.display(),
            ),
        )
        .expect("rsyncd.conf");
        for _ in 0..10 {
            let port = common::free_port();
            let mut child = Command::new("rsync")
                .arg("--daemon")
                .arg("--no-detach")
                .arg(format!("--config={}", conf.display()))
                .args(["--address=127.0.0.1", &format!("--port={port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("rsync must be installed");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return RsyncDaemon {
                        child,
                        dir,
                        announced: announce(port - 1000),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("rsync --daemon did not start");
    }

    fn db0(&self) -> PathBuf {
        self.dir.path().join("module/db0")
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for t in ["strings", "hashes", "lists", "sets", "zsets"] {
        for e in std::fs::read_dir(root.join(t)).expect("type dir") {
            let e = e.expect("entry");
            let name = format!("{t}/{}", e.file_name().to_string_lossy());
            out.push((name, std::fs::read(e.path()).expect("file")));
        }
    }
    out.sort();
    out
}

#[test]
fn full_sync_pushes_the_dump_with_rsync_and_info_last() {
    let daemon = RsyncDaemon::start();
    let me = daemon.announced.clone();
    let master = PikaMaster::start(MasterOptions::default());
    let mut r = Replica::connect(&master, &me);
    assert_eq!(
        r.call(&requests::meta_sync(&me, None)).code,
        StatusCode::Ok as i32
    );

    let reply = r.call(&requests::db_sync(&me, 0, at(1, 547194)));
    assert_eq!(reply.code, StatusCode::Ok as i32);
    let session = reply.db_sync.expect("db_sync").session_id;
    assert_eq!(session, 0);
    assert_eq!(master.dbsyncs(), 1);

    let info = daemon.db0().join("info");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !info.exists() {
        assert!(Instant::now() < deadline, "no info file after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // `info` comes last: by then every file of the dump is there, whole.
    assert_eq!(
        files_under(&daemon.db0()),
        files_under(&common::fixture("dump/db0"))
    );
    let text = std::fs::read_to_string(&info).expect("info");
    let lines: Vec<&str> = text.lines().collect();
    let port = master.port().to_string();
    assert_eq!(lines, ["0s", "127.0.0.1", port.as_str(), "1", "507340"]);

    // Back to TrySync from the dump's position: same node, same session; the stream
    // resumes where the capture's did.
    let reply = r.call(&requests::try_sync(&me, 0, at(1, 507340)));
    let t = try_sync_reply(&reply);
    assert_eq!(t.reply_code, TrySyncReplyCode::Ok as i32);
    assert_eq!(t.session_id, Some(session));
    r.send(&requests::binlog_sync_first(&me, 0, session, at(1, 507340)));
    let first = &r.items(session, 1)[0].0;
    assert_eq!(
        (first.filenum, first.offset, first.index),
        (1, 507415, Some(1044))
    );
}

#[test]
fn refusals_answer_like_a_real_master() {
    let master = PikaMaster::start(MasterOptions {
        requirepass: Some("secret".into()),
        ..MasterOptions::default()
    });
    let me = announce(9231);
    let mut r = Replica::connect(&master, &me);
    for wrong in [None, Some("wrong")] {
        let reply = r.call(&requests::meta_sync(&me, wrong));
        assert_eq!(reply.code, StatusCode::Error as i32);
        assert_eq!(
            reply.reply.as_deref(),
            Some("Auth with master error, Invalid masterauth")
        );
    }
    let ok = r.call(&requests::meta_sync(&me, Some("secret")));
    assert_eq!(ok.code, StatusCode::Ok as i32);
    let mut other = Replica::connect(&master, &me);
    let again = other.call(&requests::meta_sync(&me, Some("secret")));
    assert_eq!(again.code, StatusCode::Other as i32);
    assert_eq!(again.reply.as_deref(), Some("Slave AlreadyExist"));

    master.purge_before(1);
    let code = |r: &mut Replica, from| {
        try_sync_reply(&r.call(&requests::try_sync(&me, 0, from))).reply_code
    };
    assert_eq!(
        code(&mut r, at(0, 84)),
        TrySyncReplyCode::SyncPointBePurged as i32
    );
    assert_eq!(
        code(&mut r, at(1, 999_999)),
        TrySyncReplyCode::SyncPointLarger as i32
    );
    assert_eq!(code(&mut r, at(1, 507_341)), TrySyncReplyCode::Error as i32);
    let unknown = r.call(&requests::try_sync(&me, 1, at(0, 0)));
    assert_eq!(unknown.code, StatusCode::Error as i32);
    assert_eq!(unknown.reply.as_deref(), Some("Partition not found"));

    // An ack of an offset the master never sent closes the connection.
    assert_eq!(code(&mut r, at(1, 507340)), TrySyncReplyCode::Ok as i32);
    r.send(&requests::binlog_sync_first(&me, 0, 0, at(1, 507340)));
    let push = r.recv().expect("a push");
    let first = push.binlog_sync[0].binlog_offset.clone();
    let bogus = proto::BinlogOffset {
        offset: first.offset + 1,
        ..first.clone()
    };
    r.send(&requests::binlog_ack(&me, 0, 0, &first, &bogus));
    while r.recv().is_some() {}
    assert!(master.replicas().is_empty(), "closing removed the replica");

    // After a cut, the same replica registers again on a new connection.
    let mut r = Replica::connect(&master, &me);
    assert_eq!(
        r.call(&requests::meta_sync(&me, Some("secret"))).code,
        StatusCode::Ok as i32
    );
    master.cut();
    assert!(r.recv().is_none());
    assert!(master.replicas().is_empty());
}

#[test]
fn a_silent_replica_is_dropped_but_its_connection_stays_open() {
    // The 20 s / 2 s timers of a real master, shortened.
    let master = PikaMaster::start(MasterOptions {
        keepalive: Duration::from_millis(100),
        drop_after: Duration::from_millis(500),
        ..MasterOptions::default()
    });
    let me = announce(9231);
    let mut r = Replica::connect(&master, &me);
    r.call(&requests::meta_sync(&me, None));
    let pos = master.position();
    let reply = r.call(&requests::try_sync(&me, 0, pos));
    assert_eq!(try_sync_reply(&reply).session_id, Some(0));
    r.send(&requests::binlog_sync_first(&me, 0, 0, pos));

    // Keepalives, never answered; then nothing at all, not even a new write.
    let before = r.until_quiet(Duration::from_millis(700));
    assert!(
        before.len() >= 2,
        "keepalives before the drop: {}",
        before.len()
    );
    master.write(&[b"SET", b"k", b"v"]);
    assert!(r.until_quiet(Duration::from_millis(500)).is_empty());
    assert_eq!(master.replicas(), vec!["127.0.0.1:9231".to_string()]);

    // On the same connection a TrySync registers the node again, with a new session.
    let reply = r.call(&requests::try_sync(&me, 0, pos));
    assert_eq!(try_sync_reply(&reply).session_id, Some(1));
    r.send(&requests::binlog_sync_first(&me, 0, 1, pos));
    let item = &r.items(1, 1)[0].1;
    assert_eq!(
        BinlogItem::decode(item).expect("item").argv[1].as_ref(),
        b"k"
    );
}

/// One RESP command; the reply as text (bulk strings unwrapped).
fn resp(stream: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd += &format!("${}\r\n{a}\r\n", a.len());
    }
    stream.get_mut().write_all(cmd.as_bytes()).expect("send");
    let mut line = String::new();
    stream.read_line(&mut line).expect("reply");
    let Some(len) = line.trim_end().strip_prefix('$') else {
        return line.trim_end().to_owned();
    };
    let mut body = vec![0; len.parse::<usize>().expect("bulk length") + 2];
    stream.read_exact(&mut body).expect("bulk");
    String::from_utf8_lossy(&body[..body.len() - 2]).into_owned()
}

#[test]
fn info_over_resp_shows_role_and_binlog_offset() {
    let master = PikaMaster::start(MasterOptions {
        requirepass: Some("secret".into()),
        role: "slave",
        ..MasterOptions::default()
    });
    let tcp = TcpStream::connect(("127.0.0.1", master.port())).expect("client port");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut c = BufReader::new(tcp);
    assert_eq!(resp(&mut c, &["PING"]), "-NOAUTH Authentication required.");
    assert_eq!(resp(&mut c, &["AUTH", "nope"]), "-ERR invalid password");
    assert_eq!(resp(&mut c, &["AUTH", "secret"]), "+OK");
    assert_eq!(resp(&mut c, &["PING"]), "+PONG");
    let info = resp(&mut c, &["INFO", "replication"]);
    assert!(
        info.starts_with("# Replication(SLAVE)\r\nrole:slave\r\n"),
        "{info}"
    );
    assert!(
        info.contains("\r\ndb0 binlog_offset=1 542923,safety_purge=none\r\n"),
        "{info}"
    );
    assert!(resp(&mut c, &["INFO"]).contains("pika_version:3.3.6\r\n"));
    assert!(resp(&mut c, &["NOSUCH"]).starts_with("-ERR"));

    let master = PikaMaster::start(MasterOptions::default());
    let mut r = Replica::connect(&master, &announce(9231));
    r.call(&requests::meta_sync(&announce(9231), None));
    let tcp = TcpStream::connect(("127.0.0.1", master.port())).expect("client port");
    let info = resp(&mut BufReader::new(tcp), &["INFO", "replication"]);
    assert!(info.starts_with("# Replication(MASTER)\r\nrole:master\r\nconnected_slaves:1\r\n"));
    assert!(info.contains("slave0:ip=127.0.0.1,port=9231,"), "{info}");
}
