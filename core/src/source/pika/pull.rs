//! The pulled full sync of Pika 3.5 ("rsync2"): after DBSync on the replication link,
//! we ask the master's `RsyncService` (its port + 10001) for the dump's file list, then
//! read every file in chunks into the receiving directory, with several readers in
//! parallel over one connection as Pika's own replica does (the master keeps one
//! read-ahead buffer per `reader_index`, 0–3, and answers each reader in turn).
//!
//! Every reply names the dump (`snapshot_uuid`, the MD5 of its `info` file); a reply of
//! another dump means the master took a new one meanwhile, and the transfer starts over.
//! The files completed so far are listed in `work_dir/pulled-db<N>` with the dump they
//! belong to, so a transfer cut short (a `kill -9`) takes up only the missing files when
//! the master still serves the same dump. Chunks go to disk as they arrive: memory holds
//! at most one chunk per reader.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio::task::{JoinHandle, JoinSet};

use crate::pika::repl::frame;
use crate::pika::repl::rsync::{
    file_request, meta_request, RsyncCode, RsyncRequest, RsyncResponse, RsyncType,
};

/// The master's `RsyncService` listens on its client port plus this.
pub const RSYNC2_PORT_SHIFT: u16 = 10001;
/// Readers in parallel; the master has 4 per connection (`kMaxRsyncParallelNum`), and an
/// index above 3 would make it read out of bounds.
pub const READERS: usize = 4;
/// Bytes asked for per request, as Pika's replica asks (`kBytesPerRequest`).
const CHUNK: u64 = 4 << 20;
/// Longest frame accepted: a 4 MiB chunk and its envelope, with room to spare.
const MAX_FRAME: usize = 64 << 20;
/// How long one answer may take before the request is sent again.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Requests in a row left unanswered before the connection is given up.
const UNANSWERED: u32 = 3;
/// While the master's bgsave runs, it answers the file list request with an error
/// (3.5.3+) or not at all (3.5.0–3.5.2): asked again after this long.
const META_RETRY: Duration = Duration::from_secs(1);
/// How long a file list request may go unanswered before it counts as "busy".
const META_WAIT: Duration = Duration::from_secs(3);
/// New dumps taken by the master in one transfer before we give up this attempt.
const RESTARTS: u32 = 5;
/// blackwidow's type databases a 3.5 dump lists (streams are never listed).
const TYPE_DIRS: [&str; 5] = ["strings", "hashes", "lists", "sets", "zsets"];
/// Most instance directories a 4.0 dump may list (`0/ … <db-instance-num - 1>/`);
/// Pika's default is 3, and a name longer than 4 digits is no instance.
const MAX_INSTANCE_DIGITS: usize = 4;

/// A floyd instance directory name (Pika 4.0): a small decimal number.
fn is_instance_dir(dir: &str) -> bool {
    (1..=MAX_INSTANCE_DIGITS).contains(&dir.len()) && dir.bytes().all(|b| b.is_ascii_digit())
}

/// The directories a checked file list puts files in: 3.5's type directories (all
/// five, as the reader needs them) or 4.0's instance directories.
fn dirs_of(names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut dirs: BTreeSet<String> = (names.iter())
        .filter_map(|n| n.split_once('/').map(|(dir, _)| dir.to_owned()))
        .collect();
    if dirs.iter().any(|d| TYPE_DIRS.contains(&d.as_str())) {
        dirs.extend(TYPE_DIRS.iter().map(|t| t.to_string()));
    }
    dirs
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "cannot connect to the master's rsync service at {addr} (master port + 10001): {error}"
    )]
    Connect { addr: String, error: String },
    #[error("the rsync service connection to {addr} broke: {error}")]
    Lost { addr: String, error: String },
    #[error("no answer from the rsync service for {what} after {tries} tries of {secs} s")]
    NoAnswer { what: String, tries: u32, secs: u64 },
    #[error("the master refused {file} at offset {offset} (its dump is gone or unreadable)")]
    Refused { file: String, offset: u64 },
    #[error("the master took {times} new dumps during the transfer; trying again later")]
    DumpKeepsChanging { times: u32 },
    #[error("{file} at offset {offset}: {reason}")]
    BadReply {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("the master lists a dump file {0:?} outside the dump's type directories; refused")]
    BadFileName(String),
    #[error(
        "{path}: its MD5 {md5} is not the dump's snapshot_uuid {uuid} (the MD5 of the master's \
         info): it arrived damaged; the dump will be pulled again"
    )]
    InfoMismatch {
        path: String,
        md5: String,
        uuid: String,
    },
    #[error("{path} at offset {offset}: {error}")]
    Io {
        path: String,
        offset: u64,
        #[source]
        error: std::io::Error,
    },
}

