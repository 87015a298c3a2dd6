//! `type`: keeps or drops data types. Type-less commands (DEL, FLUSHDB, …) pass.

use super::{KeepOrDrop, Rule};
use crate::event::{DataType, Event, Op};

pub struct TypeFilter {
    types: Vec<DataType>,
    keep: bool,
}

fn parse(names: &[String]) -> Result<Vec<DataType>, String> {
    names
        .iter()
        .map(|n| {
            DataType::TYPE_ORDER
                .into_iter()
                .find(|t| t.as_str() == n.to_ascii_lowercase())
                .ok_or_else(|| {
                    format!("unknown type {n:?} (string, hash, list, set, zset, stream)")
                })
        })
        .collect()
}

impl TypeFilter {
    pub fn build(config: &KeepOrDrop) -> Result<TypeFilter, String> {
        let (names, keep) = config.names()?;
        Ok(TypeFilter {
            types: parse(names)?,
            keep,
        })
    }
}

impl Rule for TypeFilter {
    fn apply(&self, event: &mut Event) -> bool {
        let t = match &event.op {
            Op::Snapshot { chunk, .. } => Some(chunk.data_type()),
            Op::Command { .. } => event.data_type,
        };
        t.is_none_or(|t| self.types.contains(&t) == self.keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{binlog_events, snapshot_events};

    #[test]
    fn keeps_or_drops_types_in_the_snapshot_and_the_binlog() {
        let keep: TypeFilter =
            TypeFilter::build(&serde_yaml::from_str("keep: [hash, zset]").unwrap()).unwrap();
        for mut e in snapshot_events() {
            let t = match &e.op {
                Op::Snapshot { chunk, .. } => chunk.data_type(),
                _ => unreachable!(),
            };
            assert_eq!(
                keep.apply(&mut e),
                matches!(t, DataType::Hash | DataType::Zset)
            );
        }
        let drop: TypeFilter =
            TypeFilter::build(&serde_yaml::from_str("drop: [list]").unwrap()).unwrap();
        let events = binlog_events();
        let kept = events
            .iter()
            .filter(|e| drop.apply(&mut (*e).clone()))
            .count();
        let lists = events
            .iter()
            .filter(|e| e.data_type == Some(DataType::List))
            .count();
        assert!(lists > 50);
        assert_eq!(kept, events.len() - lists);
        assert!(TypeFilter::build(&serde_yaml::from_str("keep: [geo]").unwrap()).is_err());
        // A stream's snapshot chunks and its binlog XADDs are one type.
        let streams: TypeFilter =
            TypeFilter::build(&serde_yaml::from_str("drop: [stream]").unwrap()).unwrap();
        let mut xadd = binlog_events()[0].clone();
        xadd.data_type = crate::pika::commands::lookup("xadd").and_then(|s| s.data_type);
        assert!(!streams.apply(&mut xadd));
        let mut chunk = snapshot_events()[0].clone();
        if let Op::Snapshot { chunk, .. } = &mut chunk.op {
            *chunk = crate::event::Chunk::Stream {
                entries: Vec::new(),
                last_id: Default::default(),
            };
        }
        assert!(!streams.apply(&mut chunk));
    }
}
