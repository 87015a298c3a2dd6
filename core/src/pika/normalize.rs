//! Turns a command as Pika wrote it to its binlog into one a Redis target applies with
//! the same effect.
//!
//! - Relative expiries (`EXPIRE`, `PEXPIRE`, `SETEX`, `PSETEX`, `SET … EX|PX`) become
//!   absolute ones computed from the item's `exec_time`, so a replay a day later gives the
//!   same expiry as the live run and an already-expired key stays gone.
//! - Pika-only forms (`pksetexat`, `set … vx`, `delvx`, `flushdb <type>`,
//!   `pkpatternmatchdel`) become Redis commands or scripts with the same effect.
//! - `padding` and `dummy` items carry nothing and are skipped, as are the admin
//!   commands 3.5 logs (`clearcache`, `clearreplicationid`).
//! - 3.5 logs INCR/INCRBY/INCRBYFLOAT/APPEND as `pksetexat k 0 <new value>`, 0 meaning
//!   "no new expiry": the master keeps the key's TTL (3.5.5 writes 0 even then), so it
//!   becomes `SET k v KEEPTTL`. An APPEND to a missing key is logged by 3.5.5 with an
//!   empty value (a Pika bug its own replicas share): applied as logged, and counted.
//! - 4.0.1 logs PSETEX as `pksetexat k <ms> v`, in milliseconds where every other
//!   `pksetexat` is in seconds (a 4.0.1 bug its own replicas refuse): a time too large to
//!   be seconds Pika accepts is read as milliseconds. Its `pexpireat k <ms>` (PEXPIRE,
//!   PEXPIREAT) is Redis's own and kept. 4.0 flags `SDIFF`/`SINTER`/`SUNION` as writes,
//!   so these reads reach the binlog: skipped.
//! - 4.0's `PEXPIREAT k <ms>` and `PKSETEXAT k <s> v`, as a client sent them (logged
//!   verbatim, in the client's spelling), deleted the key on the master (its storage
//!   takes the time in the other unit: any time lies in the past), while the same names
//!   in lowercase are what Pika's own rewrites of PEXPIRE, SETEX and INCR log, which
//!   keep the key. The verbatim ones become `DEL k`, as the master applied them, and are
//!   counted ([`Note::DeletedOnMaster`]). A client that spells `pexpireat` in lowercase
//!   cannot be told from PEXPIRE: its key is kept with the time.
//! - `SPOP` without a count is kept, with a warning: the member it popped on the master
//!   is not recorded, so the target may pop another one (a Pika replica does the same).

use bytes::Bytes;

use super::commands::CommandName;

/// What became of one binlog command.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The command to apply, `None` when the item carries nothing to apply.
    pub argv: Option<Vec<Bytes>>,
    /// What was done to it, when anything was (counted and logged by the caller).
    pub note: Option<Note>,
}

/// A remark on a normalized command, counted per kind in the run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Note {
    /// A relative expiry was made absolute from `exec_time`.
    AbsoluteExpiry,
    /// A Pika-only command was rewritten into Redis commands.
    PikaOnlyRewritten,
    /// A padding or dummy item, an admin command, or a read 4.0 logs: nothing to apply.
    Skipped,
    /// Applied as is, but the target may not end up equal (SPOP without a count).
    NonDeterministic,
    /// A form that could not be understood; applied as is.
    Unrecognized,
    /// `pksetexat k 0 ""`: Pika 3.5 logs an APPEND to a missing key with an empty value
    /// instead of the appended one; applied as logged, the target may hold `""`.
    EmptyAppend,
    /// A 4.0 `PEXPIREAT`/`PKSETEXAT` the master's storage turned into a deletion:
    /// applied as a `DEL`, as the master did, not as the expiry it names.
    DeletedOnMaster,
}

