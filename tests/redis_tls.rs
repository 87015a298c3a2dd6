//! `rediss://` targets: a real redis-server with TLS, a CA made by `openssl` for the
//! test; the fixture lands exactly, and a server we cannot trust fails at start.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (scripts/install-deps --test)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` and a server certificate for 127.0.0.1 signed by it.
fn make_ca(dir: &Path, name: &str) {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

fn make_server_cert(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
    certs: tempfile::TempDir,
}

fn start_tls_redis() -> TlsRedis {
    let certs = tempfile::tempdir().unwrap();
    make_ca(certs.path(), "ca");
    make_ca(certs.path(), "other-ca");
    make_server_cert(certs.path(), "ca");
    let tls_port = free_port();
    let p = |f: &str| certs.path().join(f).display().to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &p("server.crt"),
        "--tls-key-file",
        &p("server.key"),
        "--tls-ca-cert-file",
        &p("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    TlsRedis {
        server,
        tls_port,
        certs,
    }
}

fn pipeline(dir: &Path, url: &str, ca: &Path) -> std::path::PathBuf {
    let yaml = format!(
        "source:\n  type: snapshot\n  path: {}{}\nsinks:\n  - type: redis\n    url: {url}\n    tls:\n      ca_file: {}\n",
        fixture("dump").display(),
        as_of_line(fixture_moment()),
        ca.display()
    );
    write_pipeline(dir, &yaml)
}

#[test]
fn the_snapshot_lands_exactly_over_tls() {
    let r = start_tls_redis();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rediss://127.0.0.1:{}/0", r.tls_port);
    let file = pipeline(dir.path(), &url, &r.certs.path().join("ca.crt"));
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_dump_state(&r.server.state());
    let (code, stdout, stderr) = run_cli(&["verify", "-c", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn an_untrusted_or_plaintext_server_fails_at_start() {
    let r = start_tls_redis();
    let dir = tempfile::tempdir().unwrap();

    let url = format!("rediss://127.0.0.1:{}/0", r.tls_port);
    let file = pipeline(dir.path(), &url, &r.certs.path().join("other-ca.crt"));
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", r.tls_port)),
        "{stderr}"
    );

    let url = format!("rediss://127.0.0.1:{}/0", r.server.port);
    let file = pipeline(dir.path(), &url, &r.certs.path().join("ca.crt"));
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    assert_eq!(r.server.state().len(), 0, "nothing written");
}
