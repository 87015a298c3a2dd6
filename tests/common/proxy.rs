//! A TCP proxy for tests: a port on 127.0.0.1 that forwards every connection to a
//! target, as a port mapping does (a Kubernetes Service, a Docker port, an SSH tunnel):
//! the port dialed is not the server's own. It can freeze: no byte moves either way
//! while both TCP peers stay connected, as in a network partition that TCP keepalive
//! cannot see (each peer's kernel still answers the probes); and thaw, after which
//! everything held goes on, a close included. New connections made while frozen are
//! taken, and reach the target once thawed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    frozen: Mutex<bool>,
    thawed: Condvar,
    stop: AtomicBool,
    /// Every socket of every connection, shut down when the proxy goes.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Shared {
    /// Waits while frozen; false once the proxy is going away.
    fn wait_thawed(&self) -> bool {
        let mut frozen = self.frozen.lock().unwrap();
        while *frozen && !self.stop.load(Ordering::SeqCst) {
            frozen = self.thawed.wait(frozen).unwrap();
        }
        !self.stop.load(Ordering::SeqCst)
    }

    fn keep(&self, socket: &TcpStream) {
        if let Ok(clone) = socket.try_clone() {
            self.sockets.lock().unwrap().push(clone);
        }
    }
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 to `target` (`127.0.0.1:<port>`).
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            target: target.parse().unwrap(),
            frozen: Mutex::new(false),
            thawed: Condvar::new(),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = accepting.clone();
                std::thread::spawn(move || forward(client, &shared));
            }
        });
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// Stops moving bytes, both ways, on every connection; they stay open.
    pub fn freeze(&self) {
        *self.shared.frozen.lock().unwrap() = true;
    }

    /// Moves bytes again.
    pub fn thaw(&self) {
        *self.shared.frozen.lock().unwrap() = false;
        self.shared.thawed.notify_all();
    }
}

/// One connection: to the target once thawed, then a thread per direction.
fn forward(client: TcpStream, shared: &Arc<Shared>) {
    shared.keep(&client);
    if !shared.wait_thawed() {
        return;
    }
    let Ok(server) = TcpStream::connect(shared.target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    shared.keep(&server);
    let (Ok(client_rd), Ok(server_rd)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let back = shared.clone();
    std::thread::spawn(move || pump(server_rd, client, &back));
    pump(client_rd, server, shared);
}

/// Copies `from` into `to` until `from` ends, holding each read (and the end) while
/// frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = from.read(&mut buf);
        if !shared.wait_thawed() {
            return;
        }
        match n {
            Ok(n) if n > 0 => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Ok(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.thawed.notify_all();
        for socket in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// The ports of a real Pika master behind proxies on unrelated ports, as a port mapping
/// that does not keep Pika's offsets shows it: its client port, its replication port
/// (client + 2000) and, for 3.5 and 4.0, its rsync service (client + 10001). A 3.2–3.4
/// master pushes its dump to us directly: nothing to proxy for it.
pub struct MappedMaster {
    pub client: Proxy,
    pub replication: Proxy,
    pub rsync: Option<Proxy>,
}

impl MappedMaster {
    pub fn of(pika: &super::real_pika::RealPika) -> MappedMaster {
        let at = |shift: u16| format!("127.0.0.1:{}", pika.port + shift);
        loop {
            let mapped = MappedMaster {
                client: Proxy::start(&at(0)),
                replication: Proxy::start(&at(2000)),
                rsync: (!pika.bin.pushes_dump()).then(|| Proxy::start(&at(10001))),
            };
            // Pika's offsets must not hold by chance, or the defaults would find them.
            let c = mapped.client.port;
            let offsets_hold = c.checked_add(2000) == Some(mapped.replication.port)
                || mapped
                    .rsync
                    .as_ref()
                    .is_some_and(|r| c.checked_add(10001) == Some(r.port));
            if !offsets_hold {
                return mapped;
            }
        }
    }

    /// `127.0.0.1:<client proxy port>`: the `master` to dial.
    pub fn master(&self) -> String {
        format!("127.0.0.1:{}", self.client.port)
    }

    /// The source's lines naming the mapped ports.
    pub fn source_lines(&self) -> String {
        let mut lines = format!("  replication_port: {}\n", self.replication.port);
        if let Some(rsync) = &self.rsync {
            lines += &format!("  rsync_port: {}\n", rsync.port);
        }
        lines
    }

    fn proxies(&self) -> impl Iterator<Item = &Proxy> {
        [&self.client, &self.replication]
            .into_iter()
            .chain(self.rsync.as_ref())
    }

    /// A partition between us and the master: nothing moves on any of its ports.
    pub fn freeze(&self) {
        self.proxies().for_each(Proxy::freeze);
    }

    pub fn thaw(&self) {
        self.proxies().for_each(Proxy::thaw);
    }
}
