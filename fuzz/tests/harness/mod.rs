//! Runs one target the bounded way CI does: its seeds, the inputs kept under
//! `fuzz/regressions/<target>/`, then mutations of the seeds and random inputs from a
//! fixed seed. Each run's peak allocation is measured against the target's bound, and
//! a run that takes too long counts as a hang. A failing input is saved to a file named
//! in the failure, ready to be kept as a regression.

pub mod alloc;
pub mod mutate;
pub mod seeds;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mutate::Rng;
use pika_migrate_fuzz::Target;

/// How long one run may take (debug build, shared machine) before it counts as a hang.
const HANG: Duration = Duration::from_secs(120);

/// Runs of each target are multiplied by `PIKA_FUZZ_SCALE` (default 1).
fn scale() -> usize {
    std::env::var("PIKA_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The generator's seed: `PIKA_FUZZ_SEED`, or one fixed per target.
fn seed_for(name: &str) -> u64 {
    std::env::var("PIKA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            name.bytes().fold(0x5eed, |h: u64, b| {
                h.wrapping_mul(31).wrapping_add(u64::from(b))
            })
        })
}

pub fn regressions_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(name)
}

fn regressions(name: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(regressions_dir(name)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// Where a failing input is written.
fn save_failure(name: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{name}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// Watches the run in progress; after [`HANG`] saves its input and aborts the process
/// (a hung parser cannot be interrupted).
struct Watchdog {
    current: Arc<Mutex<(Instant, Vec<u8>)>>,
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(name: &'static str) -> Watchdog {
        let current = Arc::new(Mutex::new((Instant::now(), Vec::new())));
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (current.clone(), done.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let Ok(guard) = c.lock() else { return };
                if guard.0.elapsed() > HANG {
                    let path = save_failure(name, &guard.1);
                    eprintln!(
                        "fuzz target {name}: one run took over {HANG:?} (a hang); input saved to {}",
                        path.display()
                    );
                    std::process::abort();
                }
            }
        });
        Watchdog { current, done }
    }

    fn running(&self, input: &[u8]) {
        if let Ok(mut guard) = self.current.lock() {
            *guard = (Instant::now(), input.to_vec());
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// What a bounded run of one target did.
pub struct Summary {
    pub runs: usize,
    pub elapsed: Duration,
    /// The largest peak allocation seen, and the input length it was seen with.
    pub peak: (usize, usize),
}

/// One input through `target`: a panic or an allocation over the bound is a failure,
/// reported with the saved input.
fn run_one(
    target: &'static Target,
    input: &[u8],
    origin: &str,
    watchdog: &Watchdog,
    summary: &mut Summary,
) {
    watchdog.running(input);
    let before = alloc::start_measuring();
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let peak = alloc::peak_since(before);
    summary.runs += 1;
    if peak > summary.peak.0 {
        summary.peak = (peak, input.len());
    }
    let bound = (target.max_alloc)(input.len());
    let failure = match result {
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        ),
        Ok(()) if peak > bound => Some(format!(
            "allocated {peak} bytes at once for {} input bytes (bound {bound})",
            input.len()
        )),
        Ok(()) => None,
    };
    if let Some(failure) = failure {
        let path = save_failure(target.name, input);
        panic!(
            "fuzz target {} failed on {origin} ({} bytes, saved to {}): {failure}\n\
             keep it as a regression: cp {} {}/",
            target.name,
            input.len(),
            path.display(),
            path.display(),
            regressions_dir(target.name).display()
        );
    }
}

/// Seeds, regressions, then `mutations` mutated and `random` random inputs.
pub fn run(name: &str, mutations: usize, random: usize) -> Summary {
    let target = pika_migrate_fuzz::target(name).unwrap_or_else(|| panic!("no target {name}"));
    let watchdog = Watchdog::start(target.name);
    let started = Instant::now();
    let mut summary = Summary {
        runs: 0,
        elapsed: Duration::ZERO,
        peak: (0, 0),
    };
    let seeds = seeds::seeds(name);
    for (i, s) in seeds.iter().enumerate() {
        run_one(target, s, &format!("seed {i}"), &watchdog, &mut summary);
    }
    for (path, input) in regressions(name) {
        run_one(target, &input, &path, &watchdog, &mut summary);
    }
    let seed = seed_for(name);
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = seeds;
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    for i in 0..mutations * scale() {
        let a = &pool[rng.below(pool.len())];
        let b = &pool[rng.below(pool.len())];
        let input = mutate::mutate(a, b, &mut rng);
        let origin = format!("mutation {i} (PIKA_FUZZ_SEED={seed})");
        run_one(target, &input, &origin, &watchdog, &mut summary);
    }
    for i in 0..random * scale() {
        let len = [8, 64, 512, 4096][rng.below(4)];
        let n = rng.below(len + 1);
        let input = rng.bytes(n);
        let origin = format!("random input {i} (PIKA_FUZZ_SEED={seed})");
        run_one(target, &input, &origin, &watchdog, &mut summary);
    }
    summary.elapsed = started.elapsed();
    eprintln!(
        "fuzz {name}: {} runs in {:.1} s, peak allocation {} bytes (input of {} bytes)",
        summary.runs,
        summary.elapsed.as_secs_f64(),
        summary.peak.0,
        summary.peak.1
    );
    summary
}
