//! `pika-migrate verify -c FILE`: compares every key of the pipeline's snapshot source
//! with the pipeline's Redis sink; exit code 0 only when they are equal.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use pika_migrate_core::config::SourceConfig;
use pika_migrate_core::metrics::Metrics;
use pika_migrate_core::replay::ReplayClock;
use pika_migrate_core::source::snapshot::SnapshotSource;
use pika_migrate_core::source::{EventSender, StopSignal};
use pika_migrate_sinks::redis::verify::Verifier;
use pika_migrate_sinks::SinkConfig;
use tokio::sync::mpsc;

use super::verify_live::{verify_live, LiveOptions};
use crate::pipeline_file;

/// `verify` of the file's source, of the fleet's source named `only`, or of each of a
/// fleet's sources in turn (exit 0 only when every one is equal).
pub async fn verify(
    path: &Path,
    live: &LiveOptions,
    only: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let fleet = pipeline_file::load_fleet(path)?;
    if only.is_some() || !fleet.is_fleet() {
        return verify_one(pipeline_file::load_source(path, only)?, live).await;
    }
    let mut all_equal = true;
    for member in fleet.members {
        if !live.json {
            println!("[{}]", member.name.as_deref().unwrap_or_default());
        }
        let code = verify_one(member.config, live).await?;
        all_equal &= code == ExitCode::SUCCESS;
    }
    Ok(if all_equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify_one(config: pipeline_file::Config, live: &LiveOptions) -> anyhow::Result<ExitCode> {
    let Some(redis) = config.sinks.iter().find_map(|s| match s {
        SinkConfig::Redis(r) => Some(r.clone()),
        _ => None,
    }) else {
        bail!("verify needs a redis sink in the pipeline");
    };
    let snapshot = match &config.source {
        SourceConfig::Snapshot(snapshot) => snapshot,
        SourceConfig::Pika(master) => {
            return verify_live(master, &config.filters, &redis, live).await;
        }
        _ => bail!(
            "verify compares a snapshot or a live master with Redis; this pipeline's source is neither"
        ),
    };
    let mut verifier = Verifier::connect(&redis)
        .await
        .context("connecting to the Redis target")?;
    if let Some(at) = snapshot.as_of {
        verifier = verifier.expiries_as_of(at.unix_ms);
    }
    let source = SnapshotSource {
        path: snapshot.path.clone(),
        limits: snapshot.chunk.into(),
        rate: None,
        threads: pika_migrate_core::config::scan_threads(snapshot.scan_threads, |_| 1),
        // The keys alive at the run's moment, with the expiries stored: the verifier
        // learns how far the run moved them.
        clock: match snapshot.as_of {
            Some(at) => ReplayClock::new(Some(at), at.unix_ms),
            None => ReplayClock::wall(),
        },
    };
    let (tx, mut rx) = mpsc::channel(16);
    let scan = tokio::task::spawn_blocking(move || {
        let mut out = EventSender::new(tx, StopSignal::default());
        source.scan_blocking(&mut out, &Metrics::default())
    });
    while let Some(batch) = rx.recv().await {
        for event in &batch.events {
            verifier
                .check(event)
                .await
                .context("reading from the Redis target")?;
        }
    }
    scan.await.context("snapshot scan task")??;
    let report = verifier
        .finish()
        .await
        .context("reading from the Redis target")?;
    for line in &report.differences {
        println!("{line}");
    }
    if report.differing_keys as usize > report.differences.len() {
        println!("… (first {} differences shown)", report.differences.len());
    }
    println!(
        "verified {} keys: {} differ{}",
        report.keys,
        report.differing_keys,
        if report.skipped_keys > 0 {
            format!(
                ", {} not expected in Redis (type_conflict / hyperloglog policy)",
                report.skipped_keys
            )
        } else {
            String::new()
        }
    );
    Ok(if report.differing_keys == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
