//! Redis Cluster: which slot a key hashes to (CRC16 of the key or of its `{hash tag}`),
//! which master serves each slot (`CLUSTER SLOTS`), and a hash tag per slot so a lane
//! can keep one checkpoint key in the slot of every transaction it sends (a cluster
//! transaction may only touch one slot). The `redis` crate keeps its own slot map and
//! routing private to its cluster client, which resends on MOVED by itself; our lanes
//! need to own that order, so the map is read here, through the crate's connection.

use redis::{ConnectionInfo, Value};

use super::conn::{reply_error, Connection};
use super::target::at_address;

pub const SLOTS: usize = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of `key`: only the part inside the first non-empty `{…}` counts.
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// For each slot, a short string that hashes to it.
pub fn slot_tags() -> Vec<String> {
    let mut tags = vec![String::new(); SLOTS];
    let mut missing = SLOTS;
    let mut i: u64 = 0;
    while missing > 0 {
        let tag = i.to_string();
        let slot = slot_of(tag.as_bytes()) as usize;
        if tags[slot].is_empty() {
            tags[slot] = tag;
            missing -= 1;
        }
        i += 1;
    }
    tags
}

/// Which master serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Masters as `host:port`, in a stable order.
    pub nodes: Vec<(String, u16)>,
    /// Index into `nodes` per slot.
    pub owner: Vec<usize>,
}

impl SlotMap {
    /// Asks `conn` (any node) for the map; every slot must be served.
    pub async fn fetch(conn: &mut Connection) -> Result<SlotMap, String> {
        let reply = conn
            .call(&[b"CLUSTER".as_slice(), b"SLOTS"])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(e) = reply_error(&reply) {
            return Err(format!("CLUSTER SLOTS answered {e}: is it a cluster?"));
        }
        // Each range: start, end, then the master as [host, port, id…], then replicas.
        let ranges: Vec<Vec<Value>> =
            redis::from_redis_value(&reply).map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
        let mut parsed = Vec::new();
        for range in ranges {
            let (Some(start), Some(end), Some(master)) =
                (range.first(), range.get(1), range.get(2))
            else {
                return Err("CLUSTER SLOTS: a range has no bounds or no master".into());
            };
            let bounds: redis::RedisResult<(usize, usize)> =
                redis::from_redis_value(start).and_then(|s| Ok((s, redis::from_redis_value(end)?)));
            let node: redis::RedisResult<Vec<Value>> = redis::from_redis_value(master);
            let (Ok((start, end)), Ok(node)) = (bounds, node) else {
                return Err("CLUSTER SLOTS: a range is malformed".into());
            };
            let address: redis::RedisResult<(String, u16)> = match node.as_slice() {
                [host, port, ..] => redis::from_redis_value(host)
                    .and_then(|h| Ok((h, redis::from_redis_value(port)?))),
                _ => return Err("CLUSTER SLOTS: a master has no host and port".into()),
            };
            let (host, port) = address.map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
            parsed.push((start, end, host, port));
        }
        let mut nodes: Vec<(String, u16)> = parsed.iter().map(|p| (p.2.clone(), p.3)).collect();
        nodes.sort();
        nodes.dedup();
        let mut owner = vec![usize::MAX; SLOTS];
        for (start, end, host, port) in parsed {
            let node = nodes
                .iter()
                .position(|n| n.0 == host && n.1 == port)
                .unwrap_or(0);
            for slot in owner.iter_mut().take(end.min(SLOTS - 1) + 1).skip(start) {
                *slot = node;
            }
        }
        if let Some(slot) = owner.iter().position(|o| *o == usize::MAX) {
            return Err(format!("slot {slot} is not served by any master"));
        }
        Ok(SlotMap { nodes, owner })
    }

    /// The settings of node `i`: the seed's credentials and TLS at the node's address.
    pub fn target(&self, seed: &ConnectionInfo, i: usize) -> ConnectionInfo {
        at_address(seed, &self.nodes[i].0, self.nodes[i].1, 0)
    }

    pub fn node_of(&self, key: &[u8]) -> usize {
        self.owner[slot_of(key) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` of a real Redis.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(slot_of(b"foo{}{bar}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
    }

    #[test]
    fn every_slot_has_a_tag() {
        let tags = slot_tags();
        for (slot, tag) in tags.iter().enumerate() {
            assert_eq!(slot_of(tag.as_bytes()) as usize, slot);
        }
    }
}
