//! One database scanned on several threads. Workers take parts (`split`) from a shared
//! list, biggest first, read them into batches bounded in events and bytes, and hand the
//! batches to the calling thread, which numbers the events and passes them on: what
//! follows sees one stream, as from a scan on one thread. A key's events all come from
//! the worker that read its part, in order; keys of different parts interleave. Parts
//! are read round by round (`ScanPart::round`): a blackwidow database type after type,
//! so the types of one name still come in Pika's order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};

use super::emit::{ChunkLimits, ScanStats};
use super::split::ScanPart;
use super::{PikaDb, StorageError};
use crate::event::{Event, Position};

/// Events a worker gathers before handing them on...
const BATCH_EVENTS: usize = 256;
/// ... or bytes, whichever comes first: with `threads` batches queued, one being
/// gathered per worker and one being passed on, a scan holds at most
/// `(2 × threads + 1) × BATCH_BYTES` plus one chunk per worker: about 4 MiB on 8
/// threads, so a fleet of masters full-syncing at once stays small too.
const BATCH_BYTES: usize = 256 << 10;

/// Emits every live key of `db` (`now` in unix seconds), read by `threads` threads,
/// numbering the events from `seq`. One thread reads it as `PikaDb::scan` does. `emit`
/// returns false to stop early (the consumer went away). What was read before an error
/// is passed on before the error returns.
pub fn scan_parallel(
    db: &PikaDb,
    threads: usize,
    limits: ChunkLimits,
    now: i64,
    seq: &mut u64,
    emit: &mut dyn FnMut(Event) -> bool,
) -> Result<ScanStats, StorageError> {
    if threads <= 1 {
        return db.scan(limits, now, seq, emit);
    }
    let mut parts = db.parts(threads)?;
    // Round by round; in each, biggest first, so the last parts taken are short ones.
    parts.sort_by_key(|p| (p.round, std::cmp::Reverse(p.bytes)));
    tracing::debug!(
        db = db.index,
        parts = parts.len(),
        threads,
        "scanning in parts"
    );
    let mut total = ScanStats::default();
    for round in parts.chunk_by(|a, b| a.round == b.round) {
        let (stats, go_on) = scan_round(db, round, threads, (limits, now), seq, emit)?;
        total.add(&stats);
        if !go_on {
            break;
        }
    }
    Ok(total)
}

/// Reads `parts` on up to `threads` threads; the counts, and false when `emit` asked to
/// stop.
fn scan_round(
    db: &PikaDb,
    parts: &[ScanPart],
    threads: usize,
    (limits, now): (ChunkLimits, i64),
    seq: &mut u64,
    emit: &mut dyn FnMut(Event) -> bool,
) -> Result<(ScanStats, bool), StorageError> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = sync_channel::<Vec<Event>>(threads);
    std::thread::scope(|scope| {
        let mut workers = Vec::with_capacity(threads);
        for n in 0..threads.min(parts.len()) {
            let worker = Worker {
                db,
                parts,
                next: &next,
                stop: &stop,
                out: tx.clone(),
                limits,
                now,
            };
            // Named, so `top -H` shows where the CPU goes.
            let spawned = std::thread::Builder::new()
                .name(format!("dump-scan-{n}"))
                .spawn_scoped(scope, move || worker.run());
            match spawned {
                Ok(handle) => workers.push(handle),
                // No thread to be had: the ones started read every part.
                Err(e) if !workers.is_empty() => {
                    tracing::warn!(error = %e, threads = workers.len(), "fewer dump-scan threads than asked")
                }
                Err(e) => {
                    return Err(StorageError::Io {
                        path: db.path.clone(),
                        source: e,
                    })
                }
            }
        }
        drop(tx);
        let mut go_on = true;
        'passing: for batch in rx.iter() {
            for mut event in batch {
                if let Position::Snapshot { seq: numbered, .. } = &mut event.position {
                    *numbered = *seq;
                }
                *seq += 1;
                if !emit(event) {
                    go_on = false;
                    stop.store(true, Ordering::SeqCst);
                    break 'passing;
                }
            }
        }
        // Workers blocked on a full queue see it closed and end.
        drop(rx);
        let mut total = ScanStats::default();
        let mut failed = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(stats)) => total.add(&stats),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok((total, go_on)),
        }
    })
}

/// One scanning thread.
struct Worker<'a> {
    db: &'a PikaDb,
    parts: &'a [ScanPart],
    next: &'a AtomicUsize,
    stop: &'a AtomicBool,
    out: SyncSender<Vec<Event>>,
    limits: ChunkLimits,
    now: i64,
}

impl Worker<'_> {
    /// Scans parts until none is left, the consumer is gone, or one fails (which stops
    /// the others too).
    fn run(self) -> Result<ScanStats, StorageError> {
        let mut stats = ScanStats::default();
        let mut batch = Vec::with_capacity(BATCH_EVENTS);
        let mut batch_bytes = 0usize;
        // The calling thread numbers the events again in the order it passes them on.
        let mut unnumbered = 0u64;
        let mut result = Ok(());
        while !self.stop.load(Ordering::SeqCst) {
            let Some(part) = self.parts.get(self.next.fetch_add(1, Ordering::SeqCst)) else {
                break;
            };
            let mut gather = |event: Event| {
                batch_bytes += event.memory_estimate();
                batch.push(event);
                if batch.len() < BATCH_EVENTS && batch_bytes < BATCH_BYTES {
                    return true;
                }
                batch_bytes = 0;
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_EVENTS));
                self.out.send(full).is_ok() && !self.stop.load(Ordering::SeqCst)
            };
            match self.db.scan_part(
                part,
                self.limits,
                self.now,
                &mut unnumbered,
                &mut gather,
                &mut stats,
            ) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.stop.store(true, Ordering::SeqCst);
                    result = Err(e);
                    break;
                }
            }
        }
        if !batch.is_empty() {
            // Gone consumer: nothing to hand it.
            let _ = self.out.send(batch);
        }
        result.map(|()| stats)
    }
}
