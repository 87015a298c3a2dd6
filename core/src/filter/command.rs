//! `command`: keeps or drops binlog commands by name (case-insensitive), e.g. drop
//! `flushdb` and `flushall`. Snapshot data passes.

use super::{KeepOrDrop, Rule};
use crate::event::{Event, Op};
use crate::pika::commands::name_of;

pub struct CommandFilter {
    names: Vec<String>,
    keep: bool,
}

impl CommandFilter {
    pub fn build(config: &KeepOrDrop) -> Result<CommandFilter, String> {
        let (names, keep) = config.names()?;
        Ok(CommandFilter {
            names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
            keep,
        })
    }
}

impl Rule for CommandFilter {
    fn apply(&self, event: &mut Event) -> bool {
        let Op::Command { argv } = &event.op else {
            return true;
        };
        self.names.contains(&name_of(argv)) == self.keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{binlog_events, snapshot_events};

    #[test]
    fn drops_named_commands_whatever_their_case() {
        let f = CommandFilter::build(&serde_yaml::from_str("drop: [RPUSH, del]").unwrap()).unwrap();
        let events = binlog_events();
        let named =
            |e: &Event, n: &str| matches!(&e.op, Op::Command { argv } if name_of(argv) == n);
        let dropped = events
            .iter()
            .filter(|e| named(e, "rpush") || named(e, "del"))
            .count();
        assert!(dropped > 50);
        let kept = events.iter().filter(|e| f.apply(&mut (*e).clone())).count();
        assert_eq!(kept, events.len() - dropped);
        assert!(snapshot_events().iter().all(|e| f.apply(&mut e.clone())));
    }
}
