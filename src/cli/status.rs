//! The status endpoint of a running pipeline (`status: {listen: IP:PORT}`): `GET
//! /status` gives JSON, `GET /metrics` Prometheus text. `pika-migrate status` reads it
//! and prints it for a human.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use pika_migrate_core::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::pipeline_file;

/// Largest request head we read.
const MAX_REQUEST: usize = 8 << 10;

/// Binds now (so a busy port fails the start) and serves until aborted.
pub async fn serve(listen: SocketAddr, metrics: Metrics) -> anyhow::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("status: cannot listen on {listen}"))?;
    tracing::info!(%listen, "status endpoint: GET /status (JSON), GET /metrics (Prometheus)");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(conn, &metrics).await {
                    tracing::debug!(error = %e, "status request failed");
                }
            });
        }
    }))
}

async fn answer(mut conn: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (code, kind, body) = match path {
        "/" | "/status" => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&metrics.report()).unwrap_or_default(),
        ),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.prometheus(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "try /status or /metrics\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

/// `pika-migrate status`: the address given, or the one in the pipeline file.
pub async fn show(
    addr: Option<String>,
    config: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let addr = match (addr, config) {
        (Some(a), _) => a,
        (None, Some(path)) => {
            let config = pipeline_file::load(&path)?;
            match config.status {
                Some(s) => s.listen.to_string(),
                None => bail!(
                    "{}: the pipeline has no `status: {{listen: …}}`",
                    path.display()
                ),
            }
        }
        (None, None) => bail!("give --addr IP:PORT or -c PIPELINE"),
    };
    let body = fetch(&addr, "/status").await.with_context(|| {
        format!("no status at {addr} (is the pipeline running with `status.listen: {addr}`?)")
    })?;
    if json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let r: serde_json::Value = serde_json::from_str(&body).context("status: not JSON")?;
    print!("{}", human(&r));
    Ok(ExitCode::SUCCESS)
}

async fn fetch(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP response");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// The status as lines for a terminal.
fn human(r: &serde_json::Value) -> String {
    let s = |k: &str| match &r[k] {
        serde_json::Value::String(v) => v.clone(),
        serde_json::Value::Null => "-".into(),
        v => v.to_string(),
    };
    let mut out = format!("stage:     {}\n", s("stage"));
    if !r["master"].is_null() {
        out.push_str(&format!("master:    {}\n", s("master")));
        out.push_str(&format!(
            "position:  {} (master sent {})\n",
            s("position"),
            s("master_sent")
        ));
        out.push_str(&format!(
            "lag:       {} items, {} ms since arrival, {} s since the master wrote it\n",
            s("lag_items"),
            s("lag_ms"),
            s("lag_seconds")
        ));
    }
    out.push_str(&format!(
        "keys:      {}/{} (dump received: {} bytes)\n",
        s("keys_done"),
        s("keys_total"),
        s("dump_bytes")
    ));
    out.push_str(&format!("events:    {}\n", s("events")));
    if let Some(sinks) = r["sinks"].as_array() {
        for sink in sinks {
            out.push_str(&format!(
                "sink:      {}: {} events ({:.0}/s), acknowledged {}\n",
                sink["name"].as_str().unwrap_or("?"),
                sink["events"],
                sink["events_per_second"].as_f64().unwrap_or(0.0),
                sink["acknowledged"].as_str().unwrap_or("-")
            ));
            if let Some(error) = sink["error"].as_str() {
                out.push_str(&format!("           cannot write: {error}\n"));
            }
        }
    }
    out.push_str(&format!("errors:    {}", s("errors")));
    if !r["last_error"].is_null() {
        out.push_str(&format!(" (last: {})", s("last_error")));
    }
    out.push('\n');
    out
}