impl PullError {
    /// The file and the error, when a write failed for want of space.
    pub fn disk_full(&self) -> Option<(&str, &std::io::Error)> {
        match self {
            PullError::Io { path, error, .. } if super::disk::is_full(error) => {
                Some((path.as_str(), error))
            }
            _ => None,
        }
    }

    /// Whether trying again cannot help: a master listing files we must not write.
    pub fn is_fatal(&self) -> bool {
        matches!(self, PullError::BadFileName(_))
    }

    fn io(path: &Path, offset: u64, error: std::io::Error) -> PullError {
        PullError::Io {
            path: path.display().to_string(),
            offset,
            error,
        }
    }
}

/// What one pull needs: where from, which database, where to.
#[derive(Debug, Clone)]
pub struct PullPlan {
    /// `host:port` of the master's rsync service.
    pub addr: String,
    pub db: u32,
    /// The database's receiving directory (`work_dir/dbsync/db<N>`).
    pub db_dir: PathBuf,
    /// The list of files completed, with the dump they belong to.
    pub done_list: PathBuf,
    /// Bytes per second at most, over all readers (`pull_rate`).
    pub rate: Option<u64>,
}

/// Holds the readers together to a rate: each chunk received pushes the earliest time
/// of the next request further by its share of a second.
#[derive(Debug)]
struct Pacer {
    rate: u64,
    started: tokio::time::Instant,
    bytes: std::sync::Mutex<u64>,
}

impl Pacer {
    /// How much one request asks for: a tenth of a second's worth (at least 4 KiB), so
    /// the rate holds within a second even for a slow setting.
    fn chunk(rate: Option<u64>) -> u64 {
        rate.map_or(CHUNK, |r| (r / 10).clamp(4096, CHUNK))
    }

    async fn took(&self, n: u64) {
        let total = {
            let mut bytes = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
            *bytes = bytes.saturating_add(n);
            *bytes
        };
        let due = Duration::from_secs_f64(total as f64 / self.rate.max(1) as f64);
        tokio::time::sleep_until(self.started + due).await;
    }
}

/// Pulls the whole dump into `plan.db_dir`; the dump's `snapshot_uuid` once every file,
/// `info` included, is on disk and synced.
pub async fn pull(plan: &PullPlan) -> Result<String, PullError> {
    let mut conn = Conn::open(&plan.addr).await?;
    let mut restarts = 0;
    loop {
        let (uuid, files) = conn.file_list(plan.db).await?;
        let names = check_names(files)?;
        let (todo, count) = {
            let (plan, uuid, names) = (plan.clone(), uuid.clone(), names.clone());
            blocking(move || prepare(&plan, &uuid, &names)).await?
        };
        tracing::info!(
            snapshot = %uuid,
            files = names.len(),
            already_here = names.len() - todo.len(),
            bytes_already_here = count,
            "full sync: pulling the dump from the master's rsync service"
        );
        match conn.fetch_all(plan, &uuid, todo).await {
            Ok(()) => {
                let (plan, checked) = (plan.clone(), uuid.clone());
                blocking(move || verify_info(&plan, &checked)).await?;
                return Ok(uuid);
            }
            Err(Fetch::Changed { now }) => {
                conn = Conn::open(&plan.addr).await?;
                restarts += 1;
                tracing::warn!(was = %uuid, now = %now, "the master took a new dump during the transfer; starting over");
                if restarts >= RESTARTS {
                    return Err(PullError::DumpKeepsChanging { times: restarts });
                }
            }
            Err(Fetch::Failed(e)) => return Err(e),
        }
    }
}

