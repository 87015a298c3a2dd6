//! The rsync daemon a Pika master pushes its dump to: the Debian `rsync` binary run as
//! our child, bound to the announced address only, module `document`, user `rsync_user`
//! with the master's requirepass (or `default`) as secret, as a real replica runs it.
//! That secret is `default` for a master without a password, so the module also lets
//! in only the master's addresses (`hosts allow`), and the secret file is removed when
//! the daemon stops. It is ready once the socket listening on that address is its own:
//! a daemon of someone else on the same port would otherwise take our dump. It logs to
//! its standard error, which we read: a disk filled by the dump is seen there.

use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

use super::error::ReplicaError;
use super::listener;

/// How long the daemon may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Lines of the daemon's log kept to explain a failure.
const LOG_TAIL: usize = 5;

/// What the daemon is to serve, and to whom.
#[derive(Debug, Clone)]
pub struct DaemonPlan<'a> {
    /// The `rsync` binary.
    pub rsync: &'a Path,
    /// Where its config, secret and pid files go.
    pub state_dir: &'a Path,
    /// The module's path: the dumps land below it.
    pub module_path: &'a Path,
    /// The address it listens on (the announced IP, and its port + 1000).
    pub ip: &'a str,
    pub port: u16,
    /// `rsync_user`'s secret: the master's requirepass, or `default`.
    pub secret: &'a str,
    /// The addresses (IPs or CIDR blocks) the master pushes from; no one else gets in.
    pub allowed: &'a [String],
}

pub struct RsyncDaemon {
    child: Child,
    addr: String,
    files: Files,
    log: DaemonLog,
}

/// What the daemon logged (it logs to its standard error, which we read: a log file in
/// the work dir could not be written once a dump filled the disk).
#[derive(Debug, Clone, Default)]
pub struct DaemonLog(Arc<Mutex<LogState>>);

#[derive(Debug, Default)]
struct LogState {
    tail: std::collections::VecDeque<String>,
    /// The first line saying a write failed for want of space.
    disk_full: Option<String>,
    /// The last address refused (not in `hosts allow`).
    refused: Option<String>,
}

impl DaemonLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        if line.contains("rsync denied on module") {
            tracing::warn!(line, "rsync daemon: refused a push from an address other than the master's (`push_from`)");
        } else {
            tracing::debug!(line, "rsync daemon");
        }
        let mut state = self.lock();
        if let Some(from) = refused_address(line) {
            state.refused = Some(from.to_owned());
        }
        if state.disk_full.is_none() && is_disk_full_line(line) {
            state.disk_full = Some(line.to_owned());
        }
        if state.tail.len() == LOG_TAIL {
            state.tail.pop_front();
        }
        state.tail.push_back(line.to_owned());
    }

    /// The daemon's line saying a write failed for want of space, if one did.
    pub fn disk_full(&self) -> Option<String> {
        self.lock().disk_full.clone()
    }

    /// The last address a push was refused from, if any.
    pub fn refused(&self) -> Option<String> {
        self.lock().refused.clone()
    }

    fn tail(&self) -> String {
        let state = self.lock();
        state.tail.iter().cloned().collect::<Vec<_>>().join(" / ")
    }

    /// Reads the daemon's log lines until it exits.
    fn follow(&self, stderr: ChildStderr) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.add(&line);
            }
        });
    }
}

/// The address in rsync's `rsync denied on module document from UNKNOWN (10.0.0.7)`.
fn refused_address(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("rsync denied on module")?;
    let (_, inside) = rest.rsplit_once('(')?;
    inside.strip_suffix(')')
}

/// The file a disk-full line names, within the module (`write failed on
/// "/db0/strings/0001.sst" (in document): No space left on device (28)`).
pub fn failed_file(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("write failed on \"")?;
    let (path, _) = rest.split_once("\" (in ")?;
    Some(path)
}

/// rsync's words for ENOSPC and EDQUOT (`write failed on "…": No space left on device (28)`).
fn is_disk_full_line(line: &str) -> bool {
    line.contains("No space left on device") || line.contains("Disk quota exceeded")
}

/// Files the daemon keeps: config, secret, pid, lock.
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
}

impl RsyncDaemon {
    /// Starts the daemon serving `plan.module_path` on `ip:port` and waits until it
    /// listens.
    pub async fn start(plan: &DaemonPlan<'_>) -> Result<RsyncDaemon, ReplicaError> {
        let files = Files {
            dir: plan.state_dir.to_owned(),
        };
        std::fs::create_dir_all(&files.dir).map_err(|e| ReplicaError::io(&files.dir, e))?;
        if kill_stale(&files.pid(), &files.conf()) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        write_private(&files.secret(), &format!("rsync_user:{}\n", plan.secret))?;
        let result = Self::spawn(plan, files).await;
        if result.is_err() {
            let _ = std::fs::remove_file(plan.state_dir.join("rsync.secret"));
        }
        result
    }

