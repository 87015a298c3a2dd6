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
    /// Every type in every size class Redis encodes differently: strings of 1 byte to
    /// 2 KiB and integers, hashes, sets (of integers and of strings) and sorted sets from
    /// a few elements to past their listpack and intset limits, lists of up to 3000
    /// elements, values past the listpack value limit, one key in five with a time to
    /// live.
    Varied,
}

/// The `i`-th key of `--kind varied` into `w`: its type and size drawn from `i`.
fn varied(w: &mut DumpWriter, i: u64, key: &[u8]) -> anyhow::Result<()> {
    let draw = value(i, 8);
    let roll = |n: usize, m: u64| u64::from(draw[n]).wrapping_mul(0x9e37) % m;
    // A day ahead of the run, one key in five (the dump writer keeps seconds in 32 bits).
    let ttl = if roll(0, 5) == 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        i32::try_from(now + 86_400).unwrap_or(0)
    } else {
        0
    };
    // Sizes spread over orders of magnitude: 1 to about `max`.
    let size = |n: usize, max: u64| {
        let exp = roll(n, 64) as f64 / 63.0;
        ((max as f64).powf(exp) as u64).max(1)
    };
    let member = |j: u64, len: usize| value(i.wrapping_mul(7919).wrapping_add(j), len);
    match roll(1, 10) {
        0..=2 => {
            let v = match roll(2, 4) {
                0 => (i % 100_000).to_string().into_bytes(),
                _ => value(i, size(3, 2048) as usize),
            };
            w.string(key, &v, ttl)?;
        }
        3 | 4 => {
            let n = size(3, 300);
            let long = roll(4, 10) == 0;
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                .map(|j| {
                    (
                        format!("f{j}").into_bytes(),
                        member(j, if long { 100 } else { 10 }),
                    )
                })
                .collect();
            let refs: Vec<(&[u8], &[u8])> = pairs
                .iter()
                .map(|(f, v)| (f.as_slice(), v.as_slice()))
                .collect();
            w.hash(key, &refs, ttl)?;
        }
        5 | 6 => {
            let n = size(3, 3000);
            let items: Vec<Vec<u8>> = (0..n).map(|j| member(j, 12)).collect();
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            w.list(key, &refs, ttl)?;
        }
        7 => {
            let n = size(3, 1000);
            let ints = roll(4, 2) == 0;
            let items: Vec<Vec<u8>> = (0..n)
                .map(|j| {
                    if ints {
                        (j * 37).to_string().into_bytes()
                    } else {
                        member(j, 12)
                    }
                })
                .collect();
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            w.set(key, &refs, ttl)?;
        }
        _ => {
            let n = size(3, 300);
            let items: Vec<(Vec<u8>, f64)> =
                (0..n).map(|j| (member(j, 10), j as f64 * 1.5)).collect();
            let refs: Vec<(&[u8], f64)> = items.iter().map(|(m, s)| (m.as_slice(), *s)).collect();
            w.zset(key, &refs, ttl)?;
        }
    }
    Ok(())
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
            Kind::Varied => {
                varied(&mut w, i, &key)?;
                continue;
            }
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
