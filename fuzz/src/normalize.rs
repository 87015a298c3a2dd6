//! Any argv a binlog item can carry, through normalize and the command table.

use arbitrary::Unstructured;
use bytes::Bytes;

use crate::events;

/// Command names the table and normalize know, so most inputs reach their branches.
const NAMES: &[&str] = &[
    "set",
    "setnx",
    "setex",
    "psetex",
    "pksetexat",
    "getset",
    "append",
    "setrange",
    "incr",
    "incrby",
    "incrbyfloat",
    "setbit",
    "delvx",
    "pfadd",
    "mset",
    "msetnx",
    "bitop",
    "pfmerge",
    "hset",
    "hmset",
    "hdel",
    "lpush",
    "rpush",
    "linsert",
    "lrem",
    "lset",
    "ltrim",
    "rpoplpush",
    "sadd",
    "srem",
    "spop",
    "smove",
    "sunionstore",
    "sdiffstore",
    "zadd",
    "zincrby",
    "zrem",
    "zremrangebyscore",
    "zunionstore",
    "zinterstore",
    "geoadd",
    "del",
    "unlink",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "persist",
    "rename",
    "flushdb",
    "flushall",
    "pkpatternmatchdel",
    "padding",
    "dummy",
    "eval",
    "evalsha",
    "SET",
    "Expire",
];

/// Arguments that sit at the edges of what normalize computes with.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "10",
    "1000",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775",
    "2147483647",
    "4294967296",
    "+5",
    " 5",
    "5.0",
    "1e3",
    "",
];

/// Option words of `SET` and the type names Pika's forms take.
const WORDS: &[&str] = &[
    "ex", "px", "exat", "pxat", "nx", "xx", "vx", "keepttl", "get", "EX", "PX", "string", "hashes",
    "l", "zset", "sets", "weights", "k",
];

fn arg(u: &mut Unstructured) -> arbitrary::Result<Bytes> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Bytes::from_static(u.choose(NUMBERS)?.as_bytes()),
        1 => Bytes::from_static(u.choose(WORDS)?.as_bytes()),
        2 => Bytes::from(u.int_in_range(-3i64..=3)?.to_string()),
        _ => Bytes::from(u.arbitrary::<Vec<u8>>()?),
    })
}

fn argv(u: &mut Unstructured) -> arbitrary::Result<(Vec<Bytes>, u32)> {
    let exec_time = match u.int_in_range(0..=2u8)? {
        0 => 1_700_000_000,
        1 => u32::MAX,
        _ => u.arbitrary()?,
    };
    let mut argv = Vec::new();
    if u.ratio(7, 8)? {
        argv.push(Bytes::from_static(u.choose(NAMES)?.as_bytes()));
    }
    let n = u.int_in_range(0..=12u8)?;
    for _ in 0..n {
        argv.push(arg(u)?);
    }
    Ok((argv, exec_time))
}

/// An argv made up from `data`, as a binlog item's, then downstream. An empty argv is
/// refused by the item decoder before normalize sees it.
pub fn command(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((argv, exec_time)) = argv(&mut u) else {
        return;
    };
    if argv.is_empty() {
        return;
    }
    events::command(argv, exec_time);
}
