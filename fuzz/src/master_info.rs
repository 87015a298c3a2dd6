//! What a master says of itself on its client port: the INFO text, and the reply bytes
//! it answers `AUTH` and `INFO` with.

use std::sync::OnceLock;

use pika_migrate_core::source::pika::master_info::{fetch, MasterInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Parses INFO text and checks it as the replica does before joining: a refusal
/// names the master's address.
pub fn text(data: &[u8]) {
    let info = MasterInfo::parse(&String::from_utf8_lossy(data));
    if let Err(e) = info.check("10.0.0.5:9221") {
        assert!(e.to_string().contains("10.0.0.5:9221"), "{e}");
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A master on 127.0.0.1 that answers whatever is asked with `data` and hangs up; the
/// replica's reader (with and without a password) must end in an answer or an error,
/// never a panic.
pub fn reply(data: &[u8]) {
    let data = data.to_vec();
    runtime().block_on(async move {
        for password in [None, Some("secret")] {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("a loopback port");
            let addr = listener.local_addr().expect("its address").to_string();
            let answer = data.clone();
            let master = tokio::spawn(async move {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut request = [0u8; 256];
                let _ = conn.read(&mut request).await;
                let _ = conn.write_all(&answer).await;
                let _ = conn.shutdown().await;
            });
            let result = fetch(&addr, password).await;
            let _ = master.await;
            if let Ok(info) = result {
                let _ = info.check(&addr);
            }
        }
    });
}
