//! Drops every event of the tenants listed (keys starting with `<tenant>:`), and string
//! values larger than `max_value_bytes`. Config:
//! `{tenants: ["acme", "test"], max_value_bytes: 1048576}`.

use pika_migrate_plugin::{export_filter, Event, Filter, Kind, Output, Verdict};

pub struct TenantDrop {
    prefixes: Vec<Vec<u8>>,
    max_value_bytes: Option<usize>,
}

impl Filter for TenantDrop {
    fn new(config: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(config).map_err(|e| format!("config: {e}"))?;
        let tenants = config
            .get("tenants")
            .and_then(|t| t.as_array())
            .ok_or("config: `tenants` (a list of names) is required")?;
        let prefixes = tenants
            .iter()
            .map(|t| {
                t.as_str()
                    .map(|t| format!("{t}:").into_bytes())
                    .ok_or_else(|| format!("config: tenant {t} is not a string"))
            })
            .collect::<Result<_, _>>()?;
        let max_value_bytes = config
            .get("max_value_bytes")
            .and_then(|m| m.as_u64())
            .map(|m| m as usize);
        Ok(TenantDrop {
            prefixes,
            max_value_bytes,
        })
    }

    fn filter(&self, event: &Event<'_>, _out: &mut Output<'_>) -> Result<Verdict, String> {
        if self.prefixes.iter().any(|p| event.key.starts_with(p)) {
            return Ok(Verdict::Drop);
        }
        let too_big = |v: &[u8]| self.max_value_bytes.is_some_and(|m| v.len() > m);
        let big = match event.kind {
            Kind::Snapshot => {
                event.data_type == "string" && event.values.iter().any(|v| too_big(v))
            }
            Kind::Command => event.values.iter().skip(2).any(|v| too_big(v)),
        };
        Ok(if big { Verdict::Drop } else { Verdict::Keep })
    }
}

export_filter!(TenantDrop);
