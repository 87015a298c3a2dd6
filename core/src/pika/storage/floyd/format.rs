//! floyd's values (Pika 4.0): the meta column family holds every key's meta (and whole
//! strings), the type in its first byte. Integers little-endian; times are u64 where 0
//! means none, the top bit set means milliseconds (4.0.1) and clear means seconds (4.0.0
//! data, and HyperLogLogs even in 4.0.1).

use crate::event::DataType;

/// The type of a meta value, from its first byte (`enum class DataType` of v4.0.1).
pub fn meta_type(b: u8) -> Result<DataType, String> {
    Ok(match b {
        0 => DataType::String,
        1 => DataType::Hash,
        2 => DataType::Set,
        3 => DataType::List,
        4 => DataType::Zset,
        5 => DataType::Stream,
        other => return Err(format!("unknown type byte {other}")),
    })
}

/// The top bit of a floyd time: set when the rest is milliseconds.
const MILLIS_FLAG: u64 = 1 << 63;
/// Reserved bytes in every value.
const RESERVE: usize = 16;
/// A time field.
const TIME: usize = 8;

/// A floyd time as unix milliseconds: `None` for 0 (no expiry).
pub fn time_to_millis(raw: u64) -> Result<Option<i64>, String> {
    if raw == 0 {
        return Ok(None);
    }
    let ms = if raw & MILLIS_FLAG != 0 {
        Some(raw & !MILLIS_FLAG)
    } else {
        raw.checked_mul(1000)
    };
    ms.and_then(|ms| i64::try_from(ms).ok())
        .map(Some)
        .ok_or_else(|| format!("time {raw:#x} is out of range"))
}

fn u64_at(v: &[u8], at: usize) -> Result<u64, String> {
    at.checked_add(8)
        .and_then(|end| v.get(at..end))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| format!("value of {} bytes has no u64 at {at}", v.len()))
}

fn i32_at(v: &[u8], at: usize) -> Result<i32, String> {
    at.checked_add(4)
        .and_then(|end| v.get(at..end))
        .and_then(|b| b.try_into().ok())
        .map(i32::from_le_bytes)
        .ok_or_else(|| format!("value of {} bytes has no i32 at {at}", v.len()))
}

/// A string: `type ‖ value ‖ reserve 16B ‖ ctime ‖ etime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringValue {
    /// Where the user value lies in the meta value.
    pub value: (usize, usize),
    pub expire_at_ms: Option<i64>,
    /// The HyperLogLog flag (`reserve[0] & 0x80`): the value is Pika's HLL registers.
    pub hyperloglog: bool,
}

impl StringValue {
    pub fn parse(v: &[u8]) -> Result<StringValue, String> {
        let end = v
            .len()
            .checked_sub(RESERVE + 2 * TIME)
            .filter(|end| *end >= 1)
            .ok_or_else(|| format!("string value of {} bytes, at least 33 expected", v.len()))?;
        Ok(StringValue {
            value: (1, end),
            expire_at_ms: time_to_millis(u64_at(v, end + RESERVE + TIME)?)?,
            hyperloglog: v[end] & 0x80 != 0,
        })
    }
}

/// A hash, set or zset meta: `type ‖ count i32 ‖ version u64 ‖ reserve 16B ‖ ctime ‖
/// etime` (45 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionMeta {
    pub count: u64,
    pub version: u64,
    pub expire_at_ms: Option<i64>,
}

impl CollectionMeta {
    pub const LEN: usize = 1 + 4 + 8 + RESERVE + 2 * TIME;

    pub fn parse(v: &[u8]) -> Result<CollectionMeta, String> {
        if v.len() != Self::LEN {
            return Err(format!(
                "meta value of {} bytes, expected {}",
                v.len(),
                Self::LEN
            ));
        }
        Ok(CollectionMeta {
            // A negative count is no element at all, as Pika reads it.
            count: u64::try_from(i32_at(v, 1)?).unwrap_or(0),
            version: u64_at(v, 5)?,
            expire_at_ms: time_to_millis(u64_at(v, 13 + RESERVE + TIME)?)?,
        })
    }
}

/// A list meta: `type ‖ count u64 ‖ version u64 ‖ left u64 + 8B ‖ right u64 + 8B ‖
/// reserve 16B ‖ ctime ‖ etime` (81 bytes). Elements sit at `left + 1 ..= right - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListMeta {
    pub count: u64,
    pub version: u64,
    pub left: u64,
    pub expire_at_ms: Option<i64>,
}

