//! What a plugin hands back during one call: replacement events through the host's
//! `emit`, a message through its `error`, and a verdict. The callbacks copy what they
//! are given while the call runs; [`Reply::outcome`] then checks it against the event
//! the plugin was lent and turns it into the filter's outcome. Everything here comes
//! from a plugin, so nothing is trusted: arities, scores and verdicts are checked.

use std::ffi::c_void;

use bytes::Bytes;
use pika_migrate_plugin::abi::{self, PmBytes, PmHost};

use crate::event::{Chunk, Event, Op, StreamEntry, StreamId};
use crate::filter::Outcome;
use crate::pika::commands;

/// What one call handed back.
#[derive(Debug, Default)]
pub struct Reply {
    emitted: Vec<(Bytes, Vec<Bytes>)>,
    error: Option<String>,
}

extern "C" fn on_emit(ctx: *mut c_void, key: PmBytes, values: *const PmBytes, len: usize) {
    // SAFETY: ctx is the `Reply` of the running call (see `Reply::host`); the plugin's
    // slices are valid for the length of this callback.
    unsafe {
        let reply = &mut *(ctx as *mut Reply);
        let values = if len == 0 || values.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(values, len)
                .iter()
                .map(|v| Bytes::copy_from_slice(v.as_slice()))
                .collect()
        };
        reply
            .emitted
            .push((Bytes::copy_from_slice(key.as_slice()), values));
    }
}

extern "C" fn on_error(ctx: *mut c_void, message: PmBytes) {
    // SAFETY: as in `on_emit`.
    unsafe {
        let reply = &mut *(ctx as *mut Reply);
        reply.error = Some(String::from_utf8_lossy(message.as_slice()).into_owned());
    }
}

impl Reply {
    /// The host table handed to the plugin for one call; its callbacks copy into `self`.
    ///
    /// # Safety
    /// The table points at `self`: use it only while `self` lives, is not moved and is
    /// not otherwise borrowed (for the length of the plugin call).
    pub unsafe fn host(&mut self) -> PmHost {
        PmHost {
            ctx: self as *mut Reply as *mut c_void,
            emit: on_emit,
            error: on_error,
        }
    }

    /// The message the plugin reported, if any.
    pub fn into_error(self) -> Option<String> {
        self.error
    }

    /// What `verdict` and the events emitted make of `event`, the one the plugin was
    /// lent. A replacement snapshot chunk keeps the event's type; a replacement command
    /// needs a name.
    pub fn outcome(self, verdict: u32, event: &Event) -> Result<Outcome, String> {
        match verdict {
            abi::VERDICT_KEEP => Ok(Outcome::Keep),
            abi::VERDICT_DROP => Ok(Outcome::Drop),
            abi::VERDICT_REPLACE => {
                let mut out = Vec::with_capacity(self.emitted.len());
                for (key, values) in self.emitted {
                    let mut e = event.clone();
                    e.key = key;
                    match &mut e.op {
                        Op::Snapshot { chunk, .. } => *chunk = unflatten(chunk, values)?,
                        Op::Command { argv } => {
                            if values.is_empty() {
                                return Err("a replacement command has no name".into());
                            }
                            e.data_type = commands::lookup(&commands::name_of(&values))
                                .and_then(|s| s.data_type);
                            *argv = values;
                        }
                    }
                    out.push(e);
                }
                Ok(Outcome::Replace(out))
            }
            abi::VERDICT_ERROR => Err(self.error.unwrap_or_else(|| "failed".into())),
            other => Err(format!("unknown verdict {other}")),
        }
    }
}

/// Rebuilds a chunk of `like`'s type from flattened elements.
pub(super) fn unflatten(like: &Chunk, values: Vec<Bytes>) -> Result<Chunk, String> {
    let pairs = |values: Vec<Bytes>| -> Result<Vec<(Bytes, Bytes)>, String> {
        if values.len() % 2 != 0 {
            return Err("an odd number of elements for a hash or zset".into());
        }
        Ok(values
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect())
    };
    Ok(match like {
        Chunk::String(_) => match <[Bytes; 1]>::try_from(values) {
            Ok([v]) => Chunk::String(v),
            Err(v) => return Err(format!("a string takes 1 element, got {}", v.len())),
        },
        Chunk::Hash(_) => Chunk::Hash(pairs(values)?),
        Chunk::List(_) => Chunk::List(values),
        Chunk::Set(_) => Chunk::Set(values),
        Chunk::Zset(_) => Chunk::Zset(
            pairs(values)?
                .into_iter()
                .map(|(m, s)| {
                    let text = String::from_utf8_lossy(&s).into_owned();
                    crate::resp::parse_score(&text)
                        .map(|s| (m, s))
                        .ok_or_else(|| format!("score {text:?} is not a number"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Chunk::Stream { .. } => unflatten_stream(values)?,
    })
}

/// A stream chunk from `[last_id, id, field_count, field, value, …, id, …]`; ids in
/// increasing order, each entry with at least one field.
fn unflatten_stream(values: Vec<Bytes>) -> Result<Chunk, String> {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let id = |b: &Bytes| -> Result<StreamId, String> { text(b).parse() };
    let mut values = values.into_iter();
    let last_id = id(&values
        .next()
        .ok_or("a stream chunk needs its last id first")?)?;
    let mut entries: Vec<StreamEntry> = Vec::new();
    while let Some(raw) = values.next() {
        let entry_id = id(&raw)?;
        if entries.last().is_some_and(|e| e.id >= entry_id) || entry_id > last_id {
            return Err(format!(
                "stream entry {entry_id} out of order or above the last id {last_id}"
            ));
        }
        let count = values
            .next()
            .map(|c| text(&c))
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("stream entry {entry_id} needs a field count above 0"))?;
        let mut fields = Vec::new();
        for _ in 0..count {
            match (values.next(), values.next()) {
                (Some(f), Some(v)) => fields.push((f, v)),
                _ => {
                    return Err(format!(
                        "stream entry {entry_id} has fewer fields than {count}"
                    ))
                }
            }
        }
        entries.push(StreamEntry {
            id: entry_id,
            fields,
        });
    }
    Ok(Chunk::Stream { entries, last_id })
}
