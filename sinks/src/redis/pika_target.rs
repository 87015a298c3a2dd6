//! A Pika server as the Redis sink's target (an upgrade from Pika 3.x to 4.0, or Pika to
//! Pika). Pika speaks RESP but applies fewer forms than Redis; what each version
//! accepts was read from real 3.5.5 and 4.0.1 servers (`docs/pika-as-target.md`, with
//! their replies). The sink finds a Pika in the target's `INFO` (`pika_version`) and
//! then sends every command in a form that version applies with the same effect:
//!
//! - `PEXPIREAT k ms` becomes `EXPIREAT k s` (the second at or after `ms`): 4.0.1
//!   deletes the key at once on a `PEXPIREAT` in the future, and every Pika keeps whole
//!   seconds anyway (4.0 stores `s × 1000`).
//! - `SET … PXAT ms` (Pika knows no `PXAT`/`EXAT`) becomes `SET` then `EXPIREAT` in the
//!   same transaction; with `NX`/`XX` (where the expiry must follow only a write that
//!   happened), `SET … EX <seconds left>`, or nothing / `DEL` when the time has passed.
//! - Held expiries of a late replay (`replay::late_expiry`): Pika has no Lua, so the
//!   marker expiry is not sent (`PERSIST`, or `SET` without expiry) and the release,
//!   `EVAL <release>`, is a `DEL`: the replay forgets a held key on every command that
//!   would have cleared the marker (`SET`, `PERSIST`, a new expiry, `DEL`, …).
//! - The scripts of Pika's own `SET … VX` and `DELVX` go back to those commands.
//! - `HSET` of several fields becomes `HMSET` (3.5 and 4.0 take one field in `HSET`).
//! - `XSETID` (unknown to Pika) is left out and counted: Pika's `XADD *` takes the
//!   time in ms, above any id a real master generated, so only a stream whose deleted
//!   newest ids were ahead of the clock would generate a different next id.
//! - `SET … KEEPTTL` (Pika 3.5/4.0 masters log INCR and APPEND so) has no Pika form
//!   that keeps the time to live: the value is written with `SET`, and the keys whose
//!   expiry this dropped are counted and warned about.
//!
//! - A name with a NUL byte followed by more bytes is not written into Pika 4.0: 4.0.1
//!   stores it cut after the NUL (its `EncodeUserKey`), so no read finds it and two such
//!   names become one key (`tests/fixtures/pika-v4.0.1/README.md`). The command is left
//!   out, the first names are warned about and all counted.
//!
//! What is not translated (another script, a Pika-only command of another version)
//! is sent as it is: Pika refuses it, and `on_error` decides.

use bytes::Bytes;
use pika_migrate_core::display::display_key;
use pika_migrate_core::pika::normalize::{is_del_vx_script, is_set_vx_script};
use pika_migrate_core::replay::late_expiry::{MARK_THRESHOLD_MS, RELEASE_SCRIPT};

/// What the target's `INFO` says of a Pika.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PikaTarget {
    /// `pika_version` (4.0.1 reports `4.0.0`).
    pub version: String,
    /// 3.x keeps each type of a name apart (a string and a hash under one name); 4.0
    /// holds one type per name and answers WRONGTYPE as Redis does.
    pub keeps_types: bool,
    /// 4.0 stores a name with a NUL followed by more bytes cut after the NUL.
    pub cuts_nul_names: bool,
}

impl PikaTarget {
    /// The Pika behind `info` (an `INFO` reply), `None` for a Redis.
    pub fn detect(info: &str) -> Option<PikaTarget> {
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("pika_version:"))?
            .trim()
            .to_owned();
        let keeps_types = version.starts_with("3.") || version.starts_with("2.");
        Some(PikaTarget {
            cuts_nul_names: version.starts_with("4."),
            version,
            keeps_types,
        })
    }
}

/// Whether Pika 4.0 would store `name` cut: a NUL with more bytes after it (a NUL as
/// the last byte is kept).
pub fn cut_by_pika_4(name: &[u8]) -> bool {
    name.iter()
        .position(|b| *b == 0)
        .is_some_and(|i| i + 1 < name.len())
}

