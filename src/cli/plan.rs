//! `pika-migrate plan -c FILE`: a pre-flight report before anything is written. It
//! reads the source's dump (through the pipeline's filters, as the run would), counts
//! what it holds, estimates the memory Redis will use for it with the target's own
//! encodings, and weighs that against what the target holds and may hold (per master of
//! a cluster), with the time a full sync should take. Human text, or `--json`. Exit 0
//! when it fits, 1 when it does not.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use pika_migrate_core::config::{PikaSourceConfig, SnapshotSourceConfig, SourceConfig};
use pika_migrate_core::event::{Chunk, Event, Op};
use pika_migrate_core::filter::FilterChain;
use pika_migrate_core::metrics::Metrics;
use pika_migrate_core::profile::{Profile, TTL_BUCKETS};
use pika_migrate_core::replay::clock::wall_now_ms;
use pika_migrate_core::replay::ReplayClock;
use pika_migrate_core::source::pika::PikaSource;
use pika_migrate_core::source::snapshot::SnapshotSource;
use pika_migrate_core::source::Source;
use pika_migrate_core::source::{EventSender, StopSignal};
use pika_migrate_sinks::encode::commands::TypeConflict;
use pika_migrate_sinks::encode::hyperloglog::is_pika_hyperloglog;
use pika_migrate_sinks::redis::cluster::slot_of;
use pika_migrate_sinks::redis::config::{HyperLogLogPolicy, RedisSinkConfig};
use pika_migrate_sinks::redis::memory::{Encodings, MemoryEstimate};
use pika_migrate_sinks::redis::probe::TargetFacts;
use pika_migrate_sinks::SinkConfig;
use serde_json::json;
use tokio::sync::mpsc;

use crate::pipeline_file;

/// Slots named as the hottest of a cluster.
const HOT_SLOTS: usize = 10;
const SLOTS: usize = 16_384;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The name a snapshot event has in the target under the sink's policies, `None` when
/// the target does not take it (a later type of a name under `first-wins`, …).
fn target_key(event: &Event, redis: Option<&RedisSinkConfig>) -> Option<Bytes> {
    let Op::Snapshot {
        chunk, also_types, ..
    } = &event.op
    else {
        return None;
    };
    let t = chunk.data_type();
    let (policy, hll) = redis.map_or(
        (TypeConflict::FirstWins, HyperLogLogPolicy::default()),
        |r| (r.type_conflict, r.hyperloglog),
    );
    if let Chunk::String(v) = chunk {
        if hll == HyperLogLogPolicy::Skip && is_pika_hyperloglog(v) {
            return None;
        }
    }
    match policy {
        TypeConflict::FirstWins if also_types.first_before(t).is_some() => None,
        TypeConflict::Overwrite if also_types.iter().any(|other| other > t) => None,
        TypeConflict::Suffix if also_types.first_before(t).is_some() => Some(Bytes::from(
            [event.key.as_ref(), b":", t.as_str().as_bytes()].concat(),
        )),
        _ => Some(event.key.clone()),
    }
}

/// Takes the live master's dump into its `work_dir` (a full sync's transfer, nothing
/// loaded) and returns it as a snapshot source: a later `run` of the same pipeline
/// loads that dump instead of asking for another.
async fn dump_of_master(master: &PikaSourceConfig) -> anyhow::Result<SnapshotSourceConfig> {
    let source = PikaSource::new(master)?.dump_only();
    eprintln!(
        "taking the dump of {} into {} (nothing is written; a later run loads it)",
        master.master,
        master.work_dir.display()
    );
    let (tx, mut rx) = mpsc::channel(16);
    let out = EventSender::new(tx, StopSignal::default());
    let run = tokio::spawn(Box::new(source).run(out, Metrics::default()));
    while rx.recv().await.is_some() {}
    run.await.context("the full sync's transfer")??;
    Ok(SnapshotSourceConfig {
        path: master.work_dir.join("dbsync"),
        chunk: master.chunk,
        rate: None,
        scan_threads: master.scan_threads,
        as_of: None,
    })
}

/// Per slot of a cluster: keys and payload bytes.
struct SlotCounts(Vec<(u64, u64)>);

