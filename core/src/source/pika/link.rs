//! The replication connection to the master's port + 2000. A reader task decodes the
//! master's frames into a small bounded queue (bounded in responses and in bytes); a
//! writer task sends our requests and, on its own, a ping whenever nothing was sent for
//! a few seconds, so the master never hears silence from us (it drops a replica after
//! 20 s), even while a slow sink holds our acks back. A write that fails ends the link,
//! and TCP keepalive notices a peer that vanished without closing.
//!
//! One connection serves every database of a master, as Pika's own replica does: each
//! database has its handle ([`Link::for_db`]), with its own session and queue, and the
//! reader routes each response by the partition it names (a binlog push holding entries
//! of several databases is split). What names none (MetaSync) goes to the first handle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::pika::repl::frame;
use crate::pika::repl::proto::{InnerRequest, InnerResponse, Type};
use crate::pika::repl::requests::{self, Announce};

/// Longest we stay silent towards the master.
pub const PING_EVERY: Duration = Duration::from_secs(3);
/// Responses decoded ahead of the one being processed.
const RESPONSES_AHEAD: usize = 8;
/// Bytes of frames decoded ahead of the one being processed; a frame larger than this
/// is read alone.
const BYTES_AHEAD: usize = 64 << 20;
/// How long a handshake answer may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// TCP keepalive: probes after this much idleness, then every interval, a few times.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;

/// A response with the read-ahead budget it holds until it is taken.
type Queued = (Result<InnerResponse, String>, Option<OwnedSemaphorePermit>);

/// Where the reader delivers each database's responses (by its partition name, `db<N>`),
/// the first handle's queue taking what names none.
#[derive(Default)]
struct Routes {
    first: Option<mpsc::Sender<Queued>>,
    by_name: BTreeMap<String, mpsc::Sender<Queued>>,
}

type SharedRoutes = Arc<Mutex<Routes>>;
/// The databases' sessions the writer pings for.
type Sessions = Arc<Mutex<Vec<(u32, Arc<AtomicI32>)>>>;

/// Aborts the connection's tasks when the last handle goes.
struct Tasks([JoinHandle<()>; 2]);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

pub struct Link {
    requests: mpsc::Sender<InnerRequest>,
    responses: mpsc::Receiver<Queued>,
    /// Set by the writer when a write fails: the link is dead even if nothing arrives.
    broken: watch::Receiver<Option<String>>,
    session: Arc<AtomicI32>,
    me: Announce,
    db: u32,
    last_heard: Instant,
    routes: SharedRoutes,
    sessions: Sessions,
    _tasks: Arc<Tasks>,
}

/// The partition name a database has on the wire.
fn partition_name(db: u32) -> String {
    format!("db{db}")
}

/// Splits a response into one per database it concerns (a binlog push may carry
/// entries of several); `None` for one that names no database.
fn split_by_database(r: InnerResponse) -> Vec<(Option<String>, InnerResponse)> {
    let name = match (&r.db_sync, &r.try_sync) {
        (Some(d), _) => Some(d.partition.table_name.clone()),
        (_, Some(t)) => Some(t.partition.table_name.clone()),
        _ => None,
    };
    if r.binlog_sync.is_empty() || name.is_some() {
        return vec![(name, r)];
    }
    let mut parts: Vec<(Option<String>, InnerResponse)> = Vec::new();
    let mut template = r;
    for entry in std::mem::take(&mut template.binlog_sync) {
        let name = Some(entry.partition.table_name.clone());
        match parts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, part)) => part.binlog_sync.push(entry),
            None => {
                let mut part = template.clone();
                part.binlog_sync.push(entry);
                parts.push((name, part));
            }
        }
    }
    parts
}

/// Delivers `r` to the queues of the databases it concerns. A database without a
/// handle (one we do not follow) is not listened to.
async fn route(routes: &SharedRoutes, r: InnerResponse, permit: OwnedSemaphorePermit) {
    let parts = split_by_database(r);
    let mut permit = Some(permit);
    let count = parts.len();
    for (i, (name, part)) in parts.into_iter().enumerate() {
        let queue = {
            let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
            match &name {
                Some(n) => routes.by_name.get(n).cloned(),
                None => routes.first.clone(),
            }
        };
        // The frame's budget goes with its parts: the last takes what is left.
        let share = if i + 1 == count {
            permit.take()
        } else {
            let n = permit.as_ref().map_or(0, |p| p.num_permits() / count);
            permit.as_mut().and_then(|p| p.split(n))
        };
        if let Some(queue) = queue {
            // A handle dropped meanwhile is no longer listening.
            let _ = queue.send((Ok(part), share)).await;
        }
    }
}