impl Note {
    /// How the run summary words a count of this note.
    pub fn describe(self) -> &'static str {
        match self {
            Note::AbsoluteExpiry => "relative expiries made absolute from exec_time",
            Note::PikaOnlyRewritten => "Pika-only commands rewritten for Redis",
            Note::Skipped => "padding, admin and read-only items skipped",
            Note::NonDeterministic => {
                "non-deterministic commands (SPOP) applied as is; the target may differ"
            }
            Note::Unrecognized => "commands in an unrecognized form applied as is",
            Note::EmptyAppend => {
                "APPENDs to a missing key that Pika 3.5 logged with an empty value; the target may hold \"\""
            }
            Note::DeletedOnMaster => {
                "PEXPIREAT/PKSETEXAT that deleted the key on the Pika 4.0 master (its storage read the time in the wrong unit): applied as DEL, as the master did"
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Note::AbsoluteExpiry => "absolute_expiry",
            Note::PikaOnlyRewritten => "pika_only_rewritten",
            Note::Skipped => "skipped",
            Note::NonDeterministic => "non_deterministic",
            Note::Unrecognized => "unrecognized",
            Note::EmptyAppend => "empty_append",
            Note::DeletedOnMaster => "deleted_on_master",
        }
    }
}

/// A binlog command whose numbers cannot be turned into an absolute expiry: an
/// argument so large that the time it names does not fit in 64 bits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {reason}")]
pub struct NormalizeError {
    pub command: String,
    pub reason: String,
}

/// Compare-and-set for Pika's `SET key value VX old [PXAT ms]`.
const SET_VX_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[2] then \
if ARGV[3] then return redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3]) end \
return redis.call('SET', KEYS[1], ARGV[1]) end return 0";

/// Whether `script` is the compare-and-delete script `DELVX` becomes.
pub fn is_del_vx_script(script: &[u8]) -> bool {
    script == DEL_VX_SCRIPT.as_bytes()
}

/// Whether `script` is the compare-and-set script `SET … VX` becomes (its last argument
/// is an absolute expiry in milliseconds).
pub fn is_set_vx_script(script: &[u8]) -> bool {
    script == SET_VX_SCRIPT.as_bytes()
}

/// Compare-and-delete for Pika's `DELVX key value`.
const DEL_VX_SCRIPT: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Deletes every key of one type (and matching a pattern): Pika's `FLUSHDB <type>` and
/// `PKPATTERNMATCHDEL <pattern> <type>`.
pub const DELETE_BY_TYPE_SCRIPT: &str = "local cursor = '0' local n = 0 repeat \
local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'TYPE', ARGV[2], 'COUNT', 1000) \
cursor = r[1] for _, k in ipairs(r[2]) do n = n + redis.call('DEL', k) end \
until cursor == '0' return n";

/// `pksetexat` times in this range are milliseconds: Pika 4.0.1 logs PSETEX so. As
/// seconds they would lie past the year 5000, far beyond the int32 seconds every Pika
/// accepts; as milliseconds they span 1973 to 5138.
const PKSETEXAT_MILLIS: std::ops::Range<i64> = 100_000_000_000..100_000_000_000_000;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn int(v: &Bytes) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn ms(v: i64) -> Bytes {
    b(&v.to_string())
}

/// `base + n × unit` without wrapping: an expiry out of range is an error, not a time
/// in the past.
fn at(base: i64, n: i64, unit: i64) -> Option<i64> {
    n.checked_mul(unit)?.checked_add(base)
}

/// What to do with a command: keep it as it is (most are), or the command it becomes.
#[derive(Debug)]
enum Action {
    Keep(Option<Note>),
    Replace(Normalized),
}

fn rewritten(argv: Vec<Bytes>, note: Note) -> Action {
    Action::Replace(Normalized {
        argv: Some(argv),
        note: Some(note),
    })
}

/// Maps a Pika type name (`string`, `strings`, `hash`, `hashes`, …) to Redis's.
fn redis_type_name(pika: &Bytes) -> Option<&'static str> {
    let name = String::from_utf8_lossy(pika).to_ascii_lowercase();
    Some(match name.as_str() {
        "string" | "strings" | "k" => "string",
        "hash" | "hashes" | "h" => "hash",
        "list" | "lists" | "l" => "list",
        "set" | "sets" | "s" => "set",
        "zset" | "zsets" | "z" => "zset",
        _ => return None,
    })
}

/// Which Pika wrote the binlog, where the same logged command had different effects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Pika 3.2–3.4.
    #[default]
    Pika3,
    /// Pika 3.5 and 4.0: `FLUSHDB <type>` empties every type (seen on a real 3.5.5),
    /// not only the one named as 3.3 does.
    Pika35,
    /// Pika 4.0: as 3.5 (it refuses `FLUSHDB <type>`, so never logs it), and a client's
    /// `PEXPIREAT`/`PKSETEXAT` deleted the key on the master.
    Pika40,
}

