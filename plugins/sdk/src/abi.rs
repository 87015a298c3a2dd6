//! The C ABI between pika-migrate (the host) and a filter plugin, version 2 (version 1
//! had no streams). Everything
//! is `#[repr(C)]`; memory crosses the boundary only as slices borrowed for the length
//! of one call: the host's event while `filter` runs, the plugin's replacement events
//! while `emit` runs (the host copies them).

use std::ffi::c_void;

/// Bumped on any change of the types or functions below.
pub const ABI_VERSION: u32 = 2;

/// A borrowed byte slice.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PmBytes {
    pub ptr: *const u8,
    pub len: usize,
}

impl PmBytes {
    pub fn from_slice(s: &[u8]) -> PmBytes {
        PmBytes {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_slice<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

pub const KIND_SNAPSHOT: u32 = 0;
pub const KIND_COMMAND: u32 = 1;

/// One event, as the host lends it to the plugin.
#[repr(C)]
pub struct PmEvent {
    pub db: u32,
    /// [`KIND_SNAPSHOT`] or [`KIND_COMMAND`].
    pub kind: u32,
    /// `string`, `hash`, `list`, `zset`, `set`, `stream`, or empty for type-less
    /// commands.
    pub data_type: PmBytes,
    pub key: PmBytes,
    /// A command's arguments, name first; a snapshot chunk's elements flattened:
    /// string `[value]`, hash `[field, value, …]`, list and set `[item, …]`, zset
    /// `[member, score, …]` (the score as text, `inf`/`-inf` included), stream
    /// `[last_id, id, field_count, field, value, …, id, field_count, …]` (ids as
    /// `ms-seq` text, counts as decimal text; `last_id` is the id the stream last
    /// generated, at or above its newest entry's).
    pub values: *const PmBytes,
    pub values_len: usize,
    /// Unix milliseconds; -1 for none (commands carry theirs as commands).
    pub expire_at_ms: i64,
}

pub const VERDICT_KEEP: u32 = 0;
pub const VERDICT_DROP: u32 = 1;
/// The event is replaced by what the plugin emitted (possibly nothing).
pub const VERDICT_REPLACE: u32 = 2;
/// The plugin failed; it reported why through `error`.
pub const VERDICT_ERROR: u32 = 3;

/// What the host offers during a call: `emit` takes a replacement event (key and
/// values, same meaning as in [`PmEvent`]), `error` a message.
#[repr(C)]
pub struct PmHost {
    pub ctx: *mut c_void,
    pub emit: extern "C" fn(ctx: *mut c_void, key: PmBytes, values: *const PmBytes, len: usize),
    pub error: extern "C" fn(ctx: *mut c_void, message: PmBytes),
}

/// `u32 pika_migrate_plugin_abi_version(void)`
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;
/// `void *pika_migrate_plugin_new(PmBytes config_json, const PmHost *host)`: the
/// plugin's state, or null after reporting an error.
pub type NewFn = unsafe extern "C" fn(config: PmBytes, host: *const PmHost) -> *mut c_void;
/// `u32 pika_migrate_plugin_filter(void *state, const PmEvent *event, const PmHost *host)`
pub type FilterFn =
    unsafe extern "C" fn(state: *mut c_void, event: *const PmEvent, host: *const PmHost) -> u32;
/// `void pika_migrate_plugin_free(void *state)`
pub type FreeFn = unsafe extern "C" fn(state: *mut c_void);

pub const SYMBOL_ABI_VERSION: &[u8] = b"pika_migrate_plugin_abi_version";
pub const SYMBOL_NEW: &[u8] = b"pika_migrate_plugin_new";
pub const SYMBOL_FILTER: &[u8] = b"pika_migrate_plugin_filter";
pub const SYMBOL_FREE: &[u8] = b"pika_migrate_plugin_free";
