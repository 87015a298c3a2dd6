//! Commands that act on a running pipeline through its status endpoint: `pause` and
//! `resume`, and waiting until it has applied everything the master wrote
//! (`status --wait-synced`).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pika_migrate_core::config::StatusConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pipeline_file;

/// Exit code of a wait that ran out of time (sysexits' EX_TEMPFAIL).
pub const EXIT_NOT_YET: u8 = 75;
const POLL: Duration = Duration::from_millis(200);

/// Where a pipeline's status endpoint listens, and the token its control needs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: String,
    pub token: Option<String>,
}

impl Endpoint {
    pub fn of_pipeline(path: &Path) -> anyhow::Result<Endpoint> {
        Endpoint::of_status(path, pipeline_file::load_fleet(path)?.status)
    }

    /// The endpoint `status` (of the pipeline file `path`) sets up.
    pub fn of_status(path: &Path, status: Option<StatusConfig>) -> anyhow::Result<Endpoint> {
        match status {
            Some(s) => Ok(Endpoint {
                addr: s.listen.to_string(),
                token: s.token,
            }),
            None => bail!(
                "{}: the pipeline has no `status: {{listen: …}}`",
                path.display()
            ),
        }
    }

    /// `GET /status`, parsed.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let body = super::status::fetch(&self.addr, "/status")
            .await
            .with_context(|| format!("no status at {} (is the pipeline running?)", self.addr))?;
        serde_json::from_str(&body).context("status: not JSON")
    }

    /// `POST /control/<action>` with the token.
    pub async fn control(&self, action: &str) -> anyhow::Result<()> {
        let mut conn = TcpStream::connect(&self.addr).await.with_context(|| {
            format!(
                "no status endpoint at {} (is the pipeline running?)",
                self.addr
            )
        })?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST /control/{action} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        conn.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.1 200") {
            bail!(
                "{action} refused: {} {}",
                head.lines().next().unwrap_or_default(),
                body.trim()
            );
        }
        Ok(())
    }
}

/// The sources a status shows: each of a fleet's by name, or the one source.
pub fn sources_of(status: &serde_json::Value) -> Vec<(Option<String>, &serde_json::Value)> {
    match status["sources"].as_object() {
        Some(sources) => sources.iter().map(|(n, s)| (Some(n.clone()), s)).collect(),
        None => vec![(None, status)],
    }
}

/// Every database of every source streaming, everything the masters sent
/// acknowledged by every sink; else what is not there yet.
pub fn synced(status: &serde_json::Value) -> Result<(), String> {
    let mut missing = Vec::new();
    for (name, source) in sources_of(status) {
        if let Err(why) = source_synced(source) {
            missing.push(match name {
                Some(name) => format!("{name}: {why}"),
                None => why,
            });
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// [`synced`] for one source's status.
fn source_synced(status: &serde_json::Value) -> Result<(), String> {
    if let Some(why) = status["failed"].as_str() {
        return Err(format!("failed: {why}"));
    }
    let dbs: Vec<(String, &serde_json::Value)> = match status["dbs"].as_object() {
        Some(dbs) if !dbs.is_empty() => dbs.iter().map(|(db, d)| (format!("db{db}"), d)).collect(),
        _ => vec![("the source".to_owned(), status)],
    };
    let mut missing = Vec::new();
    for (name, d) in dbs {
        let stage = d["stage"].as_str().unwrap_or("?");
        if stage != "streaming" {
            missing.push(format!("{name} is at stage {stage}"));
        } else if d["lag_items"].as_u64().unwrap_or(0) > 0 || d["position"] != d["master_sent"] {
            missing.push(format!(
                "{name}: {} item(s) not yet applied (at {}, the master sent {})",
                d["lag_items"],
                d["position"].as_str().unwrap_or("-"),
                d["master_sent"].as_str().unwrap_or("-")
            ));
        }
    }
    for sink in status["sinks"].as_array().into_iter().flatten() {
        if let Some(e) = sink["error"].as_str() {
            missing.push(format!(
                "sink {} is failing: {e}",
                sink["name"].as_str().unwrap_or("?")
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// `pika-migrate status --wait-synced` over one endpoint or several (one process per
/// master): waits until every one is [`synced`], at most `timeout`.
pub async fn wait_synced(endpoints: &[Endpoint], timeout: Duration) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        let mut positions = Vec::new();
        for endpoint in endpoints {
            let status = endpoint.status().await?;
            match synced(&status) {
                Ok(()) => positions.push(
                    status["position"]
                        .as_str()
                        .unwrap_or("each database's position")
                        .to_owned(),
                ),
                Err(why) if endpoints.len() > 1 => {
                    missing.push(format!("{}: {why}", endpoint.addr))
                }
                Err(why) => missing.push(why),
            }
        }
        if missing.is_empty() {
            println!(
                "synced: every database streams, everything the master sent is applied (at {})",
                positions.join(", ")
            );
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() >= timeout {
            println!(
                "not synced after {} s: {}",
                timeout.as_secs(),
                missing.join("; ")
            );
            return Ok(ExitCode::from(EXIT_NOT_YET));
        }
        tokio::time::sleep(POLL).await;
    }
}
/// `pika-migrate pause|resume -c FILE`: asks, then waits until the status shows it.
pub async fn pause_or_resume(path: &Path, pause: bool) -> anyhow::Result<ExitCode> {
    let endpoint = Endpoint::of_pipeline(path)?;
    let action = if pause { "pause" } else { "resume" };
    endpoint.control(action).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = endpoint.status().await?;
        if status["paused"].as_bool() == Some(pause) {
            println!(
                "{}: at {}",
                if pause {
                    "paused (nothing is applied; the link to the master stays up)"
                } else {
                    "resumed"
                },
                status["position"]
                    .as_str()
                    .unwrap_or("each database's position")
            );
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() > deadline {
            println!("asked to {action}; the status does not show it yet");
            return Ok(ExitCode::from(EXIT_NOT_YET));
        }
        tokio::time::sleep(POLL).await;
    }
}
