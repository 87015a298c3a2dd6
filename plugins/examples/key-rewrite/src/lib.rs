//! Rewrites keys starting with `from` to start with `to` instead: the key of snapshot
//! chunks, and the key argument of single-key commands. Config:
//! `{from: "s1:", to: "tenant42:"}`. `fail_on` / `panic_on` (a key) show how errors
//! and panics come back to the host: as a clear error naming the plugin.

use pika_migrate_plugin::{export_filter, Event, Filter, Kind, Output, Verdict};

pub struct KeyRewrite {
    from: Vec<u8>,
    to: Vec<u8>,
    fail_on: Option<Vec<u8>>,
    panic_on: Option<Vec<u8>>,
}

impl Filter for KeyRewrite {
    fn new(config: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(config).map_err(|e| format!("config: {e}"))?;
        let text = |name: &str| {
            config
                .get(name)
                .and_then(|v| v.as_str())
                .map(|s| s.as_bytes().to_vec())
        };
        Ok(KeyRewrite {
            from: text("from").ok_or("config: `from` (a key prefix) is required")?,
            to: text("to").ok_or("config: `to` (the new prefix) is required")?,
            fail_on: text("fail_on"),
            panic_on: text("panic_on"),
        })
    }

    fn filter(&self, event: &Event<'_>, out: &mut Output<'_>) -> Result<Verdict, String> {
        if self.fail_on.as_deref() == Some(event.key) {
            return Err(format!(
                "refusing key {}",
                String::from_utf8_lossy(event.key)
            ));
        }
        if self.panic_on.as_deref() == Some(event.key) {
            panic!("asked to panic on {}", String::from_utf8_lossy(event.key));
        }
        let Some(rest) = event.key.strip_prefix(self.from.as_slice()) else {
            return Ok(Verdict::Keep);
        };
        let key = [self.to.as_slice(), rest].concat();
        match event.kind {
            Kind::Snapshot => out.emit(&key, &event.values),
            Kind::Command => {
                let mut args = event.values.clone();
                if args.len() > 1 && args[1] == event.key {
                    args[1] = &key;
                }
                out.emit(&key, &args);
            }
        }
        Ok(Verdict::Replace)
    }
}

export_filter!(KeyRewrite);
