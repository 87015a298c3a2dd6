//! Redis behind Sentinel on loopback: a master, its replicas and `redis-sentinel`
//! processes (Debian's package), each on a free port in its own directory; killed on
//! drop.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_until, RedisServer};

/// The master name every test set monitors.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-sentinel` process.
pub struct Sentinel {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// A sentinel watching `master_port` as `name` with `quorum`, fast to notice a down
    /// master (1 s) and to fail over.
    pub fn start(name: &str, master_port: u16, quorum: u32) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {master_port} {quorum}\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\nsentinel parallel-syncs {name} 1\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            let mut child = super::redis_program("redis-sentinel")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-sentinel must be installed (scripts/install-deps --test)");
            if answers(port, &mut child) {
                return Sentinel {
                    port,
                    child,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-sentinel did not start");
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// `SENTINEL MASTER <name>` as field → value.
    pub fn master_info(&self, name: &str) -> std::collections::HashMap<String, String> {
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(name)
            .query(&mut self.client())
            .unwrap_or_default()
    }

    /// The port of the master this sentinel names now.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(name)
            .query(&mut self.client())
            .ok()?;
        addr.map(|(_, port)| port)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) {
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A replica of `master` (with extra redis-server arguments), once it is in sync.
pub fn start_replica(master: &RedisServer, extra: &[&str]) -> RedisServer {
    let master_port = master.port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", &master_port];
    args.extend_from_slice(extra);
    let replica = RedisServer::start_with(&args);
    wait_until("the replica to sync", Duration::from_secs(20), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.client())
            .unwrap_or_default();
        info.contains("master_link_status:up")
    });
    replica
}

/// A master, one replica (or more) and three sentinels (quorum 2), all known to each
/// other.
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    /// Replicas beyond the first.
    pub more: Vec<RedisServer>,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        SentinelSet::start_with_replicas(1)
    }

    /// A master with `replicas` replicas (at least one).
    pub fn start_with_replicas(replicas: usize) -> SentinelSet {
        let master = RedisServer::start();
        let replica = start_replica(&master, &[]);
        let more: Vec<RedisServer> = (1..replicas).map(|_| start_replica(&master, &[])).collect();
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(MASTER_NAME, master.port, 2))
            .collect();
        let slaves = (1 + more.len()).to_string();
        // Sentinels find the replica and each other through the master (hello messages
        // every 2 s); a failover needs both.
        wait_until(
            "the sentinels to know each other",
            Duration::from_secs(30),
            || {
                sentinels.iter().all(|s| {
                    let info = s.master_info(MASTER_NAME);
                    info.get("num-slaves") == Some(&slaves)
                        && info.get("num-other-sentinels").map(String::as_str) == Some("2")
                })
            },
        );
        SentinelSet {
            master,
            replica,
            more,
            sentinels,
        }
    }

    /// The data node on `port`.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        std::iter::once(&self.master)
            .chain(std::iter::once(&self.replica))
            .chain(&self.more)
            .find(|n| n.port == port)
    }

    /// Waits until every sentinel names a master other than `not` and it acts as
    /// one; its port.
    pub fn wait_new_master(&self, not: u16) -> u16 {
        let mut port = None;
        wait_until(
            "the sentinels to promote a replica",
            Duration::from_secs(60),
            || {
                let named: Vec<Option<u16>> = self
                    .sentinels
                    .iter()
                    .map(|s| s.master_port(MASTER_NAME))
                    .collect();
                port = named[0].filter(|p| *p != not && named.iter().all(|n| *n == Some(*p)));
                port.is_some()
            },
        );
        let port = port.unwrap_or_default();
        wait_until(
            "the new master to act as one",
            Duration::from_secs(20),
            || {
                let role: Vec<redis::Value> = self
                    .node(port)
                    .map(|n| {
                        redis::cmd("ROLE")
                            .query(&mut n.client())
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
            },
        );
        port
    }

    /// `redis-sentinel://h:p,h:p,h:p/<db>#mymaster`.
    pub fn url(&self, db: u32) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis-sentinel://{}/{db}#{MASTER_NAME}", hosts.join(","))
    }

    /// Kills the master (SIGKILL) and waits until the sentinels have promoted the
    /// replica.
    pub fn fail_master(&mut self) {
        self.master.kill();
        let replica = self.replica.port;
        wait_until(
            "the sentinels to promote the replica",
            Duration::from_secs(60),
            || {
                self.sentinels
                    .iter()
                    .all(|s| s.master_port(MASTER_NAME) == Some(replica))
            },
        );
        wait_until(
            "the replica to act as master",
            Duration::from_secs(20),
            || {
                let role: Vec<redis::Value> = redis::cmd("ROLE")
                    .query(&mut self.replica.client())
                    .unwrap_or_default();
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
            },
        );
    }
}
