//! The rsync daemon a Pika master pushes its dump to: the Debian `rsync` binary run as
//! our child, bound to the announced address only, module `document`, user `rsync_user`
//! with the master's requirepass (or `default`) as secret, as a real replica runs it.
//! It is ready once the socket listening on that address is its own: a daemon of
//! someone else on the same port would otherwise take our dump.

use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::error::ReplicaError;
use super::listener;

/// How long the daemon may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(10);

pub struct RsyncDaemon {
    child: Child,
    addr: String,
}

/// Files the daemon keeps: config, secret, pid, lock, log.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn conf(&self) -> PathBuf {
        self.dir.join("rsyncd.conf")
    }
    fn secret(&self) -> PathBuf {
        self.dir.join("rsync.secret")
    }
    fn pid(&self) -> PathBuf {
        self.dir.join("rsyncd.pid")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("rsyncd.log")
    }
}

impl RsyncDaemon {
    /// Starts the daemon serving `module_path` on `ip:port` and waits until it listens.
    pub async fn start(
        rsync: &Path,
        state_dir: &Path,
        module_path: &Path,
        ip: &str,
        port: u16,
        secret: &str,
    ) -> Result<RsyncDaemon, ReplicaError> {
        let files = Files {
            dir: state_dir.to_owned(),
        };
        std::fs::create_dir_all(&files.dir).map_err(|e| ReplicaError::io(&files.dir, e))?;
        if kill_stale(&files.pid()) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        write_private(&files.secret(), &format!("rsync_user:{secret}\n"))?;
        // rsync started as root drops to `nobody` unless told otherwise, and could then
        // not write into our directories: as root, it runs as root. Under any other user
        // it must not be told: it would try setgroups and refuse every transfer.
        // SAFETY: geteuid cannot fail.
        let identity = if unsafe { libc::geteuid() } == 0 {
            let me =
                std::fs::metadata(files.secret()).map_err(|e| ReplicaError::io(&files.dir, e))?;
            format!("uid = {}\ngid = {}\n", me.uid(), me.gid())
        } else {
            String::new()
        };
        let conf = format!(
            "use chroot = no\nmax connections = 10\nlist = no\nstrict modes = no\n\
             read only = no\n{identity}pid file = {pid}\n\
             lock file = {lock}\nlog file = {log}\n\n[document]\npath = {path}\n\
             auth users = rsync_user\nsecrets file = {secret}\n",
            pid = files.pid().display(),
            lock = files.dir.join("rsyncd.lock").display(),
            log = files.log().display(),
            path = module_path.display(),
            secret = files.secret().display(),
        );
        write_private(&files.conf(), &conf)?;

        let mut command = Command::new(rsync);
        command
            .arg("--daemon")
            .arg("--no-detach")
            .arg(format!("--config={}", files.conf().display()))
            .arg(format!("--address={ip}"))
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the daemon
        // when we die, so a `kill -9` of the tool does not leave it holding the port.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| ReplicaError::Rsync(format!("cannot start {}: {e}", rsync.display())))?;
        let addr = format!("{ip}:{port}");
        let ip_addr: IpAddr = ip
            .parse()
            .map_err(|_| ReplicaError::Config(format!("announce ip {ip:?} is not an IP")))?;
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            let listeners = listener::listening_on(ip_addr, port);
            let ours = child
                .id()
                .is_some_and(|pid| listeners.iter().any(|l| listener::held_by(pid, l.inode)));
            if ours {
                tracing::info!(%addr, module = %module_path.display(), "rsync daemon listening for the dump");
                return Ok(RsyncDaemon { child, addr });
            }
            // Someone else's socket on our port: the master would push our dump to it.
            if let Some(other) = listeners.first() {
                let _ = child.kill().await;
                let who = listener::holder(other.inode)
                    .unwrap_or_else(|| "a process of another user".into());
                return Err(ReplicaError::Rsync(format!(
                    "port {port} (announce port + 1000, where the master pushes the dump) on {ip} \
                     is already held by {who}; free it or announce another port"
                )));
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut err).await;
                }
                let log = std::fs::read_to_string(files.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(ReplicaError::Rsync(format!(
                    "exited ({status}) instead of listening on {addr}: {} {}",
                    err.trim(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(ReplicaError::Rsync(format!(
                    "not listening on {addr} after {READY_WITHIN:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        tracing::info!(addr = %self.addr, "rsync daemon stopped");
    }
}

/// Writes a file only we can read (rsync refuses a secrets file others can read).
fn write_private(path: &Path, text: &str) -> Result<(), ReplicaError> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| ReplicaError::io(path, e))
}

/// A daemon left by a run that was killed before it could stop it still holds the port,
/// and rsync will not start while its pid file exists.
fn kill_stale(pid_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let mut killed = false;
    if let Ok(pid) = text.trim().parse::<i32>() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("rsync") && pid > 1 {
            // SAFETY: plain syscall on a pid that our own daemon wrote.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed = true;
            tracing::info!(pid, "stopped an rsync daemon left by an earlier run");
        }
    }
    let _ = std::fs::remove_file(pid_file);
    killed
}