impl Dialect {
    /// The dialect of a Pika version such as `3.5.5` or `3.3`; `None` for one we do not
    /// read.
    pub fn of_version(version: &str) -> Option<Dialect> {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(3), Some(2..=4)) => Some(Dialect::Pika3),
            (Some(3), Some(5)) => Some(Dialect::Pika35),
            (Some(4), Some(0)) => Some(Dialect::Pika40),
            _ => None,
        }
    }
}

/// Normalizes `argv`, logged by a Pika 3.2–3.4 master at unix second `exec_time`.
pub fn normalize(argv: &[Bytes], exec_time: u32) -> Result<Normalized, NormalizeError> {
    normalize_as(argv, exec_time, Dialect::Pika3)
}

/// Normalizes `argv`, logged by a master of `dialect` at unix second `exec_time`.
pub fn normalize_as(
    argv: &[Bytes],
    exec_time: u32,
    dialect: Dialect,
) -> Result<Normalized, NormalizeError> {
    let plan = Plan::new(argv, exec_time, dialect)?;
    let note = plan.note();
    let argv = plan.into_command(argv.to_vec()).map(|(argv, _)| argv);
    Ok(Normalized { argv, note })
}

/// What normalizing makes of one command, decided on its borrowed arguments; the
/// arguments then move into the result ([`Plan::into_command`]), as most commands are
/// kept as they are. The command's name is looked at once.
#[derive(Debug)]
pub struct Plan {
    name: CommandName,
    action: Action,
}

impl Plan {
    /// Normalizes `argv`, logged by a master of `dialect` at unix second `exec_time`.
    pub fn new(argv: &[Bytes], exec_time: u32, dialect: Dialect) -> Result<Plan, NormalizeError> {
        let name = CommandName::of(argv);
        let action = plan(argv, name.as_str(), exec_time, dialect)?;
        Ok(Plan { name, action })
    }

    /// What was done to the command, when anything was.
    pub fn note(&self) -> Option<Note> {
        match &self.action {
            Action::Keep(note) => *note,
            Action::Replace(normalized) => normalized.note,
        }
    }

    /// The logged command's lowercase name.
    pub fn logged_name(&self) -> &str {
        self.name.as_str()
    }

    /// The command to apply, with its lowercase name, made of `argv` (the arguments
    /// [`Plan::new`] was given); `None` when there is nothing to apply.
    pub fn into_command(self, argv: Vec<Bytes>) -> Option<(Vec<Bytes>, CommandName)> {
        match self.action {
            Action::Keep(_) => Some((argv, self.name)),
            Action::Replace(normalized) => normalized.argv.map(|argv| {
                let name = CommandName::of(&argv);
                (argv, name)
            }),
        }
    }
}

