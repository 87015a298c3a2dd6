//! `pika-migrate cutover -c FILE`: the gate before switching the applications to Redis,
//! over every master of the file (a fleet's sources) or of several files (one process
//! per master).
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
use pika_migrate_core::config::{FilterConfig, PikaSourceConfig, SourceConfig};
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::source::pika::master_info;
use pika_migrate_sinks::redis::config::RedisSinkConfig;
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

/// One master the gate waits on: a source of one of the pipeline files.
struct Member {
    /// `name` in a fleet, the file's path for a single source of several files; empty
    /// when the gate has one master.
    label: String,
    /// The source's name in its endpoint's status (a fleet's), if any.
    name: Option<String>,
    source: PikaSourceConfig,
    filters: Vec<FilterConfig>,
    redis: Option<RedisSinkConfig>,
    /// Which endpoint (pipeline file) runs it.
    endpoint: usize,
    last_offsets: BTreeMap<u32, BinlogOffset>,
    moved_at: Instant,
}

impl Member {
    /// `text` about this member, named when the gate has several.
    fn say(&self, text: &str) -> String {
        if self.label.is_empty() {
            text.to_owned()
        } else {
            format!("{}: {text}", self.label)
        }
    }

    /// Its part of its endpoint's status.
    fn status<'a>(&self, of_endpoint: &'a serde_json::Value) -> &'a serde_json::Value {
        match &self.name {
            Some(name) => &of_endpoint["sources"][name],
            None => of_endpoint,
        }
    }
}

/// The live masters of `paths` (each a pipeline file, one source or a fleet), and
/// each file's endpoint.
fn members_of(paths: &[PathBuf]) -> anyhow::Result<(Vec<Member>, Vec<Endpoint>)> {
    let mut members = Vec::new();
    let mut endpoints = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let fleet = pipeline_file::load_fleet(path)?;
        endpoints.push(Endpoint::of_status(path, fleet.status.clone())?);
        for member in fleet.members {
            let SourceConfig::Pika(source) = member.config.source else {
                bail!(
                    "{}: cutover waits on live masters: {} is not one",
                    path.display(),
                    member.name.as_deref().unwrap_or("the source")
                );
            };
            let label = match (&member.name, paths.len()) {
                (Some(name), 1) => name.clone(),
                (Some(name), _) => format!("{}/{name}", path.display()),
                (None, 1) => String::new(),
                (None, _) => path.display().to_string(),
            };
            members.push(Member {
                label,
                name: member.name,
                redis: member.config.sinks.iter().find_map(|s| match s {
                    SinkConfig::Redis(r) => Some(r.clone()),
                    _ => None,
                }),
                source,
                filters: member.config.filters,
                endpoint: i,
                last_offsets: BTreeMap::new(),
                moved_at: Instant::now(),
            });
        }
    }
    if members.len() == 1 {
        members[0].label.clear();
    }
    Ok((members, endpoints))
}

