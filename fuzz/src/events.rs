//! What every decoded event goes through next, checked the same way whichever parser
//! produced it: the command table, the capture record (round trip), the JSON envelope
//! and the Redis commands of every type-conflict policy.

use bytes::Bytes;
use pika_migrate_core::capture::record;
use pika_migrate_core::event::{Event, Op};
use pika_migrate_core::pika::binlog::{BinlogEntry, BinlogItem};
use pika_migrate_core::pika::commands;
use pika_migrate_core::pika::normalize::Dialect;
use pika_migrate_core::source::binlog::entry_to_event;
use pika_migrate_core::source::SourceReport;
use pika_migrate_sinks::encode::commands::{event_commands, ConflictStats, TypeConflict};
use pika_migrate_sinks::encode::envelope::envelope;

/// A decoded binlog item as the binlog source and the live replica turn it into an
/// event, then everything downstream.
pub fn binlog_item(entry: &BinlogEntry) {
    let mut report = SourceReport::default();
    match entry_to_event(0, entry.clone(), Dialect::default(), &mut report) {
        Ok(Some(event)) => downstream(&event),
        Ok(None) => {}
        Err(e) => {
            // The error names the command (and its caller the file and offset).
            let shown = pika_migrate_core::display::display_command(&entry.item.argv[..1]);
            assert!(e.to_string().contains(&shown), "{e} does not name {shown}");
        }
    }
}

/// `argv` logged at `exec_time`, as a binlog item at a made-up position.
pub fn command(argv: Vec<Bytes>, exec_time: u32) {
    let at = pika_migrate_core::event::BinlogOffset::new(0, 0);
    binlog_item(&BinlogEntry {
        start: at,
        end: at,
        item: BinlogItem {
            exec_time,
            term: 0,
            logic_id: 0,
            filenum: 0,
            offset: 0,
            argv,
        },
    });
}

/// Checks one event the way the sinks consume it.
pub fn downstream(event: &Event) {
    if let Op::Command { argv } = &event.op {
        assert!(!argv.is_empty(), "a command event without a command");
        for i in commands::key_indexes(argv) {
            assert!(
                i < argv.len(),
                "key index {i} past {} arguments",
                argv.len()
            );
        }
    }
    let mut encoded = Vec::new();
    record::encode(event, &mut encoded);
    let back = record::decode(Bytes::from(encoded.clone()))
        .unwrap_or_else(|e| panic!("a capture record we wrote does not decode: {e}"));
    let mut again = Vec::new();
    record::encode(&back, &mut again);
    assert!(again == encoded, "a capture record changed in a round trip");
    let _ = envelope(event).to_string();
    for policy in [
        TypeConflict::FirstWins,
        TypeConflict::Overwrite,
        TypeConflict::Suffix,
    ] {
        let mut out = Vec::new();
        event_commands(
            event.clone(),
            policy,
            &mut ConflictStats::default(),
            false,
            &mut out,
        );
        assert!(
            out.iter().all(|argv| !argv.is_empty()),
            "an empty Redis command for {event:?}"
        );
    }
}
