//! One database scanned on several threads. Workers take parts (`split`) from a shared
//! list, a blackwidow database's types in Pika's order and each type's parts biggest
//! first, read them into batches bounded in events and bytes, and hand the batches to
//! the calling thread, which numbers the events and passes them on: what follows sees
//! one stream, as from a scan on one thread. A key's events all come from the worker
//! that read its part, in order; keys of different parts interleave. A name of several
//! types waits, in the worker of a later type, until its earlier types' parts have
//! handed over everything before and at that name (`Progress`), so a name's types
//! still come in Pika's order; names of one type never wait.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::emit::{type_slot, ChunkLimits, ScanStats};
use super::split::{NameOrder, ScanPart};
use super::{PikaDb, StorageError};
use crate::event::{Event, Position, TypeSet};

/// Events a worker gathers before handing them on...
const BATCH_EVENTS: usize = 256;
/// ... or bytes, whichever comes first: with `threads` batches queued, one being
/// gathered per worker and one being passed on, a scan holds at most
/// `(2 × threads + 1) × BATCH_BYTES` plus one chunk per worker: about 4 MiB on 8
/// threads, so a fleet of masters full-syncing at once stays small too.
const BATCH_BYTES: usize = 256 << 10;

/// How often a waiting worker looks whether the scan was stopped.
const STOP_CHECK: Duration = Duration::from_millis(50);

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
    // Earlier rounds first (a worker only ever waits for parts already taken), and in
    // each the biggest first, so the last parts taken are short ones.
    parts.sort_by_key(|p| (p.round, std::cmp::Reverse(p.bytes)));
    tracing::debug!(
        db = db.index,
        parts = parts.len(),
        threads,
        "scanning in parts"
    );
    let progress = Progress::new(&parts);
    let (tx, rx) = sync_channel::<Vec<Event>>(threads);
    std::thread::scope(|scope| {
        let mut workers = Vec::with_capacity(threads);
        for n in 0..threads.min(parts.len()) {
            let worker = Worker {
                db,
                progress: &progress,
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
        'passing: for batch in rx.iter() {
            for mut event in batch {
                if let Position::Snapshot { seq: numbered, .. } = &mut event.position {
                    *numbered = *seq;
                }
                *seq += 1;
                if !emit(event) {
                    progress.stop();
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
            None => Ok(total),
        }
    })
}

/// How far each part has handed its events over: every name before `below` is wholly
/// in the queue (the name `below` itself may be partly), or all of it once `done`.
#[derive(Default)]
struct Handed {
    below: Option<Bytes>,
    done: bool,
}

/// What the threads of a scan share: the parts, the next one to take, each one's
/// `Handed` and a way to wait for it, and whether the scan was stopped.
struct Progress<'a> {
    parts: &'a [ScanPart],
    next: AtomicUsize,
    handed: Mutex<Vec<Handed>>,
    moved: Condvar,
    stop: AtomicBool,
}

impl<'a> Progress<'a> {
    fn new(parts: &'a [ScanPart]) -> Progress<'a> {
        Progress {
            parts,
            next: AtomicUsize::new(0),
            handed: Mutex::new(parts.iter().map(|_| Handed::default()).collect()),
            moved: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// The next part no thread took yet, and its number; none once stopped.
    fn take(&self) -> Option<(usize, &'a ScanPart)> {
        if self.stopped() {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        Some((index, self.parts.get(index)?))
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Part `part` handed over everything before `below` (`None`: all of it).
    fn handed(&self, part: usize, below: Option<Bytes>) {
        if let Ok(mut handed) = self.handed.lock() {
            if let Some(h) = handed.get_mut(part) {
                match below {
                    Some(key) => h.below = Some(key),
                    None => h.done = true,
                }
            }
        }
        self.moved.notify_all();
    }

    /// Stops the scan: waiting workers give up.
    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.moved.notify_all();
    }
}

impl NameOrder for Progress<'_> {
    fn wait_for_earlier(&self, key: &[u8], earlier: TypeSet) {
        let waits_for: Vec<usize> = earlier
            .iter()
            .filter_map(|t| {
                self.parts
                    .iter()
                    .position(|p| p.unit == type_slot(t) && p.range.contains(key))
            })
            .collect();
        let Ok(mut handed) = self.handed.lock() else {
            return;
        };
        loop {
            let passed = waits_for.iter().all(|i| {
                handed
                    .get(*i)
                    .is_none_or(|h| h.done || h.below.as_deref().is_some_and(|b| b > key))
            });
            if passed || self.stopped() {
                return;
            }
            handed = match self.moved.wait_timeout(handed, STOP_CHECK) {
                Ok((guard, _)) => guard,
                Err(_) => return,
            };
        }
    }
}

/// One scanning thread.
struct Worker<'a> {
    db: &'a PikaDb,
    progress: &'a Progress<'a>,
    out: SyncSender<Vec<Event>>,
    limits: ChunkLimits,
    now: i64,
}

impl Worker<'_> {
    /// Scans parts until none is left, the consumer is gone, or one fails (which stops
    /// the others too).
    fn run(self) -> Result<ScanStats, StorageError> {
        let mut stats = ScanStats::default();
        // The calling thread numbers the events again in the order it passes them on.
        let mut unnumbered = 0u64;
        while let Some((index, part)) = self.progress.take() {
            let mut batch = Vec::with_capacity(BATCH_EVENTS);
            let mut batch_bytes = 0usize;
            let mut gather = |event: Event| {
                batch_bytes += event.memory_estimate();
                batch.push(event);
                if batch.len() < BATCH_EVENTS && batch_bytes < BATCH_BYTES {
                    return true;
                }
                batch_bytes = 0;
                let below = batch.last().map(|e| e.key.clone());
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_EVENTS));
                if self.out.send(full).is_err() {
                    return false;
                }
                self.progress.handed(index, below);
                !self.progress.stopped()
            };
            let scanned = self.db.scan_part(
                (part, self.progress),
                self.limits,
                self.now,
                &mut unnumbered,
                &mut gather,
                &mut stats,
            );
            // What was read goes on, even before an error.
            let sent = batch.is_empty() || self.out.send(batch).is_ok();
            match scanned {
                Ok(true) if sent => self.progress.handed(index, None),
                Ok(_) => break,
                Err(e) => {
                    self.progress.stop();
                    return Err(e);
                }
            }
        }
        Ok(stats)
    }
}
