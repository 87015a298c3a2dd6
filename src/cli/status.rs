//! The status endpoint of a running pipeline (`status: {listen: IP:PORT}`): `GET
//! /status` gives JSON, `GET /metrics` Prometheus text. `pika-migrate status` reads it
//! and prints it for a human.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use pika_migrate_core::fleet::FleetStatus;
use pika_migrate_core::pipeline::PauseSwitch;
use pika_migrate_core::source::StopSignal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// Largest request head we read.
const MAX_REQUEST: usize = 8 << 10;
/// How long a client has to send its request head: an idle connection holds a file
/// descriptor, and enough of them would leave none for the replica and the sinks.
pub const REQUEST_WITHIN: Duration = Duration::from_secs(5);
/// How long writing an answer may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Connections served at once. Past it, the oldest is closed to make room: the ones
/// that stay open longest are the idle ones, and a new request is worth more.
pub const MAX_CONNECTIONS: usize = 32;
/// Pause after a failed accept (out of file descriptors, …): the listener stays
/// readable meanwhile, and retrying at once would spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What the control endpoints (`POST /control/pause|resume|stop`) act on, and who may.
#[derive(Debug, Clone)]
pub struct Control {
    pub stop: StopSignal,
    pub pause: PauseSwitch,
    /// The token a control request must carry, if any.
    pub token: Option<String>,
    /// Without a token, control is allowed only on a loopback address.
    pub loopback: bool,
}

impl Control {
    /// Whether a request whose headers are `head` may act; else the answer to give.
    fn refusal(&self, head: &str) -> Option<(&'static str, String)> {
        match &self.token {
            Some(token) => {
                let given = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().strip_prefix("Bearer ").map(str::trim))?
                });
                (given != Some(token.as_str())).then(|| {
                    ("401 Unauthorized", "a control request needs `Authorization: Bearer <status.token>`\n".into())
                })
            }
            None if !self.loopback => Some((
                "403 Forbidden",
                "this status endpoint listens beyond loopback: control needs `status.token` in the pipeline file\n".into(),
            )),
            None => None,
        }
    }
}

/// The page served at `/`: it draws the status, and refreshes itself from `/status` and
/// `/history` (nothing from the internet).
const PAGE: &str = include_str!("status_page.html");
/// How often the lag is sampled for the page's chart, and how many samples are kept.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES: usize = 120;

/// One sample of the lag and the load, for the page's chart and rates.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    /// Unix milliseconds.
    at: u64,
    lag_ms: u64,
    lag_items: u64,
    keys_done: u64,
}

/// The last [`SAMPLES`] samples, oldest first.
type History = std::sync::Arc<std::sync::Mutex<VecDeque<Sample>>>;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn sample(watched: FleetStatus, history: History) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let (lag_ms, lag_items, keys_done) = watched.headline();
        let s = Sample {
            at: unix_ms(),
            lag_ms,
            lag_items,
            keys_done,
        };
        if let Ok(mut h) = history.lock() {
            if h.len() >= SAMPLES {
                h.pop_front();
            }
            h.push_back(s);
        }
    }
}

/// The page, with the status and history as they are now in it (a browser shows them
/// without a second request).
fn page(watched: &FleetStatus, history: &History) -> String {
    let samples: Vec<Sample> = history
        .lock()
        .map(|h| h.iter().copied().collect())
        .unwrap_or_default();
    let initial = serde_json::json!({
        "status": watched.json(),
        "history": samples,
        "at": unix_ms(),
    });
    // Inside a <script> element: no `</` may close it early.
    PAGE.replace("{{INITIAL}}", &initial.to_string().replace("</", "<\\/"))
}

/// Binds now (so a busy port fails the start) and serves until aborted.
pub async fn serve(
    listen: SocketAddr,
    watched: FleetStatus,
    control: Control,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("status: cannot listen on {listen}"))?;
    tracing::info!(%listen, "status endpoint: GET / (page), GET /status (JSON), GET /metrics (Prometheus), POST /control/pause|resume|stop");
    if control.token.is_none() && !control.loopback {
        tracing::warn!(%listen, "the status endpoint listens beyond loopback without `status.token`: pause, resume and stop are refused there");
    }
    let history = History::default();
    let sampler = tokio::spawn(sample(watched.clone(), history.clone()));
    Ok(tokio::spawn(async move {
        accept_loop(listener, watched, control, history).await;
        sampler.abort();
    }))
}

async fn accept_loop(
    listener: TcpListener,
    watched: FleetStatus,
    control: Control,
    history: History,
) {
    let mut tasks = JoinSet::new();
    // The connections being served, oldest first.
    let mut open: VecDeque<AbortHandle> = VecDeque::new();
    let mut failing = false;
    loop {
        tokio::select! {
            Some(done) = tasks.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.retain(|h| h.id() != id);
            }
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    failing = false;
                    if open.len() >= MAX_CONNECTIONS {
                        close_oldest(&mut open);
                    }
                    let (watched, control, history) = (watched.clone(), control.clone(), history.clone());
                    open.push_back(tasks.spawn(async move {
                        if let Err(e) = answer(conn, &watched, &control, &history).await {
                            tracing::debug!(error = %e, "status request failed");
                        }
                    }));
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, open = open.len(), "status endpoint: cannot accept a connection; closing the oldest and pausing");
                    }
                    failing = true;
                    // Out of file descriptors, the oldest connection's gives the next
                    // request one.
                    close_oldest(&mut open);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
        }
    }
}

