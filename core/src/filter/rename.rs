//! `rename`: adds, strips or replaces a key prefix, on the snapshot's keys and on every
//! key argument of binlog commands (the command table says which arguments are keys:
//! MSET's every other one, RPOPLPUSH's two, *STORE's destination and sources, …).
//! `{db}` in the new prefix stands for the event's database, so several Pika databases
//! can share one Redis database (a cluster has only db 0) without their keys meeting.

use bytes::Bytes;
use serde::Deserialize;

use super::Rule;
use crate::event::{Event, Op};
use crate::pika::commands::key_indexes;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameFilterConfig {
    #[serde(default)]
    pub add_prefix: Option<String>,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default)]
    pub replace_prefix: Option<Replace>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replace {
    pub from: String,
    pub to: String,
}

/// Stands for the event's database in a new prefix.
pub const DB_PLACEHOLDER: &str = "{db}";

/// Keys starting with `from` get `to` instead (an empty `from` adds `to` to every key);
/// `to` is kept in the pieces around each `{db}`.
pub struct RenameFilter {
    from: Vec<u8>,
    to: Vec<Vec<u8>>,
}

impl RenameFilterConfig {
    /// Whether the new prefix names the database (`{db}`), which keeps the keys of
    /// different databases apart.
    pub fn tags_database(&self) -> bool {
        let to = match (&self.add_prefix, &self.replace_prefix) {
            (Some(add), _) => add,
            (_, Some(r)) => &r.to,
            _ => return false,
        };
        to.contains(DB_PLACEHOLDER)
    }
}

impl RenameFilterConfig {
    pub fn build(&self) -> Result<RenameFilter, String> {
        let (from, to) = match (&self.add_prefix, &self.strip_prefix, &self.replace_prefix) {
            (Some(add), None, None) => (String::new(), add.clone()),
            (None, Some(strip), None) => (strip.clone(), String::new()),
            (None, None, Some(r)) => (r.from.clone(), r.to.clone()),
            _ => {
                return Err(
                    "give exactly one of `add_prefix`, `strip_prefix`, `replace_prefix`".into(),
                )
            }
        };
        if from.contains(DB_PLACEHOLDER) {
            return Err(format!(
                "{DB_PLACEHOLDER} stands for the database in the new prefix only"
            ));
        }
        Ok(RenameFilter {
            from: from.into_bytes(),
            to: to
                .split(DB_PLACEHOLDER)
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        })
    }
}

impl RenameFilter {
    fn rename(&self, key: &Bytes, db: &str) -> Bytes {
        match key.strip_prefix(self.from.as_slice()) {
            Some(rest) => {
                let to: usize = self.to.iter().map(Vec::len).sum();
                let mut out = Vec::with_capacity(to + db.len() * (self.to.len() - 1) + rest.len());
                for (i, piece) in self.to.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(db.as_bytes());
                    }
                    out.extend_from_slice(piece);
                }
                out.extend_from_slice(rest);
                Bytes::from(out)
            }
            None => key.clone(),
        }
    }
}

impl Rule for RenameFilter {
    fn apply(&self, event: &mut Event) -> bool {
        let mut number = itoa::Buffer::new();
        let db = if self.to.len() > 1 {
            number.format(event.db)
        } else {
            ""
        };
        event.key = self.rename(&event.key, db);
        if let Op::Command { argv } = &mut event.op {
            for i in key_indexes(argv) {
                argv[i] = self.rename(&argv[i], db);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{binlog_events, snapshot_events};
    use crate::pika::commands::name_of;

    fn filter(yaml: &str) -> RenameFilter {
        serde_yaml::from_str::<RenameFilterConfig>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn every_key_argument_is_renamed() {
        let f = filter("replace_prefix: {from: 's1:', to: 'new:'}");
        for mut e in binlog_events() {
            let Op::Command { argv } = &e.op else {
                continue;
            };
            let before = argv.clone();
            f.apply(&mut e);
            let Op::Command { argv } = &e.op else {
                continue;
            };
            let keys = key_indexes(argv);
            for (i, (a, b)) in before.iter().zip(argv).enumerate() {
                if keys.contains(&i) && a.starts_with(b"s1:") {
                    assert_eq!(&b[..4], b"new:", "{} arg {i}", name_of(argv));
                    assert_eq!(&a[3..], &b[4..]);
                } else {
                    assert_eq!(a, b, "{} arg {i} is not a key", name_of(argv));
                }
            }
        }
        // Multi-key commands: both sides of RPOPLPUSH and SMOVE, every MSET key.
        let renamed: Vec<Vec<Bytes>> = binlog_events()
            .into_iter()
            .filter_map(|mut e| {
                f.apply(&mut e);
                match e.op {
                    Op::Command { argv } => Some(argv),
                    _ => None,
                }
            })
            .filter(|a| {
                ["rpoplpush", "smove", "mset", "sunionstore"].contains(&name_of(a).as_str())
            })
            .collect();
        let rpoplpush = renamed.iter().find(|a| name_of(a) == "rpoplpush").unwrap();
        assert_eq!(
            rpoplpush[1..],
            [Bytes::from("new:p2:src"), Bytes::from("new:p2:dst")]
        );
        let smove = renamed.iter().find(|a| name_of(a) == "smove").unwrap();
        assert_eq!(
            smove[1..],
            [
                Bytes::from("new:p2:s"),
                Bytes::from("new:p2:s2"),
                Bytes::from("a")
            ]
        );
    }

    #[test]
    fn db_in_the_new_prefix_is_the_events_database() {
        let config: RenameFilterConfig = serde_yaml::from_str("add_prefix: 'db{db}:'").unwrap();
        assert!(config.tags_database());
        let f = config.build().unwrap();
        for db in [0, 2, 15] {
            for mut e in binlog_events() {
                e.db = db;
                let Op::Command { argv } = &e.op else {
                    continue;
                };
                let keys = key_indexes(argv);
                let before = argv.clone();
                f.apply(&mut e);
                let Op::Command { argv } = &e.op else {
                    continue;
                };
                for i in keys {
                    let want = [format!("db{db}:").as_bytes(), &before[i][..]].concat();
                    assert_eq!(argv[i], want, "{}", name_of(argv));
                }
            }
        }
        let twice = filter("replace_prefix: {from: 'a:', to: '{db}/{db}/'}");
        let mut e = snapshot_events().remove(0);
        e.key = Bytes::from("a:k");
        e.db = 7;
        twice.apply(&mut e);
        assert_eq!(e.key, Bytes::from("7/7/k"));
        assert!(
            !serde_yaml::from_str::<RenameFilterConfig>("add_prefix: 'x:'")
                .unwrap()
                .tags_database()
        );
        let e = serde_yaml::from_str::<RenameFilterConfig>("strip_prefix: '{db}:'")
            .unwrap()
            .build();
        assert!(e.is_err());
    }

    #[test]
    fn add_and_strip_prefix_on_the_snapshot() {
        let add = filter("add_prefix: 'pika:'");
        let strip = filter("strip_prefix: 'pika:'");
        for e in snapshot_events() {
            let mut renamed = e.clone();
            add.apply(&mut renamed);
            assert_eq!(&renamed.key[..5], b"pika:");
            strip.apply(&mut renamed);
            assert_eq!(renamed.key, e.key);
        }
        assert!(
            serde_yaml::from_str::<RenameFilterConfig>("add_prefix: a\nstrip_prefix: b")
                .unwrap()
                .build()
                .is_err()
        );
    }
}
