//! A dump's `info` file and `FILENUM:OFFSET` positions.

use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::storage::layout::parse_dump_info;
use pika_migrate_core::source::pika::dump::parse_info;

/// A dump's `info` text, as the snapshot source and the replica read it; errors name
/// the line. Also `FILENUM:OFFSET` positions as a pipeline file gives them.
pub fn dump_info(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    if let Err((line, reason)) = parse_dump_info(&text) {
        assert!(
            (1..=lines + 1).contains(&line),
            "line {line} of {lines}: {reason}"
        );
    }
    if let Err(reason) = parse_info(&text) {
        assert!(!reason.is_empty());
    }
    let _ = text.parse::<BinlogOffset>();
}
