//! Capture files: one record's payload, and whole files as the `capture` source reads
//! them (header, lengths, CRCs, records cut off, `skip_corrupt`).

use bytes::Bytes;
use pika_migrate_core::capture::reader::{CaptureReader, ReadOutcome};
use pika_migrate_core::capture::{self, record, CaptureError};

use crate::{events, scratch};

/// A payload the reader accepts is exactly one the writer writes for the event it
/// decodes to (so damage past the CRC is never taken for data).
pub fn record(data: &[u8]) {
    match record::decode(Bytes::copy_from_slice(data)) {
        Ok(event) => {
            let mut again = Vec::new();
            record::encode(&event, &mut again);
            assert!(
                again == data,
                "accepted a record the writer would write otherwise: {event:?}"
            );
            events::downstream(&event);
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

/// Most reads of one file; each read consumes a record or ends.
const MAX_READS: usize = 100_000;

/// Reads a capture directory to its end; damage is an error naming the file and the
/// offset, or (with `skip_corrupt`) skipped and named. Returns the events read.
fn read_all(dir: &std::path::Path, skip_corrupt: bool) -> Vec<Bytes> {
    let mut reader = match CaptureReader::open(dir, skip_corrupt) {
        Ok(r) => r,
        Err(e) => panic!("a directory with capture files refused: {e}"),
    };
    let mut keys = Vec::new();
    for _ in 0..MAX_READS {
        match reader.read_next() {
            Ok(ReadOutcome::Event(event)) => {
                events::downstream(&event);
                keys.push(event.key.clone());
            }
            Ok(ReadOutcome::Skipped(e)) => {
                assert!(skip_corrupt, "skipped without skip_corrupt");
                check_error(&e);
            }
            Ok(ReadOutcome::CaughtUp) => return keys,
            Err(e) => {
                check_error(&e);
                return keys;
            }
        }
    }
    panic!("the capture reader does not advance");
}

fn check_error(e: &CaptureError) {
    let text = e.to_string();
    assert!(text.contains("capture-"), "{text}");
    if matches!(e, CaptureError::Corrupt { .. }) {
        assert!(text.contains("offset"), "{text}");
    }
}

/// `data` as the first of two capture files (the second holds a header only, so the
/// first is finished), read without and with `skip_corrupt`. Skipping never reads
/// fewer events than stopping at the first damage.
pub fn file(data: &[u8]) {
    scratch::with_empty_dir(|dir| {
        scratch::write(&dir.join(capture::file_name(1)), data);
        let alone = read_all(dir, false);
        let skipping = read_all(dir, true);
        assert!(skipping.len() >= alone.len());
        assert_eq!(skipping[..alone.len()], alone[..]);
        scratch::write(&dir.join(capture::file_name(2)), &capture::header());
        let stopping = read_all(dir, false);
        assert_eq!(
            stopping, alone,
            "a later file changed what the first one holds"
        );
        let _ = read_all(dir, true);
    });
}