/// Tells every handle the connection is gone.
async fn broadcast(routes: &SharedRoutes, why: String) {
    let queues: Vec<mpsc::Sender<Queued>> = {
        let routes = routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .first
            .iter()
            .chain(routes.by_name.values())
            .cloned()
            .collect()
    };
    for queue in queues {
        let _ = queue.send((Err(why.clone()), None)).await;
    }
}

/// No Nagle delay for our small requests, and TCP keepalive: a master that vanished
/// without closing (a host gone, a cut cable) is noticed within about half a minute.
fn configure(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

impl Drop for Link {
    fn drop(&mut self) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.by_name.remove(&partition_name(self.db));
        drop(routes);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|(_, s)| !Arc::ptr_eq(s, &self.session));
    }
}

impl Link {
    pub async fn connect(addr: &str, me: Announce, db: u32) -> std::io::Result<Link> {
        let stream = tokio::time::timeout(ANSWER_WITHIN, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        configure(&stream)?;
        let (rd, wr) = stream.into_split();
        Ok(Link::over(rd, wr, me, db))
    }

    /// A link over any byte stream (a TCP connection's halves, or a test's).
    pub fn over(
        mut rd: impl AsyncRead + Unpin + Send + 'static,
        mut wr: impl AsyncWrite + Unpin + Send + 'static,
        me: Announce,
        db: u32,
    ) -> Link {
        let session = Arc::new(AtomicI32::new(-1));
        let (req_tx, mut req_rx) = mpsc::channel::<InnerRequest>(16);
        let (resp_tx, resp_rx) = mpsc::channel::<Queued>(RESPONSES_AHEAD);
        let (broken_tx, broken) = watch::channel(None);
        let budget = Arc::new(Semaphore::new(BYTES_AHEAD));
        let routes = SharedRoutes::default();
        {
            let mut r = routes.lock().unwrap_or_else(|e| e.into_inner());
            r.first = Some(resp_tx.clone());
            r.by_name.insert(partition_name(db), resp_tx);
        }
        let sessions: Sessions = Arc::new(Mutex::new(vec![(db, session.clone())]));

        let reader_routes = routes.clone();
        let reader = tokio::spawn(async move {
            let routes = reader_routes;
            let mut buf = BytesMut::with_capacity(64 << 10);
            loop {
                match frame::decode(&mut buf, frame::MAX_FRAME) {
                    Ok(Some(body)) => {
                        // Waits while the frames queued ahead hold the whole budget.
                        let cost = body.len().clamp(1, BYTES_AHEAD) as u32;
                        let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                            return;
                        };
                        match InnerResponse::decode(body) {
                            Ok(r) => route(&routes, r, permit).await,
                            Err(e) => {
                                broadcast(
                                    &routes,
                                    format!("undecodable frame from the master: {e}"),
                                )
                                .await;
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        broadcast(&routes, e.to_string()).await;
                        return;
                    }
                }
                let lost = match rd.read_buf(&mut buf).await {
                    Ok(0) => "the master closed the connection".to_owned(),
                    Ok(_) => continue,
                    Err(e) => format!("connection lost: {e}"),
                };
                broadcast(&routes, lost).await;
                return;
            }
        });

        let ping_sessions = sessions.clone();
        let ping_me = me.clone();
        let writer = tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let batch = match tokio::time::timeout(PING_EVERY, req_rx.recv()).await {
                    Ok(Some(r)) => vec![r],
                    Ok(None) => return,
                    // Quiet for a while: a ping for every database with a session.
                    Err(_) => ping_sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .map(|(db, s)| (*db, s.load(Ordering::Relaxed)))
                        .filter(|(_, session)| *session >= 0)
                        .map(|(db, session)| requests::ping(&ping_me, db, session))
                        .collect(),
                };
                out.clear();
                for request in batch {
                    frame::encode(&mut out, &request.encode_to_vec());
                }
                if out.is_empty() {
                    continue;
                }
                if let Err(e) = wr.write_all(&out).await {
                    broken_tx.send_replace(Some(format!("writing to the master failed: {e}")));
                    return;
                }
            }
        });

