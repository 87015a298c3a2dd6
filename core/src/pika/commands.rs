//! The write-command table: for every command Pika 3.x writes to its binlog (plus the
//! forms pika-migrate rewrites them into), which data type it writes and which of its
//! arguments are keys. Filters, lane routing and the sinks all read it from here.

use bytes::Bytes;

use crate::event::DataType;

/// Where the keys of a command sit in its argv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// No key (FLUSHDB, PKPATTERNMATCHDEL's pattern).
    None,
    /// Keys at `first`, `first + step`, … up to `last` (negative counts from the end,
    /// -1 being the last argument), as in Redis's own command table.
    Range {
        first: usize,
        last: isize,
        step: usize,
    },
    /// `cmd dest numkeys key…` (ZUNIONSTORE, ZINTERSTORE).
    DestAndNumkeys,
    /// `EVAL script numkeys key… arg…`.
    Numkeys,
}

/// What the table knows of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    pub data_type: Option<DataType>,
    pub keys: KeySpec,
}

const fn spec(data_type: Option<DataType>, first: usize, last: isize, step: usize) -> CommandSpec {
    CommandSpec {
        data_type,
        keys: KeySpec::Range { first, last, step },
    }
}

const S: Option<DataType> = Some(DataType::String);
const H: Option<DataType> = Some(DataType::Hash);
const L: Option<DataType> = Some(DataType::List);
const Z: Option<DataType> = Some(DataType::Zset);
const T: Option<DataType> = Some(DataType::Set);
const X: Option<DataType> = Some(DataType::Stream);

/// Looks a command up by its lowercase name.
pub fn lookup(name: &str) -> Option<CommandSpec> {
    let one = |t| spec(t, 1, 1, 1);
    Some(match name {
        // strings (HyperLogLog and bitmaps are strings too)
        "set" | "setnx" | "setex" | "psetex" | "pksetexat" | "getset" | "append" | "setrange"
        | "incr" | "incrby" | "decr" | "decrby" | "incrbyfloat" | "setbit" | "delvx" | "pfadd" => {
            one(S)
        }
        "mset" | "msetnx" => spec(S, 1, -1, 2),
        "bitop" => spec(S, 2, -1, 1),
        "pfmerge" => spec(S, 1, -1, 1),
        // hashes
        "hset" | "hsetnx" | "hmset" | "hdel" | "hincrby" | "hincrbyfloat" => one(H),
        // lists
        "lpush" | "rpush" | "lpushx" | "rpushx" | "lpop" | "rpop" | "linsert" | "lrem" | "lset"
        | "ltrim" => one(L),
        "rpoplpush" => spec(L, 1, 2, 1),
        // sets
        "sadd" | "srem" | "spop" => one(T),
        "smove" => spec(T, 1, 2, 1),
        "sunionstore" | "sinterstore" | "sdiffstore" => spec(T, 1, -1, 1),
        // sorted sets (GEO keys are sorted sets)
        "zadd" | "zincrby" | "zrem" | "zremrangebyrank" | "zremrangebyscore" | "zremrangebylex"
        | "zpopmax" | "zpopmin" | "geoadd" => one(Z),
        "zunionstore" | "zinterstore" => CommandSpec {
            data_type: Z,
            keys: KeySpec::DestAndNumkeys,
        },
        // streams (3.5 and 4.0)
        "xadd" | "xdel" | "xtrim" => one(X),
        // every type
        "del" | "unlink" => spec(None, 1, -1, 1),
        "expire" | "pexpire" | "expireat" | "pexpireat" | "persist" => one(None),
        "rename" | "renamenx" => spec(None, 1, 2, 1),
        "flushdb" | "flushall" | "pkpatternmatchdel" | "padding" | "dummy" => CommandSpec {
            data_type: None,
            keys: KeySpec::None,
        },
        "eval" | "evalsha" => CommandSpec {
            data_type: None,
            keys: KeySpec::Numkeys,
        },
        _ => return None,
    })
}

/// The lowercase command name of `argv` (empty when argv is empty).
pub fn name_of(argv: &[Bytes]) -> String {
    CommandName::of(argv).as_str().to_owned()
}

/// Longest name [`CommandName`] keeps without allocating; every command in the table
/// is shorter.
const INLINE_NAME: usize = 24;

/// The lowercase command name of `argv`, as [`name_of`] gives it, without allocating
/// for the names of the table (it is taken for every binlog item).
#[derive(Debug, Clone)]
pub enum CommandName {
    Inline {
        bytes: [u8; INLINE_NAME],
        len: usize,
    },
    Owned(String),
}

impl CommandName {
    pub fn of(argv: &[Bytes]) -> CommandName {
        let name = argv.first().map(Bytes::as_ref).unwrap_or_default();
        if name.len() <= INLINE_NAME && name.is_ascii() {
            let mut bytes = [0; INLINE_NAME];
            bytes[..name.len()].copy_from_slice(name);
            // The whole array (zeros stay zeros): one vector operation, not a byte loop.
            bytes.make_ascii_lowercase();
            return CommandName::Inline {
                bytes,
                len: name.len(),
            };
        }
        CommandName::Owned(String::from_utf8_lossy(name).to_ascii_lowercase())
    }

