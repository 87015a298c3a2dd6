//! The priority the tool runs at while it loads a dump. A load is the one heavy job
//! nobody waits on item by item: while one runs, every thread of the process is at a
//! lower scheduling priority (`--nice`, default 10), so a Pika or Redis server on the
//! same machine has the CPU whenever it needs it (into a local Redis on 2 cores the
//! load was 0.85 of the ceiling so, 0.67 with only the reading threads lowered). Outside
//! loads (the binlog stream, its acks) the tool runs at the priority it was started
//! with: lowered, a stream's acks waited for the CPU behind the servers sharing the
//! host (at a 3.3.6 master's full write rate on 2 cores, p99 100–200 ms instead of
//! 50–75). Raising a priority again takes the privilege to (root, CAP_SYS_NICE, or an
//! RLIMIT_NICE allowing it): without, the tool stays lowered after its first load and
//! says so once.
//!
//! Linux keeps nice per thread (a new thread inherits its creator's), so each thread of
//! the process is set, found in /proc/self/task.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// The nice value loads run at (0: loads are not lowered).
static LOAD_NICE: AtomicU8 = AtomicU8::new(0);
/// The nice value the process was started with.
static STARTED_AT: AtomicU8 = AtomicU8::new(0);
/// Loads running now.
static LOADS: Mutex<usize> = Mutex::new(0);
static SAID_STAYING: AtomicBool = AtomicBool::new(false);

/// Sets the nice value loads run at, remembering the one the process runs at now.
pub fn set_load_nice(nice: u8) {
    let now = nice_of(0).unwrap_or(0).clamp(0, 19);
    STARTED_AT.store(u8::try_from(now).unwrap_or(0), Ordering::Relaxed);
    LOAD_NICE.store(nice, Ordering::Relaxed);
}

/// A load running: the process is lowered while one is (see the module).
pub struct Loading(());

impl Loading {
    pub fn begin() -> Loading {
        let nice = LOAD_NICE.load(Ordering::Relaxed);
        let mut loads = LOADS.lock().unwrap_or_else(|e| e.into_inner());
        *loads += 1;
        if *loads == 1 && nice > 0 {
            if let Err(e) = set_every_thread(nice, |current| current < i32::from(nice)) {
                tracing::warn!(nice, error = %e, "cannot lower the priority for the load; it stays as it was");
            }
        }
        Loading(())
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        let nice = LOAD_NICE.load(Ordering::Relaxed);
        let mut loads = LOADS.lock().unwrap_or_else(|e| e.into_inner());
        *loads = loads.saturating_sub(1);
        if *loads > 0 || nice == 0 {
            return;
        }
        let started = STARTED_AT.load(Ordering::Relaxed);
        let back = set_every_thread(started, |current| current > i32::from(started));
        if let Err(e) = back {
            if !SAID_STAYING.swap(true, Ordering::Relaxed) {
                tracing::info!(nice, error = %e, "the load is done but the tool stays at its lower priority: raising it again needs root or CAP_SYS_NICE (--nice 0 keeps the normal priority throughout, for the lowest stream latency on a busy host)");
            }
        }
    }
}

/// Sets every thread of the process whose nice value `moves` to `nice`; the first
/// error, after trying them all.
fn set_every_thread(nice: u8, moves: impl Fn(i32) -> bool) -> io::Result<()> {
    let mut first_error = None;
    for task in std::fs::read_dir("/proc/self/task")?.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let current = match nice_of(tid) {
            Ok(current) => current,
            // A thread that ended meanwhile.
            Err(_) => continue,
        };
        if !moves(current) {
            continue;
        }
        // SAFETY: setpriority reads its three integer arguments and nothing else; `who`
        // is a thread id of this process (Linux keeps nice per thread).
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, libc::c_int::from(nice)) };
        if rc != 0 {
            first_error.get_or_insert(io::Error::last_os_error());
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The nice value of thread `tid` (0: the calling thread).
fn nice_of(tid: u32) -> io::Result<i32> {
    // getpriority may return -1 as a value, so errno, cleared first, tells an error.
    // SAFETY: __errno_location is this thread's errno; getpriority reads its arguments.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    };
    let errno = io::Error::last_os_error();
    if nice == -1 && errno.raw_os_error().is_some_and(|e| e != 0) {
        Err(errno)
    } else {
        Ok(nice)
    }
}
