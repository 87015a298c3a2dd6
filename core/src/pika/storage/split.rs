//! Cutting a dump into parts that threads scan on their own: each part is one RocksDB
//! database of the dump (a blackwidow type directory, a floyd instance) and a range of
//! its meta keys. A key's data rows are read with its meta, so a key never spans two
//! parts and its events stay in order.
//!
//! Split points are guessed, then weighed: keys spread evenly between the first and
//! last meta key (by the bytes after their common prefix) are candidates, RocksDB's
//! size estimate of each stretch between two candidates (read from the SST indexes, no
//! data read) says where the parts of about equal size begin.

use std::path::Path;

use rocksdb::{Range, DB};

use super::rocks::scan_iter;
use super::StorageError;
use crate::event::TypeSet;

/// Meta keys `from` (included) to `to` (excluded); `None` is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub from: Option<Vec<u8>>,
    pub to: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub const ALL: KeyRange = KeyRange {
        from: None,
        to: None,
    };

    /// Whether `key` comes at or after the range's end.
    pub fn is_past(&self, key: &[u8]) -> bool {
        self.to.as_deref().is_some_and(|to| key >= to)
    }

    /// Whether `key` falls in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.from.as_deref().is_none_or(|from| key >= from) && !self.is_past(key)
    }
}

/// What a reader asks before emitting a name that also holds types read earlier in
/// Pika's order (`earlier`): a scan on several threads returns once those types' events
/// for `key` were passed on, so a name's types still come in that order. A scan on one
/// thread has nothing to wait for (`InOrder`).
pub trait NameOrder: Sync {
    fn wait_for_earlier(&self, key: &[u8], earlier: TypeSet);
}

/// The order of a scan on one thread: every earlier type was read already.
pub struct InOrder;

impl NameOrder for InOrder {
    fn wait_for_earlier(&self, _key: &[u8], _earlier: TypeSet) {}
}

/// A part of a database: which of its RocksDB databases (`unit`, the reader's own
/// numbering), the range of meta keys, and RocksDB's estimate of their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPart {
    pub unit: usize,
    pub range: KeyRange,
    pub bytes: u64,
    /// Parts of a later round are taken once every part of the earlier ones was: the
    /// types of a blackwidow database in `TYPE_ORDER`, whose names of several types
    /// wait for their earlier types (`NameOrder`). Floyd's instances share one: a
    /// name there has one type.
    pub round: usize,
}

/// A part smaller than this is not cut further: a thread's start costs more than
/// reading it.
pub const MIN_PART_BYTES: u64 = 1 << 20;

/// Candidate split points tried per column family.
const CANDIDATES: usize = 64;

/// Cuts column family `cf` of `db` (at `path`, for errors) into at most `pieces`
/// ranges of at least `min_bytes` each, as RocksDB estimates them, in key order. An
/// empty column family, or one piece asked for, is one range (its bytes then not
/// weighed: 0).
pub fn split_column_family(
    db: &DB,
    path: &Path,
    cf: &str,
    pieces: usize,
    min_bytes: u64,
) -> Result<Vec<(KeyRange, u64)>, StorageError> {
    // One piece is the whole column family: nothing to read or weigh.
    if pieces <= 1 {
        return Ok(vec![(KeyRange::ALL, 0)]);
    }
    let handle = db.cf_handle(cf).ok_or_else(|| StorageError::Layout {
        path: path.to_owned(),
        reason: format!("no column family {cf}"),
    })?;
    let (first, last) = {
        let mut it = scan_iter(db, path, cf)?;
        it.seek_to_first();
        let first = it.key().map(<[u8]>::to_vec);
        it.seek_to_last();
        let last = it.key().map(<[u8]>::to_vec);
        it.status().map_err(|source| StorageError::Read {
            path: path.to_owned(),
            source,
        })?;
        (first, last)
    };
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(vec![(KeyRange::ALL, 0)]);
    };
    let points = candidates(&first, &last, CANDIDATES);
    // The stretches: first..p1, p1..p2, …, pn..last (and past it: `last` itself).
    let mut last_past = last.clone();
    last_past.push(0);
    let bounds: Vec<&[u8]> = std::iter::once(first.as_slice())
        .chain(points.iter().map(Vec::as_slice))
        .chain(std::iter::once(last_past.as_slice()))
        .collect();
    let ranges: Vec<Range> = bounds.windows(2).map(|w| Range::new(w[0], w[1])).collect();
    let sizes = db.get_approximate_sizes_cf(&handle, &ranges);
    Ok(choose(&points, &sizes, pieces, min_bytes))
}

/// The parts of RocksDB database `unit` of a reader (at `path`), read in `round`: its
/// meta column family (`default`) cut into at most `pieces` ranges of at least
/// `MIN_PART_BYTES`.
pub fn parts_of(
    db: &DB,
    path: &Path,
    (unit, round): (usize, usize),
    pieces: usize,
) -> Result<Vec<ScanPart>, StorageError> {
    Ok(
        split_column_family(db, path, "default", pieces, MIN_PART_BYTES)?
            .into_iter()
            .map(|(range, bytes)| ScanPart {
                unit,
                range,
                bytes,
                round,
            })
            .collect(),
    )
}

