//! One connection to a Redis server: connect, authenticate, select the database, then
//! send pipelines of pre-encoded commands and read their replies in order.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use super::reply::{self, Reply};
use super::url::Target;
use pika_migrate_core::resp::encode_command;

/// Why a connection could not be set up. Each names the target (password hidden).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{target}: cannot connect: {source}")]
    Io {
        target: Target,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: connection timed out after {0:?}", .timeout)]
    Timeout { target: Target, timeout: Duration },
    #[error("{target}: authentication refused: {reply}")]
    Auth { target: Target, reply: String },
    #[error("{target}: {command} refused: {reply}")]
    Refused {
        target: Target,
        command: &'static str,
        reply: String,
    },
    #[error("{target}: TLS handshake failed: {source}")]
    Tls {
        target: Target,
        #[source]
        source: std::io::Error,
    },
}

impl ConnectError {
    /// Whether trying again later can help (the server may come back); wrong
    /// credentials or settings cannot.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Io { .. } | ConnectError::Timeout { .. })
            || matches!(self, ConnectError::Refused { reply, .. } if reply.starts_with("LOADING"))
    }
}

/// A plain or TLS byte stream.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Connection {
    stream: BufWriter<Box<dyn Stream>>,
    read_buf: BytesMut,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Connection {
    pub async fn connect(target: &Target) -> Result<Connection, ConnectError> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| ConnectError::Timeout {
            target: target.clone(),
            timeout: CONNECT_TIMEOUT,
        })?
        .map_err(|source| ConnectError::Io {
            target: target.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match (&target.tls_client, target.tls) {
            (Some(tls), true) => {
                let handshake = tls.handshake(tcp, &target.host);
                let tls_stream = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
                    .await
                    .map_err(|_| ConnectError::Tls {
                        target: target.clone(),
                        source: std::io::Error::other(format!(
                            "no answer within {CONNECT_TIMEOUT:?}: is it a TLS port?"
                        )),
                    })?
                    .map_err(|source| ConnectError::Tls {
                        target: target.clone(),
                        source,
                    })?;
                Box::new(tls_stream)
            }
            (None, true) => {
                return Err(ConnectError::Tls {
                    target: target.clone(),
                    source: std::io::Error::other("no TLS settings"),
                })
            }
            _ => Box::new(tcp),
        };
        let mut conn = Connection {
            stream: BufWriter::with_capacity(1 << 20, stream),
            read_buf: BytesMut::with_capacity(1 << 16),
        };
        let io = |source| ConnectError::Io {
            target: target.clone(),
            source,
        };
        if let Some(password) = &target.password {
            let mut argv: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &target.user {
                argv.push(user.as_bytes());
            }
            argv.push(password.as_bytes());
            if let Reply::Error(reply) = conn.call(&argv).await.map_err(io)? {
                return Err(ConnectError::Auth {
                    target: target.clone(),
                    reply,
                });
            }
        }
        let checks: [(&'static str, Vec<Vec<u8>>); 2] = [
            (
                "SELECT",
                vec![b"SELECT".to_vec(), target.db.to_string().into_bytes()],
            ),
            ("PING", vec![b"PING".to_vec()]),
        ];
        for (command, argv) in checks {
            if let Reply::Error(reply) = conn.call(&argv).await.map_err(io)? {
                let target = target.clone();
                return Err(
                    if reply.starts_with("NOAUTH") || reply.starts_with("WRONGPASS") {
                        ConnectError::Auth { target, reply }
                    } else {
                        ConnectError::Refused {
                            target,
                            command,
                            reply,
                        }
                    },
                );
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    pub async fn call<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> std::io::Result<Reply> {
        let mut buf = Vec::new();
        encode_command(&mut buf, argv);
        let mut replies = Vec::with_capacity(1);
        self.pipeline(&buf, 1, &mut replies).await?;
        Ok(replies.pop().unwrap_or(Reply::Bulk(None)))
    }

    /// Sends `encoded` (RESP commands) and reads `count` replies into `out`, in order.
    pub async fn pipeline(
        &mut self,
        encoded: &[u8],
        count: usize,
        out: &mut Vec<Reply>,
    ) -> std::io::Result<()> {
        self.stream.write_all(encoded).await?;
        self.stream.flush().await?;
        let mut got = 0;
        while got < count {
            match reply::parse(&mut self.read_buf) {
                Ok(Some(reply)) => {
                    out.push(reply);
                    got += 1;
                }
                Ok(None) => {
                    if self.read_buf.capacity() - self.read_buf.len() < 4096 {
                        self.read_buf.reserve(1 << 16);
                    }
                    let n = self.stream.get_mut().read_buf(&mut self.read_buf).await?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "Redis closed the connection",
                        ));
                    }
                }
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
        }
        Ok(())
    }
}
