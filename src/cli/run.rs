//! `pika-migrate run -c FILE`: runs a pipeline; offline sources exit 0 when done, with a
//! one-line summary on standard error.

use std::path::Path;
use std::process::ExitCode;

use super::progress::Progress;
use crate::pipeline_file;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = pipeline_file::load(path)?;
    let pipeline = pipeline_file::build(&config).await?;
    let progress = Progress::start(pipeline.metrics.clone());
    let result = pipeline.run().await;
    progress.finish();
    let report = result?;
    for (_, sink) in &report.sinks {
        for line in &sink.lines {
            eprintln!("{line}");
        }
    }
    for (note, count) in &report.source.notes {
        eprintln!("binlog: {count} command(s) {}", note.replace('_', " "));
    }
    if let Some(scan) = &report.source.scan {
        if scan.expired > 0 {
            eprintln!("snapshot: {} expired key(s) skipped", scan.expired);
        }
    }
    if let Some(end) = report.source.end_position {
        eprintln!("source position at the end: {end}");
    }
    eprintln!("{}", report.summary());
    Ok(ExitCode::SUCCESS)
}
