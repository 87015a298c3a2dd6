//! Filter plugins: shared libraries built with the `pika-migrate-plugin` SDK, loaded
//! with libloading. The loader checks the ABI version and every symbol, hands the
//! plugin its config as JSON text, and lends it each event as borrowed slices; what the
//! plugin emits or reports is copied during the call and checked ([`Reply`]). A loaded
//! library is never unloaded (Rust libraries that use thread-locals crash when unloaded).

mod reply;

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use libloading::Library;
use pika_migrate_plugin::abi::{self, AbiVersionFn, FilterFn, FreeFn, NewFn, PmBytes, PmEvent};

use super::{Filter, Outcome};
use crate::event::{Chunk, Event, Op};

pub use reply::Reply;

pub struct PluginFilter {
    path: PathBuf,
    state: *mut c_void,
    filter: FilterFn,
    free: FreeFn,
}

// SAFETY: the SDK requires plugin filters to be Send + Sync, and the host calls one
// plugin from one task at a time.
unsafe impl Send for PluginFilter {}
unsafe impl Sync for PluginFilter {}

impl Drop for PluginFilter {
    fn drop(&mut self) {
        // SAFETY: state came from this plugin's `new` and is not used again.
        unsafe { (self.free)(self.state) }
    }
}

impl PluginFilter {
    pub fn load(path: &Path, config_json: &str) -> Result<PluginFilter, String> {
        // SAFETY: loading runs the library's initialisers; the operator chose it.
        let lib = unsafe { Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let lib: &'static Library = Box::leak(Box::new(lib));
        let symbol = |name: &[u8]| {
            format!(
                "{}: missing symbol {}: not a pika-migrate plugin (build it with export_filter!)",
                path.display(),
                String::from_utf8_lossy(name)
            )
        };
        // SAFETY: the symbols' types are the ABI's; the version is checked first.
        unsafe {
            let version: AbiVersionFn = *lib
                .get::<AbiVersionFn>(abi::SYMBOL_ABI_VERSION)
                .map_err(|_| symbol(abi::SYMBOL_ABI_VERSION))?;
            let v = version();
            if v != abi::ABI_VERSION {
                return Err(format!(
                    "{}: plugin ABI version {v}, this pika-migrate speaks version {}; rebuild the plugin with its SDK",
                    path.display(),
                    abi::ABI_VERSION
                ));
            }
            let new: NewFn = *lib
                .get::<NewFn>(abi::SYMBOL_NEW)
                .map_err(|_| symbol(abi::SYMBOL_NEW))?;
            let filter: FilterFn = *lib
                .get::<FilterFn>(abi::SYMBOL_FILTER)
                .map_err(|_| symbol(abi::SYMBOL_FILTER))?;
            let free: FreeFn = *lib
                .get::<FreeFn>(abi::SYMBOL_FREE)
                .map_err(|_| symbol(abi::SYMBOL_FREE))?;
            let mut reply = Reply::default();
            let table = reply.host();
            let state = new(PmBytes::from_slice(config_json.as_bytes()), &table);
            if state.is_null() {
                return Err(format!(
                    "{}: {}",
                    path.display(),
                    reply
                        .into_error()
                        .unwrap_or_else(|| "refused its config".into())
                ));
            }
            Ok(PluginFilter {
                path: path.to_owned(),
                state,
                filter,
                free,
            })
        }
    }
}

/// A snapshot chunk's elements flattened as the ABI says (scores, stream ids and field
/// counts as text).
fn flatten(chunk: &Chunk, scores: &mut Vec<Bytes>) -> Vec<Bytes> {
    match chunk {
        Chunk::String(v) => vec![v.clone()],
        Chunk::Hash(pairs) => pairs
            .iter()
            .flat_map(|(f, v)| [f.clone(), v.clone()])
            .collect(),
        Chunk::List(items) | Chunk::Set(items) => items.clone(),
        Chunk::Zset(members) => members
            .iter()
            .flat_map(|(m, s)| {
                let score = crate::resp::score_text(*s);
                scores.push(score.clone());
                [m.clone(), score]
            })
            .collect(),
        Chunk::Stream { entries, last_id } => {
            let text = |t: String| Bytes::from(t.into_bytes());
            let mut out = vec![text(last_id.to_string())];
            for e in entries {
                out.push(text(e.id.to_string()));
                out.push(text(e.fields.len().to_string()));
                for (f, v) in &e.fields {
                    out.push(f.clone());
                    out.push(v.clone());
                }
            }
            out
        }
    }
}

impl Filter for PluginFilter {
    fn apply(&self, event: &mut Event) -> Result<Outcome, String> {
        let mut scores = Vec::new();
        let (kind, values, expire) = match &event.op {
            Op::Snapshot {
                chunk,
                expire_at_ms,
                ..
            } => (
                abi::KIND_SNAPSHOT,
                flatten(chunk, &mut scores),
                expire_at_ms.unwrap_or(-1),
            ),
            Op::Command { argv } => (abi::KIND_COMMAND, argv.clone(), -1),
        };
        let data_type = match &event.op {
            Op::Snapshot { chunk, .. } => chunk.data_type().as_str(),
            Op::Command { .. } => event.data_type.map_or("", |t| t.as_str()),
        };
        let lent: Vec<PmBytes> = values.iter().map(|v| PmBytes::from_slice(v)).collect();
        let view = PmEvent {
            db: event.db,
            kind,
            data_type: PmBytes::from_slice(data_type.as_bytes()),
            key: PmBytes::from_slice(&event.key),
            values: lent.as_ptr(),
            values_len: lent.len(),
            expire_at_ms: expire,
        };
        let mut reply = Reply::default();
        // SAFETY: `reply` outlives the call and is not touched during it; everything
        // lent lives until the call returns.
        let verdict = unsafe {
            let table = reply.host();
            (self.filter)(self.state, &view, &table)
        };
        reply.outcome(verdict, event)
    }

    fn name(&self) -> String {
        format!("plugin {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::stream_events;

    fn text(words: &[&str]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn stream_chunks_cross_the_abi_flat_and_come_back_whole() {
        for e in stream_events() {
            let Op::Snapshot { chunk, .. } = &e.op else {
                unreachable!()
            };
            let flat = flatten(chunk, &mut Vec::new());
            // The last id first, then per entry its id and field count.
            let Chunk::Stream { entries, last_id } = chunk else {
                unreachable!()
            };
            assert_eq!(flat[0], last_id.to_string());
            assert_eq!(flat[1], entries[0].id.to_string());
            assert_eq!(&reply::unflatten(chunk, flat).unwrap(), chunk);
        }
        let like = Chunk::Stream {
            entries: Vec::new(),
            last_id: Default::default(),
        };
        let ok = reply::unflatten(
            &like,
            text(&["5-0", "1-1", "1", "f", "v", "2-0", "2", "a", "", "b", "c"]),
        );
        assert_eq!(ok.unwrap().len(), 2);
        for (bad, says) in [
            (text(&[]), "last id first"),
            (text(&["x"]), "expected MS-SEQ"),
            (text(&["1-x"]), "bad stream id"),
            (
                text(&["5-0", "2-0", "1", "f", "v", "1-0", "1", "f", "v"]),
                "out of order",
            ),
            (text(&["1-0", "2-0", "1", "f", "v"]), "above the last id"),
            (text(&["5-0", "1-0", "0"]), "field count above 0"),
            (
                text(&["5-0", "1-0", "2", "f", "v", "g"]),
                "fewer fields than 2",
            ),
        ] {
            let e = reply::unflatten(&like, bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