        Link {
            requests: req_tx,
            responses: resp_rx,
            broken,
            session,
            me,
            db,
            last_heard: Instant::now(),
            routes,
            sessions,
            _tasks: Arc::new(Tasks([reader, writer])),
        }
    }

    /// A handle for database `db` on the same connection: its own session and queue.
    pub fn for_db(&self, db: u32) -> Link {
        let session = Arc::new(AtomicI32::new(-1));
        let (tx, responses) = mpsc::channel::<Queued>(RESPONSES_AHEAD);
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .insert(partition_name(db), tx);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((db, session.clone()));
        Link {
            requests: self.requests.clone(),
            responses,
            broken: self.broken.clone(),
            session,
            me: self.me.clone(),
            db,
            last_heard: Instant::now(),
            routes: self.routes.clone(),
            sessions: self.sessions.clone(),
            _tasks: self._tasks.clone(),
        }
    }

    /// The database this handle serves.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// The session pings are sent for (after TrySync or DBSync named it).
    pub fn set_session(&self, id: i32) {
        self.session.store(id, Ordering::Relaxed);
    }

    /// A keepalive answer (an ack of nothing) for the current session.
    pub async fn ping(&self) {
        let session = self.session.load(Ordering::Relaxed);
        if session >= 0 {
            let _ = self.send(requests::ping(&self.me, self.db, session)).await;
        }
    }

    pub async fn send(&self, request: InnerRequest) -> Result<(), String> {
        self.requests
            .send(request)
            .await
            .map_err(|_| "the connection to the master is closed".to_owned())
    }

    /// The next response; cancel-safe (usable in `select!`). An error once the link is
    /// broken: the master closed it, a read or a write failed.
    pub async fn recv(&mut self) -> Result<InnerResponse, String> {
        let r = tokio::select! {
            biased;
            r = self.responses.recv() => match r {
                Some((r, _budget)) => r,
                None => Err("the connection to the master is closed".into()),
            },
            why = self.broken.wait_for(Option::is_some) => {
                // The writer ended: it failed (and said why) or was stopped.
                let why = why.ok().and_then(|w| w.clone());
                Err(why.unwrap_or_else(|| "the connection to the master is closed".into()))
            }
        };
        if r.is_ok() {
            self.last_heard = Instant::now();
        }
        r
    }

    /// How long since the master last sent anything.
    pub fn silent_for(&self) -> Duration {
        self.last_heard.elapsed()
    }

    /// Sends `request` and waits for the response of the same type, skipping binlog
    /// pushes and keepalives of an earlier session.
    pub async fn call(&mut self, request: InnerRequest) -> Result<InnerResponse, String> {
        let wanted = request.r#type;
        self.send(request).await?;
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            let r = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| {
                    format!(
                        "no answer to {:?} within {ANSWER_WITHIN:?}",
                        Type::try_from(wanted)
                    )
                })??;
            if r.r#type == wanted {
                return Ok(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Announce {
        Announce {
            ip: "127.0.0.1".into(),
            port: 9231,
        }
    }

    #[tokio::test]
    async fn the_connection_has_tcp_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        configure(&stream).unwrap();
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert!(sock.tcp_nodelay().unwrap());
    }

    /// Writes fail at once; reads never end.
    struct Refusing;

    impl AsyncWrite for Refusing {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_link_though_nothing_arrives() {
        let (_peer, silent) = tokio::io::duplex(64);
        let mut link = Link::over(silent, Refusing, me(), 0);
        link.send(requests::ping(&me(), 0, 1)).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), link.recv())
            .await
            .expect("recv must not wait for a read that never comes")
            .unwrap_err();
        assert!(e.contains("writing to the master failed"), "{e}");
    }

    #[tokio::test]
    async fn frames_read_ahead_are_bounded_in_bytes() {
        let (mut master, ours) = tokio::io::duplex(1 << 20);
        let (_unused, sink) = tokio::io::duplex(64);
        let mut link = Link::over(ours, sink, me(), 0);
        // Frames of 20 MiB each: only as many as fit in the budget are read ahead.
        let body = InnerResponse {
            r#type: Type::BinlogSync as i32,
            reply: Some("x".repeat(20 << 20)),
            ..InnerResponse::default()
        }
        .encode_to_vec();
        let mut frame_bytes = Vec::new();
        frame::encode(&mut frame_bytes, &body);
        let writer = tokio::spawn(async move {
            let mut sent = 0usize;
            for _ in 0..8 {
                if master.write_all(&frame_bytes).await.is_err() {
                    break;
                }
                sent += 1;
            }
            (sent, master)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!writer.is_finished(), "the reader stopped taking frames");
        for _ in 0..8 {
            link.recv().await.unwrap();
        }
        let (sent, _master) = writer.await.unwrap();
        assert_eq!(sent, 8);
    }
}