/// Up to `n - 1` keys spread evenly strictly between `first` and `last`, in order: the
/// 8 bytes after their common prefix read as a number and stepped through.
fn candidates(first: &[u8], last: &[u8], n: usize) -> Vec<Vec<u8>> {
    let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
    let word = |k: &[u8]| {
        let mut w = [0u8; 8];
        for (i, b) in k.iter().skip(common).take(8).enumerate() {
            w[i] = *b;
        }
        u64::from_be_bytes(w)
    };
    let (low, high) = (word(first), word(last));
    if high <= low || n < 2 {
        return Vec::new();
    }
    let step = (high - low) / n as u64;
    let mut points: Vec<Vec<u8>> = Vec::with_capacity(n);
    for i in 1..n as u64 {
        let Some(at) = step.checked_mul(i).and_then(|s| low.checked_add(s)) else {
            break;
        };
        let mut key = first[..common].to_vec();
        key.extend_from_slice(&at.to_be_bytes());
        // Trailing zero bytes add nothing to a bound but length.
        while key.len() > common + 1 && key.last() == Some(&0) {
            key.pop();
        }
        if key.as_slice() > first && key.as_slice() < last && points.last().is_none_or(|p| *p < key)
        {
            points.push(key);
        }
    }
    points
}

/// Ranges from the stretches' `sizes` (one more than `points`): cut where the running
/// total passes each share of `pieces`, no range under `min_bytes`.
fn choose(
    points: &[Vec<u8>],
    sizes: &[u64],
    pieces: usize,
    min_bytes: u64,
) -> Vec<(KeyRange, u64)> {
    let total: u64 = sizes.iter().sum();
    let pieces = pieces
        .min(usize::try_from(total / min_bytes.max(1)).unwrap_or(usize::MAX))
        .max(1);
    if pieces == 1 {
        return vec![(KeyRange::ALL, total)];
    }
    let share = total / pieces as u64;
    let mut out = Vec::with_capacity(pieces);
    let mut from: Option<Vec<u8>> = None;
    let mut running = 0u64;
    for (i, size) in sizes.iter().enumerate() {
        running += size;
        let last_stretch = i + 1 == sizes.len();
        let cut_here = !last_stretch && out.len() + 1 < pieces && running >= share.max(min_bytes);
        if cut_here || last_stretch {
            let to = (!last_stretch).then(|| points[i].clone());
            out.push((
                KeyRange {
                    from: from.take(),
                    to: to.clone(),
                },
                running,
            ));
            from = to;
            running = 0;
        }
    }
    // Nothing after the last cut: the part before runs to the end instead.
    if out.len() > 1 && out.last().is_some_and(|(_, bytes)| *bytes == 0) {
        out.pop();
        if let Some((range, _)) = out.last_mut() {
            range.to = None;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_lie_strictly_between_the_ends_in_order() {
        let points = candidates(b"key:000000", b"key:999999", 16);
        assert_eq!(points.len(), 15);
        assert!(points
            .iter()
            .all(|p| p.as_slice() > b"key:000000".as_slice()
                && p.as_slice() < b"key:999999".as_slice()));
        assert!(points.windows(2).all(|w| w[0] < w[1]));
        assert!(points.iter().all(|p| p.starts_with(b"key:")));
        // Nothing between a key and itself, or a key and the one right after it.
        assert!(candidates(b"a", b"a", 16).is_empty());
        assert!(candidates(b"a", b"a\x00", 16).is_empty());
        // Binary names, a shorter last key.
        let points = candidates(b"\x00\x01", b"\xff", 8);
        assert_eq!(points.len(), 7);
        assert!(points.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ranges_are_cut_at_equal_shares_and_cover_every_key() {
        let points: Vec<Vec<u8>> = (1..8u8).map(|i| vec![i]).collect();
        let sizes = [10u64 << 20; 8];
        let ranges = choose(&points, &sizes, 4, 1 << 20);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].0.from, None);
        assert_eq!(ranges[3].0.to, None);
        for w in ranges.windows(2) {
            assert_eq!(w[0].0.to, w[1].0.from, "no gap and no overlap");
        }
        assert!(ranges.iter().all(|(_, bytes)| *bytes == 20 << 20));
        // Too little data for more than one part, or one part asked for.
        assert_eq!(choose(&points, &[1000; 8], 4, 1 << 20).len(), 1);
        assert_eq!(choose(&points, &sizes, 1, 1 << 20).len(), 1);
        // All the data in one stretch: no empty part is made.
        let mut lopsided = [0u64; 8];
        lopsided[5] = 80 << 20;
        let ranges = choose(&points, &lopsided, 4, 1 << 20);
        assert!(ranges.iter().all(|(_, bytes)| *bytes > 0), "{ranges:?}");
    }

    #[test]
    fn a_range_ends_before_its_end_key() {
        let r = KeyRange {
            from: Some(b"b".to_vec()),
            to: Some(b"d".to_vec()),
        };
        assert!(!r.is_past(b"c"));
        assert!(r.is_past(b"d"));
        assert!(!KeyRange::ALL.is_past(b"\xff\xff"));
    }
}