/// Runs file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PullError> + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PullError::Io {
            path: "(file task)".into(),
            offset: 0,
            error: std::io::Error::other(e.to_string()),
        })?
}

/// The names the master lists, each `<type>/<file>` (3.5), `<instance>/<file>` (4.0)
/// or `info`: anything else (a path climbing out, a directory we do not know, both
/// layouts at once) would be written outside the dump or not be one.
fn check_names(files: Vec<String>) -> Result<BTreeSet<String>, PullError> {
    let mut names = BTreeSet::new();
    let (mut by_type, mut by_instance) = (None, None);
    for name in files {
        let ok = name == "info"
            || name.split_once('/').is_some_and(|(dir, file)| {
                let known = if TYPE_DIRS.contains(&dir) {
                    by_type.get_or_insert(name.clone());
                    true
                } else if is_instance_dir(dir) {
                    by_instance.get_or_insert(name.clone());
                    true
                } else {
                    false
                };
                known
                    && !file.is_empty()
                    && !file.contains('/')
                    && file != "."
                    && file != ".."
                    && !file.contains('\0')
            });
        if !ok {
            return Err(PullError::BadFileName(name));
        }
        names.insert(name);
    }
    if let (Some(blackwidow), Some(floyd)) = (by_type, by_instance) {
        return Err(PullError::BadReply {
            file: "(file list)".into(),
            offset: 0,
            reason: format!(
                "the dump's file list mixes a Pika 3.5 type directory ({blackwidow}) and a 4.0 \
                 instance directory ({floyd})"
            ),
        });
    }
    if !names.contains("info") {
        return Err(PullError::BadReply {
            file: "(file list)".into(),
            offset: 0,
            reason: "the dump's file list has no `info`".into(),
        });
    }
    Ok(names)
}

/// Readies the directory for dump `uuid`: the files of an earlier transfer of the same
/// dump that were completed stay, everything else goes. The files still to pull, and
/// the bytes of those kept.
fn prepare(
    plan: &PullPlan,
    uuid: &str,
    names: &BTreeSet<String>,
) -> Result<(Vec<String>, u64), PullError> {
    let done = read_done_list(&plan.done_list, uuid)?;
    let mut kept = 0u64;
    let mut todo = Vec::new();
    let keep: BTreeSet<&String> = names
        .iter()
        .filter(|n| done.contains(*n))
        .filter(|n| match std::fs::metadata(plan.db_dir.join(n)) {
            Ok(m) if m.is_file() => {
                kept = kept.saturating_add(m.len());
                true
            }
            _ => false,
        })
        .collect();
    if keep.is_empty() {
        remove_dir_contents(&plan.db_dir)?;
    } else {
        // Only the files of this dump that were completed remain.
        for dir in dirs_of(names).iter().map(|d| plan.db_dir.join(d)) {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = format!(
                    "{}/{}",
                    dir.file_name().unwrap_or_default().to_string_lossy(),
                    entry.file_name().to_string_lossy()
                );
                if !keep.contains(&name) {
                    remove_path(&entry.path())?;
                }
            }
        }
        if !keep.contains(&"info".to_owned()) {
            remove_path(&plan.db_dir.join("info"))?;
        }
    }
    for d in dirs_of(names) {
        let dir = plan.db_dir.join(d);
        std::fs::create_dir_all(&dir).map_err(|e| PullError::io(&dir, 0, e))?;
    }
    write_done_list(
        &plan.done_list,
        uuid,
        keep.iter().map(|s| s.as_str()).collect(),
    )?;
    todo.extend(names.iter().filter(|n| !keep.contains(n)).cloned());
    Ok((todo, kept))
}

fn remove_path(path: &Path) -> Result<(), PullError> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    r.map_err(|e| PullError::io(path, 0, e))
}

