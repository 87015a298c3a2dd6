//! `pika-migrate validate -c FILE`: loads the pipeline file and says what it would run
//! (one line per source of a fleet).

use std::path::Path;
use std::process::ExitCode;

use crate::pipeline_file;

pub fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let fleet = pipeline_file::load_fleet(path)?;
    for member in &fleet.members {
        let config = &member.config;
        let source = pipeline_file::build_source(config)?;
        println!(
            "{}: ok: {}{} → {} filter(s) → {} sink(s)",
            path.display(),
            member
                .name
                .as_deref()
                .map(|n| format!("[{n}] "))
                .unwrap_or_default(),
            source.describe(),
            config.filters.len(),
            config.sinks.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
