//! `db`: moves events of a source database to another (`map: {0: 3}`); databases not in
//! the map pass unchanged. The Redis sink writes Pika's db N into the url's database + N.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Rule;
use crate::event::Event;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbFilterConfig {
    pub map: BTreeMap<u32, u32>,
}

pub struct DbFilter {
    map: BTreeMap<u32, u32>,
}

impl DbFilterConfig {
    pub fn build(&self) -> Result<DbFilter, String> {
        if self.map.is_empty() {
            return Err("`map` needs at least one `source: target` pair".into());
        }
        Ok(DbFilter {
            map: self.map.clone(),
        })
    }
}

impl Rule for DbFilter {
    fn apply(&self, event: &mut Event) -> bool {
        if let Some(to) = self.map.get(&event.db) {
            event.db = *to;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{binlog_events, snapshot_events};

    #[test]
    fn maps_listed_databases_only() {
        let f = serde_yaml::from_str::<DbFilterConfig>("map: {0: 3, 5: 1}")
            .unwrap()
            .build()
            .unwrap();
        for mut e in snapshot_events().into_iter().chain(binlog_events()) {
            assert!(f.apply(&mut e));
            assert_eq!(e.db, 3);
        }
        let mut other = binlog_events()[0].clone();
        other.db = 2;
        f.apply(&mut other);
        assert_eq!(other.db, 2);
        assert!(serde_yaml::from_str::<DbFilterConfig>("map: {}")
            .unwrap()
            .build()
            .is_err());
    }
}