    async fn spawn(plan: &DaemonPlan<'_>, files: Files) -> Result<RsyncDaemon, ReplicaError> {
        let (rsync, module_path, ip, port) = (plan.rsync, plan.module_path, plan.ip, plan.port);
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
             read only = no\nreverse lookup = no\n{identity}pid file = {pid}\n\
             lock file = {lock}\nlog file = /dev/stderr\n\n[document]\npath = {path}\n\
             hosts allow = {allowed}\nhosts deny = *\n\
             auth users = rsync_user\nsecrets file = {secret}\n",
            pid = files.pid().display(),
            lock = files.dir.join("rsyncd.lock").display(),
            path = module_path.display(),
            allowed = plan.allowed.join(" "),
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
        let log = DaemonLog::default();
        if let Some(stderr) = child.stderr.take() {
            log.follow(stderr);
        }
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
                tracing::info!(%addr, module = %module_path.display(), allowed = %plan.allowed.join(" "), "rsync daemon listening for the dump");
                return Ok(RsyncDaemon {
                    child,
                    addr,
                    files,
                    log,
                });
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
                // Its last words reach the log reader just after it exits.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(ReplicaError::Rsync(format!(
                    "exited ({status}) instead of listening on {addr}: {}",
                    log.tail()
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

    /// What the daemon logged.
    pub fn log(&self) -> &DaemonLog {
        &self.log
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        tracing::info!(addr = %self.addr, "rsync daemon stopped");
        // Drop removes the secret.
    }
}

impl Drop for RsyncDaemon {
    /// The secret (the master's requirepass) does not outlive the daemon that needs it.
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let secret = self.files.secret();
        if let Err(e) = std::fs::remove_file(&secret) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %secret.display(), error = %e, "cannot remove the rsync secret");
            }
        }
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
/// and rsync will not start while its pid file exists. Only a process that is that
/// daemon is killed: an rsync `--daemon` with our config file on its command line. A pid
/// the kernel gave to another process since is left alone.
fn kill_stale(pid_file: &Path, conf: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let mut killed = false;
    if let Some(pid) = text.trim().parse::<i32>().ok().filter(|p| *p > 1) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if is_our_daemon(&cmdline, conf) {
            // SAFETY: plain syscall on a pid whose command line is our daemon's.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed = true;
            tracing::info!(pid, "stopped an rsync daemon left by an earlier run");
        } else {
            tracing::info!(
                pid,
                "the rsync daemon of an earlier run is gone (its pid is not our daemon's)"
            );
        }
    }
    let _ = std::fs::remove_file(pid_file);
    killed
}

