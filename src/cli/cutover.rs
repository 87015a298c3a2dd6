//! `pika-migrate cutover -c FILE`: the gate before switching the applications to Redis.
//! It waits until the master has stopped taking writes (its binlog still for
//! `--quiet-for`, or the operator says so), every database's applied position equals
//! the master's and every sink has acknowledged it; then verifies the target against
//! the live master (a sample, or `--full`), stops the pipeline cleanly with its
//! checkpoint saved, writes a report and exits 0. Otherwise it exits non-zero naming
//! what is not there yet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use pika_migrate_core::config::SourceConfig;
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::source::pika::master_info;
use pika_migrate_sinks::SinkConfig;
use serde_json::json;

use super::control::{synced, Endpoint, EXIT_NOT_YET};
use super::verify_live::{compare_live, LiveOptions};
use crate::pipeline_file;

const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct CutoverOptions {
    /// The master's binlog must stand still this long.
    pub quiet_for: Duration,
    /// The operator says the writes are stopped: no wait for the binlog to stand still.
    pub writes_stopped: bool,
    /// Verify every key instead of a sample.
    pub full: bool,
    /// Keys per database the sampled verify reads.
    pub sample: usize,
    /// Give up after this long.
    pub timeout: Duration,
    /// Where the report goes (default: the work dir).
    pub report: Option<PathBuf>,
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// What is not there yet: the master still writing, or a database behind it.
fn not_yet(
    status: &serde_json::Value,
    master: &BTreeMap<u32, BinlogOffset>,
    dbs: &[u32],
    quiet: Option<Duration>,
    quiet_for: Duration,
) -> Vec<String> {
    let mut missing = Vec::new();
    match quiet {
        Some(q) if q >= quiet_for => {}
        Some(q) => missing.push(format!(
            "the master's binlog moved {:.1} s ago (it must stand still {} s, or say --writes-stopped)",
            q.as_secs_f64(),
            quiet_for.as_secs()
        )),
        None => {}
    }
    if let Err(why) = synced(status) {
        missing.push(why);
    }
    for db in dbs {
        let Some(at) = master.get(db) else { continue };
        let ours = match status["dbs"].get(db.to_string()) {
            Some(d) => d["position"].as_str().map(str::to_owned),
            None => status["position"].as_str().map(str::to_owned),
        };
        if ours.as_deref() != Some(at.to_string().as_str()) {
            missing.push(format!(
                "db{db}: applied up to {}, the master is at {at}",
                ours.as_deref().unwrap_or("-")
            ));
        }
    }
    missing
}

pub async fn cutover(path: &Path, options: &CutoverOptions) -> anyhow::Result<ExitCode> {
    let config = pipeline_file::load(path)?;
    let SourceConfig::Pika(source) = &config.source else {
        bail!("cutover waits on a live master: this pipeline's source is not one");
    };
    let endpoint = Endpoint::of_pipeline(path)?;
    let redis = config.sinks.iter().find_map(|s| match s {
        SinkConfig::Redis(r) => Some(r.clone()),
        _ => None,
    });
    let started = Instant::now();
    let mut last_offsets = BTreeMap::new();
    let mut moved_at = Instant::now();
    let (status, master) = loop {
        let info = master_info::fetch(&source.master, source.password.as_deref())
            .await
            .context("asking the master where its binlog is")?;
        if info.binlog_offsets != last_offsets {
            last_offsets = info.binlog_offsets.clone();
            moved_at = Instant::now();
        }
        let dbs: Vec<u32> = match &source.dbs {
            Some(dbs) => dbs.clone(),
            None => info.binlog_offsets.keys().copied().collect(),
        };
        let status = endpoint.status().await?;
        let quiet = (!options.writes_stopped).then(|| moved_at.elapsed());
        let missing = not_yet(
            &status,
            &info.binlog_offsets,
            &dbs,
            quiet,
            options.quiet_for,
        );
        if missing.is_empty() {
            break (status, info.binlog_offsets);
        }
        if started.elapsed() >= options.timeout {
            println!(
                "not ready to cut over after {} s:",
                options.timeout.as_secs()
            );
            for m in &missing {
                println!("  {m}");
            }
            return Ok(ExitCode::from(EXIT_NOT_YET));
        }
        tokio::time::sleep(POLL).await;
    };
    let synced_after = started.elapsed();
    println!(
        "synced with the master after {:.1} s; verifying {}",
        synced_after.as_secs_f64(),
        if options.full {
            "every key"
        } else {
            "a sample"
        }
    );

    let verify = match &redis {
        Some(redis) => {
            let live = LiveOptions {
                sample: (!options.full).then_some(options.sample),
                rate: None,
                rounds: 3,
                settle: Duration::from_secs(1),
                json: false,
            };
            Some(compare_live(source, &config.filters, redis, &live).await?)
        }
        None => None,
    };
    let equal = verify.as_ref().is_none_or(|v| v.is_equal());

    // Stop the pipeline: it writes what it read, saves its checkpoint and exits.
    endpoint.control("stop").await?;
    let stop_deadline = Instant::now() + Duration::from_secs(120);
    while endpoint.status().await.is_ok() {
        if Instant::now() > stop_deadline {
            bail!("the pipeline was asked to stop and still answers after 120 s");
        }
        tokio::time::sleep(POLL).await;
    }
    let stopped_after = started.elapsed();

    let report = json!({
        "pipeline": path.display().to_string(),
        "master": source.master,
        "cut_over_at_unix_ms": unix_ms() as u64,
        "master_positions": master.iter().map(|(db, at)| (db.to_string(), json!(at.to_string()))).collect::<serde_json::Map<_, _>>(),
        "applied_positions": match status["dbs"].as_object() {
            Some(dbs) if !dbs.is_empty() => dbs.iter().map(|(db, d)| (db.clone(), d["position"].clone())).collect::<serde_json::Map<_, _>>(),
            _ => [("0".to_owned(), status["position"].clone())].into_iter().collect(),
        },
        "events": status["events"],
        "keys_loaded": status["keys_done"],
        "sinks": status["sinks"],
        "verify": verify.as_ref().map(|v| v.to_json()),
        "seconds": {
            "until_synced": synced_after.as_secs_f64(),
            "until_stopped": stopped_after.as_secs_f64(),
        },
        "ready": equal,
    });
    let report_path = options.report.clone().unwrap_or_else(|| {
        source
            .work_dir
            .join(format!("cutover-{}.json", unix_ms() / 1000))
    });
    std::fs::write(&report_path, format!("{report:#}\n"))
        .with_context(|| format!("writing the report {}", report_path.display()))?;
    if let Some(v) = &verify {
        v.print();
    }
    println!(
        "{}: the pipeline is stopped with its checkpoint saved; report: {}",
        if equal {
            "ready to switch"
        } else {
            "NOT READY: the target differs from the master"
        },
        report_path.display()
    );
    Ok(if equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
