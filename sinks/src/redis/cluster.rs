//! Redis Cluster: which slot a key hashes to (CRC16 of the key or of its `{hash tag}`),
//! which master serves each slot (`CLUSTER SLOTS`), and a hash tag per slot so a lane
//! can keep one checkpoint key in the slot of every transaction it sends (a cluster
//! transaction may only touch one slot).

use super::conn::Connection;
use super::reply::Reply;
use super::url::Target;

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
        let Reply::Array(Some(ranges)) = reply else {
            return Err(format!(
                "CLUSTER SLOTS answered {reply:?}: is it a cluster?"
            ));
        };
        let mut parsed = Vec::new();
        for range in ranges {
            let Reply::Array(Some(fields)) = range else {
                return Err("CLUSTER SLOTS: a range is not an array".into());
            };
            let int = |r: Option<&Reply>| match r {
                Some(Reply::Int(i)) => Some(*i),
                _ => None,
            };
            let (Some(start), Some(end)) = (int(fields.first()), int(fields.get(1))) else {
                return Err("CLUSTER SLOTS: a range has no bounds".into());
            };
            let Some(Reply::Array(Some(master))) = fields.get(2) else {
                return Err("CLUSTER SLOTS: a range has no master".into());
            };
            let host = match master.first() {
                Some(Reply::Bulk(Some(h))) => String::from_utf8_lossy(h).into_owned(),
                _ => return Err("CLUSTER SLOTS: a master has no host".into()),
            };
            let port = int(master.get(1)).ok_or("CLUSTER SLOTS: a master has no port")?;
            parsed.push((start as usize, end as usize, host, port as u16));
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

    /// The target of node `i`: the seed's credentials at the node's address.
    pub fn target(&self, seed: &Target, i: usize) -> Target {
        let mut t = seed.clone();
        t.host = self.nodes[i].0.clone();
        t.port = self.nodes[i].1;
        t.db = 0;
        t
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