    pub fn as_str(&self) -> &str {
        match self {
            // ASCII, checked in `of`: never the empty fallback.
            CommandName::Inline { bytes, len } => {
                std::str::from_utf8(&bytes[..*len]).unwrap_or_default()
            }
            CommandName::Owned(name) => name,
        }
    }
}

/// Where the keys of `argv` sit under `keys`: maybe one key first, then a stepped range.
fn key_positions(
    keys: KeySpec,
    argv: &[Bytes],
) -> (Option<usize>, std::iter::StepBy<std::ops::Range<usize>>) {
    let n = argv.len();
    let numkeys_at = |i: usize| -> usize {
        argv.get(i)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // `numkeys` is the item's own claim: only the arguments present are keys (a huge
    // count neither overflows nor walks past them).
    let after_numkeys = || 3..3usize.saturating_add(numkeys_at(2)).min(n).max(3);
    match keys {
        KeySpec::None => (None, (0..0).step_by(1)),
        KeySpec::Range { first, last, step } => {
            let last = if last < 0 {
                n as isize + last
            } else {
                last.min(n as isize - 1)
            };
            if last < first as isize {
                return (None, (0..0).step_by(1));
            }
            (None, (first..last as usize + 1).step_by(step.max(1)))
        }
        KeySpec::DestAndNumkeys => (Some(1).filter(|_| n > 1), after_numkeys().step_by(1)),
        KeySpec::Numkeys => (None, after_numkeys().step_by(1)),
    }
}

/// The key specification of a command looked up (or not) in the table: unknown
/// commands are taken to have their key first, as every Redis data command does.
fn keys_of(spec: Option<CommandSpec>) -> KeySpec {
    spec.map(|s| s.keys).unwrap_or(KeySpec::Range {
        first: 1,
        last: 1,
        step: 1,
    })
}

/// Indexes into `argv` of its key arguments. Unknown commands are taken to have their
/// key first, as every Redis data command does.
pub fn key_indexes(argv: &[Bytes]) -> Vec<usize> {
    let (lead, rest) = key_positions(keys_of(lookup(CommandName::of(argv).as_str())), argv);
    lead.into_iter().chain(rest).collect()
}

/// The first key of a command, if it has one.
pub fn first_key(argv: &[Bytes]) -> Option<Bytes> {
    first_key_of(lookup(CommandName::of(argv).as_str()), argv)
}

/// The first key of `argv`, whose command `spec` was already looked up.
pub fn first_key_of(spec: Option<CommandSpec>, argv: &[Bytes]) -> Option<Bytes> {
    let (lead, mut rest) = key_positions(keys_of(spec), argv);
    lead.or_else(|| rest.next()).map(|i| argv[i].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &str) -> Vec<Bytes> {
        words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn command_names_are_lowercased_whatever_their_length_or_bytes() {
        let name = |raw: &[u8]| CommandName::of(&[Bytes::copy_from_slice(raw)]);
        assert_eq!(name(b"SeT").as_str(), "set");
        let long = "PKPATTERNMATCHDEL_AND_THEN_SOME_MORE";
        assert_eq!(name(long.as_bytes()).as_str(), long.to_ascii_lowercase());
        assert_eq!(name(b"D\xffL").as_str(), "d\u{fffd}l");
        assert_eq!(CommandName::of(&[]).as_str(), "");
        assert_eq!(name_of(&argv("HSET h f v")), "hset");
    }

    #[test]
    fn finds_every_key_of_multi_key_commands() {
        assert_eq!(key_indexes(&argv("MSET a 1 b 2")), [1, 3]);
        assert_eq!(key_indexes(&argv("del a b c")), [1, 2, 3]);
        assert_eq!(key_indexes(&argv("RPOPLPUSH src dst")), [1, 2]);
        assert_eq!(key_indexes(&argv("SMOVE src dst m")), [1, 2]);
        assert_eq!(
            key_indexes(&argv("ZUNIONSTORE d 2 a b WEIGHTS 1 2")),
            [1, 3, 4]
        );
        assert_eq!(key_indexes(&argv("bitop AND d a b")), [2, 3, 4]);
        assert_eq!(key_indexes(&argv("EVAL s 1 k arg")), [3]);
        assert_eq!(key_indexes(&argv("flushdb")), Vec::<usize>::new());
        // A numkeys larger than the arguments (up to usize::MAX) names only those there.
        assert_eq!(key_indexes(&argv("EVAL s 18446744073709551615 k")), [3]);
        assert_eq!(
            key_indexes(&argv("zunionstore d 999999999999999999 a")),
            [1, 3]
        );
        assert_eq!(key_indexes(&argv("HSET h f v")), [1]);
    }

    #[test]
    fn knows_the_type_each_command_writes() {
        assert_eq!(lookup("hmset").unwrap().data_type, Some(DataType::Hash));
        assert_eq!(lookup("geoadd").unwrap().data_type, Some(DataType::Zset));
        assert_eq!(lookup("del").unwrap().data_type, None);
        assert_eq!(lookup("xadd").unwrap().data_type, Some(DataType::Stream));
        assert!(lookup("get").is_none());
    }
}
