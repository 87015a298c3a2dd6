//! One connection to a Redis server, checked with a PING so a server still loading or
//! wanting a password fails here. Plain TCP and unix sockets go on our own path
//! (`wire`: RESP built once, replies read without a parser-combinator); TLS on the
//! `redis` crate's connection (its rustls client). Either way the url is the crate's
//! parsing, commands go out as pre-built pipelines, and every reply comes back as a
//! `redis::Value`, errors included.
//!
//! A server that stops answering without closing (a host gone, a cut network, a
//! stopped process) is noticed: every reply is awaited for at most the response
//! timeout, and TCP keepalive probes an idle connection, so a lane reconnects within
//! seconds instead of the kernel's quarter of an hour.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Value};

use super::target::show;
use super::wire::{Request, Wire};

/// Why a connection could not be set up. Each names the target (password hidden).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{target}: cannot connect: {message}")]
    Io { target: String, message: String },
    #[error("{target}: authentication refused: {reply}")]
    Auth { target: String, reply: String },
    #[error("{target}: {command} refused: {reply}")]
    Refused {
        target: String,
        command: &'static str,
        reply: String,
    },
    #[error("{target}: TLS handshake failed: {message}")]
    Tls { target: String, message: String },
}

impl ConnectError {
    /// Whether trying again later can help (the server may come back); wrong
    /// credentials or settings cannot.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Io { .. })
            || matches!(self, ConnectError::Refused { reply, .. } if reply.starts_with("LOADING"))
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reply may take by default (`response_timeout_ms`).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keepalive on an idle connection: first probe after 10 s, then every 5 s, 3 unanswered
/// probes close it (a dead peer is found within about 25 s).
fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3)
}

fn tcp_settings(response_timeout: Duration) -> TcpSettings {
    TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive())
        // Data sent and never acknowledged (the host is gone) fails the write as well.
        .set_user_timeout(response_timeout)
}

/// The crate's settings for one of our connections.
fn connection_config(response_timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(response_timeout)
        .set_tcp_settings(tcp_settings(response_timeout))
}

/// The error text of a reply, as Redis wrote it (`WRONGTYPE Operation against …`), if
/// it is an error.
pub fn reply_error(reply: &Value) -> Option<String> {
    match reply {
        Value::ServerError(e) => Some(match e.details() {
            Some(details) => format!("{} {details}", e.code()),
            None => e.code().to_owned(),
        }),
        _ => None,
    }
}

/// A reply as text for a message: the error as Redis wrote it, or the value.
pub fn error_text(reply: &Value) -> String {
    reply_error(reply).unwrap_or_else(|| format!("{reply:?}"))
}

/// A command from its arguments (name first), its buffers sized once.
pub fn command<A: AsRef<[u8]>>(argv: &[A]) -> Cmd {
    let bytes = argv.iter().map(|a| a.as_ref().len()).sum();
    let mut cmd = Cmd::with_capacity(argv.len(), bytes);
    for a in argv {
        cmd.arg(a.as_ref());
    }
    cmd
}

/// A bulk reply's bytes.
pub fn bulk(reply: &Value) -> Option<Bytes> {
    match reply {
        Value::BulkString(v) => Some(Bytes::copy_from_slice(v)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Okay => Some(Bytes::from_static(b"OK")),
        _ => None,
    }
}

/// Whether a failed connect was a TLS failure (a certificate refused, a peer that
/// does not speak TLS) rather than a network one.
fn tls_failure(e: &redis::RedisError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        source = err.source();
    }
    false
}

pub struct Connection {
    link: Link,
    /// The server's id of this client (`CLIENT ID`), when it tells: a lane that gave up
    /// on the connection has the server drop it (`CLIENT KILL ID`) before it decides
    /// whether to send again, so what it sent can no longer run late.
    pub id: Option<i64>,
}

/// What carries the bytes.
enum Link {
    Wire(Wire),
    /// TLS: the crate's connection.
    Crate(MultiplexedConnection),
}

fn io_error(target: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Io {
        target: target.to_owned(),
        message: e.to_string(),
    }
}

impl Connection {
    /// Connects, authenticates, selects the database and checks with PING; every reply
    /// is then awaited for at most `response_timeout`.
    pub async fn open(
        info: &ConnectionInfo,
        response_timeout: Duration,
    ) -> Result<Connection, ConnectError> {
        let target = show(info);
        let link = match &info.addr {
            ConnectionAddr::TcpTls { .. } => {
                Link::Crate(crate_connection(info, &target, response_timeout).await?)
            }
            addr => Link::Wire(wire_connection(addr, &target, response_timeout).await?),
        };
        let mut conn = Connection { link, id: None };
        if matches!(conn.link, Link::Wire(_)) {
            conn.handshake(info, &target).await?;
        }
        let pong = conn.call(&[b"PING".as_slice()]).await;
        let reply = match pong {
            Ok(reply @ Value::ServerError(_)) => error_text(&reply),
            Ok(_) => {
                conn.id = match conn.call(&[b"CLIENT".as_slice(), b"ID"]).await {
                    Ok(Value::Int(id)) => Some(id),
                    _ => None,
                };
                return Ok(conn);
            }
            Err(e) => return Err(io_error(&target, e)),
        };
        Err(
            if reply.starts_with("NOAUTH") || reply.starts_with("WRONGPASS") {
                ConnectError::Auth { target, reply }
            } else {
                ConnectError::Refused {
                    target,
                    command: "PING",
                    reply,
                }
            },
        )
    }