fn remove_dir_contents(dir: &Path) -> Result<(), PullError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                remove_path(&entry.path())?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PullError::io(dir, 0, e)),
    }
}

/// The done list: `snapshot-uuid:<uuid>`, then `file:<name>` per completed file, each
/// line ending in `\n` (a line cut by a crash does not count).
/// Longest `info` we read back: Pika's holds five short lines.
const INFO_MAX: u64 = 64 << 10;

/// The dump's `snapshot_uuid` is the MD5 of its `info` (Pika computes it so), and the
/// info names the binlog position we stream from: one that arrived damaged must not be
/// believed. On a mismatch the done list is emptied, so the next attempt pulls it all.
fn verify_info(plan: &PullPlan, uuid: &str) -> Result<(), PullError> {
    use md5::{Digest, Md5};
    let path = plan.db_dir.join("info");
    let io = |e| PullError::io(&path, 0, e);
    let len = std::fs::metadata(&path).map_err(io)?.len();
    if len > INFO_MAX {
        return Err(PullError::BadReply {
            file: "info".into(),
            offset: 0,
            reason: format!("{len} bytes; a dump's info holds a few lines"),
        });
    }
    let md5 = Md5::digest(std::fs::read(&path).map_err(io)?);
    let md5: String = md5.iter().map(|b| format!("{b:02x}")).collect();
    if md5.eq_ignore_ascii_case(uuid) {
        return Ok(());
    }
    write_done_list(&plan.done_list, uuid, Vec::new())?;
    Err(PullError::InfoMismatch {
        path: path.display().to_string(),
        md5,
        uuid: uuid.to_owned(),
    })
}

fn read_done_list(path: &Path, uuid: &str) -> Result<BTreeSet<String>, PullError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(PullError::io(path, 0, e)),
    };
    let mut lines = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
    if lines.next().map(str::trim_end) != Some(&format!("snapshot-uuid:{uuid}")) {
        return Ok(BTreeSet::new());
    }
    Ok(lines
        .filter_map(|l| l.trim_end_matches('\n').strip_prefix("file:"))
        .map(str::to_owned)
        .collect())
}

