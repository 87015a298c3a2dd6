//! The tool's output on the fixtures of real Pika 3.3.6, 3.5.5 and 4.0.1 (their dumps
//! and their real binlogs, as RESP and as JSON lines) stays byte for byte what it was
//! when `tests/fixtures/golden-outputs.txt` was written: work on speed must not change
//! a byte of what users get.
//!
//! Only the absolute expiry times move with the run (a fixture is read as of its
//! moment, and its keys keep the time they had left then, counted from now): those
//! numbers are masked, and every other byte is compared. The files are too big to keep
//! (36 MB), so their length and FNV-1a hash are kept. After a change that is meant to
//! alter the output, review it and write the file again with `GOLDEN_UPDATE=1`.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use common::*;

/// Arguments that are absolute expiry times: the one after `PXAT`/`EXAT`, and the
/// second of `PEXPIREAT`/`EXPIREAT`.
fn expiry_args(argv: &[Vec<u8>]) -> Vec<usize> {
    let mut at = Vec::new();
    let name = argv.first().map(|n| n.to_ascii_uppercase());
    if matches!(name.as_deref(), Some(b"PEXPIREAT" | b"EXPIREAT")) {
        at.push(2);
    }
    for (i, arg) in argv.iter().enumerate() {
        if arg.eq_ignore_ascii_case(b"PXAT") || arg.eq_ignore_ascii_case(b"EXAT") {
            at.push(i + 1);
        }
    }
    at
}

const MASK: &[u8] = b"<expiry>";

/// RESP commands, each re-encoded with its expiry times masked. Re-encoding is exact
/// (arrays of bulk strings have one form), and is checked to be.
fn masked_resp(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut exact = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    let line = |rest: &mut &[u8], tag: u8| -> usize {
        let end = rest.windows(2).position(|w| w == b"\r\n").expect("a line");
        assert_eq!(rest[0], tag, "a RESP {}", tag as char);
        let n = std::str::from_utf8(&rest[1..end]).unwrap().parse().unwrap();
        *rest = &rest[end + 2..];
        n
    };
    while !rest.is_empty() {
        let count = line(&mut rest, b'*');
        let mut argv = Vec::with_capacity(count);
        for _ in 0..count {
            let len = line(&mut rest, b'$');
            argv.push(rest[..len].to_vec());
            assert_eq!(&rest[len..len + 2], b"\r\n");
            rest = &rest[len + 2..];
        }
        encode(&mut exact, &argv);
        for i in expiry_args(&argv) {
            if let Some(arg) = argv.get_mut(i) {
                *arg = MASK.to_vec();
            }
        }
        encode(&mut out, &argv);
    }
    assert!(exact == bytes, "the RESP output did not re-encode exactly");
    out
}

fn encode(out: &mut Vec<u8>, argv: &[Vec<u8>]) {
    out.extend_from_slice(format!("*{}\r\n", argv.len()).as_bytes());
    for arg in argv {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// JSON lines with their expiry times masked (`expire_at_ms`, and in a command's
/// `args` as in RESP). Each line is checked to read back to the same bytes, so what is
/// compared is the bytes written.
fn masked_jsonl(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&row).unwrap(), line, "not canonical");
        if let Some(at) = row.get_mut("expire_at_ms").filter(|v| !v.is_null()) {
            *at = serde_json::Value::from("<expiry>");
        }
        if let Some(args) = row.get_mut("args").and_then(|a| a.as_array_mut()) {
            let argv: Vec<Vec<u8>> = args
                .iter()
                .map(|a| a.as_str().unwrap_or_default().as_bytes().to_vec())
                .collect();
            for i in expiry_args(&argv) {
                if let Some(arg) = args.get_mut(i) {
                    *arg = serde_json::Value::from("<expiry>");
                }
            }
        }
        writeln!(out, "{}", serde_json::to_string(&row).unwrap()).unwrap();
    }
    out.into_bytes()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs `source` (a fixture's `dump` or `binlog`) of Pika `version` into a file sink of
/// `format`, read as of the fixture's moment; the output, masked.
fn output(dir: &Path, version: &str, source: &str, format: &str) -> Vec<u8> {
    let kind = if source == "dump" {
        "snapshot"
    } else {
        "binlog"
    };
    let out = dir.join(format!("{source}-{version}.{format}"));
    let yaml = format!(
        "source:\n  type: {kind}\n  path: {}{}\nsinks:\n  - type: file\n    path: {}\n    format: {format}\n",
        fixture_of(version, source).display(),
        as_of_line(fixture_moment_of(version)),
        out.display()
    );
    let pipeline = write_pipeline(dir, &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{version} {source} {format}: {stderr}");
    let bytes = std::fs::read(&out).unwrap();
    match format {
        "resp" => masked_resp(&bytes),
        _ => masked_jsonl(&bytes),
    }
}

#[test]
fn outputs_on_the_real_fixtures_are_unchanged_byte_for_byte() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-outputs.txt");
    let dir = tempfile::tempdir().unwrap();
    let mut now = String::from(
        "# name, bytes, FNV-1a 64 of the output with expiry times masked (tests/golden.rs)\n",
    );
    for version in ["3.3.6", "3.5.5", "4.0.1"] {
        for source in ["dump", "binlog"] {
            for format in ["resp", "jsonl"] {
                let bytes = output(dir.path(), version, source, format);
                writeln!(
                    now,
                    "{source}-{version}.{format} {} {:016x}",
                    bytes.len(),
                    fnv1a(&bytes)
                )
                .unwrap();
            }
        }
    }
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::write(&golden, &now).unwrap();
        return;
    }
    let kept = std::fs::read_to_string(&golden).unwrap();
    assert!(
        kept == now,
        "the output changed:\nkept:\n{kept}\nnow:\n{now}\n(if that is meant, review the \
         output and run again with GOLDEN_UPDATE=1)"
    );
}

#[test]
fn masking_leaves_only_the_expiry_times_out() {
    let resp = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nPXAT\r\n$13\r\n1797661649523\r\n\
                 *3\r\n$9\r\nPEXPIREAT\r\n$1\r\nk\r\n$13\r\n1797661649523\r\n";
    let masked = masked_resp(resp);
    assert_eq!(
        masked,
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nPXAT\r\n$8\r\n<expiry>\r\n\
          *3\r\n$9\r\nPEXPIREAT\r\n$1\r\nk\r\n$8\r\n<expiry>\r\n"
    );
    let line = br#"{"args":["SET","k","v","PXAT","17"],"db":0,"expire_at_ms":null,"key":"k"}"#;
    assert_eq!(
        masked_jsonl(line),
        br#"{"args":["SET","k","v","PXAT","<expiry>"],"db":0,"expire_at_ms":null,"key":"k"}
"#
    );
}
