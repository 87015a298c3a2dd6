//! `pika-migrate run -c FILE`: runs a pipeline; offline sources exit 0 when done, with a
//! one-line summary on standard error.

use std::path::Path;
use std::process::ExitCode;

use super::progress::Progress;
use crate::pipeline_file;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = pipeline_file::load(path)?;
    let pipeline = pipeline_file::build(&config).await?;
    let status = match &config.status {
        Some(s) => {
            let control = super::status::Control {
                stop: pipeline.stop.clone(),
                pause: pipeline.pause.clone(),
                token: s.token.clone(),
                loopback: s.listen.ip().is_loopback(),
            };
            Some(super::status::serve(s.listen, pipeline.metrics.clone(), control).await?)
        }
        None => None,
    };
    let progress = Progress::start(pipeline.metrics.clone());
    let stop = pipeline.stop.clone();
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: finishing what was read, then exiting");
        stop.stop();
    });
    let result = pipeline.run().await;
    signals.abort();
    if let Some(status) = status {
        status.abort();
    }
    progress.finish();
    let report = result?;
    for (_, sink) in &report.sinks {
        for line in &sink.lines {
            eprintln!("{line}");
        }
    }
    for (note, count) in &report.source.notes {
        eprintln!("binlog: {count} {}", note.describe());
    }
    if let Some(scan) = &report.source.scan {
        if scan.expired > 0 {
            eprintln!("snapshot: {} expired key(s) skipped", scan.expired);
        }
        for line in scan.unsupported_lines() {
            eprintln!("snapshot: {line}");
        }
    }
    if report.source.expired_events > 0 {
        eprintln!(
            "capture: {} snapshot event(s) of expired keys skipped",
            report.source.expired_events
        );
    }
    let late = &report.source.late_expiries;
    if late.held > 0 {
        eprintln!(
            "late replay: {} expiry(ies) already past held back; {} key(s) released (deleted unless the master had kept them), {} cancelled by a later command{}",
            late.held,
            late.released,
            late.cancelled,
            if late.released_early > 0 {
                format!(", {} released early (too many held)", late.released_early)
            } else {
                String::new()
            }
        );
    }
    if report.source.skipped_records > 0 {
        eprintln!(
            "capture: {} damaged record(s) skipped",
            report.source.skipped_records
        );
    }
    let ends = &report.source.end_positions;
    match ends.iter().next() {
        Some((_, end)) if ends.len() == 1 => eprintln!("source position at the end: {end}"),
        Some(_) => {
            let each: Vec<String> = ends
                .iter()
                .map(|(db, at)| format!("{db}: \"{at}\""))
                .collect();
            eprintln!(
                "source positions at the end, per database: {{{}}}",
                each.join(", ")
            );
        }
        None => {}
    }
    eprintln!(
        "{}{}",
        report.summary(),
        peak_rss()
            .map(|kib| format!(", peak RSS {} MiB", kib / 1024))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops cleanly");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The process's peak resident memory in KiB (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
