//! The binlog reader on files written by a real Pika 3.3.6: every item decodes to the
//! command that was issued, in the form Pika wrote it, at the right position.

mod common;

use common::*;
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::binlog::{BinlogEntry, BinlogReader, ReadOutcome};
use serde_json::Value as Json;

fn issued(name: &str) -> Vec<Vec<Vec<u8>>> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(|l| {
            let args: Json = serde_json::from_str(l).unwrap();
            args.as_array()
                .unwrap()
                .iter()
                .map(|a| b64(a.as_str().unwrap()))
                .collect()
        })
        .collect()
}

fn read_all(from: Option<BinlogOffset>) -> Vec<BinlogEntry> {
    let mut reader = BinlogReader::open(&fixture("binlog"), from).unwrap();
    let mut out = Vec::new();
    while let ReadOutcome::Entry(e) = reader.read_next().unwrap() {
        out.push(e);
    }
    out
}

fn num(arg: &[u8]) -> i64 {
    std::str::from_utf8(arg).unwrap().parse().unwrap()
}

fn lower(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_lowercase()
}

/// Checks that `item` is how Pika 3.3.6 logs the issued command `cmd` (see the fixture
/// notes: relative expiries become absolute seconds, names of rewritten forms lowercase).
fn assert_logged_form(cmd: &[Vec<u8>], entry: &BinlogEntry) {
    let item = &entry.item;
    let got: Vec<&[u8]> = item.argv.iter().map(|a| a.as_ref()).collect();
    let now = i64::from(item.exec_time);
    let near = |ts: i64, want: i64| (ts - want).abs() <= 1;
    let name = lower(&cmd[0]);
    let has_nx_xx = cmd
        .iter()
        .skip(3)
        .any(|a| matches!(lower(a).as_str(), "nx" | "xx"));
    let at = entry.start;
    match name.as_str() {
        "setex" | "psetex" => {
            assert_eq!(
                (got[0], got[1], got[3]),
                (&b"pksetexat"[..], &cmd[1][..], &cmd[3][..]),
                "at {at}"
            );
            let secs = if name == "setex" {
                num(&cmd[2])
            } else {
                num(&cmd[2]) / 1000
            };
            assert!(near(num(got[2]), now + secs), "at {at}: {:?}", got);
        }
        "set" if cmd.len() > 3 && !has_nx_xx => {
            assert_eq!(
                (got[0], got[1], got[3]),
                (&b"pksetexat"[..], &cmd[1][..], &cmd[2][..]),
                "at {at}"
            );
            let secs = if lower(&cmd[3]) == "ex" {
                num(&cmd[4])
            } else {
                num(&cmd[4]) / 1000
            };
            assert!(near(num(got[2]), now + secs), "at {at}");
        }
        // EXPIREAT is logged verbatim (the fixture shows it; repl-notes.md says otherwise).
        "expire" | "pexpire" | "pexpireat" => {
            assert_eq!((got[0], got[1]), (&b"expireat"[..], &cmd[1][..]), "at {at}");
            let want = match name.as_str() {
                "expire" => now + num(&cmd[2]),
                "pexpire" => now + num(&cmd[2]) / 1000,
                _ => num(&cmd[2]) / 1000,
            };
            assert!(
                near(num(got[2]), want),
                "at {at}: {} vs {want}",
                num(got[2])
            );
        }
        "setnx" => assert_eq!(got, [&b"setnx"[..], &cmd[1], &cmd[2]], "at {at}"),
        _ => assert_eq!(
            got,
            cmd.iter().map(|a| a.as_slice()).collect::<Vec<_>>(),
            "at {at}"
        ),
    }
}

#[test]
fn every_item_is_the_issued_command_in_the_form_pika_wrote_it() {
    let entries = read_all(None);
    let mut commands = issued("dataset-commands.jsonl");
    commands.extend(issued("binlog-commands.jsonl"));
    assert_eq!(entries.len(), commands.len());
    for (i, (entry, cmd)) in entries.iter().zip(&commands).enumerate() {
        assert_eq!(entry.item.logic_id, i as u64 + 1, "logic ids count items");
        assert_logged_form(cmd, entry);
    }
}

#[test]
fn positions_chain_across_blocks_and_files() {
    let entries = read_all(None);
    assert_eq!(entries[0].start, BinlogOffset::new(0, 0));
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.end.filenum == b.start.filenum {
            assert_eq!(a.end, b.start, "items are contiguous");
        } else {
            assert_eq!(
                (b.start.filenum, b.start.offset),
                (a.end.filenum + 1, 0),
                "rotation starts the next file"
            );
        }
    }
    // The 1 MiB SET that ends write2file0 spans 17 blocks (first, middles, last).
    let big = entries
        .iter()
        .find(|e| e.item.argv[1].as_ref() == b"s1:big")
        .unwrap();
    assert_eq!(big.item.argv[2].len(), 1 << 20);
    assert_eq!(big.end, BinlogOffset::new(0, 1088531));
    let last = entries.last().unwrap();
    assert_eq!(last.end, BinlogOffset::new(1, 542923), "the manifest's end");
}

#[test]
fn reading_from_the_dump_position_yields_exactly_the_later_commands() {
    let entries = read_all(Some(BinlogOffset::new(1, 507340)));
    let later = issued("binlog-commands.jsonl");
    assert_eq!(entries.len(), later.len());
    assert_eq!(entries[0].start, BinlogOffset::new(1, 507340));
    for (entry, cmd) in entries.iter().zip(&later) {
        assert_logged_form(cmd, entry);
    }
    // Resuming from any item's end gives the rest.
    let middle = &entries[100];
    let rest = read_all(Some(middle.end));
    assert_eq!(rest.len(), entries.len() - 101);
    assert_eq!(rest[0].item, entries[101].item);
}

#[test]
fn a_position_inside_an_item_is_refused() {
    let err = BinlogReader::open(&fixture("binlog"), Some(BinlogOffset::new(1, 507341)))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: offset 507341 is not the start of a binlog item",
            fixture("binlog/write2file1").display()
        )
    );
}
