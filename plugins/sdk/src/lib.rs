//! SDK for pika-migrate filter plugins. Write a plain, safe Rust [`Filter`], export it
//! with [`export_filter!`], build the crate as a `cdylib`, and name the `.so` in a
//! pipeline:
//!
//! ```yaml
//! filters:
//!   - type: plugin
//!     path: ./target/release/libmy_filter.so
//!     config: {prefix: "tenant42:"}
//! ```
//!
//! The host passes the plugin's `config` as JSON text to [`Filter::new`], then every
//! event to [`Filter::filter`]. A panic never crosses the boundary: the exported
//! functions catch it and report it as an error, which stops the pipeline with the
//! plugin's name. The C ABI itself is in [`abi`].

pub mod abi;

use std::ffi::c_void;

use abi::{PmBytes, PmEvent, PmHost};

/// What kind of event it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A chunk of a key's value from the full sync.
    Snapshot,
    /// A write command from the binlog.
    Command,
}

/// An event, borrowed from the host for one call.
#[derive(Debug)]
pub struct Event<'a> {
    pub db: u32,
    pub kind: Kind,
    /// `string`, `hash`, `list`, `zset`, `set`, `stream`, or `""` for type-less commands.
    pub data_type: &'a str,
    pub key: &'a [u8],
    /// A command's arguments (name first), or a snapshot chunk's elements flattened
    /// (see [`abi::PmEvent::values`]).
    pub values: Vec<&'a [u8]>,
    pub expire_at_ms: Option<i64>,
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
    /// Replace it with the events given to [`Output::emit`] (none drops it).
    Replace,
}

/// Where replacement events go.
pub struct Output<'a> {
    host: &'a PmHost,
}

impl Output<'_> {
    /// A replacement: for a command, its key and arguments (name first); for a snapshot
    /// chunk, its key and elements, flattened like the original's.
    pub fn emit(&mut self, key: &[u8], values: &[&[u8]]) {
        let values: Vec<PmBytes> = values.iter().map(|v| PmBytes::from_slice(v)).collect();
        (self.host.emit)(
            self.host.ctx,
            PmBytes::from_slice(key),
            values.as_ptr(),
            values.len(),
        );
    }
}

/// A filter plugin.
pub trait Filter: Send + Sync + Sized {
    /// Builds the filter from the pipeline's `config` (JSON text; `null` when absent).
    fn new(config: &str) -> Result<Self, String>;
    /// Decides on one event.
    fn filter(&self, event: &Event<'_>, out: &mut Output<'_>) -> Result<Verdict, String>;
}

fn report(host: &PmHost, message: &str) {
    (host.error)(host.ctx, PmBytes::from_slice(message.as_bytes()));
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Glue for [`export_filter!`]; not for direct use.
#[doc(hidden)]
pub mod glue {
    use super::*;

    /// # Safety
    /// Called by the host with a valid config slice and host table.
    pub unsafe fn new<F: Filter>(config: PmBytes, host: *const PmHost) -> *mut c_void {
        let host = &*host;
        let text = String::from_utf8_lossy(config.as_slice()).into_owned();
        match std::panic::catch_unwind(|| F::new(&text)) {
            Ok(Ok(filter)) => Box::into_raw(Box::new(filter)) as *mut c_void,
            Ok(Err(e)) => {
                report(host, &e);
                std::ptr::null_mut()
            }
            Err(p) => {
                report(host, &format!("panicked: {}", panic_message(p)));
                std::ptr::null_mut()
            }
        }
    }

    /// # Safety
    /// `state` comes from `new::<F>`; `event` and `host` are valid for the call.
    pub unsafe fn filter<F: Filter>(
        state: *mut c_void,
        event: *const PmEvent,
        host: *const PmHost,
    ) -> u32 {
        let filter = &*(state as *const F);
        let e = &*event;
        let host = &*host;
        let values: Vec<&[u8]> = (0..e.values_len)
            .map(|i| (*e.values.add(i)).as_slice())
            .collect();
        let event = Event {
            db: e.db,
            kind: if e.kind == abi::KIND_COMMAND {
                Kind::Command
            } else {
                Kind::Snapshot
            },
            data_type: std::str::from_utf8(e.data_type.as_slice()).unwrap_or(""),
            key: e.key.as_slice(),
            values,
            expire_at_ms: (e.expire_at_ms >= 0).then_some(e.expire_at_ms),
        };
        let mut out = Output { host };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            filter.filter(&event, &mut out)
        }));
        match outcome {
            Ok(Ok(Verdict::Keep)) => abi::VERDICT_KEEP,
            Ok(Ok(Verdict::Drop)) => abi::VERDICT_DROP,
            Ok(Ok(Verdict::Replace)) => abi::VERDICT_REPLACE,
            Ok(Err(e)) => {
                report(host, &e);
                abi::VERDICT_ERROR
            }
            Err(p) => {
                report(host, &format!("panicked: {}", panic_message(p)));
                abi::VERDICT_ERROR
            }
        }
    }

    /// # Safety
    /// `state` comes from `new::<F>` and is not used again.
    pub unsafe fn free<F: Filter>(state: *mut c_void) {
        if !state.is_null() {
            let _ = std::panic::catch_unwind(|| drop(Box::from_raw(state as *mut F)));
        }
    }
}

/// Exports `$filter` (a [`Filter`]) as the plugin's C symbols.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        #[no_mangle]
        pub extern "C" fn pika_migrate_plugin_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }

        /// # Safety
        /// Called by pika-migrate only.
        #[no_mangle]
        pub unsafe extern "C" fn pika_migrate_plugin_new(
            config: $crate::abi::PmBytes,
            host: *const $crate::abi::PmHost,
        ) -> *mut ::std::ffi::c_void {
            $crate::glue::new::<$filter>(config, host)
        }

        /// # Safety
        /// Called by pika-migrate only.
        #[no_mangle]
        pub unsafe extern "C" fn pika_migrate_plugin_filter(
            state: *mut ::std::ffi::c_void,
            event: *const $crate::abi::PmEvent,
            host: *const $crate::abi::PmHost,
        ) -> u32 {
            $crate::glue::filter::<$filter>(state, event, host)
        }

        /// # Safety
        /// Called by pika-migrate only.
        #[no_mangle]
        pub unsafe extern "C" fn pika_migrate_plugin_free(state: *mut ::std::ffi::c_void) {
            $crate::glue::free::<$filter>(state)
        }
    };
}
