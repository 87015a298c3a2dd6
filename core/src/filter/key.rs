//! `key`: keeps keys that match an `include` pattern (all, when there is none) and no
//! `exclude` pattern. Patterns are Redis globs, `{prefix: …}` or `{regex: …}`, on bytes.
//! Multi-key commands whose keys are independent (DEL, UNLINK, MSET, MSETNX) lose the
//! keys that do not pass; other multi-key commands follow their first key.

use bytes::Bytes;
use regex::bytes::Regex;
use serde::Deserialize;

use super::{glob, Rule};
use crate::event::{Event, Op};
use crate::pika::commands::{key_indexes, name_of};

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Pattern {
    Glob(String),
    Prefix { prefix: String },
    Regex { regex: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFilterConfig {
    #[serde(default)]
    pub include: Vec<Pattern>,
    #[serde(default)]
    pub exclude: Vec<Pattern>,
}

enum Matcher {
    Glob(Vec<u8>),
    Prefix(Vec<u8>),
    Regex(Regex),
}

impl Matcher {
    fn new(p: &Pattern) -> Result<Matcher, String> {
        Ok(match p {
            Pattern::Glob(g) => Matcher::Glob(g.as_bytes().to_vec()),
            Pattern::Prefix { prefix } => Matcher::Prefix(prefix.as_bytes().to_vec()),
            Pattern::Regex { regex } => {
                Matcher::Regex(Regex::new(regex).map_err(|e| format!("regex {regex:?}: {e}"))?)
            }
        })
    }

    fn matches(&self, key: &[u8]) -> bool {
        match self {
            Matcher::Glob(g) => glob::matches(g, key),
            Matcher::Prefix(p) => key.starts_with(p),
            Matcher::Regex(r) => r.is_match(key),
        }
    }
}

pub struct KeyFilter {
    include: Vec<Matcher>,
    exclude: Vec<Matcher>,
}

impl KeyFilterConfig {
    pub fn build(&self) -> Result<KeyFilter, String> {
        if self.include.is_empty() && self.exclude.is_empty() {
            return Err("give `include` or `exclude` patterns".into());
        }
        let all = |ps: &[Pattern]| ps.iter().map(Matcher::new).collect::<Result<Vec<_>, _>>();
        Ok(KeyFilter {
            include: all(&self.include)?,
            exclude: all(&self.exclude)?,
        })
    }
}

impl KeyFilter {
    fn passes(&self, key: &[u8]) -> bool {
        (self.include.is_empty() || self.include.iter().any(|m| m.matches(key)))
            && !self.exclude.iter().any(|m| m.matches(key))
    }
}

/// Commands whose keys are independent of each other: (arguments per key).
fn independent_keys(name: &str) -> Option<usize> {
    match name {
        "del" | "unlink" => Some(1),
        "mset" | "msetnx" => Some(2),
        _ => None,
    }
}

impl Rule for KeyFilter {
    fn apply(&self, event: &mut Event) -> bool {
        let Op::Command { argv } = &mut event.op else {
            return self.passes(&event.key);
        };
        let keys = key_indexes(argv);
        let Some(&first) = keys.first() else {
            return true;
        };
        if keys.len() == 1 {
            return self.passes(&argv[first]);
        }
        let Some(per_key) = independent_keys(&name_of(argv)) else {
            return self.passes(&argv[first]);
        };
        let mut kept: Vec<Bytes> = vec![argv[0].clone()];
        for chunk in argv[1..].chunks(per_key) {
            if self.passes(&chunk[0]) {
                kept.extend_from_slice(chunk);
            }
        }
        if kept.len() == 1 {
            return false;
        }
        event.key = kept[1].clone();
        *argv = kept;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{binlog_events, snapshot_events};

    fn filter(yaml: &str) -> KeyFilter {
        serde_yaml::from_str::<KeyFilterConfig>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn include_and_exclude_on_the_snapshot() {
        let f = filter("include: ['s1:hash:*', {prefix: 's1:list:'}]\nexclude: ['*:big']\n");
        let kept: Vec<Event> = snapshot_events()
            .into_iter()
            .filter_map(|mut e| f.apply(&mut e).then_some(e))
            .collect();
        assert!(!kept.is_empty());
        for e in &kept {
            assert!(e.key.starts_with(b"s1:hash:") || e.key.starts_with(b"s1:list:"));
            assert!(!e.key.ends_with(b":big"));
        }
        let regex = filter("include: [{regex: '^s1:(zset|set):[0-9]+$'}]\n");
        let n = snapshot_events()
            .into_iter()
            .filter(|e| regex.apply(&mut e.clone()))
            .count();
        assert!(n > 0);
    }

    #[test]
    fn multi_key_commands_lose_only_the_excluded_keys() {
        let f = filter("exclude: ['s1:p2:m2*']\n");
        let mut mset = crate::filter::testing::binlog_events()
            .into_iter()
            .find(|e| matches!(&e.op, Op::Command { argv } if name_of(argv) == "mset" && argv.iter().any(|a| a.as_ref() == b"s1:p2:m2")))
            .unwrap();
        let Op::Command { argv } = &mset.op else {
            unreachable!()
        };
        let before = argv.len();
        let excluded = argv
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|k| k.starts_with(b"s1:p2:m2"))
            .count();
        assert_eq!(excluded, 1);
        assert!(f.apply(&mut mset));
        let Op::Command { argv } = &mset.op else {
            unreachable!()
        };
        assert_eq!(argv.len(), before - 2 * excluded);
        assert!(argv
            .iter()
            .skip(1)
            .step_by(2)
            .all(|k| !k.starts_with(b"s1:p2:m2")));

        // A DEL of excluded keys only is dropped.
        let mut del = Event {
            op: Op::Command {
                argv: vec![
                    Bytes::from("DEL"),
                    Bytes::from("s1:p2:m2a"),
                    Bytes::from("s1:p2:m2b"),
                ],
            },
            ..binlog_events()[0].clone()
        };
        assert!(!f.apply(&mut del));
    }
}
