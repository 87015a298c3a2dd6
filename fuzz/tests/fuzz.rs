//! The bounded fuzz run of every target (see `pika_migrate_fuzz`), part of every
//! `cargo test`: seeds from the real fixtures, the kept regressions, mutations and
//! random inputs from fixed seeds, with each run's peak allocation counted.
//!
//! Longer runs: `PIKA_FUZZ_SCALE=50` multiplies the runs, `PIKA_FUZZ_SEED=N` changes
//! the inputs; `scripts/fuzz` runs libFuzzer on the same targets.

mod harness;

#[global_allocator]
static ALLOC: harness::alloc::Counting = harness::alloc::Counting;

/// One test per target: (name, mutated inputs, random inputs).
macro_rules! fuzz_tests {
    ($($name:ident: $mutations:expr, $random:expr;)*) => {
        $(
            #[test]
            fn $name() {
                harness::run(stringify!($name), $mutations, $random);
            }
        )*

        #[test]
        fn every_target_is_run() {
            let tested = [$(stringify!($name)),*];
            for t in pika_migrate_fuzz::TARGETS {
                assert!(tested.contains(&t.name), "target {} has no test", t.name);
            }
        }
    };
}

fuzz_tests! {
    resp_command: 20000, 5000;
    binlog_item: 15000, 5000;
    binlog_manifest: 1000, 500;
    binlog_file: 1000, 300;
    repl_stream: 10000, 3000;
    storage_values: 3000, 3000;
    storage_comparators: 10000, 20000;
    storage_scan: 0, 150;
    storage_dump_patch: 100, 20;
    floyd_bytes: 5000, 5000;
    stream_bytes: 5000, 5000;
    floyd_comparators: 10000, 20000;
    floyd_dump_patch: 60, 15;
    dump_info: 5000, 2000;
    capture_record: 15000, 5000;
    capture_file: 1200, 300;
    master_info: 3000, 1000;
    info_reply: 2000, 500;
    config_yaml: 8000, 2000;
    normalize: 0, 40000;
    plugin_reply: 0, 30000;
}

/// Writes every target's seeds to `$PIKA_FUZZ_CORPUS/<target>/` for libFuzzer
/// (`scripts/fuzz` runs this first).
#[test]
#[ignore = "run by scripts/fuzz"]
fn write_corpus() {
    let Some(root) = std::env::var_os("PIKA_FUZZ_CORPUS") else {
        panic!("set PIKA_FUZZ_CORPUS to the corpus directory");
    };
    for t in pika_migrate_fuzz::TARGETS {
        let dir = std::path::Path::new(&root).join(t.name);
        std::fs::create_dir_all(&dir).expect("the corpus directory");
        let inputs = harness::seeds::seeds(t.name).into_iter().chain(
            std::fs::read_dir(harness::regressions_dir(t.name))
                .into_iter()
                .flatten()
                .filter_map(|e| std::fs::read(e.ok()?.path()).ok()),
        );
        for (i, input) in inputs.enumerate() {
            std::fs::write(dir.join(format!("seed-{i:04}")), input).expect("a corpus file");
        }
    }
}