fn write_done_list(path: &Path, uuid: &str, done: Vec<&str>) -> Result<(), PullError> {
    let mut text = format!("snapshot-uuid:{uuid}\n");
    for name in done {
        text += &format!("file:{name}\n");
    }
    let io = |e| PullError::io(path, 0, e);
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn append_done(path: &Path, name: &str) -> Result<(), PullError> {
    let io = |e| PullError::io(path, 0, e);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("file:{name}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)
}

/// Why fetching the files stopped.
enum Fetch {
    /// A reply named another dump: the master took a new one.
    Changed {
        now: String,
    },
    Failed(PullError),
}

impl From<PullError> for Fetch {
    fn from(e: PullError) -> Fetch {
        Fetch::Failed(e)
    }
}

type Inbox = mpsc::Receiver<Result<RsyncResponse, String>>;

/// One connection to the rsync service: requests are written in turn by whichever
/// reader has one; a task reads the replies and hands each to the reader it names.
struct Conn {
    addr: String,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    inboxes: Vec<Option<Inbox>>,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, PullError> {
        let connect_error = |error: String| PullError::Connect {
            addr: addr.to_owned(),
            error,
        };
        let stream = tokio::time::timeout(ANSWER_WITHIN, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_error("timed out".into()))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..READERS).map(|_| mpsc::channel(2)).unzip();
        let reader = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 << 10);
            let failed = loop {
                match frame::decode(&mut buf, MAX_FRAME) {
                    Ok(Some(body)) => {
                        let reply = match RsyncResponse::decode(body) {
                            Ok(r) => r,
                            Err(e) => break format!("undecodable reply: {e}"),
                        };
                        // A reply for a reader we never asked through is dropped.
                        let to = usize::try_from(reply.reader_index)
                            .ok()
                            .and_then(|i| senders.get(i));
                        // A reader that finished drops late replies with its inbox.
                        if let Some(to) = to {
                            let _ = to.send(Ok(reply)).await;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => break e.to_string(),
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => break "the master closed the connection".to_owned(),
                    Ok(_) => {}
                    Err(e) => break e.to_string(),
                }
            };
            for to in &senders {
                let _ = to.send(Err(failed.clone())).await;
            }
        });
        Ok(Conn {
            addr: addr.to_owned(),
            writer: Arc::new(Mutex::new(wr)),
            inboxes: inboxes.into_iter().map(Some).collect(),
            reader,
        })
    }

    fn lost(&self, error: String) -> PullError {
        PullError::Lost {
            addr: self.addr.clone(),
            error,
        }
    }

    /// The dump's `snapshot_uuid` and file list, asked for until the master's bgsave is
    /// done. Waits as long as that takes: the caller's transfer timeout bounds it.
    async fn file_list(&mut self, db: u32) -> Result<(String, Vec<String>), PullError> {
        let (writer, addr) = (self.writer.clone(), self.addr.clone());
        let inbox = self.inboxes[0].as_mut().ok_or_else(|| PullError::Lost {
            addr: addr.clone(),
            error: "reader 0 is gone".into(),
        })?;
        let mut busy_since_logged = std::time::Instant::now();
        loop {
            send(&writer, &addr, &meta_request(db)).await?;
            let deadline = tokio::time::Instant::now() + META_WAIT;
            let busy = loop {
                let reply = match tokio::time::timeout_at(deadline, inbox.recv()).await {
                    // 3.5.0–3.5.2 do not answer while the bgsave runs.
                    Err(_) => break "no answer".to_owned(),
                    Ok(None) => return Err(lost(&addr, "the reply reader ended".into())),
                    Ok(Some(Err(e))) => return Err(lost(&addr, e)),
                    Ok(Some(Ok(r))) => r,
                };
                if reply.r#type != RsyncType::Meta as i32 {
                    continue; // a late file reply of an earlier round
                }
                if reply.code == RsyncCode::Ok as i32 && !reply.snapshot_uuid.is_empty() {
                    let files = reply.meta_resp.map(|m| m.filenames).unwrap_or_default();
                    return Ok((reply.snapshot_uuid, files));
                }
                break "busy".to_owned();
            };
            if busy_since_logged.elapsed() >= Duration::from_secs(10) {
                busy_since_logged = std::time::Instant::now();
                tracing::info!(answer = %busy, "full sync: the master is still taking its dump");
            }
            tokio::time::sleep(META_RETRY).await;
        }
    }

    /// Pulls `files` with up to [`READERS`] readers, each taking every READERS-th name.
    /// The readers take the connection's inboxes: it serves one round of files only.
    async fn fetch_all(
        &mut self,
        plan: &PullPlan,
        uuid: &str,
        files: Vec<String>,
    ) -> Result<(), Fetch> {
        let mut shares: Vec<Vec<String>> = vec![Vec::new(); READERS];
        for (i, name) in files.into_iter().enumerate() {
            shares[i % READERS].push(name);
        }
        let pacer = plan.rate.map(|rate| {
            Arc::new(Pacer {
                rate,
                started: tokio::time::Instant::now(),
                bytes: std::sync::Mutex::new(0),
            })
        });
        let mut readers = JoinSet::new();
        for (index, share) in shares.into_iter().enumerate() {
            let Some(inbox) = self.inboxes[index].take() else {
                return Err(Fetch::Failed(self.lost("a reader is gone".into())));
            };
            let mut reader = Reader {
                index,
                inbox,
                writer: self.writer.clone(),
                addr: self.addr.clone(),
                plan: plan.clone(),
                uuid: uuid.to_owned(),
                pacer: pacer.clone(),
            };
            readers.spawn(async move { reader.pull_files(share).await });
        }
        // The first failure (or a changed dump) stops the others: dropping the set
        // aborts them.
        while let Some(done) = readers.join_next().await {
            done.map_err(|e| Fetch::Failed(self.lost(format!("reader task: {e}"))))??;
        }
        Ok(())
    }
}

