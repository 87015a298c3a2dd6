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
    argv.first()
        .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
        .unwrap_or_default()
}

/// Indexes into `argv` of its key arguments. Unknown commands are taken to have their
/// key first, as every Redis data command does.
pub fn key_indexes(argv: &[Bytes]) -> Vec<usize> {
    let keys = lookup(&name_of(argv))
        .map(|s| s.keys)
        .unwrap_or(KeySpec::Range {
            first: 1,
            last: 1,
            step: 1,
        });
    let n = argv.len();
    let numkeys_at = |i: usize| -> usize {
        argv.get(i)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    match keys {
        KeySpec::None => Vec::new(),
        KeySpec::Range { first, last, step } => {
            let last = if last < 0 {
                n as isize + last
            } else {
                last.min(n as isize - 1)
            };
            if last < first as isize {
                return Vec::new();
            }
            (first..=last as usize).step_by(step.max(1)).collect()
        }
        // `numkeys` is the item's own claim: only the arguments present are keys (a
        // huge count neither overflows nor walks past them).
        KeySpec::DestAndNumkeys => std::iter::once(1)
            .filter(|_| n > 1)
            .chain(3..3usize.saturating_add(numkeys_at(2)).min(n))
            .collect(),
        KeySpec::Numkeys => (3..3usize.saturating_add(numkeys_at(2)).min(n)).collect(),
    }
}

/// The first key of a command, if it has one.
pub fn first_key(argv: &[Bytes]) -> Option<Bytes> {
    key_indexes(argv).first().map(|i| argv[*i].clone())
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
