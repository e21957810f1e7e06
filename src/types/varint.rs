//! Zig-zag varints as Kafka's records use them (protobuf's sint32/sint64
//! encoding). Decoders take untrusted bytes and never panic.

use bytes::BufMut;

/// Longest encoding of a 64-bit varint.
pub const VARLONG_BYTES_MAX: usize = 10;

pub fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_varlong(buf, v as i64);
}

pub fn put_varlong(buf: &mut impl BufMut, v: i64) {
    // Encoded on the stack and copied once: `put_u8` on a `BytesMut` is a
    // bounds check and a one-byte copy call per byte, and a batch builder
    // writes five or more varints per record.
    let mut out = [0u8; VARLONG_BYTES_MAX];
    let n = write_varlong(&mut out, 0, v);
    buf.put_slice(&out[..n]);
}

/// Encodes `v` into `out` at `at`; returns where the encoding ends. `out`
/// must have room for [`VARLONG_BYTES_MAX`] bytes from `at` unless `v` is
/// known to be shorter (callers encode into arrays sized for the longest).
pub fn write_varlong(out: &mut [u8], at: usize, v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = at;
    while z >= 0x80 {
        out[n] = (z as u8) | 0x80;
        z >>= 7;
        n += 1;
    }
    out[n] = z as u8;
    n + 1
}

/// Encoded size of `v` as a varlong.
pub fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    // 1 + log2(z) / 7 as a multiply and a shift (log2 0..=63 gives 1..=10):
    // a producer sizes six or more varints per record, and a division by 7,
    // even as the compiler's multiply, costs several times this.
    let log2 = 63 - (z | 1).leading_zeros() as usize;
    (log2 * 9 + 73) / 64
}

/// Decodes a varlong from the front of `buf`: the value and bytes consumed,
/// or None if the bytes end first or the encoding is longer than 10 bytes.
#[inline]
pub fn get_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    // One byte (values -64..=63: most lengths and deltas in a batch).
    if let Some(&b) = buf.first() {
        if b & 0x80 == 0 {
            return Some((i64::from(b >> 1) ^ -i64::from(b & 1), 1));
        }
    }
    let mut z: u64 = 0;
    for (i, &b) in buf.iter().take(VARLONG_BYTES_MAX).enumerate() {
        z |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            let v = ((z >> 1) as i64) ^ -((z & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

/// Decodes a varint: a varlong that must fit in 32 bits.
#[inline]
pub fn get_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (v, n) = get_varlong(buf)?;
    i32::try_from(v).ok().map(|v| (v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // From Kafka's ByteUtils tests: zig-zag maps 0,-1,1,-2 to 0,1,2,3.
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
        ];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf, bytes, "encoding {v}");
            assert_eq!(varlong_len(v), bytes.len());
            assert_eq!(get_varlong(bytes), Some((v, bytes.len())));
        }
    }

    #[test]
    fn varlong_len_matches_the_encoding_at_every_length_boundary() {
        for shift in 0..64 {
            let edge = 1i64.wrapping_shl(shift);
            for v in [edge, edge.wrapping_sub(1), edge.wrapping_add(1)] {
                for v in [v, v.wrapping_neg(), !v] {
                    assert!(varlong_round_trip(v), "{v}");
                }
            }
        }
        assert!(varlong_round_trip(i64::MAX) && varlong_round_trip(i64::MIN));
    }

    fn varlong_round_trip(v: i64) -> bool {
        let mut buf = Vec::new();
        put_varlong(&mut buf, v);
        buf.len() == varlong_len(v) && get_varlong(&buf) == Some((v, buf.len()))
    }

    fn varint_round_trip(v: i32) -> bool {
        let mut buf = Vec::new();
        put_varint(&mut buf, v);
        get_varint(&buf) == Some((v, buf.len()))
    }

    fn truncated_never_panics(bytes: Vec<u8>) -> bool {
        let _ = get_varlong(&bytes);
        let _ = get_varint(&bytes);
        true
    }

    #[test]
    fn quickcheck_round_trips_and_truncation() {
        use crate::test_seed::quickcheck;
        use quickcheck::QuickCheck;
        quickcheck(QuickCheck::new(), varlong_round_trip as fn(i64) -> bool);
        quickcheck(QuickCheck::new(), varint_round_trip as fn(i32) -> bool);
        quickcheck(
            QuickCheck::new(),
            truncated_never_panics as fn(Vec<u8>) -> bool,
        );
    }

    #[test]
    fn overlong_is_rejected() {
        assert_eq!(get_varlong(&[0x80; 11]), None);
        assert_eq!(get_varlong(&[0x80, 0x80]), None);
        // 2^31 does not fit a varint.
        let mut buf = Vec::new();
        put_varlong(&mut buf, 1 << 31);
        assert_eq!(get_varint(&buf), None);
    }
}
