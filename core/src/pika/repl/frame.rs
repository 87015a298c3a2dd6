//! Framing: a 4-byte big-endian length, then one protobuf message. Frames may arrive
//! split over many reads or several in one; the master may send frames of hundreds of
//! MiB (a batch of big items).

use bytes::{Buf, Bytes, BytesMut};

/// Largest frame accepted by default (Pika's own reader refuses 512 MiB and more).
pub const MAX_FRAME: usize = 512 << 20;
/// Most room reserved at once for a frame still arriving.
const RESERVE_STEP: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes is larger than the {max}-byte limit")]
pub struct FrameTooLarge {
    pub len: usize,
    pub max: usize,
}

/// Appends `body` as one frame.
pub fn encode(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Takes one whole frame's body off the front of `buf`; `Ok(None)` when more bytes are
/// needed.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameTooLarge> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameTooLarge { len, max });
    }
    if buf.len() < 4 + len {
        // Room for what is still to come, in steps: the length is the peer's claim, and
        // memory should follow the bytes that actually arrive.
        buf.reserve((4 + len - buf.len()).min(RESERVE_STEP));
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined() {
        let mut wire = Vec::new();
        encode(&mut wire, b"abc");
        encode(&mut wire, b"");
        let mut buf = BytesMut::from(&wire[..5]);
        assert_eq!(decode(&mut buf, MAX_FRAME).unwrap(), None);
        buf.extend_from_slice(&wire[5..]);
        assert_eq!(
            decode(&mut buf, MAX_FRAME).unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(
            decode(&mut buf, MAX_FRAME).unwrap().as_deref(),
            Some(&b""[..])
        );
        let mut big = BytesMut::from(&[0x7f, 0, 0, 0][..]);
        assert!(decode(&mut big, MAX_FRAME).is_err());
    }

    #[test]
    fn a_claimed_length_reserves_memory_only_as_bytes_arrive() {
        // 500 MiB announced, 10 bytes there.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(500u32 << 20).to_be_bytes());
        buf.extend_from_slice(b"0123456789");
        assert_eq!(decode(&mut buf, MAX_FRAME).unwrap(), None);
        assert!(buf.capacity() <= RESERVE_STEP + 64, "{}", buf.capacity());
    }
}