/// `pika-migrate cutover -c FILE [-c FILE…]`: the gate over every master of the files
/// (a fleet's sources, or one process per master).
pub async fn cutover(paths: &[PathBuf], options: &CutoverOptions) -> anyhow::Result<ExitCode> {
    let (mut members, endpoints) = members_of(paths)?;
    let started = Instant::now();
    let (statuses, masters) = loop {
        let mut statuses = Vec::new();
        for endpoint in &endpoints {
            statuses.push(endpoint.status().await?);
        }
        let mut masters = Vec::new();
        let mut missing = Vec::new();
        for member in &mut members {
            let source = &member.source;
            let info = master_info::fetch(&source.master, source.password.as_deref())
                .await
                .with_context(|| member.say("asking the master where its binlog is"))?;
            if info.binlog_offsets != member.last_offsets {
                member.last_offsets = info.binlog_offsets.clone();
                member.moved_at = Instant::now();
            }
            let dbs: Vec<u32> = match &source.dbs {
                Some(dbs) => dbs.clone(),
                None => info.binlog_offsets.keys().copied().collect(),
            };
            let quiet = (!options.writes_stopped).then(|| member.moved_at.elapsed());
            let status = member.status(&statuses[member.endpoint]);
            missing.extend(
                not_yet(status, &info.binlog_offsets, &dbs, quiet, options.quiet_for)
                    .iter()
                    .map(|m| member.say(m)),
            );
            masters.push(info.binlog_offsets);
        }
        if missing.is_empty() {
            break (statuses, masters);
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
        "synced with {} after {:.1} s; verifying {}",
        match members.len() {
            1 => "the master".to_owned(),
            n => format!("all {n} masters"),
        },
        synced_after.as_secs_f64(),
        if options.full {
            "every key"
        } else {
            "a sample"
        }
    );

    let mut verified = Vec::new();
    for member in &members {
        let verify = match &member.redis {
            Some(redis) => {
                let live = LiveOptions {
                    sample: (!options.full).then_some(options.sample),
                    rate: None,
                    rounds: 3,
                    settle: Duration::from_secs(1),
                    json: false,
                };
                Some(
                    compare_live(&member.source, &member.filters, redis, &live)
                        .await
                        .with_context(|| member.say("verifying"))?,
                )
            }
            None => None,
        };
        verified.push(verify);
    }
    let equal = verified
        .iter()
        .all(|v| v.as_ref().is_none_or(|v| v.is_equal()));

    // Stop the pipelines: each writes what it read, saves its checkpoint and exits.
    for endpoint in &endpoints {
        endpoint.control("stop").await?;
    }
    let stop_deadline = Instant::now() + Duration::from_secs(120);
    for endpoint in &endpoints {
        while endpoint.status().await.is_ok() {
            if Instant::now() > stop_deadline {
                bail!(
                    "the pipeline at {} was asked to stop and still answers after 120 s",
                    endpoint.addr
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let stopped_after = started.elapsed();

    let sources: Vec<serde_json::Value> = members
        .iter()
        .zip(&masters)
        .zip(&verified)
        .map(|((member, master), verify)| {
            let status = member.status(&statuses[member.endpoint]);
            json!({
                "name": member.label,
                "pipeline": paths[member.endpoint].display().to_string(),
                "master": member.source.master,
                "master_positions": master.iter().map(|(db, at)| (db.to_string(), json!(at.to_string()))).collect::<serde_json::Map<_, _>>(),
                "applied_positions": match status["dbs"].as_object() {
                    Some(dbs) if !dbs.is_empty() => dbs.iter().map(|(db, d)| (db.clone(), d["position"].clone())).collect::<serde_json::Map<_, _>>(),
                    _ => [("0".to_owned(), status["position"].clone())].into_iter().collect(),
                },
                "events": status["events"],
                "keys_loaded": status["keys_done"],
                "sinks": status["sinks"],
                "verify": verify.as_ref().map(|v| v.to_json()),
            })
        })
        .collect();
    let seconds = json!({
        "until_synced": synced_after.as_secs_f64(),
        "until_stopped": stopped_after.as_secs_f64(),
    });
    let cut_over_at = unix_ms() as u64;
    // One master: its figures at the top, as they always were; several: one entry each.
    let report = match sources.as_slice() {
        [one] => {
            let mut report = one.clone();
            if let Some(map) = report.as_object_mut() {
                map.remove("name");
                map.insert("cut_over_at_unix_ms".into(), json!(cut_over_at));
                map.insert("seconds".into(), seconds);
                map.insert("ready".into(), json!(equal));
            }
            report
        }
        _ => json!({
            "pipelines": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "cut_over_at_unix_ms": cut_over_at,
            "sources": sources,
            "seconds": seconds,
            "ready": equal,
        }),
    };
    let report_path = options.report.clone().unwrap_or_else(|| {
        let dir = match members.as_slice() {
            [one] => one.source.work_dir.clone(),
            // A fleet's: next to its sources' work directories.
            _ => members[0]
                .source
                .work_dir
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        dir.join(format!("cutover-{}.json", cut_over_at / 1000))
    });
    std::fs::write(&report_path, format!("{report:#}\n"))
        .with_context(|| format!("writing the report {}", report_path.display()))?;
    for (member, verify) in members.iter().zip(&verified) {
        if let Some(v) = verify {
            if !member.label.is_empty() {
                println!("[{}]", member.label);
            }
            v.print();
        }
    }
    println!(
        "{}: {} stopped with {} checkpoint saved; report: {}",
        if equal {
            "ready to switch"
        } else {
            "NOT READY: the target differs from the master"
        },
        if endpoints.len() == 1 {
            "the pipeline is"
        } else {
            "the pipelines are"
        },
        if endpoints.len() == 1 { "its" } else { "their" },
        report_path.display()
    );
    Ok(if equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
