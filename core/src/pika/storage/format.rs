//! blackwidow's value and key layouts (Pika 3.2–3.5). All integers little-endian;
//! timestamps are absolute unix seconds, 0 meaning "never expires".

/// When a key expires: `None` for never. A timestamp strictly before `now` is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry(pub Option<i64>);

impl Expiry {
    fn from_timestamp(ts: i32) -> Expiry {
        Expiry((ts != 0).then_some(i64::from(ts)))
    }

    /// Pika's own test: a key expiring at exactly `now` is still alive.
    pub fn is_stale(self, now: i64) -> bool {
        matches!(self.0, Some(ts) if ts < now)
    }

    pub fn as_millis(self) -> Option<i64> {
        self.0.map(|s| s * 1000)
    }
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// A strings value: user bytes ‖ timestamp i32. Returns the user value's length.
pub fn parse_string_value(v: &[u8]) -> Result<(usize, Expiry), String> {
    let len = v
        .len()
        .checked_sub(4)
        .ok_or_else(|| format!("string value of {} bytes has no 4-byte timestamp", v.len()))?;
    Ok((len, Expiry::from_timestamp(i32_at(v, len))))
}

/// Meta of a hash, set or zset: count i32 ‖ version i32 ‖ timestamp i32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionMeta {
    pub count: u64,
    pub version: u32,
    pub expiry: Expiry,
}

impl CollectionMeta {
    pub fn parse(v: &[u8]) -> Result<CollectionMeta, String> {
        if v.len() < 12 {
            return Err(format!("meta value of {} bytes, expected 12", v.len()));
        }
        Ok(CollectionMeta {
            count: u64::try_from(i32_at(v, 0)).unwrap_or(0),
            version: i32_at(v, 4) as u32,
            expiry: Expiry::from_timestamp(i32_at(v, 8)),
        })
    }

    /// Visible iff it has elements and has not expired.
    pub fn is_live(&self, now: i64) -> bool {
        self.count > 0 && !self.expiry.is_stale(now)
    }
}

/// Meta of a list: count u64 ‖ version i32 ‖ timestamp i32 ‖ left u64 ‖ right u64.
/// Elements live at indexes `left + 1 ..= right - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListMeta {
    pub count: u64,
    pub version: u32,
    pub expiry: Expiry,
    pub left: u64,
}

impl ListMeta {
    pub fn parse(v: &[u8]) -> Result<ListMeta, String> {
        if v.len() < 32 {
            return Err(format!("list meta value of {} bytes, expected 32", v.len()));
        }
        Ok(ListMeta {
            count: u64_at(v, 0),
            version: i32_at(v, 8) as u32,
            expiry: Expiry::from_timestamp(i32_at(v, 12)),
            left: u64_at(v, 16),
        })
    }

    pub fn is_live(&self, now: i64) -> bool {
        self.count > 0 && !self.expiry.is_stale(now)
    }
}

/// The prefix every data row of a collection generation starts with:
/// `keylen u32 ‖ key ‖ version u32`.
pub fn data_key_prefix(key: &[u8], version: u32) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(key.len() + 16);
    prefix.extend_from_slice(&(key.len() as u32).to_le_bytes());
    prefix.extend_from_slice(key);
    prefix.extend_from_slice(&version.to_le_bytes());
    prefix
}

/// A zset score as stored: the f64 bit pattern, little-endian.
pub fn parse_score(v: &[u8]) -> Result<f64, String> {
    let bits: [u8; 8] = v
        .try_into()
        .map_err(|_| format!("score of {} bytes, expected 8", v.len()))?;
    Ok(f64::from_le_bytes(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_means_strictly_before_now() {
        assert!(!Expiry(Some(100)).is_stale(100));
        assert!(Expiry(Some(99)).is_stale(100));
        assert!(!Expiry(None).is_stale(i64::MAX));
    }

    #[test]
    fn parses_values_and_rejects_short_ones() {
        let mut s = b"hello".to_vec();
        s.extend_from_slice(&1234i32.to_le_bytes());
        assert_eq!(parse_string_value(&s).unwrap(), (5, Expiry(Some(1234))));
        assert!(parse_string_value(b"abc").is_err());
        let mut meta = 3i32.to_le_bytes().to_vec();
        meta.extend_from_slice(&77i32.to_le_bytes());
        meta.extend_from_slice(&0i32.to_le_bytes());
        let m = CollectionMeta::parse(&meta).unwrap();
        assert_eq!((m.count, m.version, m.expiry), (3, 77, Expiry(None)));
        assert!(CollectionMeta::parse(&meta[..8]).is_err());
        assert!(ListMeta::parse(&meta).is_err());
    }
}