fn plan(
    argv: &[Bytes],
    name: &str,
    exec_time: u32,
    dialect: Dialect,
) -> Result<Action, NormalizeError> {
    let now_ms = i64::from(exec_time) * 1000;
    let unrecognized = || Action::Keep(Some(Note::Unrecognized));
    let out_of_range = || NormalizeError {
        command: crate::display::display_command(argv),
        reason: "the expiry it names is out of range".into(),
    };
    // An expiry argument, made absolute: `None` when it is not a number (the command is
    // then passed on as is), an error when the time it names overflows.
    let absolute = |arg: &Bytes, base: i64, unit: i64| match int(arg) {
        None => Ok(None),
        Some(n) => at(base, n, unit).map(Some).ok_or_else(out_of_range),
    };
    Ok(match (name, argv.len()) {
        (
            "padding" | "dummy" | "clearcache" | "clearreplicationid" | "sdiff" | "sinter"
            | "sunion",
            _,
        ) => Action::Replace(Normalized {
            argv: None,
            note: Some(Note::Skipped),
        }),
        ("pexpireat", 3) | ("pksetexat", 4)
            if dialect == Dialect::Pika40 && argv[0].as_ref() != name.as_bytes() =>
        {
            rewritten(vec![b("DEL"), argv[1].clone()], Note::DeletedOnMaster)
        }
        ("pksetexat", 4) => match int(&argv[2]) {
            Some(ms_at) if PKSETEXAT_MILLIS.contains(&ms_at) => rewritten(
                vec![
                    b("SET"),
                    argv[1].clone(),
                    argv[3].clone(),
                    b("PXAT"),
                    ms(ms_at),
                ],
                Note::PikaOnlyRewritten,
            ),
            Some(ts) if ts > 0 => rewritten(
                vec![
                    b("SET"),
                    argv[1].clone(),
                    argv[3].clone(),
                    b("PXAT"),
                    ms(at(0, ts, 1000).ok_or_else(out_of_range)?),
                ],
                Note::PikaOnlyRewritten,
            ),
            // 3.5's INCR/APPEND form: a new value, the expiry left as it is.
            Some(0) => rewritten(
                vec![b("SET"), argv[1].clone(), argv[3].clone(), b("KEEPTTL")],
                if argv[3].is_empty() {
                    Note::EmptyAppend
                } else {
                    Note::PikaOnlyRewritten
                },
            ),
            Some(_) => rewritten(vec![b("DEL"), argv[1].clone()], Note::PikaOnlyRewritten),
            None => unrecognized(),
        },
        ("setex" | "psetex", 4) => {
            let unit = if name == "setex" { 1000 } else { 1 };
            match absolute(&argv[2], now_ms, unit)? {
                Some(expire_at) => rewritten(
                    vec![
                        b("SET"),
                        argv[1].clone(),
                        argv[3].clone(),
                        b("PXAT"),
                        ms(expire_at),
                    ],
                    Note::AbsoluteExpiry,
                ),
                None => unrecognized(),
            }
        }
        ("set", n) if n > 3 => match normalize_set(argv, now_ms) {
            Ok(Some(normalized)) => normalized,
            Ok(None) => unrecognized(),
            Err(()) => return Err(out_of_range()),
        },
        ("expire" | "pexpire", 3) => {
            let unit = if name == "expire" { 1000 } else { 1 };
            match absolute(&argv[2], now_ms, unit)? {
                Some(expire_at) => rewritten(
                    vec![b("PEXPIREAT"), argv[1].clone(), ms(expire_at)],
                    Note::AbsoluteExpiry,
                ),
                None => unrecognized(),
            }
        }
        ("delvx", 3) => rewritten(
            vec![
                b("EVAL"),
                b(DEL_VX_SCRIPT),
                b("1"),
                argv[1].clone(),
                argv[2].clone(),
            ],
            Note::PikaOnlyRewritten,
        ),
        ("flushdb", 2) if dialect != Dialect::Pika3 => match redis_type_name(&argv[1]) {
            Some(_) => rewritten(vec![b("FLUSHDB")], Note::PikaOnlyRewritten),
            None => unrecognized(),
        },
        ("flushdb", 2) => match redis_type_name(&argv[1]) {
            Some(t) => rewritten(
                vec![b("EVAL"), b(DELETE_BY_TYPE_SCRIPT), b("0"), b("*"), b(t)],
                Note::PikaOnlyRewritten,
            ),
            None => unrecognized(),
        },
        ("pkpatternmatchdel", 3) => match redis_type_name(&argv[2]) {
            Some(t) => rewritten(
                vec![
                    b("EVAL"),
                    b(DELETE_BY_TYPE_SCRIPT),
                    b("0"),
                    argv[1].clone(),
                    b(t),
                ],
                Note::PikaOnlyRewritten,
            ),
            None => unrecognized(),
        },
        ("spop", 2) => Action::Keep(Some(Note::NonDeterministic)),
        _ => Action::Keep(None),
    })
}