/// Whether a `/proc/<pid>/cmdline` (arguments ended by NULs) is rsync run as a daemon
/// with the config file `conf`.
fn is_our_daemon(cmdline: &[u8], conf: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let Some(program) = args.first() else {
        return false;
    };
    let name = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
    let config = format!("--config={}", conf.display());
    name.starts_with(b"rsync")
        && args.iter().any(|a| *a == b"--daemon")
        && args.contains(&config.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Pushes `file` into the daemon at `port` as a Pika master does, from `from`.
    fn push(from: &str, port: u16, file: &Path, password_file: &Path) -> std::process::Output {
        std::process::Command::new("rsync")
            .arg(format!("--address={from}"))
            .arg(format!("--password-file={}", password_file.display()))
            .arg(format!("--port={port}"))
            .arg(file)
            .arg("rsync_user@127.0.0.1::document/db0/")
            .output()
            .unwrap()
    }

    #[tokio::test]
    async fn only_the_masters_address_may_push_and_the_secret_goes_with_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let (state, module) = (dir.path().join("rsync"), dir.path().join("dbsync"));
        std::fs::create_dir_all(module.join("db0")).unwrap();
        let port = free_port();
        let allowed = ["127.0.0.1".to_owned()];
        let daemon = RsyncDaemon::start(&DaemonPlan {
            rsync: Path::new("rsync"),
            state_dir: &state,
            module_path: &module,
            ip: "127.0.0.1",
            port,
            secret: "default",
            allowed: &allowed,
        })
        .await
        .unwrap();
        let secret = state.join("rsync.secret");
        assert!(secret.is_file());
        // The password of a master without requirepass, known to anyone.
        let password = dir.path().join("password");
        write_private(&password, "default\n").unwrap();
        let file = dir.path().join("000001.sst");
        std::fs::write(&file, b"dump bytes").unwrap();

        let stranger = tokio::task::spawn_blocking({
            let (file, password) = (file.clone(), password.clone());
            move || push("127.0.0.2", port, &file, &password)
        })
        .await
        .unwrap();
        assert!(
            !stranger.status.success(),
            "a push from 127.0.0.2 was taken"
        );
        assert!(!module.join("db0/000001.sst").exists());
        assert_eq!(daemon.log().refused().as_deref(), Some("127.0.0.2"));
        let master = tokio::task::spawn_blocking({
            let (file, password) = (file.clone(), password.clone());
            move || push("127.0.0.1", port, &file, &password)
        })
        .await
        .unwrap();
        assert!(
            master.status.success(),
            "{}",
            String::from_utf8_lossy(&master.stderr)
        );
        assert_eq!(
            std::fs::read(module.join("db0/000001.sst")).unwrap(),
            b"dump bytes"
        );
        assert!(
            daemon.log().tail().contains("127.0.0.1"),
            "{}",
            daemon.log().tail()
        );

        daemon.stop().await;
        assert!(!secret.exists(), "the secret outlived the daemon");
    }

    #[test]
    fn a_disk_full_line_is_noticed() {
        let log = DaemonLog::default();
        log.add("2026/12/07 10:11:07 [14923] receiving file list");
        assert_eq!(log.disk_full(), None);
        let full = "2026/12/07 10:11:07 [14923] rsync: [receiver] write failed on \"/db0/strings/0001.sst\" (in document): No space left on device (28)";
        log.add(full);
        log.add("rsync error: error in file IO (code 11) at receiver.c(657) [receiver=3.5.0]");
        assert_eq!(log.disk_full().as_deref(), Some(full));
        assert_eq!(failed_file(full), Some("/db0/strings/0001.sst"));
        assert_eq!(log.refused(), None);
        log.add(
            "2026/12/07 10:43:02 [23085] rsync denied on module document from UNKNOWN (127.0.0.2)",
        );
        assert_eq!(log.refused().as_deref(), Some("127.0.0.2"));
    }

    #[test]
    fn a_stale_pid_is_killed_only_when_it_is_our_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("rsync");
        std::fs::create_dir_all(&state).unwrap();
        let files = Files { dir: state.clone() };
        let ours = format!("--config={}", files.conf().display());
        let spawn = |args: &[&str]| {
            let child = std::process::Command::new(args[0])
                .args(&args[1..])
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::fs::write(files.pid(), child.id().to_string()).unwrap();
            child
        };
        let alive = |child: &mut std::process::Child| child.try_wait().unwrap().is_none();
        // Processes the pid may name by now: one whose command line mentions rsync, its
        // daemon mode and even our config path, and another's rsync daemon. Left alone.
        let other = state.join("other.conf");
        std::fs::write(
            &other,
            format!(
                "pid file = {}/other.pid\n[x]\npath = /nonexistent\n",
                state.display()
            ),
        )
        .unwrap();
        let other_config = format!("--config={}", other.display());
        let other_port = format!("--port={}", free_port());
        for decoy in [
            &["sh", "-c", "sleep 30", "rsync", "--daemon", &ours][..],
            &[
                "rsync",
                "--daemon",
                "--no-detach",
                &other_config,
                "--address=127.0.0.1",
                &other_port,
            ],
        ] {
            let mut child = spawn(decoy);
            std::thread::sleep(Duration::from_millis(300));
            assert!(alive(&mut child), "{decoy:?} did not start");
            assert!(!kill_stale(&files.pid(), &files.conf()), "{decoy:?}");
            std::thread::sleep(Duration::from_millis(100));
            assert!(alive(&mut child), "{decoy:?} was killed");
            assert!(!files.pid().exists(), "the stale pid file is gone");
            let _ = child.kill();
            let _ = child.wait();
        }
        // Our daemon, left by a killed run: killed.
        std::fs::write(
            files.conf(),
            format!(
                "pid file = {}/ours.pid\n[x]\npath = /nonexistent\n",
                state.display()
            ),
        )
        .unwrap();
        let port = free_port().to_string();
        let mut daemon = spawn(&[
            "rsync",
            "--daemon",
            "--no-detach",
            &ours,
            "--address=127.0.0.1",
            &format!("--port={port}"),
        ]);
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(&mut daemon));
        assert!(kill_stale(&files.pid(), &files.conf()));
        let status = daemon.wait().unwrap();
        assert!(!status.success(), "{status}");
    }
}
