//! The moment an offline source is read as of.
//!
//! A dump or a binlog was written on a real day; read later, its expiry times are in
//! the past. By default the wall clock judges them, as the master's own clock would
//! today. `as_of` reads the input as of another moment instead: keys that had expired
//! by then are left out, and the ones still alive are written with the time they had
//! left at that moment (every absolute expiry moves by the same amount, now − `as_of`).

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};

/// The wall clock in unix milliseconds.
pub fn wall_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A moment given by the user: unix seconds (`1795568868`) or RFC 3339 text
/// (`2026-11-25T01:07:48Z`, `2026-11-24T17:07:48+08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    pub unix_ms: i64,
}

impl FromStr for AsOf {
    type Err = String;

    fn from_str(text: &str) -> Result<AsOf, String> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<i64>() {
            return secs
                .checked_mul(1000)
                .map(|unix_ms| AsOf { unix_ms })
                .ok_or_else(|| format!("{text}: out of range"));
        }
        let at: jiff::Timestamp = text.parse().map_err(|e| {
            format!(
                "{text:?} is not a moment: give unix seconds or RFC 3339 text such as \
                 2026-11-25T01:07:48Z ({e})"
            )
        })?;
        Ok(AsOf {
            unix_ms: at.as_millisecond(),
        })
    }
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.unix_ms) {
            Ok(at) => write!(f, "{at}"),
            Err(_) => write!(f, "{} ms", self.unix_ms),
        }
    }
}

impl<'de> Deserialize<'de> for AsOf {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<AsOf, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(i64),
            Text(String),
        }
        match Raw::deserialize(de)? {
            Raw::Seconds(s) => AsOf::from_str(&s.to_string()),
            Raw::Text(t) => AsOf::from_str(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// What "now" is while an offline source is read: the wall clock, or a fixed moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayClock {
    as_of_ms: Option<i64>,
    /// Added to every absolute expiry written: now − `as_of` (0 on the wall clock).
    shift_ms: i64,
}

impl ReplayClock {
    /// Judged by the wall clock, times written as they are.
    pub fn wall() -> ReplayClock {
        ReplayClock::default()
    }

    /// Judged as of `as_of` (or the wall clock), measured from `now_ms` (the wall clock
    /// at the start of the run): times move by `now_ms − as_of`.
    pub fn new(as_of: Option<AsOf>, now_ms: i64) -> ReplayClock {
        match as_of {
            None => ReplayClock::wall(),
            Some(at) => ReplayClock {
                as_of_ms: Some(at.unix_ms),
                shift_ms: now_ms.saturating_sub(at.unix_ms),
            },
        }
    }

    /// The moment a key's expiry is judged against, in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.as_of_ms.unwrap_or_else(wall_now_ms)
    }

    pub fn as_of_ms(&self) -> Option<i64> {
        self.as_of_ms
    }

    /// Whether a key expiring at `at_ms` is gone at this moment.
    pub fn has_expired(&self, at_ms: i64) -> bool {
        at_ms <= self.now_ms()
    }

    /// An absolute expiry in milliseconds as written to a target: what was left at the
    /// moment read is what is left from now.
    pub fn rebase_ms(&self, at_ms: i64) -> i64 {
        at_ms.saturating_add(self.shift_ms)
    }

    /// The same in seconds (an `EXPIREAT`), rounded to the nearest second.
    pub fn rebase_secs(&self, at_secs: i64) -> i64 {
        let shift = self.shift_ms.saturating_add(500).div_euclid(1000);
        at_secs.saturating_add(shift)
    }

    pub fn is_shifted(&self) -> bool {
        self.shift_ms != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_read_from_seconds_and_rfc3339_with_an_offset() {
        assert_eq!(
            "1795568868".parse(),
            Ok(AsOf {
                unix_ms: 1_795_568_868_000
            })
        );
        assert_eq!(
            "2026-11-25T01:07:48Z".parse::<AsOf>().map(|a| a.unix_ms),
            Ok(1_795_568_868_000)
        );
        assert_eq!(
            "2026-11-25T09:07:48.5+08:00"
                .parse::<AsOf>()
                .map(|a| a.unix_ms),
            Ok(1_795_568_868_500)
        );
        let bad = "24/11/2026".parse::<AsOf>().unwrap_err();
        assert!(bad.contains("RFC 3339"), "{bad}");
        assert!("9223372036854775807".parse::<AsOf>().is_err());
        let yaml: AsOf = serde_yaml::from_str("2026-11-25T01:07:48Z").unwrap();
        assert_eq!(yaml.to_string(), "2026-11-25T01:07:48Z");
        let yaml: AsOf = serde_yaml::from_str("1795568868").unwrap();
        assert_eq!(yaml.unix_ms, 1_795_568_868_000);
    }

    #[test]
    fn as_of_judges_expiry_and_moves_what_is_left_to_now() {
        let as_of = AsOf { unix_ms: 1_000_000 };
        let clock = ReplayClock::new(Some(as_of), 5_000_000);
        assert!(clock.has_expired(1_000_000) && !clock.has_expired(1_000_001));
        // 60 s left at the moment read: 60 s left from now.
        assert_eq!(clock.rebase_ms(1_060_000), 5_060_000);
        assert_eq!(clock.rebase_secs(1_060), 5_060);
        let wall = ReplayClock::new(None, 5_000_000);
        assert_eq!(wall.rebase_ms(1_060_000), 1_060_000);
        assert!(!wall.is_shifted());
    }
}
