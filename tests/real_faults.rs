//! The live replica against real Pika masters (see `common::real_pika`) under what an
//! operator's network and disks do to it: a master reached through port mappings that
//! do not keep Pika's port offsets (`common::proxy`), a network partition longer than
//! the master's patience, a replication port that leads to another master, a disk too
//! small for the dump, and a push our rsync daemon must refuse. Each scenario runs on
//! a master that pushes its dump (3.3.6) and on one we pull it from (3.5.5), or on the
//! one it concerns.
//!
//! Without the Pika binaries each test prints one line saying it was skipped.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::MappedMaster;
use common::real_pika::*;
use common::tool::*;
use common::*;

macro_rules! on_versions {
    (every: [$($scenario:ident),* $(,)?], push: [$($push:ident),* $(,)?] $(,)?) => {
        mod pika_3_3_6 {
            $( #[test] fn $scenario() { super::$scenario("3.3.6", stringify!($scenario)); } )*
            $( #[test] fn $push() { super::$push("3.3.6", stringify!($push)); } )*
        }
        mod pika_3_5_5 {
            $( #[test] fn $scenario() { super::$scenario("3.5.5", stringify!($scenario)); } )*
        }
    };
}

on_versions!(
    every: [
        through_port_mappings_the_full_sync_and_the_stream_land_exactly,
        a_partition_longer_than_the_masters_patience_heals_into_the_same_stream_exactly,
        a_replication_port_leading_to_another_master_is_refused_with_78,
        a_disk_too_small_for_the_dump_stops_the_run_with_73_and_the_room_needed,
    ],
    push: [a_push_from_an_address_push_from_does_not_list_is_refused],
);

fn master(version: &'static str, test: &str) -> Option<RealPika> {
    let bin = pika_or_skip(version, test)?;
    Some(RealPika::start(&bin, PikaOptions::default()))
}

fn through_port_mappings_the_full_sync_and_the_stream_land_exactly(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test) else {
        return;
    };
    preload(&pika, 600);
    let redis = RedisServer::start();
    let mapped = MappedMaster::of(&pika);
    let m = Migration::new(&mapped.master(), &redis.url(), &mapped.source_lines());
    let writer = Writer::start(&pika, live_write);
    let tool = m.start();
    m.wait_streaming(&tool);
    std::thread::sleep(Duration::from_millis(500));
    writer.stop();
    m.wait_caught_up(&pika);
    assert!(m.listed_by(&pika), "the master lists us as its replica");
    assert_eq!(stop(tool), 0, "{}", m.log_text());

    let log = m.log_text();
    // INFO told the master's own port, which its dump names.
    let own_port = log
        .lines()
        .find(|l| l.contains("the master runs on another port than we reach it at"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        own_port.contains(&format!("port={}", pika.port)),
        "{own_port}"
    );
    assert_eq!(pika.full_syncs_served(), 1);
    assert_same_as_master(&pika, &redis);
    if pika.bin.pushes_dump() {
        assert!(
            !m.work_dir().join("rsync/rsync.secret").exists(),
            "the rsync secret outlived the daemon"
        );
    }
}

fn a_partition_longer_than_the_masters_patience_heals_into_the_same_stream_exactly(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test) else {
        return;
    };
    let redis = RedisServer::start();
    let mapped = MappedMaster::of(&pika);
    let m = Migration::new(&mapped.master(), &redis.url(), &mapped.source_lines());
    let tool = m.start();
    m.wait_streaming(&tool);
    // Writes go on at the master, which clients still reach, through it all.
    let writer = Writer::start(&pika, counter_write);
    wait_until("writes before the partition", STREAMING_WITHIN, || {
        writer.written() > 200
    });

    // Nothing moves between us and the master, though both connections stay up: the
    // master drops us after 20 s without a word from us, and we hear nothing either.
    mapped.freeze();
    let cut_at = Instant::now();
    m.wait_for(
        Duration::from_secs(60),
        "the tool to notice the silence",
        || m.log_text().contains("the master sent nothing for"),
    );
    let noticed_after = cut_at.elapsed();
    assert!(
        noticed_after >= Duration::from_secs(20),
        "noticed after {noticed_after:?}: by the silence, not by a closed connection"
    );
    mapped.thaw();

    let before = writer.written();
    wait_until("writes after the partition", STREAMING_WITHIN, || {
        writer.written() > before + 200
    });
    writer.stop();
    m.wait_caught_up(&pika);
    assert_eq!(stop(tool), 0, "{}", m.log_text());
    assert!(m.interruptions() >= 1, "{}", m.log_text());
    assert_eq!(
        pika.full_syncs_served(),
        1,
        "resumed by TrySync: {}",
        m.log_text()
    );
    assert_same_as_master(&pika, &redis);
}

fn a_replication_port_leading_to_another_master_is_refused_with_78(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test) else {
        return;
    };
    let Some(other) = master(version, test) else {
        return;
    };
    let redis = RedisServer::start();
    // The client port is `pika`'s, the replication port `other`'s: a mapping gone wrong.
    let m = Migration::new(
        &pika.addr(),
        &redis.url(),
        &format!("  replication_port: {}\n", other.port + 2000),
    );
    let (code, log) = m.run_to_end();
    assert_eq!(code, 78, "{log}");
    assert!(log.contains("leads to another master"), "{log}");
    // 3.5 names itself in MetaSync; a 3.3 master only in its dump's info.
    let how = if pika.bin.pushes_dump() {
        format!("from a master on port {}", other.port)
    } else {
        "run_id".to_owned()
    };
    assert!(log.contains(&how), "{log}");
    assert_eq!(
        redis.state().len(),
        0,
        "nothing of the other master was loaded"
    );
}

/// A tmpfs of `bytes` mounted on `dir`, unmounted when dropped.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` (after saying why the test is skipped) when mounting needs a root we are not.
    fn mount(test: &str, dir: &std::path::Path, bytes: u64) -> Option<SmallDisk> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            skip(test, "mounts a small tmpfs, which needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .unwrap();
        if !out.status.success() {
            skip(
                test,
                &format!(
                    "cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
            return None;
        }
        Some(SmallDisk {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn a_disk_too_small_for_the_dump_stops_the_run_with_73_and_the_room_needed(
    version: &'static str,
    test: &str,
) {
    let Some(pika) = master(version, test) else {
        return;
    };
    // 6 MB that no compression shrinks, for a 2 MiB disk.
    incompressible(&pika, &mut Dice::new(test), 6000);
    let redis = RedisServer::start();
    let m = Migration::new(&pika.addr(), &redis.url(), "");
    let Some(_disk) = SmallDisk::mount(test, &m.work_dir(), 2 << 20) else {
        return;
    };
    let (code, log) = m.run_to_end();
    assert_eq!(code, 73, "{log}");
    let work = m.work_dir().display().to_string();
    assert!(
        log.contains(&format!("the disk under {work} is full")),
        "{log}"
    );
    assert!(log.contains("No space left on device"), "{log}");
    // The room wanted: more than what arrived, and the master's databases as its INFO
    // says (3.3 counts them when asked; 3.5 every minute or so, maybe not the last
    // writes yet).
    assert!(log.contains("db_size"), "{log}");
    if pika.bin.pushes_dump() {
        let db_size = pika
            .info()
            .lines()
            .find_map(|l| l.strip_prefix("db_size:"))
            .map(|n| n.trim().to_owned())
            .unwrap();
        assert!(
            log.contains(&format!("It needs about {db_size} bytes")),
            "{log}"
        );
    }
    assert!(log.contains("the filesystem holds 2097152 bytes"), "{log}");
    assert!(!log.contains("stopped after 0 bytes"), "{log}");
    assert!(log.contains("try 3 of 3"), "{log}");
    // Tried a few times, not forever.
    assert_eq!(pika.full_syncs_served(), 3, "{log}");
}

fn a_push_from_an_address_push_from_does_not_list_is_refused(version: &'static str, test: &str) {
    let Some(pika) = master(version, test) else {
        return;
    };
    let redis = RedisServer::start();
    // The master pushes from 127.0.0.1, which is not among those let in.
    let m = Migration::new(
        &pika.addr(),
        &redis.url(),
        "  push_from: [127.0.0.2, 10.0.0.0/8]\n  transfer_timeout: 2\n",
    );
    let (code, log) = m.run_to_end();
    assert_eq!(code, 69, "{log}");
    assert!(
        log.contains("refused a push from 127.0.0.1") && log.contains("push_from"),
        "{log}"
    );
    assert!(
        !m.work_dir().join("dbsync/db0/info").exists(),
        "nothing of the dump was taken"
    );
}
