//! `pika-migrate bench generate`: writes a synthetic Pika dump (blackwidow layout) for
//! benchmarks (`scripts/bench`) and large-load tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::storage::writer::DumpWriter;

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Write a synthetic dump: `--keys` small keys of `--kind`, plus big keys with `--big`.
    Generate {
        /// Directory to create (a `db0/`-style directory).
        #[arg(long)]
        out: PathBuf,
        /// Number of small keys.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        #[arg(long, value_enum, default_value_t = Kind::Mixed)]
        kind: Kind,
        /// Fields of each small hash.
        #[arg(long, default_value_t = 4)]
        hash_fields: usize,
        /// Add big keys: a hash and a list of `--big-elements` elements, a set and a
        /// sorted set of half as many, and a string of `--big-string-mib`. The big hash's
        /// values have `--big-value-bytes` each.
        #[arg(long)]
        big: bool,
        #[arg(long, default_value_t = 1_000_000)]
        big_elements: u64,
        #[arg(long, default_value_t = 32)]
        big_string_mib: usize,
        #[arg(long, default_value_t = 8)]
        big_value_bytes: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// 16-byte strings only.
    Strings,
    /// Hashes of `--hash-fields` small fields only.
    Hashes,
    /// 50 % strings, 20 % hashes, 10 % each lists, sets, sorted sets.
    Mixed,
}

/// A cheap deterministic byte pattern.
fn value(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

pub fn run(bench: Bench) -> anyhow::Result<ExitCode> {
    let Bench::Generate {
        out,
        keys,
        kind,
        hash_fields,
        big,
        big_elements,
        big_string_mib,
        big_value_bytes,
    } = bench;
    let mut w = DumpWriter::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let f: Vec<Vec<u8>> = (0..hash_fields)
        .map(|i| format!("field{i}").into_bytes())
        .collect();
    for i in 0..keys {
        let key = format!("bench:{i:010}").into_bytes();
        let v = value(i, 16);
        let pick = match kind {
            Kind::Strings => 0,
            Kind::Hashes => 5,
            Kind::Mixed => i % 10,
        };
        match pick {
            0..=4 => w.string(&key, &v, 0)?,
            5 | 6 => {
                let fields: Vec<(&[u8], &[u8])> =
                    f.iter().map(|x| (x.as_slice(), &v[..8])).collect();
                w.hash(&key, &fields, 0)?;
            }
            7 => w.list(&key, &[&v[..4], &v[4..8], &v[8..12]], 0)?,
            8 => w.set(&key, &[&v[..4], &v[4..8], &v[8..12]], 0)?,
            _ => w.zset(
                &key,
                &[(&v[..4], 1.0), (&v[4..8], 2.5), (&v[8..12], -3.0)],
                0,
            )?,
        }
    }
    if big {
        let n = big_elements;
        let half = (n / 2) as usize;
        let items: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("element:{i:08}").into_bytes())
            .collect();
        let values: Vec<Vec<u8>> = (0..n).map(|i| value(i, big_value_bytes)).collect();
        let fields: Vec<(&[u8], &[u8])> = items
            .iter()
            .zip(&values)
            .map(|(x, v)| (x.as_slice(), v.as_slice()))
            .collect();
        w.hash(b"big:hash", &fields, 0)?;
        let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
        w.list(b"big:list", &refs, 0)?;
        w.set(b"big:set", &refs[..half], 0)?;
        let scored: Vec<(&[u8], f64)> = refs[..half]
            .iter()
            .enumerate()
            .map(|(i, m)| (*m, i as f64 / 7.0))
            .collect();
        w.zset(b"big:zset", &scored, 0)?;
        w.string(b"big:string", &value(7, big_string_mib << 20), 0)?;
    }
    w.finish(BinlogOffset::new(0, 0))?;
    eprintln!(
        "wrote {} keys{} to {}",
        keys,
        if big { " and 5 big keys" } else { "" },
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