fn close_oldest(open: &mut VecDeque<AbortHandle>) {
    if let Some(oldest) = open.pop_front() {
        oldest.abort();
    }
}

async fn answer(
    mut conn: TcpStream,
    watched: &FleetStatus,
    control: &Control,
    history: &History,
) -> std::io::Result<()> {
    let timed_out = |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned());
    let head = tokio::time::timeout(REQUEST_WITHIN, read_head(&mut conn))
        .await
        .map_err(|_| timed_out("no request within the time allowed"))??;
    let head = String::from_utf8_lossy(&head);
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or("GET");
    let path = words.next().unwrap_or("/");
    let (code, kind, body): (&str, &str, String) = match (method, path) {
        ("POST", "/control/pause" | "/control/resume" | "/control/stop") => {
            match control.refusal(&head) {
                Some((code, why)) => (code, "text/plain", why),
                None => {
                    let action = path.trim_start_matches("/control/");
                    match action {
                        "pause" => control.pause.set(true),
                        "resume" => control.pause.set(false),
                        _ => {
                            // A stop also resumes: what was read is written, then the
                            // run ends with its position saved.
                            control.stop.stop();
                            control.pause.set(false);
                        }
                    }
                    tracing::info!(action, "control request");
                    ("200 OK", "application/json", format!("{{\"ok\":true,\"action\":\"{action}\"}}\n"))
                }
            }
        }
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", page(watched, history)),
        ("GET", "/history") => (
            "200 OK",
            "application/json",
            history
                .lock()
                .map(|h| serde_json::to_string(&*h).unwrap_or_default())
                .unwrap_or_default(),
        ),
        ("GET", "/status") => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&watched.json()).unwrap_or_default(),
        ),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            watched.prometheus(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "try /status or /metrics (GET), /control/pause, /control/resume, /control/stop (POST)\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        conn.write_all(response.as_bytes()).await?;
        conn.shutdown().await
    };
    tokio::time::timeout(ANSWER_WITHIN, write)
        .await
        .map_err(|_| timed_out("the answer was not taken within the time allowed"))?
}

/// The request line and headers (up to [`MAX_REQUEST`] bytes).
async fn read_head(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The endpoints of `--addr a,b,c` (one process per master).
pub fn addresses(addr: &str) -> Vec<String> {
    addr.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `pika-migrate status`: each endpoint's status; several in one JSON object by address.
pub async fn show(addrs: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let mut bodies = Vec::new();
    for addr in addrs {
        let body = fetch(addr, "/status").await.with_context(|| {
            format!("no status at {addr} (is the pipeline running with `status.listen: {addr}`?)")
        })?;
        let parsed: serde_json::Value = serde_json::from_str(&body).context("status: not JSON")?;
        bodies.push((addr.clone(), body, parsed));
    }
    match (json, bodies.as_slice()) {
        (true, [(_, body, _)]) => println!("{body}"),
        (true, _) => {
            let all: serde_json::Map<String, serde_json::Value> = bodies
                .into_iter()
                .map(|(addr, _, parsed)| (addr, parsed))
                .collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        (false, [(_, _, parsed)]) => print!("{}", human(parsed)),
        (false, _) => {
            for (addr, _, parsed) in &bodies {
                println!("== {addr}");
                print!("{}", human(parsed));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn fetch(addr: &str, path: &str) -> anyhow::Result<String> {
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

/// The status as lines for a terminal: a fleet's summary, then each source's.
fn human(r: &serde_json::Value) -> String {
    let Some(sources) = r["sources"].as_object() else {
        return source_lines(r);
    };
    let f = &r["fleet"];
    let failed: Vec<&str> = f["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    let mut out = format!(
        "fleet:     {} source(s), {} streaming, {} failed{}; lag {} items; slowest {} ({} ms)\n",
        f["sources"],
        f["streaming"],
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join(", "))
        },
        f["lag_items"],
        f["slowest"].as_str().unwrap_or("-"),
        f["slowest_lag_ms"]
    );
    if r["paused"] == true {
        out.push_str("paused:    every source (nothing is applied)\n");
    }
    for (name, source) in sources {
        out.push_str(&format!("\n[{name}]\n"));
        out.push_str(&source_lines(source));
    }
    out
}

/// One source's status as lines.
fn source_lines(r: &serde_json::Value) -> String {
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
    if !r["failed"].is_null() {
        out.push_str(&format!("FAILED:    {}\n", s("failed")));
    }
    out.push_str(&format!("errors:    {}", s("errors")));
    if !r["last_error"].is_null() {
        out.push_str(&format!(" (last: {})", s("last_error")));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(token: Option<&str>, loopback: bool) -> Control {
        Control {
            stop: StopSignal::default(),
            pause: PauseSwitch::default(),
            token: token.map(str::to_owned),
            loopback,
        }
    }

    #[test]
    fn control_beyond_loopback_needs_a_token_and_a_token_is_always_checked() {
        let head = "POST /control/stop HTTP/1.1\r\nHost: x\r\n";
        let bearer = "POST /control/stop HTTP/1.1\r\nauthorization: Bearer t0k\r\n";
        assert!(control(None, true).refusal(head).is_none());
        let (code, why) = control(None, false).refusal(bearer).unwrap();
        assert_eq!(code, "403 Forbidden");
        assert!(why.contains("status.token"), "{why}");
        assert_eq!(control(Some("t0k"), false).refusal(bearer), None);
        assert_eq!(
            control(Some("t0k"), true).refusal(head).unwrap().0,
            "401 Unauthorized"
        );
        assert!(control(Some("other"), true).refusal(bearer).is_some());
    }
}
