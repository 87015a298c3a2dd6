//! A run's live counters (events, bytes, keys per type, commands, filtered) and its
//! [`Status`]: what progress bars, `GET /status` and `GET /metrics` show. Sources and
//! sinks update it; it knows nothing of either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::{DataType, Event, Op};
use crate::status::{Status, StatusReport};

/// CPU time the whole process has used so far (user and system, every thread), in
/// seconds: logged where a full sync begins and ends loading, so the CPU a load took
/// can be told per key.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Live counters of a run, for progress bars and status.
#[derive(Debug, Default)]
struct Counters {
    events: AtomicU64,
    bytes: AtomicU64,
    keys: AtomicU64,
    commands: AtomicU64,
    expected_keys: AtomicU64,
    by_type: [AtomicU64; DataType::TYPE_ORDER.len()],
    filtered: AtomicU64,
    status: Status,
}

/// Shared handle on a run's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Counters>);

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub events: u64,
    pub bytes: u64,
    /// Snapshot keys started (one per key and type).
    pub keys: u64,
    pub commands: u64,
    /// The source's estimate of the keys it will emit (0 when unknown).
    pub expected_keys: u64,
    /// Snapshot keys per type, in [`DataType::TYPE_ORDER`] order.
    pub keys_by_type: [u64; DataType::TYPE_ORDER.len()],
    /// Events the filters dropped.
    pub filtered: u64,
}

impl Metrics {
    /// The run's stage, positions and per-sink state.
    pub fn status(&self) -> &Status {
        &self.0.status
    }

    /// The status with the counters, as `GET /status` shows it.
    pub fn report(&self) -> StatusReport {
        let m = self.snapshot();
        self.0.status.report(m.keys, m.expected_keys, m.events)
    }

    /// The status and counters as Prometheus text (`GET /metrics`).
    pub fn prometheus(&self) -> String {
        self.0.status.prometheus(&self.report())
    }

    pub fn set_expected_keys(&self, n: u64) {
        self.0.expected_keys.store(n, Ordering::Relaxed);
    }

    /// Counts a batch: tallied locally, then one atomic add per counter.
    pub(crate) fn count(&self, batch: &[Event]) {
        let (mut bytes, mut keys, mut commands) = (0u64, 0u64, 0u64);
        let mut by_type = [0u64; DataType::TYPE_ORDER.len()];
        for event in batch {
            bytes += event.payload_bytes() as u64;
            match &event.op {
                Op::Snapshot { part, chunk, .. } if part.starts_key() => {
                    keys += 1;
                    let slot = DataType::TYPE_ORDER
                        .iter()
                        .position(|t| *t == chunk.data_type())
                        .unwrap_or(0);
                    by_type[slot] += 1;
                }
                Op::Snapshot { .. } => {}
                Op::Command { .. } => commands += 1,
            }
        }
        let c = &self.0;
        let add = |a: &AtomicU64, n: u64| {
            if n > 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&c.events, batch.len() as u64);
        add(&c.bytes, bytes);
        add(&c.keys, keys);
        add(&c.commands, commands);
        for (slot, n) in by_type.into_iter().enumerate() {
            add(&c.by_type[slot], n);
        }
    }

    /// Counts events the filters dropped.
    pub(crate) fn count_filtered(&self, dropped: usize) {
        if dropped > 0 {
            self.0.filtered.fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            events: load(&c.events),
            bytes: load(&c.bytes),
            keys: load(&c.keys),
            commands: load(&c.commands),
            expected_keys: load(&c.expected_keys),
            keys_by_type: std::array::from_fn(|i| load(&c.by_type[i])),
            filtered: load(&c.filtered),
        }
    }
}