/// `SET k v [NX|XX] [EX s|PX ms] [VX old]` in any order. EX/PX become PXAT; VX becomes a
/// compare-and-set script. `Ok(None)` when an option is not understood, `Err` when an
/// expiry is out of range.
fn normalize_set(argv: &[Bytes], now_ms: i64) -> Result<Option<Action>, ()> {
    let (key, value) = (argv[1].clone(), argv[2].clone());
    let mut flags = Vec::new();
    let mut expire_at_ms = None;
    let mut vx = None;
    let mut relative = false;
    let mut i = 3;
    while i < argv.len() {
        let opt = String::from_utf8_lossy(&argv[i]).to_ascii_lowercase();
        if matches!(opt.as_str(), "nx" | "xx" | "keepttl" | "get") {
            flags.push(argv[i].clone());
            i += 1;
            continue;
        }
        let Some(arg) = argv.get(i + 1) else {
            return Ok(None);
        };
        if opt == "vx" {
            vx = Some(arg.clone());
            i += 2;
            continue;
        }
        let Some(n) = int(arg) else {
            return Ok(None);
        };
        // Pika keeps whole seconds: PX is truncated to seconds by Pika itself.
        let expire_at = match opt.as_str() {
            "ex" => at(now_ms, n, 1000),
            "px" => at(now_ms, n / 1000, 1000),
            "exat" => at(0, n, 1000),
            "pxat" => Some(n),
            _ => return Ok(None),
        };
        expire_at_ms = Some(expire_at.ok_or(())?);
        relative |= matches!(opt.as_str(), "ex" | "px");
        i += 2;
    }
    if let Some(old) = vx {
        let mut script = vec![b("EVAL"), b(SET_VX_SCRIPT), b("1"), key, value, old];
        script.extend(expire_at_ms.map(ms));
        return Ok(Some(rewritten(script, Note::PikaOnlyRewritten)));
    }
    let Some(expire_at) = expire_at_ms else {
        return Ok(Some(Action::Keep(None)));
    };
    let mut out = vec![argv[0].clone(), key, value];
    out.extend(flags);
    out.push(b("PXAT"));
    out.push(ms(expire_at));
    Ok(Some(Action::Replace(Normalized {
        argv: Some(out),
        note: relative.then_some(Note::AbsoluteExpiry),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &str) -> Vec<Bytes> {
        words.split(' ').map(b).collect()
    }

    fn text(n: &Normalized) -> String {
        n.argv
            .as_ref()
            .map(|a| {
                a.iter()
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    const T: u32 = 1_700_000_000;

    #[test]
    fn relative_expiries_become_absolute_from_exec_time() {
        assert_eq!(
            text(&normalize(&argv("SETEX k 10 v"), T).unwrap()),
            "SET k v PXAT 1700000010000"
        );
        assert_eq!(
            text(&normalize(&argv("psetex k 1500 v"), T).unwrap()),
            "SET k v PXAT 1700000001500"
        );
        assert_eq!(
            text(&normalize(&argv("EXPIRE k 5"), T).unwrap()),
            "PEXPIREAT k 1700000005000"
        );
        assert_eq!(
            text(&normalize(&argv("pexpire k 5"), T).unwrap()),
            "PEXPIREAT k 1700000000005"
        );
        assert_eq!(
            text(&normalize(&argv("SET k v NX EX 1"), T).unwrap()),
            "SET k v NX PXAT 1700000001000"
        );
        assert_eq!(
            text(&normalize(&argv("set k v px 2500 xx"), T).unwrap()),
            "set k v xx PXAT 1700000002000"
        );
        assert_eq!(
            normalize(&argv("SET k v EX 1"), T).unwrap().note,
            Some(Note::AbsoluteExpiry)
        );
    }

    #[test]
    fn pika_only_forms_become_redis_commands() {
        assert_eq!(
            text(&normalize(&argv("pksetexat k 1800000000 v"), T).unwrap()),
            "SET k v PXAT 1800000000000"
        );
        // 3.5's INCR/APPEND form: no new expiry, the key's own kept (as the master does).
        assert_eq!(
            text(&normalize(&argv("pksetexat k 0 v"), T).unwrap()),
            "SET k v KEEPTTL"
        );
        assert_eq!(
            text(&normalize(&argv("pksetexat k -5 v"), T).unwrap()),
            "DEL k"
        );
        // 4.0.1's PSETEX: milliseconds (fixture: `PSETEX s1:p2:psetex 500000000 v`).
        assert_eq!(
            text(&normalize(&argv("pksetexat k 1796534407552 v"), T).unwrap()),
            "SET k v PXAT 1796534407552"
        );
        // 4.0.1's PEXPIRE/PEXPIREAT: Redis's own command, kept.
        let pexpireat = normalize(&argv("pexpireat k 1798534403212"), T).unwrap();
        assert_eq!(
            (text(&pexpireat).as_str(), pexpireat.note),
            ("pexpireat k 1798534403212", None)
        );
        let vx = normalize(&argv("SET k new VX old EX 3"), T).unwrap();
        assert_eq!(vx.note, Some(Note::PikaOnlyRewritten));
        let vx = vx.argv.unwrap();
        assert_eq!(vx[0], "EVAL");
        assert_eq!(&vx[2..], &argv("1 k new old 1700000003000")[..]);
        let delvx = normalize(&argv("delvx k v"), T).unwrap().argv.unwrap();
        assert_eq!(&delvx[2..], &argv("1 k v")[..]);
        let flush = normalize(&argv("flushdb hashes"), T).unwrap().argv.unwrap();
        assert_eq!(&flush[2..], &argv("0 * hash")[..]);
        // 3.5 empties the whole database for FLUSHDB <type>.
        let flush = normalize_as(&argv("FLUSHDB hash"), T, Dialect::Pika35).unwrap();
        assert_eq!(flush.argv, Some(argv("FLUSHDB")));
        assert_eq!(Dialect::of_version("3.5.5"), Some(Dialect::Pika35));
        assert_eq!(Dialect::of_version("3.3"), Some(Dialect::Pika3));
        assert_eq!(Dialect::of_version("4.0.1"), Some(Dialect::Pika40));
        assert_eq!(Dialect::of_version("3.1"), None);
        assert_eq!(Dialect::of_version("4.1"), None);
        let pattern = normalize(&argv("pkpatternmatchdel user:* string"), T)
            .unwrap()
            .argv
            .unwrap();
        assert_eq!(&pattern[2..], &argv("0 user:* string")[..]);
    }

    #[test]
    fn expiries_out_of_range_are_errors_naming_the_command() {
        for words in [
            "EXPIRE k 9223372036854775807",
            "pexpire k 9223372036854775807",
            "SETEX k 9223372036854775 v",
            "psetex k 9223372036854775807 v",
            "pksetexat k 9223372036854775807 v",
            "SET k v EX 9223372036854775",
            "SET k v EXAT 9223372036854775807",
            "SET k v PX 9223372036854775807",
        ] {
            let e = normalize(&argv(words), T).unwrap_err();
            assert!(e.command.starts_with(&words[..6]), "{words}: {e}");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        // Not numbers at all: passed on as is, for Redis to refuse.
        let n = normalize(&argv("EXPIRE k soon"), T).unwrap();
        assert_eq!(n.note, Some(Note::Unrecognized));
    }

    #[test]
    fn a_4_0_clients_pexpireat_deletes_as_on_the_master_and_pikas_own_forms_keep_the_key() {
        let on_40 = |words: &str| normalize_as(&argv(words), T, Dialect::Pika40).unwrap();
        for client in [
            "PEXPIREAT k 1800000000123",
            "PExpireAt k 1",
            "PKSETEXAT k 1800000000 v",
        ] {
            let n = on_40(client);
            assert_eq!(
                (text(&n).as_str(), n.note),
                ("DEL k", Some(Note::DeletedOnMaster)),
                "{client}"
            );
        }
        // PEXPIRE's and SETEX's own forms: the master kept the key.
        assert_eq!(
            text(&on_40("pexpireat k 1800000000123")),
            "pexpireat k 1800000000123"
        );
        assert_eq!(
            text(&on_40("pksetexat k 1800000000 v")),
            "SET k v PXAT 1800000000000"
        );
        // 3.5 applied PEXPIREAT as Redis does.
        let n = normalize_as(&argv("PEXPIREAT k 1800000000123"), T, Dialect::Pika35).unwrap();
        assert_eq!(
            (text(&n).as_str(), n.note),
            ("PEXPIREAT k 1800000000123", None)
        );
        assert_eq!(Dialect::of_version("4.0.0"), Some(Dialect::Pika40));
    }

    #[test]
    fn padding_is_skipped_and_spop_is_flagged() {
        assert_eq!(normalize(&argv("padding *****"), T).unwrap().argv, None);
        // Reads Pika 4.0 logs as writes.
        for read in ["SDIFF a b", "sinter a b", "SUNION a"] {
            let n = normalize(&argv(read), T).unwrap();
            assert_eq!((n.argv, n.note), (None, Some(Note::Skipped)), "{read}");
        }
        assert_eq!(
            normalize(&argv("SPOP s"), T).unwrap().note,
            Some(Note::NonDeterministic)
        );
        let plain = normalize(&argv("HSET h f v"), T).unwrap();
        assert_eq!((text(&plain).as_str(), plain.note), ("HSET h f v", None));
        assert_eq!(
            normalize(&argv("SET k v BOGUS 1"), T).unwrap().note,
            Some(Note::Unrecognized)
        );
    }
}
