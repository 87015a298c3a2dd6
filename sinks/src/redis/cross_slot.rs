//! Binlog commands whose keys fall in several slots of a Redis Cluster. Pika has no
//! slots, so its binlog holds `RPOPLPUSH a b`, `SUNIONSTORE d x y`, `MSET …` over any
//! keys, which a cluster refuses (CROSSSLOT). They run here, with every lane drained:
//! each key outside the first key's slot is copied next to it (DUMP, then RESTORE under
//! a temporary name tagged into that slot), the command runs there on the copies, and
//! every copy is written back (RESTORE, or DEL when the command removed it). The stream
//! is the only writer of a migration's target, so this gives the command's effect.

use std::collections::HashMap;

use bytes::Bytes;

use redis::{ConnectionInfo, Value};

use super::cluster::{slot_of, SlotMap};
use super::conn::{error_text, Connection};

/// Connections to the masters, opened when first needed.
#[derive(Default)]
pub struct CrossSlot {
    conns: HashMap<usize, Connection>,
}

impl CrossSlot {
    async fn conn(
        &mut self,
        map: &SlotMap,
        seed: &ConnectionInfo,
        node: usize,
    ) -> Result<&mut Connection, String> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.conns.entry(node) {
            let conn = Connection::open(&map.target(seed, node), super::conn::RESPONSE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            slot.insert(conn);
        }
        self.conns
            .get_mut(&node)
            .ok_or_else(|| "no connection".to_owned())
    }

    async fn call(
        &mut self,
        map: &SlotMap,
        seed: &ConnectionInfo,
        node: usize,
        argv: &[&[u8]],
    ) -> Result<Value, String> {
        let reply = self.conn(map, seed, node).await?.call(argv).await;
        if reply.is_err() {
            // A broken connection is opened afresh next time.
            self.conns.remove(&node);
        }
        reply.map_err(|e| e.to_string())
    }

    /// Moves `from` (on `from_node`) to `to` (on `to_node`): value and expiry, or its
    /// absence.
    async fn copy(
        &mut self,
        map: &SlotMap,
        seed: &ConnectionInfo,
        (from_node, from): (usize, &[u8]),
        (to_node, to): (usize, &[u8]),
    ) -> Result<(), String> {
        let dump = self.call(map, seed, from_node, &[b"DUMP", from]).await?;
        let reply = match dump {
            Value::BulkString(payload) => {
                let ttl = match self.call(map, seed, from_node, &[b"PTTL", from]).await? {
                    Value::Int(ms) if ms > 0 => ms,
                    _ => 0,
                };
                let ttl = ttl.to_string();
                self.call(
                    map,
                    seed,
                    to_node,
                    &[b"RESTORE", to, ttl.as_bytes(), &payload, b"REPLACE"],
                )
                .await?
            }
            Value::Nil => self.call(map, seed, to_node, &[b"DEL", to]).await?,
            other => return Err(format!("DUMP answered {other:?}")),
        };
        match reply {
            reply @ Value::ServerError(_) => Err(error_text(&reply)),
            _ => Ok(()),
        }
    }

    /// Runs `argv` (keys at `keys`) across slots; the command's own reply.
    pub async fn run(
        &mut self,
        map: &SlotMap,
        seed: &ConnectionInfo,
        tags: &[String],
        argv: &[Bytes],
        keys: &[usize],
    ) -> Result<Value, String> {
        let home_slot = slot_of(&argv[keys[0]]);
        let home = map.owner[home_slot as usize];
        let mut copies: Vec<(Bytes, Bytes)> = Vec::new();
        let mut rewritten = argv.to_vec();
        for &i in &keys[1..] {
            let key = &argv[i];
            if slot_of(key) == home_slot {
                continue;
            }
            let temp = match copies.iter().find(|(k, _)| k == key) {
                Some((_, t)) => t.clone(),
                None => {
                    let t = Bytes::from(format!(
                        "pika-migrate:tmp:{{{}}}:{}",
                        tags[home_slot as usize],
                        copies.len()
                    ));
                    copies.push((key.clone(), t.clone()));
                    t
                }
            };
            rewritten[i] = temp;
        }
        for (key, temp) in &copies {
            let node = map.node_of(key);
            self.copy(map, seed, (node, key), (home, temp)).await?;
        }
        let args: Vec<&[u8]> = rewritten.iter().map(|a| a.as_ref()).collect();
        let reply = self.call(map, seed, home, &args).await?;
        for (key, temp) in &copies {
            let node = map.node_of(key);
            self.copy(map, seed, (home, temp), (node, key)).await?;
            self.call(map, seed, home, &[b"DEL", temp]).await?;
        }
        Ok(reply)
    }
}
