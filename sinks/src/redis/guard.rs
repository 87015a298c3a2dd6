//! `type_conflict: overwrite | suffix` for binlog commands, decided inside the
//! transaction that applies them. Redis tells of a conflict only by a WRONGTYPE reply,
//! after EXEC: a fix-up sent then would run after later commands on the key, in a
//! transaction of its own that a crash could lose once the first one recorded its
//! position. So a guarded command is preceded (and, for `suffix`, followed) by a small
//! script in the same MULTI/EXEC, which looks at the key's type when the command runs:
//! - `overwrite`: a key of another type is deleted first;
//! - `suffix`: a key of another type is set aside and `key:<type>` (if any) put in its
//!   place, so the command runs on it; afterwards the result goes back to
//!   `key:<type>` and the key set aside returns.
//!
//! Each script answers 1 when it met a conflict, 0 otherwise.

use pika_migrate_core::event::DataType;
use redis::Cmd;

use super::conn::command;
use crate::encode::commands::TypeConflict;

/// Deletes `KEYS[1]` when it holds a type other than `ARGV[1]`.
const OVERWRITE: &str = "local t = redis.call('TYPE', KEYS[1])['ok'] \
if t ~= 'none' and t ~= ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end return 0";

/// When `KEYS[1]` holds another type than `ARGV[1]`: renames it to `KEYS[3]` (aside),
/// and `KEYS[2]` (`key:<type>`) to `KEYS[1]`.
const SET_ASIDE: &str = "local t = redis.call('TYPE', KEYS[1])['ok'] \
if t == 'none' or t == ARGV[1] then return 0 end \
redis.call('RENAME', KEYS[1], KEYS[3]) \
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[1]) end \
return 1";

/// Undoes `SET_ASIDE` after the command: `KEYS[1]` back to `KEYS[2]`, the key set
/// aside back to `KEYS[1]`.
const PUT_BACK: &str = "if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end \
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[2]) end \
redis.call('RENAME', KEYS[3], KEYS[1]) return 1";

/// Appended to a key to set it aside for the length of one command.
const ASIDE: &[u8] = b":pika-migrate:aside";

/// The scripts around one command.
pub struct Guard {
    pub before: Cmd,
    pub after: Option<Cmd>,
}

/// The guard of a command writing `writes` to `key` under `policy` (none for
/// `first-wins`, where a WRONGTYPE reply simply skips the command).
pub fn guard(policy: TypeConflict, key: &[u8], writes: DataType) -> Option<Guard> {
    let t = writes.as_str().as_bytes();
    match policy {
        TypeConflict::FirstWins => None,
        TypeConflict::Overwrite => Some(Guard {
            before: command(&[b"EVAL".as_slice(), OVERWRITE.as_bytes(), b"1", key, t]),
            after: None,
        }),
        TypeConflict::Suffix => {
            let suffixed = [key, b":", t].concat();
            let aside = [key, ASIDE].concat();
            let script = |body: &str| {
                command(&[
                    b"EVAL".as_slice(),
                    body.as_bytes(),
                    b"3",
                    key,
                    &suffixed,
                    &aside,
                    t,
                ])
            };
            Some(Guard {
                before: script(SET_ASIDE),
                after: Some(script(PUT_BACK)),
            })
        }
    }
}
