//! `pika-migrate validate -c FILE`: loads the pipeline file and says what it would run.

use std::path::Path;
use std::process::ExitCode;

use crate::pipeline_file;

pub fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let config = pipeline_file::load(path)?;
    let source = pipeline_file::build_source(&config)?;
    println!(
        "{}: ok: {} → {} filter(s) → {} sink(s)",
        path.display(),
        source.describe(),
        config.filters.len(),
        config.sinks.len()
    );
    Ok(ExitCode::SUCCESS)
}
