//! `ttl`: on the snapshot, drops keys that expire within `drop_expiring_within` seconds,
//! gives every key `set_seconds` to live, or removes expiries (`clear: true`, which also
//! drops the binlog's EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT commands).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::Rule;
use crate::event::{Event, Op};
use crate::pika::commands::name_of;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlFilterConfig {
    #[serde(default)]
    pub drop_expiring_within: Option<u64>,
    #[serde(default)]
    pub set_seconds: Option<u64>,
    #[serde(default)]
    pub clear: bool,
}

pub enum TtlFilter {
    DropWithin(i64),
    Set(i64),
    Clear,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `seconds` of the setting `name` in milliseconds, refused when that overflows.
fn millis(name: &str, seconds: u64) -> Result<i64, String> {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .ok_or_else(|| {
            format!(
                "`{name}: {seconds}` is out of range (seconds in milliseconds overflow 64 bits)"
            )
        })
}

impl TtlFilterConfig {
    pub fn build(&self) -> Result<TtlFilter, String> {
        match (self.drop_expiring_within, self.set_seconds, self.clear) {
            (Some(s), None, false) => Ok(TtlFilter::DropWithin(millis("drop_expiring_within", s)?)),
            (None, Some(s), false) => Ok(TtlFilter::Set(millis("set_seconds", s)?)),
            (None, None, true) => Ok(TtlFilter::Clear),
            _ => Err(
                "give exactly one of `drop_expiring_within`, `set_seconds`, `clear: true`".into(),
            ),
        }
    }
}

impl Rule for TtlFilter {
    fn apply(&self, event: &mut Event) -> bool {
        match &mut event.op {
            Op::Snapshot { expire_at_ms, .. } => match self {
                TtlFilter::DropWithin(ms) => {
                    expire_at_ms.is_none_or(|at| at >= now_ms().saturating_add(*ms))
                }
                TtlFilter::Set(ms) => {
                    *expire_at_ms = Some(now_ms().saturating_add(*ms));
                    true
                }
                TtlFilter::Clear => {
                    *expire_at_ms = None;
                    true
                }
            },
            Op::Command { argv } => {
                !matches!(self, TtlFilter::Clear)
                    || !matches!(
                        name_of(argv).as_str(),
                        "expire" | "pexpire" | "expireat" | "pexpireat"
                    )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{binlog_events, snapshot_events};

    fn filter(yaml: &str) -> TtlFilter {
        serde_yaml::from_str::<TtlFilterConfig>(yaml)
            .unwrap()
            .build()
            .unwrap()
    }

    fn expiry(e: &Event) -> Option<i64> {
        match &e.op {
            Op::Snapshot { expire_at_ms, .. } => *expire_at_ms,
            _ => None,
        }
    }

    #[test]
    fn drops_sets_and_clears_expiries() {
        let events = snapshot_events();
        let expiring = events.iter().filter(|e| expiry(e).is_some()).count();
        assert!(expiring > 0);
        // Everything in the fixture expired long ago or expires within ten years.
        let drop = filter("drop_expiring_within: 315360000");
        let kept = events
            .iter()
            .filter(|e| drop.apply(&mut (*e).clone()))
            .count();
        assert_eq!(kept, events.len() - expiring);

        let set = filter("set_seconds: 60");
        let mut e = events[0].clone();
        set.apply(&mut e);
        let left = expiry(&e).unwrap() - now_ms();
        assert!((59_000..=60_000).contains(&left), "{left}");

        let clear = filter("clear: true");
        assert!(events.iter().all(|e| {
            let mut e = e.clone();
            clear.apply(&mut e) && expiry(&e).is_none()
        }));
        let commands = binlog_events();
        let expiries = commands
            .iter()
            .filter(|e| matches!(&e.op, Op::Command { argv } if name_of(argv).contains("expire")))
            .count();
        assert!(expiries > 0);
        let kept = commands
            .iter()
            .filter(|e| clear.apply(&mut (*e).clone()))
            .count();
        assert_eq!(kept, commands.len() - expiries);
    }

    #[test]
    fn seconds_past_64_bit_milliseconds_are_refused_and_large_ones_saturate() {
        for yaml in [
            "drop_expiring_within: 9223372036854775807",
            "set_seconds: 18446744073709551615",
        ] {
            let config: TtlFilterConfig = serde_yaml::from_str(yaml).unwrap();
            let Err(e) = config.build() else {
                panic!("{yaml} accepted")
            };
            assert!(e.contains("out of range"), "{e}");
        }
        let mut e = snapshot_events()[0].clone();
        assert!(filter("set_seconds: 9223372036854775").apply(&mut e));
        assert_eq!(expiry(&e), Some(i64::MAX));
        // Everything expires within the longest window that fits.
        assert!(filter("set_seconds: 60").apply(&mut e));
        assert!(!filter("drop_expiring_within: 9223372036854775").apply(&mut e));
    }
}
