//! Kafka's default partitioner: murmur2 of the key bytes for keyed records,
//! and a sticky choice (fill a batch on one partition, then move on) for
//! keyless ones.

/// Kafka's `Utils.murmur2` (seed 0x9747b28c), as the Java client computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    let length = data.len() as i32;
    let seed: i32 = 0x9747_b28c_u32 as i32;
    let m: i32 = 0x5bd1_e995;
    let r = 24;
    let mut h: i32 = seed ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= ((k as u32) >> r) as i32;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= ((tail[2] as i32) & 0xff) << 16;
            h ^= ((tail[1] as i32) & 0xff) << 8;
            h ^= (tail[0] as i32) & 0xff;
            h = h.wrapping_mul(m);
        }
        2 => {
            h ^= ((tail[1] as i32) & 0xff) << 8;
            h ^= (tail[0] as i32) & 0xff;
            h = h.wrapping_mul(m);
        }
        1 => {
            h ^= (tail[0] as i32) & 0xff;
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(m);
    h ^= ((h as u32) >> 15) as i32;
    h
}

/// Kafka's `toPositive`.
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner gives a keyed record.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    if partitions == 0 {
        return 0;
    }
    to_positive(murmur2(key)) % partitions
}

/// Sticky choice for keyless records: stays on one partition until
/// [`Sticky::next`] is called (when a batch fills), then moves on. A counter,
/// not a random number, picks the next one, so runs are reproducible.
#[derive(Debug, Default)]
pub struct Sticky {
    counter: u64,
    current: std::collections::BTreeMap<String, u32>,
}

impl Sticky {
    /// The sticky partition for `topic` of `partitions` partitions.
    pub fn partition(&mut self, topic: &str, partitions: u32) -> u32 {
        let partitions = partitions.max(1);
        if let Some(p) = self.current.get(topic) {
            if *p < partitions {
                return *p;
            }
        }
        let p = (self.counter % partitions as u64) as u32;
        self.counter += 1;
        self.current.insert(topic.to_string(), p);
        p
    }

    /// Moves `topic` to another partition (its batch filled).
    pub fn next(&mut self, topic: &str) {
        self.current.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_test_vectors() {
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn key_partition() {
        assert_eq!(
            partition_for_key(b"foobar", 3),
            (-790332482i32 & 0x7fffffff) as u32 % 3
        );
        assert_eq!(partition_for_key(b"x", 0), 0);
    }

    #[test]
    fn sticky_moves_on() {
        let mut s = Sticky::default();
        let a = s.partition("t", 3);
        assert_eq!(s.partition("t", 3), a);
        s.next("t");
        assert_ne!(s.partition("t", 3), a);
    }
}
