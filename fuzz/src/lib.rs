//! Fuzz targets: one function for each parser of bytes that come from outside (a
//! master's frames, binlog files, dumps, capture files, INFO replies, YAML, what a
//! plugin hands back), run through the real parser and what consumes its output.
//!
//! A target panics only when something a user relies on breaks: the parser panicked, an
//! accepted input does not survive a round trip, an error does not name its place, a
//! resumed read disagrees with a whole one. Parsers return errors; they never panic.
//!
//! Two engines drive the same targets:
//! - `tests/fuzz.rs`, part of every `cargo test`: the real fixtures, their mutations (bit
//!   flips, truncations, splices, length fields at 0 and at extremes) and random inputs,
//!   from fixed seeds, with the peak memory of each run counted against [`Target::max_alloc`];
//! - libFuzzer through `cargo fuzz` (`fuzz/libfuzzer/`, `scripts/fuzz`), coverage-guided,
//!   for long runs outside CI.
//!
//! An input that made a target fail is kept under `fuzz/regressions/<target>/` and run
//! by every test run from then on.

pub mod binlog;
pub mod capture;
pub mod config;
pub mod events;
pub mod master_info;
pub mod normalize;
pub mod plugin;
pub mod repl;
pub mod resp;
pub mod scratch;
pub mod storage;

/// One fuzz target.
pub struct Target {
    /// Its name: the libFuzzer binary's and the regression directory's.
    pub name: &'static str,
    /// What it feeds the bytes to.
    pub covers: &'static str,
    pub run: fn(&[u8]),
    /// Most bytes one run may hold allocated at once (the target's own copies
    /// included) for an input of `n` bytes: a parser must not allocate what a length
    /// field claims before the bytes are there.
    pub max_alloc: fn(usize) -> usize,
}

const MIB: usize = 1 << 20;

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "resp_command",
        covers: "resp::parse_command (binlog items' commands), re-encoded and parsed again",
        run: resp::command,
        max_alloc: |n| 16 * n + 64 * 1024,
    },
    Target {
        name: "binlog_item",
        covers: "BinlogItem::decode (34-byte header + RESP), then normalize and the encoders",
        run: binlog::item,
        max_alloc: |n| 48 * n + 256 * 1024,
    },
    Target {
        name: "binlog_manifest",
        covers: "Manifest::decode",
        run: binlog::manifest,
        max_alloc: |n| n + 4096,
    },
    Target {
        name: "binlog_file",
        covers: "BinlogReader over a write2file: records, blocks, padding, items, as the \
                 active file and as a closed one, and resumed at every item end",
        run: binlog::file,
        max_alloc: |n| 48 * n + 2 * MIB,
    },
    Target {
        name: "repl_stream",
        covers: "replication frames (4-byte length) split over reads, InnerResponse and \
                 InnerRequest (prost), the pushed binlog items, normalize",
        run: repl::stream,
        // A frame still arriving reserves at most 4 MiB ahead of the bytes (frame.rs).
        max_alloc: |n| 48 * n + 12 * MIB,
    },
    Target {
        name: "storage_values",
        covers: "blackwidow string values, hash/set/zset and list metas, zset scores",
        run: storage::values,
        max_alloc: |n| 4 * n + 4096,
    },
    Target {
        name: "storage_comparators",
        covers: "blackwidow.ListsDataKeyComparator and ZSetsScoreKeyComparator on any bytes: \
                 no panic, a consistent order, the documented order on well-formed keys",
        run: storage::comparators,
        max_alloc: |n| 8 * n + 4096,
    },
    Target {
        name: "storage_scan",
        covers: "the snapshot scan over five real RocksDBs holding the given rows (metas, \
                 values, data rows of every type, both comparators)",
        run: storage::scan,
        // RocksDB's own memory is C++'s, not counted; ours is the rows and events.
        max_alloc: |n| 64 * n + 4 * MIB,
    },
    Target {
        name: "storage_dump_patch",
        covers: "the snapshot scan of the fixture dump with bytes of its files overwritten",
        run: storage::dump_patch,
        max_alloc: |n| 64 * n + 16 * MIB,
    },
    Target {
        name: "floyd_bytes",
        covers: "floyd (Pika 4.0) user-key escaping, meta keys (the embedded-NUL cut), data \
                 keys, string values, metas, data values, scores, times in both units",
        run: storage::floyd_bytes,
        max_alloc: |n| 8 * n + 4096,
    },
    Target {
        name: "stream_bytes",
        covers: "Pika's stream layout (3.5 and 4.0): stream metas of both versions, entry \
                 ids in 3.5 and 4.0 data keys, messages (length-prefixed field/value pairs)",
        run: storage::stream_bytes,
        max_alloc: |n| 16 * n + 4096,
    },
    Target {
        name: "floyd_comparators",
        covers: "floyd.ListsDataKeyComparator and ZSetsScoreKeyComparator on any bytes: \
                 no panic, a consistent order, the documented order on well-formed keys",
        run: storage::floyd_comparators,
        max_alloc: |n| 8 * n + 4096,
    },
    Target {
        name: "floyd_dump_patch",
        covers: "the snapshot scan of the Pika 4.0.1 (floyd) fixture dump with bytes of its \
                 files overwritten",
        run: storage::floyd_dump_patch,
        max_alloc: |n| 64 * n + 16 * MIB,
    },
    Target {
        name: "dump_info",
        covers: "a dump's info file (layout::parse_dump_info, the replica's dump::parse_info) \
                 and FILENUM:OFFSET positions",
        run: storage::dump_info,
        max_alloc: |n| 16 * n + 4096,
    },
    Target {
        name: "capture_record",
        covers: "capture record payloads (capture::record::decode), re-encoded",
        run: capture::record,
        max_alloc: |n| 32 * n + 64 * 1024,
    },
    Target {
        name: "capture_file",
        covers: "CaptureReader over capture files: header, lengths, CRCs, cut records, \
                 skip_corrupt",
        run: capture::file,
        max_alloc: |n| 48 * n + MIB,
    },
    Target {
        name: "master_info",
        covers: "MasterInfo::parse and check (a master's INFO text)",
        run: master_info::text,
        max_alloc: |n| 8 * n + 4096,
    },
    Target {
        name: "info_reply",
        covers: "the INFO/AUTH reply reader, answered with the bytes over a loopback socket",
        run: master_info::reply,
        // Socket buffers per run, and a bulk reply's announced length is allocated (up to
        // its 1 MiB cap, MAX_REPLY in master_info.rs) before its bytes come.
        max_alloc: |n| 8 * n + 2 * MIB,
    },
    Target {
        name: "config_yaml",
        covers: "the pipeline file: ${VAR} interpolation, serde_yaml into the real config \
                 types (sinks included), line:column placing, filters and sources built",
        run: config::yaml,
        max_alloc: |n| 512 * n + 4 * MIB,
    },
    Target {
        name: "normalize",
        covers: "any argv and exec_time through normalize, the command table's key \
                 positions, the binlog event and the encoders",
        run: normalize::command,
        max_alloc: |n| 64 * n + 256 * 1024,
    },
    Target {
        name: "plugin_reply",
        covers: "what a plugin hands back through the host callbacks (emit, error, \
                 verdict) for any lent event",
        run: plugin::reply,
        max_alloc: |n| 64 * n + 256 * 1024,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