pub async fn plan(path: &Path, json_out: bool, source: Option<&str>) -> anyhow::Result<ExitCode> {
    let config = pipeline_file::load_source(path, source)?;
    let snapshot = match &config.source {
        SourceConfig::Snapshot(snapshot) => snapshot.clone(),
        SourceConfig::Pika(master) => dump_of_master(master).await?,
        _ => bail!(
            "plan reads a dump: give it a pipeline whose source is a snapshot or a live master"
        ),
    };
    let snapshot = &snapshot;
    let redis = config.sinks.iter().find_map(|s| match s {
        SinkConfig::Redis(r) => Some(r.clone()),
        _ => None,
    });
    let facts = match &redis {
        Some(r) => Some(
            TargetFacts::read(r, 64)
                .await
                .context("asking the Redis target what it holds")?,
        ),
        None => None,
    };
    let encodings = facts
        .as_ref()
        .map_or_else(Encodings::default, |f| f.encodings.clone());
    let nodes = facts.as_ref().map_or(1, |f| f.servers.len().max(1));
    let mut estimates: Vec<MemoryEstimate> = (0..nodes)
        .map(|_| MemoryEstimate::new(encodings.clone()))
        .collect();
    let mut slots = SlotCounts(vec![(0, 0); SLOTS]);
    let clock = ReplayClock::new(snapshot.as_of, wall_now_ms());
    let mut profile = Profile::new(clock.now_ms());
    let filters = FilterChain::build(&config.filters)?;

    let source = SnapshotSource {
        path: snapshot.path.clone(),
        limits: snapshot.chunk.into(),
        rate: None,
        threads: pika_migrate_core::config::scan_threads(snapshot.scan_threads, |_| 1),
        clock,
    };
    let (tx, mut rx) = mpsc::channel(16);
    let started = Instant::now();
    let scan = tokio::task::spawn_blocking(move || {
        let mut out = EventSender::new(tx, StopSignal::default());
        source.scan_blocking(&mut out, &Metrics::default())
    });
    let slot_map = facts.as_ref().and_then(|f| f.slots.as_ref());
    while let Some(batch) = rx.recv().await {
        let mut events = batch.events;
        filters
            .apply(&mut events)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for mut event in events {
            profile.add(&event);
            let Some(key) = target_key(&event, redis.as_ref()) else {
                continue;
            };
            event.key = key;
            let node = match slot_map {
                Some(map) => {
                    let slot = usize::from(slot_of(&event.key));
                    if let Some(s) = slots.0.get_mut(slot) {
                        if pika_migrate_sinks::redis::memory::ends_key(&event) {
                            s.0 += 1;
                        }
                        s.1 += event.payload_bytes() as u64;
                    }
                    map.owner.get(slot).copied().unwrap_or(0)
                }
                None => 0,
            };
            if let Some(estimate) = estimates.get_mut(node) {
                estimate.add(&event);
            }
        }
    }
    let scan_report = scan.await.context("the dump scan")??;
    let read_secs = started.elapsed().as_secs_f64();
    let expired = scan_report.scan.as_ref().map_or(0, |s| s.expired);
    let total = profile.total();
    let keys_written: u64 = estimates.iter().map(MemoryEstimate::keys).sum();
    let estimate: u64 = estimates.iter().map(MemoryEstimate::total).sum();
    let read_rate = total.keys as f64 / read_secs.max(1e-6);
    let target_rate = facts.as_ref().map(|f| f.echo_rate);
    let load_rate = target_rate.map_or(read_rate, |t| t.min(read_rate));
    let full_sync_secs = keys_written as f64 / load_rate.max(1.0);

    // Per server: what it holds, what the load adds, what it may hold.
    let mut fits = true;
    let mut servers = Vec::new();
    if let Some(f) = &facts {
        for (i, s) in f.servers.iter().enumerate() {
            let adds = estimates.get(i).map_or(0, MemoryEstimate::total);
            let after = s.used_memory + adds;
            let ok = s.maxmemory == 0 || after <= s.maxmemory;
            fits &= ok;
            servers.push(json!({
                "addr": s.addr,
                "keys": estimates.get(i).map_or(0, MemoryEstimate::keys),
                "used_memory": s.used_memory,
                "estimated_addition": adds,
                "estimated_after": after,
                "maxmemory": s.maxmemory,
                "fits": ok,
            }));
        }
    }
    let mut hottest: Vec<(usize, (u64, u64))> = slots
        .0
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, (keys, _))| *keys > 0)
        .collect();
    hottest.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    hottest.truncate(HOT_SLOTS);

    let report = json!({
        "source": snapshot.path.display().to_string(),
        "as_of": snapshot.as_of.map(|a| a.to_string()),
        "databases": profile.counts.iter().map(|(db, types)| {
            let types: serde_json::Map<String, serde_json::Value> =
                types.iter().map(|(t, c)| (t.as_str().to_owned(), json!(c))).collect();
            (db.to_string(), serde_json::Value::Object(types))
        }).collect::<serde_json::Map<_, _>>(),
        "keys": total.keys,
        "elements": total.elements,
        "bytes": total.bytes,
        "expired_keys_left_out": expired,
        "expired_share": if total.keys + expired > 0 { expired as f64 / (total.keys + expired) as f64 } else { 0.0 },
        "ttl_histogram": TTL_BUCKETS.iter().zip(profile.ttl).map(|(b, n)| (b.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "biggest_by_elements": profile.biggest_by_elements(),
        "biggest_by_bytes": profile.biggest_by_bytes(),
        "multi_type_keys": profile.multi_type_total,
        "multi_type": profile.multi_type.iter().take(20).collect::<Vec<_>>(),
        "type_conflict": redis.as_ref().map(|r| match r.type_conflict {
            TypeConflict::FirstWins => "first-wins",
            TypeConflict::Overwrite => "overwrite",
            TypeConflict::Suffix => "suffix",
        }),
        "target": facts.as_ref().map(|f| json!({
            "version": f.version,
            "servers": servers,
            "echo_rate": f.echo_rate,
            "hottest_slots": hottest.iter().map(|(slot, (keys, bytes))| json!({"slot": slot, "keys": keys, "bytes": bytes})).collect::<Vec<_>>(),
        })),
        "keys_written": keys_written,
        "estimated_memory": estimate,
        "read_rate_keys_per_s": read_rate,
        "expected_full_sync_s": full_sync_secs,
        "fits": fits,
    });
    if json_out {
        println!("{report}");
    } else {
        print_text(&report, &profile);
    }
    Ok(if fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(r: &serde_json::Value, profile: &Profile) {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "plan: {}{}",
        r["source"].as_str().unwrap_or_default(),
        r["as_of"]
            .as_str()
            .map(|a| format!(" as of {a}"))
            .unwrap_or_default()
    );
    for (db, types) in &profile.counts {
        println!("db{db}:");
        for (t, c) in types {
            println!(
                "  {:<7} {:>10} keys {:>12} elements {:>12}",
                t.as_str(),
                c.keys,
                c.elements,
                mib(c.bytes)
            );
        }
    }
    println!(
        "expired keys left out: {} ({:.1}% of the dump)",
        n(&r["expired_keys_left_out"]),
        r["expired_share"].as_f64().unwrap_or(0.0) * 100.0
    );
    let histogram: Vec<String> = TTL_BUCKETS
        .iter()
        .zip(profile.ttl)
        .map(|(b, k)| format!("{b}: {k}"))
        .collect();
    println!("time to live: {}", histogram.join(", "));
    for (title, list) in [
        ("biggest keys by elements", profile.biggest_by_elements()),
        ("biggest keys by bytes", profile.biggest_by_bytes()),
    ] {
        println!("{title}:");
        for k in list.iter().take(20) {
            println!(
                "  db{} {} ({}) {}",
                k.db,
                pika_migrate_core::display::display_key(&k.key),
                k.data_type,
                k.size
            );
        }
    }
    if profile.multi_type_total > 0 {
        println!(
            "names holding several types: {} (type_conflict: {}; first-wins keeps the first listed, overwrite the last, suffix all as key:<type>)",
            profile.multi_type_total,
            r["type_conflict"].as_str().unwrap_or("first-wins")
        );
        for m in profile.multi_type.iter().take(20) {
            let types: Vec<&str> = m.types.iter().map(|t| t.as_str()).collect();
            println!(
                "  db{} {}: {}",
                m.db,
                pika_migrate_core::display::display_key(&m.key),
                types.join(", ")
            );
        }
    }
    println!(
        "the target takes {} keys: about {} of memory",
        n(&r["keys_written"]),
        mib(n(&r["estimated_memory"]))
    );
    if let Some(t) = r["target"].as_object() {
        println!("target: Redis {}", t["version"].as_str().unwrap_or("?"));
        for s in t["servers"].as_array().into_iter().flatten() {
            let max = n(&s["maxmemory"]);
            println!(
                "  {}: {} keys; uses {}, + {} = {} of {}: {}",
                s["addr"].as_str().unwrap_or("?"),
                n(&s["keys"]),
                mib(n(&s["used_memory"])),
                mib(n(&s["estimated_addition"])),
                mib(n(&s["estimated_after"])),
                if max == 0 {
                    "no maxmemory".to_owned()
                } else {
                    mib(max)
                },
                if s["fits"] == true {
                    "fits"
                } else {
                    "DOES NOT FIT"
                }
            );
        }
        let hot = t["hottest_slots"].as_array().cloned().unwrap_or_default();
        if !hot.is_empty() {
            let shown: Vec<String> = hot
                .iter()
                .map(|h| {
                    format!(
                        "{} ({} keys, {})",
                        h["slot"],
                        n(&h["keys"]),
                        mib(n(&h["bytes"]))
                    )
                })
                .collect();
            println!("  hottest slots: {}", shown.join(", "));
        }
    }
    println!(
        "full sync: about {:.0} s (the dump read at {:.0} keys/s here{})",
        r["expected_full_sync_s"].as_f64().unwrap_or(0.0),
        r["read_rate_keys_per_s"].as_f64().unwrap_or(0.0),
        r["target"]["echo_rate"]
            .as_f64()
            .map(|e| format!("; the target answered {e:.0} pipelined commands/s"))
            .unwrap_or_default()
    );
    println!(
        "{}",
        if r["fits"] == true {
            "fits"
        } else {
            "does not fit"
        }
    );
}