impl ListMeta {
    pub const LEN: usize = 1 + 8 + 8 + 16 + 16 + RESERVE + 2 * TIME;

    pub fn parse(v: &[u8]) -> Result<ListMeta, String> {
        if v.len() != Self::LEN {
            return Err(format!(
                "list meta value of {} bytes, expected {}",
                v.len(),
                Self::LEN
            ));
        }
        Ok(ListMeta {
            count: u64_at(v, 1)?,
            version: u64_at(v, 9)?,
            left: u64_at(v, 17)?,
            expire_at_ms: time_to_millis(u64_at(v, 49 + RESERVE + TIME)?)?,
        })
    }
}

/// The user part of a data value (hash field value, list element): `value ‖ reserve
/// 16B ‖ ctime`.
pub fn data_value(v: &[u8]) -> Result<&[u8], String> {
    let end = v
        .len()
        .checked_sub(RESERVE + TIME)
        .ok_or_else(|| format!("data value of {} bytes, at least 24 expected", v.len()))?;
    Ok(&v[..end])
}

/// A zset member's score: `score (f64 bits) ‖ reserve 16B ‖ ctime`.
pub fn zset_score(v: &[u8]) -> Result<f64, String> {
    let bits = data_value(v)?;
    let bits: [u8; 8] = bits
        .try_into()
        .map_err(|_| format!("score of {} bytes, expected 8", bits.len()))?;
    Ok(f64::from_le_bytes(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_come_in_both_units() {
        assert_eq!(time_to_millis(0), Ok(None));
        // 4.0.0 (and HyperLogLogs): seconds without the flag.
        assert_eq!(time_to_millis(1_798_534_403), Ok(Some(1_798_534_403_000)));
        // The fixture's `s1:ttl:pexp:0`: 0x800001a2c101148c = 1798534403212 ms.
        assert_eq!(
            time_to_millis(0x8000_01a2_c101_148c),
            Ok(Some(1_798_534_403_212))
        );
        assert!(time_to_millis(u64::MAX >> 1).is_err());
    }

    fn with_times(mut v: Vec<u8>, etime: u64) -> Vec<u8> {
        v.extend_from_slice(&[0; RESERVE]);
        v.extend_from_slice(&(MILLIS_FLAG | 5).to_le_bytes());
        v.extend_from_slice(&etime.to_le_bytes());
        v
    }

    #[test]
    fn values_parse_and_short_ones_are_refused() {
        let s = with_times(b"\x00hello".to_vec(), 0);
        let parsed = StringValue::parse(&s).unwrap();
        assert_eq!(&s[parsed.value.0..parsed.value.1], b"hello");
        assert_eq!((parsed.expire_at_ms, parsed.hyperloglog), (None, false));
        let mut hll = with_times(b"\x00regs".to_vec(), 100);
        hll[5] |= 0x80;
        let parsed = StringValue::parse(&hll).unwrap();
        assert_eq!(
            (parsed.expire_at_ms, parsed.hyperloglog),
            (Some(100_000), true)
        );
        assert!(StringValue::parse(&s[1..33]).is_err());
        assert!(StringValue::parse(b"").is_err());

        let mut meta = vec![1u8];
        meta.extend_from_slice(&3i32.to_le_bytes());
        meta.extend_from_slice(&77u64.to_le_bytes());
        let meta = with_times(meta, MILLIS_FLAG | 9);
        let m = CollectionMeta::parse(&meta).unwrap();
        assert_eq!((m.count, m.version, m.expire_at_ms), (3, 77, Some(9)));
        assert!(CollectionMeta::parse(&meta[..44]).is_err());
        assert!(ListMeta::parse(&meta).is_err());

        assert_eq!(data_value(b"v\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08"), Ok(&b"v"[..]));
        assert!(data_value(&[0; 23]).is_err());
        let mut score = 1.5f64.to_le_bytes().to_vec();
        score.extend_from_slice(&[0; 24]);
        assert_eq!(zset_score(&score), Ok(1.5));
        assert!(zset_score(&score[1..]).is_err());
        assert_eq!(meta_type(3), Ok(DataType::List));
        assert_eq!(meta_type(5), Ok(DataType::Stream));
        assert!(meta_type(6).is_err());
    }
}