    /// AUTH and SELECT as the url asks, on our own path (the crate does them on its).
    async fn handshake(&mut self, info: &ConnectionInfo, target: &str) -> Result<(), ConnectError> {
        let redis = &info.redis;
        if let Some(password) = &redis.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &redis.username {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            let reply = self.call(&auth).await.map_err(|e| io_error(target, e))?;
            if let Some(reply) = reply_error(&reply) {
                return Err(ConnectError::Auth {
                    target: target.to_owned(),
                    reply,
                });
            }
        }
        if redis.db != 0 {
            let db = redis.db.to_string();
            let reply = self
                .call(&[b"SELECT".as_slice(), db.as_bytes()])
                .await
                .map_err(|e| io_error(target, e))?;
            if let Some(reply) = reply_error(&reply) {
                return Err(ConnectError::Refused {
                    target: target.to_owned(),
                    command: "SELECT",
                    reply,
                });
            }
        }
        Ok(())
    }

    /// Sends one command and reads its reply (a Redis error is an `Ok` value).
    pub async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> redis::RedisResult<Value> {
        let mut request = Request::with_capacity(64, 1);
        request.push(argv);
        let mut replies = self.request(&request).await?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    }

    /// Sends one built command and reads its reply.
    pub async fn send(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match &mut self.link {
            Link::Wire(wire) => {
                let mut replies = wire.exchange(&cmd.get_packed_command(), 1).await?;
                Ok(replies.pop().unwrap_or(Value::Nil))
            }
            Link::Crate(inner) => inner.send_packed_command(cmd).await,
        }
    }

    /// Sends `pipeline` and returns its `count` replies, in order.
    pub async fn pipeline(
        &mut self,
        pipeline: &redis::Pipeline,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        match &mut self.link {
            Link::Wire(wire) => Ok(wire
                .exchange(&pipeline.get_packed_pipeline(), count)
                .await?),
            Link::Crate(inner) => inner.send_packed_commands(pipeline, 0, count).await,
        }
    }

    /// Sends the commands of `request` and returns a reply for each, in order.
    pub async fn request(&mut self, request: &Request) -> redis::RedisResult<Vec<Value>> {
        match &mut self.link {
            Link::Wire(wire) => Ok(wire.exchange(request.bytes(), request.len()).await?),
            Link::Crate(inner) => {
                let mut pipeline = redis::Pipeline::with_capacity(request.len());
                for bytes in request.commands() {
                    let argv =
                        pika_migrate_core::resp::parse_command(&Bytes::copy_from_slice(bytes))
                            .map_err(|e| {
                                redis::RedisError::from((
                                    ErrorKind::ClientError,
                                    "a command we built",
                                    e.to_string(),
                                ))
                            })?;
                    pipeline.add_command(command(&argv));
                }
                inner
                    .send_packed_commands(&pipeline, 0, request.len())
                    .await
            }
        }
    }
}

/// A TCP or unix-socket connection on our own path, with the TCP settings the crate
/// would give it.
async fn wire_connection(
    addr: &ConnectionAddr,
    target: &str,
    response_timeout: Duration,
) -> Result<Wire, ConnectError> {
    let connect = async {
        let io: Box<dyn super::wire::Io> = match addr {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                let socket = redis::io::tcp::socket2::SockRef::from(&stream);
                socket.set_tcp_nodelay(true)?;
                socket.set_tcp_keepalive(&keepalive())?;
                socket.set_tcp_user_timeout(Some(response_timeout))?;
                Box::new(stream)
            }
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!("{other:?}"),
                ))
            }
        };
        Ok(io)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(io)) => Ok(Wire::new(io, response_timeout)),
        Ok(Err(e)) => Err(io_error(target, e)),
        Err(_) => Err(ConnectError::Io {
            target: target.to_owned(),
            message: format!("no connection within {CONNECT_TIMEOUT:?}"),
        }),
    }
}

/// A TLS connection: the crate's.
async fn crate_connection(
    info: &ConnectionInfo,
    target: &str,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, ConnectError> {
    let target = target.to_owned();
    let client = redis::Client::open(info.clone()).map_err(|e| ConnectError::Io {
        target: target.clone(),
        message: e.to_string(),
    })?;
    let config = connection_config(response_timeout);
    match client
        .get_multiplexed_async_connection_with_config(&config)
        .await
    {
        Ok(inner) => Ok(inner),
        Err(e) if e.kind() == ErrorKind::AuthenticationFailed => {
            let reply = auth_reply(info).await.unwrap_or_else(|| e.to_string());
            Err(ConnectError::Auth { target, reply })
        }
        Err(e) if tls_failure(&e) => Err(ConnectError::Tls {
            target,
            message: e.to_string(),
        }),
        Err(e) if e.is_timeout() => Err(ConnectError::Tls {
            target,
            message: format!("no answer within {CONNECT_TIMEOUT:?}: is it a TLS port?"),
        }),
        Err(e) if e.kind() == ErrorKind::ResponseError => Err(ConnectError::Refused {
            target,
            command: "SELECT",
            reply: e.to_string(),
        }),
        Err(e) => Err(ConnectError::Io {
            target,
            message: e.to_string(),
        }),
    }
}

/// The server's own words for a refused AUTH (the crate keeps only that it failed):
/// asked again on a connection without credentials.
async fn auth_reply(info: &ConnectionInfo) -> Option<String> {
    let mut bare = info.clone();
    bare.redis.username = None;
    bare.redis.password = None;
    bare.redis.db = 0;
    let client = redis::Client::open(bare).ok()?;
    let config = connection_config(RESPONSE_TIMEOUT);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()?;
    let mut auth = Cmd::new();
    auth.arg("AUTH");
    if let Some(user) = &info.redis.username {
        auth.arg(user);
    }
    auth.arg(info.redis.password.as_deref().unwrap_or(""));
    match conn.send_packed_command(&auth).await.ok()? {
        reply @ Value::ServerError(_) => Some(error_text(&reply)),
        _ => None,
    }
}