fn lost(addr: &str, error: String) -> PullError {
    PullError::Lost {
        addr: addr.to_owned(),
        error,
    }
}

async fn send(
    writer: &Mutex<OwnedWriteHalf>,
    addr: &str,
    request: &RsyncRequest,
) -> Result<(), PullError> {
    let mut out = Vec::new();
    frame::encode(&mut out, &request.encode_to_vec());
    writer
        .lock()
        .await
        .write_all(&out)
        .await
        .map_err(|e| lost(addr, e.to_string()))
}

/// One of the parallel readers: its files one after another, one request at a time.
struct Reader {
    index: usize,
    inbox: Inbox,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    addr: String,
    plan: PullPlan,
    uuid: String,
    pacer: Option<Arc<Pacer>>,
}

impl Reader {
    async fn pull_files(&mut self, files: Vec<String>) -> Result<(), Fetch> {
        for name in files {
            self.pull_file(&name).await?;
            let (list, done) = (self.plan.done_list.clone(), name.clone());
            blocking(move || append_done(&list, &done)).await?;
        }
        Ok(())
    }

    async fn pull_file(&mut self, name: &str) -> Result<(), Fetch> {
        let path = self.plan.db_dir.join(name);
        let opened = path.clone();
        let mut file = blocking(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&opened)
                .map_err(|e| PullError::io(&opened, 0, e))
        })
        .await?;
        let mut offset = 0u64;
        loop {
            let (data, eof) = self.chunk(name, offset).await?;
            let len = data.len() as u64;
            if let Some(pacer) = &self.pacer {
                pacer.took(len).await;
            }
            let (at, to) = (offset, path.clone());
            file = blocking(move || {
                file.write_all_at(&data, at)
                    .map_err(|e| PullError::io(&to, at, e))?;
                Ok(file)
            })
            .await?;
            offset = offset.checked_add(len).ok_or_else(|| PullError::BadReply {
                file: name.to_owned(),
                offset,
                reason: "the file's length overflows".into(),
            })?;
            if eof {
                break;
            }
            if len == 0 {
                // Nothing yet and no end: Pika's own replica waits a little too.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let synced = path.clone();
        blocking(move || {
            file.sync_all()
                .map_err(|e| PullError::io(&synced, offset, e))
        })
        .await?;
        tracing::debug!(file = name, bytes = offset, reader = self.index, "pulled");
        Ok(())
    }

    /// The bytes of `name` from `offset` (at most [`CHUNK`]) and whether they end it.
    async fn chunk(&mut self, name: &str, offset: u64) -> Result<(bytes::Bytes, bool), Fetch> {
        let reader = i32::try_from(self.index).unwrap_or(0);
        let asked = Pacer::chunk(self.plan.rate);
        let request = file_request(self.plan.db, reader, name, offset, asked);
        let bad = |reason: String| {
            Fetch::Failed(PullError::BadReply {
                file: name.to_owned(),
                offset,
                reason,
            })
        };
        for _ in 0..UNANSWERED {
            send(&self.writer, &self.addr, &request).await?;
            let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
            loop {
                let reply = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                    Err(_) => break, // asked again
                    Ok(None) => {
                        return Err(lost(&self.addr, "the reply reader ended".into()).into())
                    }
                    Ok(Some(Err(e))) => return Err(lost(&self.addr, e).into()),
                    Ok(Some(Ok(r))) => r,
                };
                if reply.r#type != RsyncType::File as i32 {
                    continue;
                }
                if reply.code != RsyncCode::Ok as i32 {
                    return Err(PullError::Refused {
                        file: name.to_owned(),
                        offset,
                    }
                    .into());
                }
                if reply.snapshot_uuid != self.uuid {
                    return Err(Fetch::Changed {
                        now: reply.snapshot_uuid,
                    });
                }
                let Some(f) = reply.file_resp else {
                    return Err(bad("a reply without its file part".into()));
                };
                // A late answer to a request asked again: not this one.
                if f.filename != name || f.offset != offset {
                    continue;
                }
                if f.count != f.data.len() as u64 {
                    return Err(bad(format!(
                        "the reply says {} bytes and carries {}",
                        f.count,
                        f.data.len()
                    )));
                }
                if f.count > asked {
                    return Err(bad(format!("{} bytes sent for {asked} asked", f.count)));
                }
                return Ok((f.data, f.eof != 0));
            }
        }
        Err(PullError::NoAnswer {
            what: format!("{name} at offset {offset}"),
            tries: UNANSWERED,
            secs: ANSWER_WITHIN.as_secs(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pika::repl::rsync::{FileResponse, MetaResponse};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// One dump a fake rsync service serves: its uuid and files.
    #[derive(Clone)]
    struct Dump {
        uuid: String,
        files: BTreeMap<String, Vec<u8>>,
    }

    /// A dump whose uuid is the MD5 of its info, as Pika makes it.
    fn dump(fill: u8) -> Dump {
        use md5::{Digest, Md5};
        let info = format!("0s\n127.0.0.1\n1\n0\n{fill}\n").into_bytes();
        let uuid = Md5::digest(&info)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut files = BTreeMap::new();
        files.insert("info".to_owned(), info);
        files.insert("strings/000001.sst".to_owned(), vec![fill; 300_000]);
        files.insert("hashes/000002.sst".to_owned(), vec![fill ^ 0xff; 70_000]);
        files.insert("zsets/000003.sst".to_owned(), vec![]);
        Dump { uuid, files }
    }

    /// A fake `RsyncService`: serves `first` until it has answered `switch_after` file
    /// requests, then `second` (the master took a new dump meanwhile). Counts the file
    /// requests it answered.
    async fn serve(first: Dump, second: Dump, switch_after: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (first, second, count) = (first.clone(), second.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    loop {
                        let body = loop {
                            if let Some(body) = frame::decode(&mut buf, MAX_FRAME).unwrap() {
                                break body;
                            }
                            if conn.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                return;
                            }
                        };
                        let req = RsyncRequest::decode(body).unwrap();
                        let d = if count.load(Ordering::SeqCst) < switch_after {
                            &first
                        } else {
                            &second
                        };
                        let mut reply = RsyncResponse {
                            r#type: req.r#type,
                            reader_index: req.reader_index,
                            snapshot_uuid: d.uuid.clone(),
                            db_name: req.db_name.clone(),
                            slot_id: 0,
                            code: RsyncCode::Ok as i32,
                            meta_resp: None,
                            file_resp: None,
                        };
                        if let Some(f) = req.file_req {
                            count.fetch_add(1, Ordering::SeqCst);
                            let data = &d.files[&f.filename];
                            let from = (f.offset as usize).min(data.len());
                            let to = (from + f.count as usize).min(data.len());
                            reply.file_resp = Some(FileResponse {
                                eof: i32::from(to == data.len()),
                                count: (to - from) as u64,
                                offset: f.offset,
                                data: bytes::Bytes::copy_from_slice(&data[from..to]),
                                checksum: String::new(),
                                filename: f.filename,
                            });
                        } else {
                            reply.meta_resp = Some(MetaResponse {
                                filenames: d.files.keys().cloned().collect(),
                            });
                        }
                        let mut out = Vec::new();
                        frame::encode(&mut out, &reply.encode_to_vec());
                        if conn.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, answered)
    }

    fn plan(addr: &str, dir: &Path) -> PullPlan {
        PullPlan {
            addr: addr.to_owned(),
            db: 0,
            db_dir: dir.join("db0"),
            done_list: dir.join("pulled-db0"),
            // Small requests, so the dump changes while files are half read.
            rate: Some(200_000),
        }
    }

    fn assert_holds(dir: &Path, d: &Dump) {
        for (name, bytes) in &d.files {
            let got = std::fs::read(dir.join("db0").join(name)).unwrap();
            assert!(got == *bytes, "{name} is the served dump's");
        }
    }

    #[tokio::test]
    async fn a_dump_replaced_mid_transfer_is_pulled_again_whole() {
        let (old, new) = (dump(1), dump(2));
        let (addr, _) = serve(old, new.clone(), 5).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db0")).unwrap();
        let uuid = pull(&plan(&addr, dir.path())).await.unwrap();
        assert_eq!(uuid, new.uuid);
        assert_holds(dir.path(), &new);
        let list = std::fs::read_to_string(dir.path().join("pulled-db0")).unwrap();
        assert!(
            list.starts_with(&format!("snapshot-uuid:{}\n", new.uuid)),
            "{list}"
        );
    }

    #[tokio::test]
    async fn an_info_that_is_not_the_dumps_is_refused_and_pulled_again() {
        let mut damaged = dump(4);
        let good = damaged.clone();
        // One bit of the position flipped on the way: the uuid no longer matches.
        damaged
            .files
            .insert("info".into(), b"0s\n127.0.0.1\n1\n0\n5\n".to_vec());
        let (addr, _) = serve(damaged, good.clone(), usize::MAX).await;
        let dir = tempfile::tempdir().unwrap();
        let p = plan(&addr, dir.path());
        let e = pull(&p).await.unwrap_err();
        assert!(matches!(e, PullError::InfoMismatch { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("info") && text.contains(&good.uuid), "{text}");
        assert!(!e.is_fatal(), "a damaged transfer is tried again");
        // Nothing of the damaged transfer counts as done: the next pull takes it all.
        let list = std::fs::read_to_string(&p.done_list).unwrap();
        assert_eq!(list, format!("snapshot-uuid:{}\n", good.uuid));
    }

    #[tokio::test]
    async fn a_transfer_cut_short_takes_up_only_the_missing_files() {
        let d = dump(3);
        let dir = tempfile::tempdir().unwrap();
        let (addr, answered) = serve(d.clone(), d.clone(), usize::MAX).await;
        let p = plan(&addr, dir.path());
        pull(&p).await.unwrap();
        let whole = answered.swap(0, Ordering::SeqCst);
        // As if cut short: the big file was not finished.
        let list = std::fs::read_to_string(&p.done_list).unwrap();
        let cut = list.replace("file:strings/000001.sst\n", "");
        std::fs::write(&p.done_list, cut).unwrap();
        std::fs::write(p.db_dir.join("strings/000001.sst"), b"half").unwrap();
        pull(&p).await.unwrap();
        assert_holds(dir.path(), &d);
        let again = answered.load(Ordering::SeqCst);
        assert!(
            again < whole,
            "{again} requests again, {whole} for the whole dump"
        );
    }

    fn names(list: &[&str]) -> Result<BTreeSet<String>, PullError> {
        check_names(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn file_lists_of_3_5_and_4_0_are_taken_and_nothing_else() {
        // 3.5: per type; the reader needs all five directories.
        let list = names(&["strings/CURRENT", "hashes/000012.sst", "info"]).unwrap();
        assert_eq!(dirs_of(&list).len(), 5);
        // 4.0.1's list, as the real replica received it (repl-notes.md).
        let list = names(&["0/OPTIONS-000019", "1/000025.sst", "2/CURRENT", "info"]).unwrap();
        assert_eq!(
            dirs_of(&list).into_iter().collect::<Vec<_>>(),
            ["0", "1", "2"]
        );
        for bad in [
            &["../x", "info"][..],
            &["0/../x", "info"],
            &["12345/CURRENT", "info"],
            &["-1/CURRENT", "info"],
            &["streams/CURRENT", "info"],
            &["0/sub/CURRENT", "info"],
        ] {
            assert!(
                matches!(names(bad), Err(PullError::BadFileName(_))),
                "{bad:?}"
            );
        }
        let mixed = names(&["strings/CURRENT", "0/CURRENT", "info"]).unwrap_err();
        assert!(mixed.to_string().contains("mixes"), "{mixed}");
        assert!(names(&["0/CURRENT"]).is_err());
    }
}
