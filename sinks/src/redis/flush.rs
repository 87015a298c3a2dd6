//! Commands that empty a database (`FLUSHDB`, `FLUSHALL`, the script Pika's
//! `FLUSHDB <type>`/`PKPATTERNMATCHDEL` become) would delete the checkpoint keys too:
//! every lane's and every other migration's, while only the lane sending the command
//! rewrites its own in the same transaction. A resumed stream would then apply again,
//! after the flush, what the other lanes had applied before it. Where such a command
//! reaches the database holding the checkpoint keys, it runs inside a script that keeps
//! them: read, the command, written back, in one step.

use bytes::Bytes;
use pika_migrate_core::pika::normalize::DELETE_BY_TYPE_SCRIPT;

use super::checkpoint::Markers;

/// Keeps the values of the keys matching `ARGV[1]` across the command `ARGV[2..]`.
const KEEPING: &str = "local saved = {} \
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
local v = redis.pcall('GET', k) \
if type(v) == 'string' then saved[#saved + 1] = k saved[#saved + 1] = v end end \
redis.call(unpack(ARGV, 2)) \
for i = 1, #saved, 2 do redis.call('SET', saved[i], saved[i + 1]) end \
return redis.status_reply('OK')";

/// Pika's delete-by-type (`DELETE_BY_TYPE_SCRIPT`), passing over keys that start with
/// `ARGV[3]`.
const DELETE_BY_TYPE_KEEPING: &str = "local cursor = '0' local n = 0 repeat \
local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'TYPE', ARGV[2], 'COUNT', 1000) \
cursor = r[1] for _, k in ipairs(r[2]) do \
if string.sub(k, 1, #ARGV[3]) ~= ARGV[3] then n = n + redis.call('DEL', k) end end \
until cursor == '0' return n";

/// In a cluster a script may touch keys of several slots only when it says so
/// (Redis 7).
const CROSS_SLOT: &str = "#!lua flags=allow-cross-slot-keys\n";

/// What a command that empties databases becomes so the checkpoint keys survive it:
/// `None` when it leaves them alone (another database, another type) or is no such
/// command. `in_home` says whether it runs in the database holding the keys.
pub fn keeping_markers(argv: &[Bytes], in_home: bool, cluster: bool) -> Option<Vec<Bytes>> {
    let name = argv.first()?.to_ascii_uppercase();
    let shebang = if cluster { CROSS_SLOT } else { "" };
    let wrap = |body: &str, args: &[Bytes]| {
        let mut out = vec![
            Bytes::from_static(b"EVAL"),
            Bytes::from(format!("{shebang}{body}")),
            Bytes::from_static(b"0"),
        ];
        out.extend_from_slice(args);
        out
    };
    let pattern = Bytes::from(Markers::pattern());
    match name.as_slice() {
        b"FLUSHALL" => Some(wrap(KEEPING, &[&[pattern], argv].concat())),
        b"FLUSHDB" if in_home => Some(wrap(KEEPING, &[&[pattern], argv].concat())),
        b"EVAL"
            if in_home
                && argv
                    .get(1)
                    .is_some_and(|s| s == DELETE_BY_TYPE_SCRIPT.as_bytes())
                && argv.get(4).is_some_and(|t| t == "string") =>
        {
            let prefix = Markers::pattern().trim_end_matches('*').to_owned();
            Some(wrap(
                DELETE_BY_TYPE_KEEPING,
                &[argv[3].clone(), argv[4].clone(), Bytes::from(prefix)],
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &str) -> Vec<Bytes> {
        words
            .split(' ')
            .map(|w| Bytes::from(w.to_owned()))
            .collect()
    }

    #[test]
    fn only_what_reaches_the_checkpoint_keys_is_rewritten() {
        let flush = keeping_markers(&argv("flushdb"), true, false).unwrap();
        assert_eq!(flush[0], "EVAL");
        assert_eq!(&flush[3..], &argv("pika-migrate:checkpoint:* flushdb")[..]);
        assert!(keeping_markers(&argv("FLUSHDB"), false, false).is_none());
        let all = keeping_markers(&argv("FLUSHALL ASYNC"), false, true).unwrap();
        assert!(all[1].starts_with(CROSS_SLOT.as_bytes()));
        assert_eq!(&all[4..], &argv("FLUSHALL ASYNC")[..]);
        let by_type = |t: &str| {
            vec![
                Bytes::from("EVAL"),
                Bytes::from(DELETE_BY_TYPE_SCRIPT),
                Bytes::from("0"),
                Bytes::from("*"),
                Bytes::from(t.to_owned()),
            ]
        };
        assert!(keeping_markers(&by_type("hash"), true, false).is_none());
        let strings = keeping_markers(&by_type("string"), true, false).unwrap();
        assert_eq!(
            &strings[3..],
            &argv("* string pika-migrate:checkpoint:")[..]
        );
        assert!(keeping_markers(&argv("DEL k"), true, false).is_none());
    }
}