/// What translating left out or could not keep, for the run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translated {
    /// `XSETID`s left out.
    pub xsetid_dropped: u64,
    /// `SET … KEEPTTL` written as a plain `SET`: the key's expiry is gone.
    pub keepttl_dropped: u64,
    /// `SET k v KEEPTTL` left for the lane to write as SET + PEXPIRE of the time the
    /// key had left.
    pub keepttl_kept: u64,
    /// Commands left out because a name in them has a NUL Pika 4.0 would cut at.
    pub nul_names_dropped: u64,
    /// The first of those names, shown.
    pub nul_names: Vec<String>,
}

impl Translated {
    /// Counts a command left out for `name` (a NUL that Pika 4.0 cuts at).
    pub fn nul_name_dropped(&mut self, name: &[u8]) {
        self.nul_names_dropped += 1;
        let shown = display_key(name);
        if self.nul_names.len() < 20 && !self.nul_names.contains(&shown) {
            tracing::warn!(key = %shown, "left out: Pika 4.0 stores a name with a NUL byte followed by more bytes cut after the NUL, where no read finds it and other names collide with it");
            self.nul_names.push(shown);
        }
    }
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn int(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The unix second at or after `ms`: Pika keeps seconds, and an expiry moved earlier
/// could delete a key the source still holds.
fn seconds_at_or_after(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

fn number(n: i64) -> Bytes {
    Bytes::from(n.to_string())
}

/// Appends to `out` the commands a Pika target applies for `argv` (what Redis would do
/// with it), judged at `now_ms` where a relative time must be sent.
pub fn translate(argv: Vec<Bytes>, now_ms: i64, stats: &mut Translated, out: &mut Vec<Vec<Bytes>>) {
    let name = argv
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    let marker = |ms: i64| ms.saturating_sub(now_ms) > MARK_THRESHOLD_MS;
    match (name.as_slice(), argv.len()) {
        (b"pexpireat", 3) => match int(&argv[2]) {
            Some(ms) if marker(ms) => out.push(vec![b("PERSIST"), argv[1].clone()]),
            Some(ms) => out.push(vec![
                b("EXPIREAT"),
                argv[1].clone(),
                number(seconds_at_or_after(ms)),
            ]),
            None => out.push(argv),
        },
        (b"set", n) if n > 3 => set(argv, now_ms, stats, out),
        (b"hset", n) if n > 4 => {
            let mut argv = argv;
            argv[0] = b("HMSET");
            out.push(argv);
        }
        (b"xsetid", _) => stats.xsetid_dropped += 1,
        (b"eval", n) if n >= 4 => {
            let script = argv[1].as_ref();
            if script == RELEASE_SCRIPT.as_bytes() {
                out.push(vec![b("DEL"), argv[3].clone()]);
            } else if is_del_vx_script(script) && n == 5 {
                out.push(vec![b("DELVX"), argv[3].clone(), argv[4].clone()]);
            } else if is_set_vx_script(script) && (n == 6 || n == 7) {
                let (key, value, old) = (argv[3].clone(), argv[4].clone(), argv[5].clone());
                let mut vx = vec![b("SET"), key.clone(), value, b("VX"), old];
                match argv.get(6).and_then(|ms| int(ms)) {
                    Some(ms) if marker(ms) => {}
                    Some(ms) if ms <= now_ms => {
                        // Written and expired at once: gone if it was written.
                        out.push(vx);
                        vx = vec![b("EXPIREAT"), key, number(seconds_at_or_after(ms))];
                    }
                    Some(ms) => {
                        vx.push(b("EX"));
                        vx.push(number(seconds_at_or_after(ms - now_ms)));
                    }
                    None => {}
                }
                out.push(vx);
            } else {
                out.push(argv);
            }
        }
        _ => out.push(argv),
    }
}

/// `SET k v [NX|XX] [GET] [PXAT ms|EXAT s|KEEPTTL]` (the forms normalizing makes).
/// A plain `SET k v KEEPTTL` stays as it is: the lane writes it ([`keeping_ttl`]).
fn set(argv: Vec<Bytes>, now_ms: i64, stats: &mut Translated, out: &mut Vec<Vec<Bytes>>) {
    let mut flags = Vec::new();
    let mut conditional = false;
    let mut expire_at_ms = None;
    let mut keepttl = false;
    let mut i = 3;
    while i < argv.len() {
        let option = argv[i].to_ascii_lowercase();
        match option.as_slice() {
            b"nx" | b"xx" | b"get" => {
                conditional |= option != b"get";
                flags.push(argv[i].clone());
            }
            b"keepttl" => keepttl = true,
            b"pxat" | b"exat" => {
                let unit = if option == b"pxat" { 1 } else { 1000 };
                match argv.get(i + 1).and_then(|v| int(v)) {
                    Some(n) => expire_at_ms = Some(n.saturating_mul(unit)),
                    None => return out.push(argv),
                }
                i += 1;
            }
            // EX and PX are Pika's own; anything else Pika answers for itself.
            _ => return out.push(argv),
        }
        i += 1;
    }
    if keepttl && flags.is_empty() && expire_at_ms.is_none() {
        // The lane, the only writer of the key, reads the time it has left once the
        // writes before this one are applied, and sends SET + PEXPIRE (`keeping_ttl`).
        stats.keepttl_kept += 1;
        return out.push(argv);
    }
    if keepttl {
        stats.keepttl_dropped += 1;
        if stats.keepttl_dropped <= 20 {
            tracing::warn!(key = %display_key(&argv[1]), "Pika has no SET … KEEPTTL: the value is written, the key's expiry is lost on the target (an INCR or APPEND a Pika 3.5/4.0 master logged on a key with an expiry)");
        }
    }
    let mut plain = vec![argv[0].clone(), argv[1].clone(), argv[2].clone()];
    plain.extend(flags);
    let key = argv[1].clone();
    match expire_at_ms {
        // A held expiry of a late replay: no expiry until its release (a DEL).
        Some(ms) if ms.saturating_sub(now_ms) > MARK_THRESHOLD_MS => out.push(plain),
        Some(ms) if !conditional => {
            out.push(plain);
            out.push(vec![b("EXPIREAT"), key, number(seconds_at_or_after(ms))]);
        }
        Some(ms) if ms > now_ms => {
            plain.push(b("EX"));
            plain.push(number(seconds_at_or_after(ms - now_ms)));
            out.push(plain);
        }
        // Past already: with XX the key written would be gone at once; with NX nothing
        // there would be written, or what was written gone at once.
        Some(_) => {
            if argv[3..].iter().any(|a| a.eq_ignore_ascii_case(b"xx")) {
                out.push(vec![b("DEL"), key]);
            }
        }
        None => out.push(plain),
    }
}

/// Whether `argv` is the `SET k v KEEPTTL` a lane writing into a Pika resolves.
pub fn keeps_ttl(argv: &[Bytes]) -> bool {
    argv.len() == 4
        && argv[0].eq_ignore_ascii_case(b"SET")
        && argv[3].eq_ignore_ascii_case(b"KEEPTTL")
}

/// `SET k v KEEPTTL` for a Pika, given what `PTTL k` answered once the writes before it
/// were applied: `SET k v`, then `PEXPIRE k <left>` when the key had an expiry (PTTL
/// answers -1 for none; -2, or 0 on 4.0.1, for no key, which INCR or APPEND creates
/// without one). 3.5's PTTL counts whole seconds, so the expiry may come up to a second
/// early there.
pub fn keeping_ttl(argv: &[Bytes], left_ms: i64) -> Vec<Vec<Bytes>> {
    let set = argv[..3].to_vec();
    if left_ms > 0 {
        vec![set, vec![b("PEXPIRE"), argv[1].clone(), number(left_ms)]]
    } else {
        vec![set]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn run(words: &[&str]) -> (Vec<String>, Translated) {
        let argv = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let mut stats = Translated::default();
        let mut out = Vec::new();
        translate(argv, NOW, &mut stats, &mut out);
        (text(&out), stats)
    }

    /// Commands as text, arguments joined by spaces.
    fn text(cmds: &[Vec<Bytes>]) -> Vec<String> {
        cmds.iter()
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn finds_pika_in_info() {
        let info = "# Server\r\npika_version:4.0.0\r\npika_git_sha:0\r\n";
        assert_eq!(
            PikaTarget::detect(info),
            Some(PikaTarget {
                version: "4.0.0".into(),
                keeps_types: false,
                cuts_nul_names: true,
            })
        );
        assert!(cut_by_pika_4(b"a\0b") && cut_by_pika_4(b"\0a"));
        assert!(!cut_by_pika_4(b"end\0") && !cut_by_pika_4(b"plain"));
        assert!(PikaTarget::detect("pika_version:3.5.5\r\n").is_some_and(|p| p.keeps_types));
        assert_eq!(
            PikaTarget::detect("# Server\r\nredis_version:7.2.4\r\n"),
            None
        );
    }

    #[test]
    fn expiries_in_seconds_never_earlier() {
        let (out, _) = run(&["PEXPIREAT", "k", "1800000007200"]);
        assert_eq!(out, ["EXPIREAT k 1800000008"]);
        let (out, _) = run(&["PEXPIREAT", "k", "1800000007000"]);
        assert_eq!(out, ["EXPIREAT k 1800000007"]);
        let (out, _) = run(&["SET", "k", "v", "PXAT", "1800000007000"]);
        assert_eq!(out, ["SET k v", "EXPIREAT k 1800000007"]);
        let (out, _) = run(&["SET", "k", "v", "NX", "PXAT", "1800000007500"]);
        assert_eq!(out, ["SET k v NX EX 8"]);
        let (out, _) = run(&["SET", "k", "v", "XX", "PXAT", "1700000000000"]);
        assert_eq!(out, ["DEL k"]);
        let (out, _) = run(&["SET", "k", "v", "NX", "PXAT", "1700000000000"]);
        assert!(out.is_empty());
        let (out, _) = run(&["SET", "k", "v", "EX", "100"]);
        assert_eq!(out, ["SET k v EX 100"]);
    }

    #[test]
    fn held_expiries_wait_for_their_release() {
        let far = (NOW + (1 << 43)).to_string();
        assert_eq!(run(&["PEXPIREAT", "k", &far]).0, ["PERSIST k"]);
        assert_eq!(run(&["SET", "k", "v", "PXAT", &far]).0, ["SET k v"]);
        let release = run(&["EVAL", RELEASE_SCRIPT, "1", "k", "4398046511104"]).0;
        assert_eq!(release, ["DEL k"]);
    }

    #[test]
    fn a_kept_expiry_is_the_time_the_key_had_left() {
        let argv: Vec<Bytes> = ["SET", "k", "7", "KEEPTTL"]
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        assert!(keeps_ttl(&argv));
        let show = |cmds: Vec<Vec<Bytes>>| text(&cmds);
        assert_eq!(
            show(keeping_ttl(&argv, 3_599_000)),
            ["SET k 7", "PEXPIRE k 3599000"]
        );
        for none in [-1, -2, 0] {
            assert_eq!(show(keeping_ttl(&argv, none)), ["SET k 7"]);
        }
    }

    #[test]
    fn pika_forms_come_back_and_the_rest_is_counted() {
        assert_eq!(
            run(&["HSET", "h", "a", "1", "b", "2"]).0,
            ["HMSET h a 1 b 2"]
        );
        assert_eq!(run(&["HSET", "h", "a", "1"]).0, ["HSET h a 1"]);
        let (out, stats) = run(&["XSETID", "s", "9-3"]);
        assert!(out.is_empty());
        assert_eq!(stats.xsetid_dropped, 1);
        let (out, stats) = run(&["SET", "k", "v", "KEEPTTL"]);
        assert_eq!(out, ["SET k v KEEPTTL"], "left for the lane");
        assert_eq!(stats.keepttl_kept, 1);
        let (out, stats) = run(&["SET", "k", "v", "XX", "KEEPTTL"]);
        assert_eq!(out, ["SET k v XX"]);
        assert_eq!(stats.keepttl_dropped, 1);
        let del_vx = pika_migrate_core::pika::normalize::normalize(
            &["delvx", "k", "v"].map(|w| Bytes::from_static(w.as_bytes())),
            1,
        )
        .unwrap()
        .argv
        .unwrap();
        let words: Vec<String> = del_vx
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_eq!(run(&words).0, ["DELVX k v"]);
    }
}
